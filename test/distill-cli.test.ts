// `slimlm distill` / `slimlm train` end to end on the real stories260K teacher and TinyStories text: in-process and
// teacher-cache teachers, --resume to more steps, the output folder loads and generates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { main } from '../src/cli/main.js';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { AutoModelForCausalLM, AutoTokenizer } from '../src/api.js';

const TEACHER = '../shared/models/stories260K/stories260K.bin';
const dir = mkdtempSync(join(tmpdir(), 'slimlm-distill-cli-'));
const data = join(dir, 'stories.txt');
writeFileSync(data, readFileSync('../shared/datasets/tinystories_val_slice.txt', 'utf8').split('\n').filter(Boolean).slice(0, 120).join('\n') + '\n');
const quiet = async (args: string[]) => {
  const write = process.stderr.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try { return await main(args); } finally { process.stderr.write = write; }
};
const csvRows = (out: string) => readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').slice(1);

test('distill from an in-process teacher, resume to more steps; the student loads and generates', async () => {
  const out = join(dir, 'kd');
  const args = ['distill', '--teacher', TEACHER, '--data', data, '--out', out, '--batch-size', '8', '--lr', '3e-3', '--threads', '1', '--student', 'hidden=16,layers=2,heads=2,kv-heads=1,ffn=48'];
  assert.equal(await quiet([...args, '--steps', '6', '--save-every', '3']), 0);
  assert.equal(csvRows(out).length, 6);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  assert.equal(config.vocab_size, 512);
  assert.equal(config.hidden_size, 16);
  // --resume with the same options continues the same run; a different --steps is a different run and is refused.
  assert.equal(await quiet([...args, '--steps', '8', '--resume']), 1);
  assert.equal(await quiet([...args, '--steps', '6', '--resume']), 0);
  assert.equal(csvRows(out).length, 6);
  const ck = openCheckpoint(out);
  assert.ok(ck.tokenizerPath);
  ck.close();
  const model = await AutoModelForCausalLM.fromPretrained(out, { threads: 1 });
  const tok = await AutoTokenizer.fromPretrained(out);
  const r = await model.generate(tok.encode('Once upon'), { maxNewTokens: 5, temperature: 0 });
  assert.equal(r.tokens.length, 5);
  await model.dispose();
});

test('distill from a teacher cache; train (CE only) from a flag-string config', async () => {
  const cache = join(dir, 'cache');
  assert.equal(await quiet(['teacher-cache', '--teacher', TEACHER, '--data', data, '--top-k', '16', '--out', cache, '--threads', '1']), 0);
  const out = join(dir, 'from-cache');
  assert.equal(await quiet(['distill', '--teacher', cache, '--data', data, '--out', out, '--steps', '3', '--batch-size', '8', '--threads', '1',
    '--student', 'hidden=16,layers=1,heads=2,kv-heads=2,ffn=32']), 0);
  const rows = csvRows(out).map((r) => r.split(','));
  assert.ok(rows.every((r) => Number.isFinite(Number(r[2])) && Number(r[3]) > 0), 'KD term present and finite');
  const ce = join(dir, 'ce');
  assert.equal(await quiet(['train', '--student', 'hidden=16,layers=1,heads=2,ffn=32', '--tokenizer', TEACHER.replace('stories260K.bin', 'tok512.bin'),
    '--data', data, '--out', ce, '--steps', '3', '--batch-size', '8', '--threads', '1']), 0);
  assert.ok(existsSync(join(ce, 'model.safetensors')));
  rmSync(dir, { recursive: true, force: true });
});

