import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Llama2cError, Llama2cFile, llama2cTensorShapes, writeLlama2c } from '../src/formats/llama2c.js';

const STORIES = '../shared/models/stories260K/stories260K.bin';
const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-l2c-'));
const f32 = (b: Uint8Array) => new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);

test('stories260K.bin: legacy header and exact layout', () => {
  const f = Llama2cFile.open(STORIES);
  assert.deepEqual(f.header, { version: 0, dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, sharedClassifier: true, groupSize: undefined });
  assert.equal(f.names().length, 1 + 9 * 5 + 1);
  assert.deepEqual(f.shape('layers.4.attention.wk.weight'), [32, 64]);
  assert.deepEqual(f.shape('layers.0.feed_forward.w2.weight'), [64, 172]);
  // Embedding row 0 starts right after the 28-byte header.
  const raw = readFileSync(STORIES);
  assert.deepEqual(Buffer.from(f.read('tok_embeddings.weight').data.subarray(0, 256)), raw.subarray(28, 28 + 256));
  // rms_final_weight sits just before the freq_cis tables (2 * 512 * 4 floats) at the end of the file.
  const norm = f.read('norm.weight').data;
  assert.deepEqual(Buffer.from(norm), raw.subarray(raw.length - 4096 * 4 - 256, raw.length - 4096 * 4));
  f.close();
});

test('llama2.c: size mismatch (truncated or trailing bytes) and garbage headers give clear errors', () => {
  const dir = tmp();
  const raw = readFileSync(STORIES);
  const cases: [string, Uint8Array, RegExp][] = [
    ['cut', raw.subarray(0, raw.length - 4), /implies 1056540 bytes but the file has 1056536 \(truncated\?\)/],
    ['extra', Buffer.concat([raw, Buffer.alloc(4)]), /but the file has 1056544 \(trailing data/],
    ['tiny', raw.subarray(0, 10), /too short/],
    ['garbage', Buffer.from('this is not a llama2.c checkpoint at all, just text'), /implausible header value/],
    ['v9', (() => { const b = Buffer.alloc(300); b.writeUInt32LE(0x616b3432, 0); b.writeInt32LE(9, 4); return b; })(), /export version 9 is not supported/],
  ];
  for (const [name, bytes, re] of cases) {
    const p = join(dir, `${name}.bin`);
    writeFileSync(p, bytes);
    assert.throws(() => Llama2cFile.open(p), (e: Error) => e instanceof Llama2cError && re.test(e.message) && e.message.includes(p), name);
  }
  rmSync(dir, { recursive: true });
});

test('llama2.c v0 writer (unshared classifier) and v1/v2 "ak42" exports read back the same weights', () => {
  const dir = tmp();
  const src = Llama2cFile.open(STORIES);
  const h = { ...src.header, sharedClassifier: false };
  const shapes = llama2cTensorShapes({ ...h, version: 0 });
  const get = (n: string) => (n === 'output.weight' ? f32(src.read('tok_embeddings.weight').data).map((v) => -v) : f32(src.read(n).data));
  const v0 = join(dir, 'v0.bin');
  writeLlama2c(v0, h, get);
  const a = Llama2cFile.open(v0);
  assert.equal(a.header.sharedClassifier, false);
  for (const n of shapes.keys()) assert.deepEqual(f32(a.read(n).data), get(n), n);
  // Our freq_cis tables equal the ones in the real file (same formula as llama2.c's exporter) up to f32 rounding.
  const raw = readFileSync(STORIES), mine = readFileSync(v0);
  const tab = (b: Buffer, end: number) => new Float32Array(b.buffer.slice(b.byteOffset + end - 4096 * 4, b.byteOffset + end));
  const ref = tab(raw, raw.length), ours = tab(mine, mine.length - 512 * 64 * 4);
  assert.ok(ref.every((v, i) => Math.abs(v - ours[i]) < 1e-5));

  // Version 1: 256-byte header, norms first, then embeddings and matrices; Version 2: int8 groups + f32 scales.
  const header = (version: number, extra?: number) => {
    const b = Buffer.alloc(256);
    b.writeUInt32LE(0x616b3432, 0);
    b.writeInt32LE(version, 4);
    [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen].forEach((v, i) => b.writeInt32LE(v, 8 + 4 * i));
    b.writeUInt8(0, 36);
    if (extra !== undefined) b.writeInt32LE(extra, 37);
    return b;
  };
  const L = h.nLayers;
  const layer = (s: string) => Array.from({ length: L }, (_, i) => `layers.${i}.${s}.weight`);
  const norms = [...layer('attention_norm'), ...layer('ffn_norm'), 'norm.weight'];
  const mats = ['tok_embeddings.weight', ...['attention.wq', 'attention.wk', 'attention.wv', 'attention.wo', 'feed_forward.w1', 'feed_forward.w2', 'feed_forward.w3'].flatMap(layer), 'output.weight'];
  const buf = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  writeFileSync(join(dir, 'v1.bin'), Buffer.concat([header(1), ...[...norms, ...mats].map((n) => buf(get(n)))]));
  const gs = 32;
  const q8 = (x: Float32Array) => {
    const q = new Int8Array(x.length), s = new Float32Array(x.length / gs);
    for (let g = 0; g < s.length; g++) {
      const amax = Math.max(...x.subarray(g * gs, (g + 1) * gs).map(Math.abs));
      s[g] = amax / 127;
      for (let j = g * gs; j < (g + 1) * gs; j++) q[j] = Math.round(x[j] / s[g]);
    }
    return { q, s };
  };
  const parts = [header(2, gs), ...norms.map((n) => buf(get(n)))];
  const expectedV2 = new Map<string, Float32Array>();
  for (const n of mats) {
    const { q, s } = q8(get(n));
    parts.push(Buffer.from(q.buffer), buf(s));
    expectedV2.set(n, Float32Array.from(q, (v, i) => v * s[Math.floor(i / gs)]));
  }
  writeFileSync(join(dir, 'v2.bin'), Buffer.concat(parts));
  const v1 = Llama2cFile.open(join(dir, 'v1.bin'));
  const v2 = Llama2cFile.open(join(dir, 'v2.bin'));
  assert.equal(v1.header.version, 1);
  assert.equal(v2.header.groupSize, gs);
  for (const n of shapes.keys()) {
    assert.deepEqual(f32(v1.read(n).data), get(n), `v1 ${n}`);
    assert.deepEqual(f32(v2.read(n).data), expectedV2.get(n) ?? get(n), `v2 ${n}`);
  }
  assert.equal(v2.storedType('layers.0.attention.wq.weight'), 'q8');
  writeFileSync(join(dir, 'v2cut.bin'), Buffer.concat(parts).subarray(0, 5000));
  assert.throws(() => Llama2cFile.open(join(dir, 'v2cut.bin')), /v2: .* implies \d+ bytes but the file has 5000/);
  [src, a, v1, v2].forEach((f) => f.close());
  rmSync(dir, { recursive: true });
});
