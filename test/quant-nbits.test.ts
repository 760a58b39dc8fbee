/**
 * int4/int8 blockwise weights in MatMulNBits layout and per-row int8: ONNX Runtime's kernels compute exactly
 * A · dequant(B)ᵀ with our dequantization (so the layout is the one ORT executes), and quantization error is bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder, toOnnxBytes } from '../src/graph/index.js';
import '../src/graph/contrib.js';
import { feeds, Session } from '../src/runtime/index.js';
import {
  dequantizeInt8Rows, dequantizeNBits, nbitsBlocks, quantizeInt8Rows, quantizeNBits, type NBitsWeight,
} from '../src/quantize/nbits.js';
import { bnb4ToNBits8 } from '../src/models/quantized.js';
import { dequantizeBnb4, quantizeBnb4 } from '../src/quantize/bnb4.js';

const M = 3, N = 24, K = 80; // K = 80 is not a multiple of 32/64/128: the last block is partial
const rand = (n: number, seed: number) => { let s = seed; return Float32Array.from({ length: n }, () => { s = (s * 1103515245 + 12345) % 2 ** 31; return (s / 2 ** 31 - 0.5) * 0.2; }); };
const W = rand(N * K, 7), A = rand(M * K, 11);

function reference(w: Float32Array): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) { let s = 0; for (let k = 0; k < K; k++) s += A[m * K + k] * w[n * K + k]; y[m * N + n] = s; }
  return y;
}

async function runNBits(q: NBitsWeight, accuracyLevel: number): Promise<Float32Array> {
  const g = new GraphBuilder('nbits');
  const x = g.input('a', 'f32', [M, K]);
  const blocks = nbitsBlocks(K, q.blockSize);
  const ins = [x, g.initializer('b', 'u8', [N, blocks, (q.blockSize * q.bits) / 8], q.B), g.initializer('s', 'f32', [N * blocks], new Uint8Array(q.scales.buffer))];
  if (q.zeroPoints) ins.push(g.initializer('z', 'u8', [q.zeroPoints.length], q.zeroPoints));
  g.output('y', g.op('MatMulNBits', ins, { K, N, bits: q.bits, block_size: q.blockSize, accuracy_level: accuracyLevel }));
  const s = await Session.create(toOnnxBytes(g.graph), { threads: 1 });
  try { return (await s.run({ a: feeds.f32(A, [M, K]) })).y.data as Float32Array; } finally { await s.dispose(); }
}

const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

for (const bits of [4, 8] as const) {
  for (const blockSize of [32, 64, 128]) {
    for (const symmetric of [true, false]) {
      test(`MatMulNBits ${bits}-bit block ${blockSize} ${symmetric ? 'symmetric' : 'asymmetric'}: ORT computes A·dequant(B)ᵀ`, async () => {
        const q = quantizeNBits(W, N, K, { bits, blockSize, symmetric });
        const deq = dequantizeNBits(q);
        const step = bits === 4 ? 0.2 / 15 : 0.2 / 255; // weights span [-0.1, 0.1]
        assert.ok(maxDiff(deq, W) <= step * 1.01, `quantization error ${maxDiff(deq, W)}`);
        assert.ok(maxDiff(await runNBits(q, 0), reference(deq)) < 1e-5, 'fp32 kernel');
        // accuracy_level 4 quantizes activations to int8 per block: close, not exact.
        assert.ok(maxDiff(await runNBits(q, 4), reference(deq)) < 2e-3, 'int8-activation kernel');
      });
    }
  }
}

test('per-row int8 through DynamicQuantizeMatMul', async () => {
  const q = quantizeInt8Rows(W, N, K);
  const deq = dequantizeInt8Rows(q);
  assert.ok(maxDiff(deq, W) <= Math.max(...q.scales) / 2 + 1e-7);
  const g = new GraphBuilder('dqmm');
  const x = g.input('a', 'f32', [M, K]);
  g.output('y', g.op('DynamicQuantizeMatMul', [x, g.initializer('b', 'i8', [K, N], new Uint8Array(q.BT.buffer)), g.initializer('s', 'f32', [N], new Uint8Array(q.scales.buffer))]));
  const s = await Session.create(toOnnxBytes(g.graph), { threads: 1 });
  const y = (await s.run({ a: feeds.f32(A, [M, K]) })).y.data as Float32Array;
  await s.dispose();
  assert.ok(maxDiff(y, reference(deq)) < 2e-3);
});

test('NF4 re-coded as 8-bit MatMulNBits blocks stays within absmax/254 of NF4', () => {
  const Kb = 128;
  const w = rand(N * Kb, 3);
  const q = quantizeBnb4(w, [N, Kb], { quantType: 'nf4', doubleQuant: true });
  const nf4 = dequantizeBnb4(q), via8 = dequantizeNBits(bnb4ToNBits8(q));
  const scale = Math.max(...w.map(Math.abs));
  assert.ok(maxDiff(nf4, via8) <= scale / 254 + 1e-7, String(maxDiff(nf4, via8)));
});
