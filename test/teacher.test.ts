import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadData, makeBatch, type TokenRow } from '../src/data/index.js';
import {
  buildTeacherCache, CacheTeacher, InProcessTeacher, openTeacher, readManifest, TeacherCacheError, topKLogSoftmax, vocabularyHash,
  VocabularyMismatchError, PAD_LOGPROB,
} from '../src/distill/teachers/index.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../src/distill/types.js';
import { loadTokenizer } from '../src/tokenizers/index.js';
import { main } from '../src/cli/main.js';

const STORIES_MODEL = '../shared/models/stories260K/stories260K.bin';
const STORIES_TEXT = '../shared/datasets/tinystories_val_slice.txt';
const REF = 'test/fixtures/stories260K-ref';
const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-teacher-'));
const tok512 = await loadTokenizer('../shared/models/stories260K/tok512.model');
const teacher = await InProcessTeacher.load(STORIES_MODEL, { threads: 1 });
const top8 = new InProcessTeacher((teacher as unknown as { model: never }).model, teacher.description, { topK: 8 });

/** A small slice of TinyStories as a data file (fast to run through the teacher). */
function storiesFile(docs: number): string {
  const dir = tmp();
  const path = join(dir, 'stories.txt');
  writeFileSync(path, readFileSync(STORIES_TEXT, 'utf8').split(/\n\s*\n/).slice(0, docs).join('\n\n') + '\n');
  return path;
}

function logSoftmax(x: Float32Array | number[]): number[] {
  const max = Math.max(...x);
  const z = max + Math.log(Array.from(x).reduce((s, v) => s + Math.exp(v - max), 0));
  return Array.from(x, (v) => v - z);
}

test('top-k of the log-softmax matches a full sort (ties: lower id first)', () => {
  const V = 300, k = 7;
  const logits = Float32Array.from({ length: 2 * V }, (_, i) => Math.round(Math.sin(i * 12.9898) * 43758.5453 % 5 * 4) / 4);
  const ids = new Int32Array(2 * k), lps = new Float32Array(2 * k);
  for (let r = 0; r < 2; r++) {
    topKLogSoftmax(logits, r * V, V, k, ids, lps, r * k);
    const ls = logSoftmax(logits.subarray(r * V, (r + 1) * V));
    const order = ls.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k);
    assert.deepEqual(Array.from(ids.subarray(r * k, (r + 1) * k)), order.map((o) => o[1]));
    order.forEach(([v], j) => assert.ok(Math.abs(lps[r * k + j] - v) < 1e-5));
  }
});

test('in-process teacher: top-k equals the PyTorch reference logits, whatever the padding and batch company', async () => {
  const ref = JSON.parse(readFileSync(join(REF, 'reference.json'), 'utf8'));
  const buf = readFileSync(join(REF, 'logits.bin'));
  const refLogits = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const ids: number[] = ref.input_ids;
  const V = 512;
  const other = tok512.encode('The cat sat.');
  const batch = makeBatch([other, ids].map((r) => ({ ids: Int32Array.from(r), targets: new Uint8Array(r.length).fill(1) })), 0, 0);
  const out = await top8.run(batch) as TeacherOutput & { kind: 'sparse' };
  assert.equal(out.kind, 'sparse');
  for (let t = 0; t < ids.length; t++) {
    const ls = logSoftmax(refLogits.subarray(t * V, (t + 1) * V));
    const want = ls.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 8);
    const at = (1 * batch.seq + t) * 8;
    for (let j = 0; j < 8; j++) {
      assert.ok(Math.abs(out.logprobs[at + j] - want[j][0]) < 2e-4, `position ${t} rank ${j}`);
      // ids agree unless the two candidates are tied within the tolerance
      if (j < 7 && want[j][0] - want[j + 1][0] > 2e-4 && (j === 0 || want[j - 1][0] - want[j][0] > 2e-4)) assert.equal(out.ids[at + j], want[j][1]);
    }
  }
  // The short row's padding positions carry the finite pad value.
  const padAt = (0 * batch.seq + other.length) * 8;
  assert.equal(out.logprobs[padAt], PAD_LOGPROB);
  const dense = await teacher.run(batch);
  assert.equal(dense.kind, 'dense');
  assert.equal((dense as { logits: Float32Array }).logits.length, batch.batch * batch.seq * V);
});

