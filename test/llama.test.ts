import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HostTensor } from '../src/formats/tensor.js';
import { floatToBf16, floatToHalf, halfToFloat } from '../src/graph/index.js';
import type { LlamaConfig } from '../src/models/config.js';
import { createLlamaModel, LlamaModel, PREFILL_CHUNK, WeightError, type LlamaKVCache } from '../src/models/llama.js';
import { maxAbsDiff, randomWeights, referenceLogits, rng, tinyConfig } from './llama-reference.js';

const TOL = 1e-4;
const rows = (logits: Float32Array, dims: number[], b: number): Float32Array => {
  const [, s, v] = dims;
  return logits.subarray(b * s * v, (b + 1) * s * v);
};
const randomIds = (n: number, vocab: number, seed: number) => { const r = rng(seed); return Array.from({ length: n }, () => Math.floor(r() * vocab)); };

async function withModel<T>(c: LlamaConfig, w: Map<string, HostTensor>, fn: (m: LlamaModel) => Promise<T>, fused = true): Promise<T> {
  const m = await createLlamaModel(c, w, { threads: 1, fused });
  try { return await fn(m); } finally { await m.dispose(); }
}

test('full-sequence logits match a JS reference (GQA 4/2 heads, untied)', async () => {
  const c = tinyConfig();
  const w = randomWeights(c, 1);
  const ids = randomIds(7, c.vocabSize, 2);
  await withModel(c, w, async (m) => {
    const r = await m.forward({ inputIds: [ids], allLogits: true });
    assert.deepEqual(r.dims, [1, 7, c.vocabSize]);
    assert.ok(maxAbsDiff(r.logits, referenceLogits(c, w, ids).flat()) < TOL);
    // allLogits false computes only the last position, with the same values.
    const last = await m.forward({ inputIds: [ids] });
    assert.deepEqual(last.dims, [1, 1, c.vocabSize]);
    assert.ok(maxAbsDiff(last.logits, r.logits.subarray(6 * c.vocabSize)) < TOL);
  });
});

test('sliding window shorter than the sequence changes logits and matches the reference', async () => {
  const full = tinyConfig();
  const windowed = tinyConfig({ slidingWindow: 3 });
  const w = randomWeights(full, 3);
  const ids = randomIds(9, full.vocabSize, 4);
  const ref = referenceLogits(windowed, w, ids);
  const got = await withModel(windowed, w, (m) => m.forward({ inputIds: [ids], allLogits: true }));
  assert.ok(maxAbsDiff(got.logits, ref.flat()) < TOL);
  const unwindowed = referenceLogits(full, w, ids);
  // Positions < window see the same keys; later ones must differ.
  assert.ok(maxAbsDiff(ref.slice(0, 3).flat(), unwindowed.slice(0, 3).flat()) < 1e-9);
  assert.ok(maxAbsDiff(ref.slice(3).flat(), unwindowed.slice(3).flat()) > 1e-2);
});

test('inputs longer than PREFILL_CHUNK run in chunks: the reference logits at every position (left padding over a whole chunk, sliding window), then decoding goes on', async () => {
  const c = tinyConfig({ maxPositionEmbeddings: 1024, slidingWindow: 100 }); // a window shorter than a chunk
  const w = randomWeights(c, 11);
  const n = 2 * PREFILL_CHUNK + 37, pad = PREFILL_CHUNK + 22; // row 1: its whole first chunk is padding
  const a = randomIds(n, c.vocabSize, 12), b = randomIds(n - pad, c.vocabSize, 13);
  const mask = [Array(n).fill(1), [...Array(pad).fill(0), ...Array(n - pad).fill(1)]];
  await withModel(c, w, async (m) => {
    const r = await m.forward({ inputIds: [a, [...Array(pad).fill(0), ...b]], attentionMask: mask, allLogits: true });
    assert.deepEqual(r.dims, [2, n, c.vocabSize]);
    assert.ok(maxAbsDiff(rows(r.logits, r.dims, 0), referenceLogits(c, w, a).flat()) < TOL);
    assert.ok(maxAbsDiff(rows(r.logits, r.dims, 1).subarray(pad * c.vocabSize), referenceLogits(c, w, b).flat()) < TOL);
    const next = await m.forward({ inputIds: [[5], [6]], cache: r.cache });
    assert.ok(maxAbsDiff(rows(next.logits, next.dims, 0), referenceLogits(c, w, [...a, 5])[n]) < TOL);
    assert.ok(maxAbsDiff(rows(next.logits, next.dims, 1), referenceLogits(c, w, [...b, 6])[n - pad]) < TOL);
  });
});