test('distill/train flags, student specs and paths are checked before any data or teacher loads', async () => {
  const work = mkdtempSync(join(tmpdir(), 'slimlm-distill-flags-'));
  const capture = async (args: string[]) => {
    const write = process.stderr.write;
    let text = '';
    process.stderr.write = ((chunk: string) => { text += chunk; return true; }) as typeof process.stderr.write;
    try { return { code: await main(args), text }; } finally { process.stderr.write = write; }
  };
  const out = join(work, 'out');
  const base = ['distill', '--teacher', TEACHER, '--data', data, '--out', out, '--steps', '2', '--batch-size', '4', '--threads', '1'];
  const cases: Array<[string[], RegExp]> = [
    [['distill', '--teacher', TEACHER.replace('stories260K.bin', 'stories260k.bin'), '--data', data, '--out', out], /no such file or folder/],
    [[...base, '--lr=-1'], /--lr must be at least 0/],
    [[...base, '--weight-decay=-5'], /--weight-decay must be at least 0/],
    [[...base, '--loss', 'jsd', '--jsd-beta', '7'], /--jsd-beta must be in \(0, 1\)/],
    [[...base, '--epochs', '0'], /--epochs must be at least 1/],
    [[...base, '--max-length', '1024', '--packing'], /longer than the model's context \(512\)/],
    [[...base, '--min-tokens=-5'], /--min-tokens must be at least 0/],
    [[...base, '--student', '{"num_hidden_layers":0}'], /num_hidden_layers must be a positive integer/],
    [[...base, '--student', '{"hidden_size":"32"}'], /hidden_size must be a positive integer/],
    [[...base, '--student', '[1,2]'], /expected a JSON object/],
    [[...base, '--student', join(work, 'missing.json')], /no such file/],
    [[...base, '--student', 'hidden=16,tied=maybe'], /must be true or false/],
    [[...base, '--student', 'hidden'], /hidden needs a value/],
    [['distill', '--teacher', dirname(TEACHER), '--data', data, '--out', dirname(TEACHER)], /would overwrite the input model/],
    [['train', '--from', TEACHER, '--student', 'hidden=16', '--data', data, '--out', out], /--student applies only to a new one/],
  ];
  for (const [args, message] of cases) {
    const r = await capture(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.text, message, args.join(' '));
    assert.ok(!existsSync(join(out, 'config.json')), `${args.join(' ')} wrote a model`);
  }
  rmSync(work, { recursive: true, force: true });
});

test('bin/slimlm distill re-launches itself with the malloc tunables; the child dies with a SIGKILLed launcher', { skip: process.platform !== 'linux' && 'Linux only' }, async () => {
  const { spawn, execFileSync } = await import('node:child_process');
  const out = join(dir, 'launcher');
  const launcher = spawn(process.execPath, ['bin/slimlm.js', 'distill', '--teacher', TEACHER, '--data', data, '--out', out, '--batch-size', '8', '--threads', '1',
    '--student', 'hidden=16,layers=2,heads=2,kv-heads=1,ffn=48', '--steps', '100000'], { stdio: 'ignore', env: { ...process.env, GLIBC_TUNABLES: '', SLIMLM_MALLOC: '' } });
  const childOf = (pid: number) => Number(execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).trim().split('\n')[0]) || 0;
  const alive = (pid: number) => { try { return !/^State:\s+[ZX]/m.test(readFileSync(`/proc/${pid}/status`, 'utf8')); } catch { return false; } }; // a zombie has stopped
  let child = 0;
  for (let i = 0; i < 200 && !child; i++) { await new Promise((r) => setTimeout(r, 50)); try { child = childOf(launcher.pid!); } catch { /* not yet */ } }
  try {
    assert.ok(child, 'the launcher started a child');
    assert.match(readFileSync(`/proc/${child}/environ`, 'utf8'), /GLIBC_TUNABLES=glibc\.malloc\.mmap_threshold=/);
    launcher.kill('SIGKILL');
    for (let i = 0; i < 200 && alive(child); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(alive(child), false, 'the child stopped after its launcher was killed');
  } finally {
    if (child && alive(child)) process.kill(child, 'SIGKILL');
    launcher.kill('SIGKILL');
  }
});
