/**
 * NF4 execution routes for one decode-shaped Linear (1 × K times a K → N weight), measured side by side:
 *   MatMulBnb4 (exact NF4), NF4 re-coded into 8-bit MatMulNBits blocks (slimlm's default), NF4 dequantized to f32 at load
 *   (plain MatMul), and int4 MatMulNBits (a different 4-bit format, for reference) — time per call, weight bytes,
 *   and the error each route adds relative to exact NF4.
 *
 *   node --import tsx bench/quant_nf4.ts [--n 4096] [--k 4096] [--threads 2]
 */
import { parseArgs } from 'node:util';
import { GraphBuilder, toOnnxBytes } from '../src/graph/index.js';
import '../src/graph/contrib.js';
import { feeds, Session } from '../src/runtime/index.js';
import { blockScales, dequantizeBnb4, quantizeBnb4 } from '../src/quantize/bnb4.js';
import { dequantizeNBits, quantizeNBits } from '../src/quantize/nbits.js';
import { bnb4ToNBits8 } from '../src/models/quantized.js';

const { values } = parseArgs({ options: { n: { type: 'string', default: '4096' }, k: { type: 'string', default: '4096' }, threads: { type: 'string', default: '2' } } });
const N = Number(values.n), K = Number(values.k), threads = Number(values.threads);
let s = 7;
const gauss = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; const u = (s + 1) / 2 ** 32; s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * s / 2 ** 32) * 0.02; };
const W = Float32Array.from({ length: N * K }, gauss);
const A = Float32Array.from({ length: K }, gauss);
const nf4 = quantizeBnb4(W, [N, K], { quantType: 'nf4', doubleQuant: true });
const exact = dequantizeBnb4(nf4);
const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

async function time(build: (g: GraphBuilder, x: ReturnType<GraphBuilder['input']>) => ReturnType<GraphBuilder['input']>): Promise<{ ms: number; y: Float32Array }> {
  const g = new GraphBuilder('b');
  const x = g.input('a', 'f32', [1, K]);
  g.output('y', build(g, x));
  const sess = await Session.create(toOnnxBytes(g.graph), { threads });
  const feed = { a: feeds.f32(A, [1, K]) };
  let y = (await sess.run(feed)).y.data as Float32Array;
  const times: number[] = [];
  for (let i = 0; i < 30; i++) { const t0 = performance.now(); y = (await sess.run(feed)).y.data as Float32Array; times.push(performance.now() - t0); }
  await sess.dispose();
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)], y };
}

const ref = new Float32Array(N);
for (let n = 0; n < N; n++) { let acc = 0; for (let k = 0; k < K; k++) acc += A[k] * exact[n * K + k]; ref[n] = acc; }
const relErr = (y: Float32Array) => Math.sqrt(y.reduce((a, v, i) => a + (v - ref[i]) ** 2, 0) / ref.reduce((a, v) => a + v * v, 0));

const nb8 = bnb4ToNBits8(nf4);
const int4 = quantizeNBits(W, N, K, { bits: 4, blockSize: 32 });
const routes: [string, number, () => Promise<{ ms: number; y: Float32Array }>][] = [
  ['MatMulBnb4 (exact NF4)', nf4.packed.byteLength + nf4.absmax.byteLength, () => time((g, x) => g.op('MatMulBnb4', [x,
    g.initializer('b', 'u8', [nf4.packed.length], nf4.packed), g.initializer('s', 'f32', [K * N / 64], u8(blockScales(nf4)))], { K, N, block_size: 64, quant_type: 1 }))],
  ['NF4 → 8-bit MatMulNBits, accuracy 4', nb8.B.byteLength + nb8.scales.byteLength, () => time((g, x) => g.op('MatMulNBits', [x,
    g.initializer('b', 'u8', [N, K / 64, 64], nb8.B), g.initializer('s', 'f32', [N * K / 64], u8(nb8.scales))], { K, N, bits: 8, block_size: 64, accuracy_level: 4 }))],
  ['NF4 → 8-bit MatMulNBits, accuracy 0', nb8.B.byteLength + nb8.scales.byteLength, () => time((g, x) => g.op('MatMulNBits', [x,
    g.initializer('b', 'u8', [N, K / 64, 64], nb8.B), g.initializer('s', 'f32', [N * K / 64], u8(nb8.scales))], { K, N, bits: 8, block_size: 64, accuracy_level: 0 }))],
  ['NF4 dequantized to f32 at load (MatMul)', N * K * 4, () => time((g, x) => g.matMul(x, g.initializer('w', 'f32', [N, K], u8(exact)), { transB: true }))],
  ['int4 MatMulNBits block 32 (not NF4)', int4.B.byteLength + int4.scales.byteLength, () => time((g, x) => g.op('MatMulNBits', [x,
    g.initializer('b', 'u8', [N, K / 32, 16], int4.B), g.initializer('s', 'f32', [N * K / 32], u8(int4.scales))], { K, N, bits: 4, block_size: 32, accuracy_level: 4 }))],
];
console.log(`| route (${N}×${K}, ${threads} threads) | ms / call | GB/s of weights | weight MiB | rel. error vs exact NF4 |\n|---|---|---|---|---|`);
for (const [name, bytes, run] of routes) {
  const r = await run();
  console.log(`| ${name} | ${r.ms.toFixed(3)} | ${(bytes / (r.ms / 1000) / 1e9).toFixed(1)} | ${(bytes / 2 ** 20).toFixed(1)} | ${relErr(r.y).toExponential(2)} |`);
}
void dequantizeNBits;
