import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeBatch, type TokenRow } from '../src/data/index.js';
import { assertSameVocabulary, GGUFTeacher, InProcessTeacher, VocabularyMismatchError } from '../src/distill/teachers/index.js';
import type { TeacherOutput, TokenBatch } from '../src/distill/types.js';
import { openCheckpoint, writeLlamaGGUF } from '../src/models/checkpoint.js';
import { ggufTokenizerMetadata } from '../src/models/export.js';
import { loadTokenizer } from '../src/tokenizers/index.js';

const FIXTURE = '../shared/fixtures/llama-2-tiny-random.gguf';
const STORIES = '../shared/models/stories260K/stories260K.bin';
const tok512 = await loadTokenizer('../shared/models/stories260K/tok512.model');
type Sparse = TeacherOutput & { kind: 'sparse' };

const row = (ids: number[]): TokenRow => ({ ids: Int32Array.from(ids), targets: new Uint8Array(ids.length).fill(1) });

/** Every id llama.cpp ranks in its top-k has (within tol·(1+|lp|)) the log-probability slimlm's full softmax gives it, and the ranking agrees. */
function assertAgree(llama: Sparse, ours: Float32Array, batch: TokenBatch, V: number, tol: number): void {
  let checked = 0;
  for (let p = 0; p < batch.batch * batch.seq; p++) {
    if (!batch.attentionMask[p]) continue;
    const logits = ours.subarray(p * V, (p + 1) * V);
    let max = -Infinity;
    for (const v of logits) max = Math.max(max, v);
    let sum = 0;
    for (const v of logits) sum += Math.exp(v - max);
    const logZ = max + Math.log(sum);
    const sorted = Array.from(logits, (v, i) => [v - logZ, i]).sort((a, b) => b[0] - a[0]);
    for (let j = 0; j < llama.k; j++) {
      const id = llama.ids[p * llama.k + j];
      const lp = llama.logprobs[p * llama.k + j];
      assert.ok(Math.abs(logits[id] - logZ - lp) < tol * (1 + Math.abs(lp)), `position ${p}: id ${id} llama.cpp ${lp} vs slimlm ${logits[id] - logZ}`);
      // The same rank in slimlm's ordering, up to near-ties.
      assert.ok(Math.abs(sorted[j][0] - lp) < tol * (1 + Math.abs(lp)), `position ${p} rank ${j}`);
      checked++;
    }
  }
  assert.ok(checked > 0);
}

test("node-llama-cpp teacher on llama.cpp's fixture GGUF agrees with slimlm's own forward of the same file", async () => {
  const gguf = await GGUFTeacher.load(FIXTURE, { topK: 16, threads: 2, kvCacheType: 'F32' });
  const ours = await InProcessTeacher.load(FIXTURE, { threads: 2 });
  try {
    assert.equal(gguf.vocabSize, 32000);
    assert.equal(gguf.tokens?.[1], '<s>');
    const batch = makeBatch([row([1, 450, 4996, 17354, 1701, 432, 12500, 975]), row([1, 9038, 2501, 263])], 0, 0);
    const llama = await gguf.run(batch) as Sparse;
    assert.equal(llama.kind, 'sparse');
    const dense = await ours.run(batch);
    assert.equal(dense.kind, 'dense');
    assertAgree(llama, (dense as { logits: Float32Array }).logits, batch, 32000, 1e-3);
  } finally {
    await gguf.close();
    await ours.close();
  }
});

test('stories260K written as GGUF by slimlm: llama.cpp top-k matches the llama2.c original run in slimlm; dense output is a distribution', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'slimlm-gguf-teacher-'));
  const path = join(dir, 'stories260K.gguf');
  const ckpt = openCheckpoint(STORIES);
  try {
    writeLlamaGGUF(path, ckpt.config, (n) => ckpt.getTensor(n), { type: 'F32', name: 'stories260K', metadata: ggufTokenizerMetadata(tok512) });
  } finally {
    ckpt.close();
  }
  const gguf = await GGUFTeacher.load(path, { topK: 8, threads: 2, kvCacheType: 'F32' });
  const ours = await InProcessTeacher.load(STORIES, { threads: 2 });
  try {
    assertSameVocabulary(gguf, { vocabSize: 512, tokenizer: tok512 });
    const texts = ['Once upon a time, there was a little dog named Max.', 'Lily saw a big red ball in the park. She'];
    const batch = makeBatch(texts.map((t) => row(tok512.encode(t))), 0, 0);
    const llama = await gguf.run(batch) as Sparse;
    const dense = (await ours.run(batch) as { logits: Float32Array }).logits;
    assertAgree(llama, dense, batch, 512, 5e-4);
    // Real distributions have clear winners: the top-1 ids agree exactly.
    for (let p = 0; p < batch.batch * batch.seq; p++) {
      if (!batch.attentionMask[p]) continue;
      const l = dense.subarray(p * 512, (p + 1) * 512);
      assert.equal(llama.ids[p * 8], l.indexOf(Math.max(...l)));
    }
    const full = await GGUFTeacher.load(path, { dense: true, threads: 1 });
    try {
      const d = await full.run(batch);
      assert.equal(d.kind, 'dense');
      const lp = (d as { logits: Float32Array }).logits;
      for (const p of [0, 5, batch.seq + 3]) {
        const mass = lp.subarray(p * 512, (p + 1) * 512).reduce((s, v) => s + Math.exp(v), 0);
        assert.ok(Math.abs(mass - 1) < 1e-4, `mass ${mass}`);
      }
    } finally {
      await full.close();
    }
  } finally {
    await gguf.close();
    await ours.close();
  }
});

test('a GGUF teacher with another vocabulary than the student is refused', async () => {
  const mistral = await loadTokenizer('../shared/tokenizers/mistral-7b-v0.1');
  const gguf = await GGUFTeacher.load(FIXTURE, { topK: 4, threads: 1 });
  try {
    // Same size (32000) as Mistral's, different pieces: the check names the first differing token.
    assert.throws(() => assertSameVocabulary(gguf, { vocabSize: mistral.vocabSize, tokenizer: mistral }),
      (e: Error) => e instanceof VocabularyMismatchError && /token \d+ is ".*" for teacher .* but ".*" for the student/.test(e.message));
    assert.throws(() => assertSameVocabulary(gguf, { vocabSize: 512, tokenizer: tok512 }), /teacher .* has 32000 tokens, the student 512/);
  } finally {
    await gguf.close();
  }
});