// Both attention paths: grouped over the buffers (fused) and plain ops (gathered past + concat).
for (const fused of [true, false]) {
const kind = fused ? 'grouped attention' : 'plain attention';

test(`incremental decoding with the KV cache equals the full forward (sliding window crossed; ${kind})`, async () => {
  const c = tinyConfig({ slidingWindow: 4 });
  const w = randomWeights(c, 5);
  const ids = randomIds(10, c.vocabSize, 6);
  await withModel(c, w, async (m) => {
    const full = await m.forward({ inputIds: [ids], allLogits: true });
    const V = c.vocabSize;
    let step = await m.forward({ inputIds: [ids.slice(0, 5)], allLogits: true, reserve: 16 }); // appended in place from here on
    assert.ok(maxAbsDiff(step.logits, full.logits.subarray(0, 5 * V)) < TOL);
    for (let i = 5; i < 8; i++) {
      step = await m.forward({ inputIds: [[ids[i]]], cache: step.cache });
      assert.equal(step.cache.length, i + 1);
      assert.ok(maxAbsDiff(step.logits, full.logits.subarray(i * V, (i + 1) * V)) < TOL, `step ${i}`);
    }
    const at8 = step.cache;
    step = await m.forward({ inputIds: [ids.slice(8)], cache: at8, allLogits: true }); // a 2-token chunk
    assert.ok(maxAbsDiff(step.logits, full.logits.subarray(8 * V)) < TOL);
    // A second continuation of the same cache (whose buffers the chunk appended to) neither sees nor spoils the first.
    const other = await m.forward({ inputIds: [[ids[3]]], cache: at8 });
    const alone = await m.forward({ inputIds: [[...ids.slice(0, 8), ids[3]]] });
    assert.ok(maxAbsDiff(other.logits, alone.logits) < TOL);
    const cont = await m.forward({ inputIds: [[ids[3]]], cache: step.cache });
    const whole = await m.forward({ inputIds: [[...ids, ids[3]]] });
    assert.ok(maxAbsDiff(cont.logits, whole.logits) < TOL);
    // Room reserved up front, and growth past it.
    step = await m.forward({ inputIds: [ids.slice(0, 2)], reserve: 3 });
    for (let i = 2; i < 10; i++) step = await m.forward({ inputIds: [[ids[i]]], cache: step.cache });
    assert.ok(maxAbsDiff(step.logits, full.logits.subarray(9 * V)) < TOL);
  }, fused);
});

test(`left-padded batch rows equal each row alone, through prefill, decoding, chunks and selectCacheRows (${kind})`, async () => {
  const c = tinyConfig({ slidingWindow: 4 });
  const w = randomWeights(c, 7);
  const V = c.vocabSize;
  const prompts = [randomIds(3, V, 8), randomIds(6, V, 9), randomIds(5, V, 10)];
  const next = [randomIds(4, V, 11), randomIds(4, V, 12), randomIds(4, V, 13)];
  await withModel(c, w, async (m) => {
    const width = Math.max(...prompts.map((p) => p.length));
    const padded = prompts.map((p) => [...Array(width - p.length).fill(0), ...p]);
    const mask = prompts.map((p) => [...Array(width - p.length).fill(0), ...Array(p.length).fill(1)]);
    let batch = await m.forward({ inputIds: padded, attentionMask: mask, allLogits: true });
    const singles = await Promise.all(prompts.map((p, b) => m.forward({ inputIds: [[...p, ...next[b]]], allLogits: true })));
    prompts.forEach((p, b) => {
      const got = rows(batch.logits, batch.dims, b).subarray((width - p.length) * V);
      assert.ok(maxAbsDiff(got, singles[b].logits.subarray(0, p.length * V)) < TOL, `prefill row ${b}`);
    });
    // Decode one token per row; the cache remembers the padding mask.
    batch = await m.forward({ inputIds: next.map((n) => [n[0]]), cache: batch.cache });
    prompts.forEach((p, b) => {
      assert.ok(maxAbsDiff(rows(batch.logits, batch.dims, b), singles[b].logits.subarray(p.length * V, (p.length + 1) * V)) < TOL, `decode row ${b}`);
    });
    // Keep rows 2 and 0 (row 1, the longest, leaves): the all-padding leading column is dropped.
    const kept = m.selectCacheRows(batch.cache, [2, 0]) as LlamaKVCache;
    assert.equal(kept.batchSize, 2);
    assert.equal(kept.length, batch.cache.length - 1);
    const after = await m.forward({ inputIds: [[next[2][1]], [next[0][1]]], cache: kept });
    [2, 0].forEach((b, i) => {
      const p = prompts[b].length;
      assert.ok(maxAbsDiff(rows(after.logits, after.dims, i), singles[b].logits.subarray((p + 1) * V, (p + 2) * V)) < TOL, `selected row ${b}`);
    });
    // Two new tokens per row over a past.
    const chunk = await m.forward({ inputIds: [next[2].slice(2), next[0].slice(2)], cache: after.cache, allLogits: true });
    assert.equal(chunk.cache.length, after.cache.length + 2);
    [2, 0].forEach((b, i) => {
      const p = prompts[b].length;
      assert.ok(maxAbsDiff(rows(chunk.logits, chunk.dims, i), singles[b].logits.subarray((p + 2) * V, (p + 4) * V)) < TOL, `chunk row ${b}`);
    });
  }, fused);
});
}

