// `slimlm distill` / `slimlm train` end to end on the real stories260K teacher and TinyStories text: in-process and
// teacher-cache teachers, --resume to more steps, the output folder loads and generates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
