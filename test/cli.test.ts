/** The `slimlm` binary end to end (built dist/, spawned as users run it), against external references. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const shared = path.join(root, '../shared');
const stories = path.join(shared, 'models/stories260K');

function slimlm(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/slimlm.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The greedy sample published with stories260K (llama2.c `run -t 0.0`). */
function publishedGreedy(): string {
  const md = fs.readFileSync(path.join(stories, 'stories260K.md'), 'utf8');
  const m = md.match(/\$ \.\/run stories260K\/stories260K\.bin -z stories260K\/tok512\.bin -t 0\.0\n([\s\S]*?)\n```/);
  assert.ok(m, 'published greedy sample not found in stories260K.md');
  return m[1];
}

test('generate --temperature 0 reproduces the published stories260K greedy text exactly', () => {
  const r = slimlm('generate', '--model', path.join(stories, 'stories260K.bin'), '--temperature', '0');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, publishedGreedy() + '\n');
  assert.match(r.stderr, /256 tokens/);
});

test('generate with no --model uses the shipped stories260K, and a prompt prints only the continuation', () => {
  const full = slimlm('generate', '--temperature', '0', '--max-new-tokens', '30');
  assert.equal(full.code, 0, full.stderr);
  assert.ok(publishedGreedy().startsWith(full.stdout.trimEnd()));
  const cont = slimlm('generate', '--temperature', '0', '--max-new-tokens', '12', '--prompt', 'Once upon a time,');
  assert.equal(cont.code, 0, cont.stderr);
  assert.ok(cont.stdout.startsWith(' there was a little girl'), JSON.stringify(cont.stdout));
  // The prompt as a plain argument, as `ollama run` / `llm` users type it.
  assert.equal(slimlm('generate', '--temperature', '0', '--max-new-tokens', '12', 'Once upon a time,').stdout, cont.stdout);
});

test('sampling is reproducible by seed and differs across seeds', () => {
  const a = slimlm('generate', '--seed', '7', '--max-new-tokens', '40', '--temperature', '1');
  const b = slimlm('generate', '--seed', '7', '--max-new-tokens', '40', '--temperature', '1');
  const c = slimlm('generate', '--seed', '8', '--max-new-tokens', '40', '--temperature', '1');
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  assert.notEqual(a.stdout, c.stdout);
});

test('stop strings end the output before the stop string', () => {
  const r = slimlm('generate', '--temperature', '0', '--stop', 'Lily', '--max-new-tokens', '100');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'Once upon a time, there was a little girl named \n');
  assert.match(r.stderr, /finish: stop/);
});

test('tokenize prints SentencePiece ids with BOS as a JSON array', () => {
  const fixture = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/tokenizer/mistral.json'), 'utf8'));
  // The folder's tokenizer.json is used, so compare with the Hugging Face ids (equal to SentencePiece's on these).
  const cases: Array<{ text: string; hf_ids: number[] }> = fixture.entries.filter((c: { text: string }) => /[가-힣]/.test(c.text)).slice(0, 3);
  assert.ok(cases.length > 0);
  for (const c of cases) {
    const r = slimlm('tokenize', '--tokenizer', path.join(shared, 'tokenizers/mistral-7b-v0.1'), '--text', c.text);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [1, ...c.hf_ids]);
  }
});

test('inspect reports the real Mistral-7B parameter count from config.json alone', () => {
  const r = slimlm('inspect', path.join(shared, 'tokenizers/mistral-7b-v0.1/config.json'), '--json');
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout);
  assert.equal(report.parameters, 7_241_732_096);
  assert.equal(report.config.slidingWindow, 4096);
});

test('inspect describes llama2.c and GGUF files', () => {
  const bin = slimlm('inspect', path.join(stories, 'stories260K.bin'));
  assert.equal(bin.code, 0, bin.stderr);
  assert.match(bin.stdout, /format\s+llama2c/);
  assert.match(bin.stdout, /parameters\s+260,032/);
  assert.match(bin.stdout, /8 query \/ 4 key-value/);
  const gguf = slimlm('inspect', path.join(shared, 'fixtures/llama-2-tiny-random.gguf'), '--json');
  assert.equal(gguf.code, 0, gguf.stderr);
  assert.equal(JSON.parse(gguf.stdout).format, 'gguf');
});

test('bad input gets a clear error and a non-zero exit code', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-cli-'));
  const truncated = path.join(tmp, 'truncated.bin');
  fs.writeFileSync(truncated, fs.readFileSync(path.join(stories, 'stories260K.bin')).subarray(0, 5000));
  fs.copyFileSync(path.join(stories, 'tok512.bin'), path.join(tmp, 'tok512.bin'));
  fs.mkdirSync(path.join(tmp, 'empty'));
  const cases: Array<[string[], RegExp, number]> = [
    [['generate', '--model', path.join(tmp, 'missing.bin')], /missing\.bin/, 1],
    [['generate', '--model', truncated], /truncated\.bin/, 1],
    [['generate', '--max-new-tokens', 'lots'], /--max-new-tokens expects a number/, 2],
    [['generate', '--bogus'], /bogus/, 2],
    [['generate', '--tokenizer', path.join(shared, 'tokenizers/mistral-7b-v0.1')], /vocabulary/, 2],
    [['frobnicate'], /unknown command/, 2],
    [['generate', 'Hi', '--prompt', 'Hello'], /give the prompt once/, 2],
    [['tokenize', '--tokenizer', path.join(tmp, 'empty'), '--text', 'x'], /no tokenizer in this folder/, 1],
    [['quantize', 'stray', '--model', 'x', '--out', 'y', '--type', 'int4'], /unexpected argument "stray"/, 2],
    [['generate', '--top-p', '0'], /^slimlm generate: topP must be/m, 1],
  ];
  for (const [args, message, code] of cases) {
    const r = slimlm(...args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace for user errors');
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('eval --type follows the quantize recipe flags: --block-size and --lm-head change what is measured', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-eval-'));
  try {
    const run = (name: string, ...flags: string[]) => {
      const json = path.join(dir, `${name}.json`);
      const r = slimlm('eval', '--model', path.join(stories, 'stories260K.bin'), '--data', path.join(shared, 'datasets/tinystories_val_slice.txt'),
        '--ctx', '64', '--chunks', '2', '--type', 'int4', '--json', json, ...flags);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(fs.readFileSync(json, 'utf8')) as { sizeBytes: number; perplexity: number };
    };
    const b32 = run('b32'), b64 = run('b64', '--block-size', '64'), head4 = run('head4', '--lm-head', 'same');
    assert.ok(b64.sizeBytes < b32.sizeBytes, `blocks of 64: ${b64.sizeBytes} vs ${b32.sizeBytes} bytes`);
    assert.ok(head4.sizeBytes < b32.sizeBytes, `int4 head: ${head4.sizeBytes} vs ${b32.sizeBytes} bytes`);
    assert.notEqual(b64.perplexity, b32.perplexity);
    assert.equal(slimlm('eval', '--model', path.join(stories, 'stories260K.bin'), '--data', 'x', '--type', 'int4', '--lm-head', 'int3').code, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("eval's windows are llama.cpp's: BOS before the whole text, then chunks (perplexities from an independent PyTorch forward)", () => {
  // Reference: a torch f64 forward of stories260K over SentencePiece's ids of the file, BOS prepended to the stream, chunks
  // of ctx with BOS over each chunk's first token, second half scored (llama.cpp tools/perplexity, --ppl-stride 0).
  for (const [ctx, chunks, expected] of [[64, 12, 4.9161], [128, 6, 3.8499]] as const) {
    const r = slimlm('eval', '--model', path.join(stories, 'stories260K.bin'), '--data', path.join(shared, 'datasets/tinystories_val_slice.txt'),
      '--ctx', String(ctx), '--chunks', String(chunks), '--threads', '1');
    assert.equal(r.code, 0, r.stderr);
    const ppl = Number(/perplexity\s+([\d.]+)/.exec(r.stdout)?.[1]);
    assert.ok(Math.abs(ppl - expected) < 2e-4, `ctx ${ctx}: ${ppl} vs ${expected}`);
  }
});