test('tied embeddings with bf16 and f16 weights compute in f32 from the stored values', async () => {
  const c = tinyConfig({ modelType: 'llama', tieWordEmbeddings: true, numKeyValueHeads: 4 });
  const w32 = randomWeights(c, 14);
  const ids = randomIds(5, c.vocabSize, 15);
  for (const [dtype, encode] of [['bf16', floatToBf16], ['f16', floatToHalf]] as const) {
    const half = new Map<string, HostTensor>();
    const rounded = new Map<string, HostTensor>(); // the same values, exactly, in f32
    for (const [name, t] of w32) {
      const src = new Float32Array(t.data.buffer);
      const bits = Uint16Array.from(src, encode);
      half.set(name, { dtype, shape: t.shape, data: new Uint8Array(bits.buffer) });
      const back = dtype === 'bf16' ? Float32Array.from(bits, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0])
        : Float32Array.from(bits, halfToFloat);
      rounded.set(name, { dtype: 'f32', shape: t.shape, data: new Uint8Array(back.buffer) });
    }
    const got = await withModel(c, half, (m) => m.forward({ inputIds: [ids], allLogits: true }));
    assert.ok(maxAbsDiff(got.logits, referenceLogits(c, rounded, ids).flat()) < TOL, dtype);
  }
});

test('bad weights and bad inputs get clear errors', async () => {
  const c = tinyConfig();
  const good = randomWeights(c, 16);
  const without = new Map(good);
  without.delete('model.layers.1.mlp.up_proj.weight');
  await assert.rejects(createLlamaModel(c, without), (e: Error) => e instanceof WeightError && /missing tensors: model\.layers\.1\.mlp\.up_proj\.weight/.test(e.message));
  const wrongShape = new Map(good);
  wrongShape.set('model.layers.0.self_attn.k_proj.weight', { dtype: 'f32', shape: [32, 32], data: new Uint8Array(32 * 32 * 4) });
  await assert.rejects(createLlamaModel(c, wrongShape), /k_proj\.weight: shape \[32,32\] but the config needs \[16,32\]/);
  const wrongDtype = new Map(good);
  wrongDtype.set('model.norm.weight', { dtype: 'i32', shape: [32], data: new Uint8Array(128) });
  await assert.rejects(createLlamaModel(c, wrongDtype), /model\.norm\.weight: dtype i32 is not supported/);
  const extra = new Map(good);
  extra.set('model.layers.0.self_attn.q_proj.bias', { dtype: 'f32', shape: [32], data: new Uint8Array(128) });
  await assert.rejects(createLlamaModel(c, extra), /unexpected tensors.*q_proj\.bias/);
  const short = new Map(good);
  short.set('model.norm.weight', { dtype: 'f32', shape: [32], data: new Uint8Array(64) });
  await assert.rejects(createLlamaModel(c, short), /model\.norm\.weight: 64 bytes/);

  await withModel(c, good, async (m) => {
    await assert.rejects(m.forward({ inputIds: [[1, 2, c.vocabSize]] }), /token id 37 is outside the vocabulary 0\.\.36/);
    await assert.rejects(m.forward({ inputIds: [[1, 2], [3]] }), /rows must have equal length/);
    await assert.rejects(m.forward({ inputIds: [[1, 2]], attentionMask: [[1]] }), /must cover past \+ new tokens \(0 \+ 2\)/);
    const r = await m.forward({ inputIds: [[1, 2]] });
    await assert.rejects(m.forward({ inputIds: [[1], [2]], cache: r.cache }), /cache holds 1 rows but inputIds has 2/);
    assert.throws(() => m.selectCacheRows(r.cache, [1]), /row 1 is out of range/);
    await withModel(c, good, (other) => assert.rejects(other.forward({ inputIds: [[3]], cache: r.cache }), /not produced by this model/));
  });
});