test('vocabulary mismatches are refused with a clear error', async () => {
  const mistral = await loadTokenizer('../shared/tokenizers/mistral-7b-v0.1');
  const ids = mistral.encode('Hello world, how are you?');
  const batch = makeBatch([{ ids: Int32Array.from(ids), targets: new Uint8Array(ids.length).fill(1) }], 0, 0);
  await assert.rejects(teacher.run(batch), (e: Error) => e instanceof VocabularyMismatchError && /outside the teacher's vocabulary \(size 512\)/.test(e.message));
  await assert.rejects(openTeacher(STORIES_MODEL, { tokenizer: mistral, threads: 1 }), /vocabulary mismatch/);
  const ok = await openTeacher(STORIES_MODEL, { tokenizer: tok512, threads: 1, topK: 4 });
  await ok.close();
});

/** Wraps a teacher and dies after `n` batches, like a killed process. */
function dyingAfter(inner: Teacher, n: number): Teacher {
  let calls = 0;
  return {
    vocabSize: inner.vocabSize, description: inner.description, close: async () => {},
    run: async (b: TokenBatch) => { if (calls++ === n) throw new Error('killed'); return inner.run(b); },
  };
}

test('teacher cache: round trip, lookup by content after shuffling, resume after a crash, integrity checks', async () => {
  const data = await loadData([storiesFile(30)], tok512, { textUnit: 'document', maxLength: 48, packing: true, validation: 0.2, seed: 3 });
  const rows: TokenRow[] = [...data.train.rows, ...data.validation!.rows];
  const common = { rows, fingerprint: data.fingerprint, k: 8, batchSize: 4, shardRows: 10, tokenizerHash: vocabularyHash(tok512) };

  const clean = tmp();
  await buildTeacherCache({ ...common, teacher: top8, out: clean, logprobType: 'f32' });
  const crashed = tmp();
  await assert.rejects(buildTeacherCache({ ...common, teacher: dyingAfter(top8, 7), out: crashed, logprobType: 'f32' }), /killed/);
  const partial = readManifest(crashed);
  assert.equal(partial.complete, false);
  assert.equal(partial.shards.length, 2); // 7 batches of 4 rows = 2 full shards of 10 rows, the third was never written
  await assert.rejects(async () => CacheTeacher.open(crashed), /incomplete \(20 of \d+ rows\)/);
  const resumed = await buildTeacherCache({ ...common, teacher: top8, out: crashed, logprobType: 'f32' });
  assert.equal(resumed.resumedFromRow, 20);
  assert.deepEqual(resumed.manifest.shards.map((s) => s.sha256), readManifest(clean).shards.map((s) => s.sha256));

  const cache = CacheTeacher.open(clean, { expectFingerprint: data.fingerprint, expectTokenizerHash: vocabularyHash(tok512) });
  for (const batch of [...data.train.batches(1, 5)].slice(0, 3).concat([...data.validation!.batches(0, 3)].slice(0, 1))) {
    const want = await top8.run(batch) as TeacherOutput & { kind: 'sparse' };
    const got = await cache.run(batch) as TeacherOutput & { kind: 'sparse' };
    assert.deepEqual(got.ids, want.ids);
    assert.deepEqual(got.logprobs, want.logprobs);
  }
  await cache.close();

  // f16 log-probabilities: half the bytes, within f16 rounding.
  const half = tmp();
  await buildTeacherCache({ ...common, teacher: top8, out: half });
  const h = CacheTeacher.open(half);
  const batch = [...data.train.batches(0, 4)][0];
  const want = await top8.run(batch) as TeacherOutput & { kind: 'sparse' };
  const got = await h.run(batch) as TeacherOutput & { kind: 'sparse' };
  assert.deepEqual(got.ids, want.ids);
  for (let i = 0; i < got.logprobs.length; i++) {
    if (want.logprobs[i] === PAD_LOGPROB) continue;
    assert.ok(Math.abs(got.logprobs[i] - want.logprobs[i]) <= Math.abs(want.logprobs[i]) * 1e-3 + 1e-3);
  }
  await h.close();

  // Other data, another tokenizer, a row that is not there.
  assert.throws(() => CacheTeacher.open(clean, { expectFingerprint: 'f'.repeat(64) }), (e: Error) => e instanceof TeacherCacheError && /built from other data .* "maxLength"|built from other data/.test(e.message));
  assert.throws(() => CacheTeacher.open(clean, { expectTokenizerHash: '0'.repeat(64) }), /vocabulary mismatch/);
  const stranger = makeBatch([{ ids: Int32Array.of(1, 2, 3, 4), targets: Uint8Array.of(1, 1, 1, 1) }], 0, 0);
  const c2 = CacheTeacher.open(clean);
  await assert.rejects(c2.run(stranger), /is not in teacher cache/);
  await c2.close();
  // Building into a cache made for other settings is refused rather than mixed.
  await assert.rejects(buildTeacherCache({ ...common, k: 4, teacher: top8, out: clean }), /already holds a cache for other settings/);

  // A flipped byte fails the checksum on first use; a truncated shard fails at open; a broken shard is rebuilt on resume.
  const shard = join(crashed, 'shard-00001.bin');
  const bytes = readFileSync(shard);
  bytes[bytes.length - 3] ^= 0x40;
  writeFileSync(shard, bytes);
  const c3 = CacheTeacher.open(crashed);
  const all = data.train.batchOf([...data.train.rows.keys()]);
  await assert.rejects(c3.run(all), /shard-00001.bin fails its checksum/);
  await c3.close();
  writeFileSync(shard, bytes.subarray(0, 100));
  assert.throws(() => CacheTeacher.open(crashed), /truncated|wrong size/);
  const repaired = await buildTeacherCache({ ...common, teacher: top8, out: crashed, logprobType: 'f32' });
  assert.equal(repaired.resumedFromRow, 10);
  assert.deepEqual(repaired.manifest.shards.map((s) => s.sha256), readManifest(clean).shards.map((s) => s.sha256));
});

test('slimlm teacher-cache: SIGKILL mid-run, rerun resumes and matches an uninterrupted run', async () => {
  const file = storiesFile(60);
  const args = (out: string) => ['teacher-cache', '--teacher', STORIES_MODEL, '--data', file, '--out', out, '--top-k', '4', '--text-unit', 'document',
    '--max-length', '32', '--packing', '--shard-rows', '8', '--batch-size', '4', '--threads', '1', '--validation', '0.1'];
  const killed = tmp();
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e',
    `import { main } from './src/cli/main.ts'; process.exitCode = await main(${JSON.stringify(args(killed))});`], { stdio: 'ignore' });
  const exited = new Promise((r) => child.on('exit', r));
  // Kill once at least one shard is listed, before the run completes.
  for (let i = 0; i < 600; i++) {
    await new Promise((r) => setTimeout(r, 50));
    if (existsSync(join(killed, 'manifest.json'))) {
      try {
        if (readManifest(killed).shards.length >= 1) break;
      } catch { /* manifest being replaced */ }
    }
  }
  child.kill('SIGKILL');
  await exited;
  const before = readManifest(killed);
  assert.equal(before.complete, false, 'the run finished before it could be killed; give it more rows');
  // The rerun also removes temp files a killed atomic write left behind.
  const stdout: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => { stdout.push(String(s)); return true; }) as typeof process.stdout.write;
  let code: number;
  try {
    code = await main(args(killed));
  } finally {
    process.stdout.write = write;
  }
  assert.equal(code, 0);
  assert.match(stdout.join(''), /rows, \d+ positions, top-4 f16, \d+ shard\(s\)/);
  const clean = tmp();
  assert.equal(await main(args(clean)), 0);
  const a = readManifest(killed), b = readManifest(clean);
  assert.equal(a.complete, true);
  assert.equal(a.data.fingerprint, b.data.fingerprint);
  assert.deepEqual(a.shards.map((s) => s.sha256), b.shards.map((s) => s.sha256));
  assert.deepEqual(readdirSync(killed).sort(), ['manifest.json', ...a.shards.map((s) => s.file)].sort());
  // distill-side check: the same data options give the cache's fingerprint.
  const data = await loadData([file], tok512, { textUnit: 'document', maxLength: 32, packing: true, validation: 0.1 });
  const cache = await openTeacher(killed, { tokenizer: tok512, expectFingerprint: data.fingerprint });
  await cache.close();
  const other = await loadData([file], tok512, { textUnit: 'document', maxLength: 33, packing: true, validation: 0.1 });
  await assert.rejects(openTeacher(killed, { expectFingerprint: other.fingerprint }), /built from other data/);
});

test.after(async () => {
  await teacher.close();
});
