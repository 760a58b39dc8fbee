/** `slimlm chat` end to end on stories260K: under pipes and under a pseudo-terminal (util-linux `script`). */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, AutoTokenizer, type PreTrainedCausalLM } from '../src/api.js';
import { ChatSession, chatFormat, type ChatFormat } from '../src/chat/index.js';
import type { Tokenizer } from '../src/tokenizers/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const modelPath = path.join(root, '../shared/models/stories260K/stories260K.bin');
// The CLI from source (no build needed), as `slimlm` would run it.
const entry = 'import("./src/cli/main.ts").then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })';
const chatArgs = (...extra: string[]) => ['chat', '--model', modelPath, '--temperature', '0', '--threads', '1', ...extra];

let lm: PreTrainedCausalLM;
let tokenizer: Tokenizer;
let format: ChatFormat;
before(async () => {
  lm = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: 1 });
  tokenizer = await AutoTokenizer.fromPretrained(modelPath);
  format = chatFormat(tokenizer);
});
after(() => lm?.dispose());

async function greedyReply(user: string, maxNewTokens: number): Promise<string> {
  return (await lm.generate(format.encode([{ role: 'user', content: user }]), { maxNewTokens, tokenizer })).text!;
}

/** Collects a child's output and waits for patterns in it, each wait bounded. */
function watch(child: ChildProcess) {
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    get out() { return out; },
    get err() { return err; },
    exited,
    async until(pred: () => boolean, what: string, ms = 20_000) {
      for (const t0 = Date.now(); !pred(); await new Promise((r) => setTimeout(r, 10))) {
        if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}; stdout: ${JSON.stringify(out.slice(-2000))} stderr: ${JSON.stringify(err.slice(-2000))}`);
      }
    },
  };
}

const stats = (s: string) => [...s.matchAll(/\[(\d+) tokens · first token \d+ ms · [\d.]+ tokens\/s · prompt (\d+) tokens([^\]]*)\]/g)];

test('pipes: a full turn equals greedy generation, history grows, /reset forgets it, Korean input arrives intact', async () => {
  const korean = '안녕하세요, 고양이 이야기를 해 주세요.';
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', entry, '--', ...chatArgs('--max-new-tokens', '30')], {
    cwd: root, encoding: 'utf8', timeout: 60_000,
    input: ['Once upon a time there was a dog.', 'And then?', '/reset', 'Once upon a time there was a dog.', '/system Be kind.', korean, ''].join('\n'),
  });
  assert.equal(r.status, 0, r.stderr);
  const s = stats(r.stderr);
  assert.equal(s.length, 4, r.stderr);
  // The same conversation through ChatSession in-process: the transcript must match exactly.
  const session = new ChatSession(lm.model, tokenizer, format, { maxNewTokens: 30, generation: { doSample: false } });
  const replies = [];
  replies.push(await session.reply('Once upon a time there was a dog.'));
  replies.push(await session.reply('And then?'));
  session.reset();
  replies.push(await session.reply('Once upon a time there was a dog.'));
  session.system = 'Be kind.';
  replies.push(await session.reply(korean));
  const expected = replies.map((x) => x.text);
  assert.equal(r.stdout, expected.map((t) => t + '\n').join(''));
  assert.equal(expected[0], await greedyReply('Once upon a time there was a dog.', 30), 'a first turn is plain greedy generation on the templated prompt');
  assert.equal(expected[2], expected[0], 'after /reset the same question gets the same answer');
  assert.ok(Number(s[1][2]) > Number(s[0][2]) + 10, 'the second prompt holds the first turn');
  assert.equal(s[2][2], s[0][2], 'after /reset the prompt is the first one again');
  // The Korean line reached the model intact: same prompt length as the in-process session's.
  assert.deepEqual(s.map((m) => Number(m[2])), replies.map((x) => x.promptTokens));
  assert.match(r.stderr, /\(conversation cleared\)/);
});

test('pipes: a long conversation never overflows the context (oldest turns are dropped)', () => {
  const lines = Array.from({ length: 12 }, (_, i) => `Tell me story number ${i} about a big red ball and a small blue box.`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', entry, '--', ...chatArgs('--max-new-tokens', '60', '--ctx', '200')], {
    cwd: root, encoding: 'utf8', timeout: 60_000, input: lines.join('\n') + '\n' + 'x'.repeat(3000) + '\n',
  });
  assert.equal(r.status, 0, r.stderr);
  const s = stats(r.stderr);
  assert.equal(s.length, 13, r.stderr);
  for (const m of s) assert.ok(Number(m[2]) + Number(m[1]) <= 200, m[0]);
  assert.match(r.stderr, /oldest messages dropped to fit the context/);
  assert.match(r.stderr, /the start of your message \(\d+ characters\) was cut to fit/);
});

test('pipes: SIGINT stops the reply in progress, not the program', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry, '--', ...chatArgs('--max-new-tokens', '480')], { cwd: root, stdio: 'pipe' });
  const w = watch(child);
  try {
    child.stdin!.write('Once upon a time\n');
    await w.until(() => w.out.length > 0, 'the first reply to start');
    child.kill('SIGINT');
    await w.until(() => stats(w.err).length === 1, 'the first reply to end');
    child.stdin!.end('Hi\n');
    assert.equal(await w.exited, 0, w.err);
    const s = stats(w.err);
    assert.equal(s.length, 2, w.err);
    assert.match(s[0][3], /stopped/);
    assert.ok(Number(s[0][1]) < 480, `stopped early (${s[0][1]} tokens)`);
    assert.doesNotMatch(s[1][3], /stopped/);
  } finally {
    child.kill('SIGKILL');
  }
});

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

test('pseudo-terminal: a turn, Korean echo, /reset, Ctrl-C stops a reply, Ctrl-C twice at the prompt exits', { skip: !hasScript && 'util-linux `script` is not installed' }, async () => {
  const command = [process.execPath, '--import', 'tsx', '-e', `'${entry}'`, '--', ...chatArgs('--max-new-tokens', '480').map((a) => `'${a}'`)].join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: root, stdio: 'pipe', env: { ...process.env, TERM: 'dumb', LANG: 'C.UTF-8' } });
  const w = watch(child); // script merges the terminal's stdout and stderr
  try {
    await w.until(() => w.out.includes('slimlm chat ·') && w.out.includes('> '), 'the banner and prompt');
    child.stdin!.write('안녕 Once upon a time\r');
    await w.until(() => w.out.includes('안녕 Once upon a time'), 'readline to echo the Korean input');
    await w.until(() => /\[\d+ tokens/.test(w.out.slice(w.out.indexOf('안녕 Once upon a time'))), 'the first reply to start and end or be stopped', 30_000);
    const firstEnd = w.out.length;
    child.stdin!.write('/reset\r');
    await w.until(() => w.out.includes('(conversation cleared)'), '/reset');
    const before = w.out.length;
    child.stdin!.write('Tell me a long story\r');
    await w.until(() => w.out.length > before + 40, 'the second reply to stream');
    child.stdin!.write('\x03'); // Ctrl-C
    await w.until(() => /\[\d+ tokens[^\]]*\]/.test(w.out.slice(before)), 'the second reply to end');
    assert.match(w.out.slice(before), /\[\d+ tokens[^\]]*stopped[^\]]*\]/, 'Ctrl-C stopped the reply');
    assert.ok(firstEnd > 0);
    const still = w.out.length;
    child.stdin!.write('\x03');
    await w.until(() => w.out.slice(still).includes('Ctrl-C again to exit'), 'the exit warning');
    child.stdin!.write('\x03');
    assert.equal(await Promise.race([w.exited, new Promise((r) => setTimeout(() => r('timeout'), 20_000).unref())]), 0, w.out);
  } finally {
    child.kill('SIGKILL');
  }
});
