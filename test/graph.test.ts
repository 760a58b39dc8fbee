import { test } from 'node:test';
import assert from 'node:assert/strict';
import onnxProto from 'onnx-proto';
import { END, GraphBuilder, GraphError, floatToBf16, floatToHalf, toOnnxBytes, toOnnxModel, type Tensor, type LowerOptions } from '../src/graph/index.js';
import { feeds, Session, type OrtTensor } from '../src/runtime/index.js';
import { rng } from './llama-reference.js';

const { onnx } = onnxProto;

/** Plain JS n-d array for references. */
interface Arr { shape: number[]; data: number[] }
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const strides = (s: number[]) => s.map((_, i) => size(s.slice(i + 1)));
const randArr = (shape: number[], seed: number, lo = -2, hi = 2): Arr => {
  const r = rng(seed);
  return { shape, data: Array.from({ length: size(shape) }, () => Math.fround(lo + (hi - lo) * r())) };
};
/** Elementwise op with numpy broadcasting. */
function bcast(xs: Arr[], f: (...v: number[]) => number): Arr {
  const rank = Math.max(...xs.map((x) => x.shape.length));
  const padded = xs.map((x) => [...Array(rank - x.shape.length).fill(1), ...x.shape]);
  const shape = [...Array(rank).keys()].map((i) => Math.max(...padded.map((p) => p[i])));
  const st = padded.map(strides);
  const data = [...Array(size(shape)).keys()].map((flat) => {
    const idx = strides(shape).map((s, i) => Math.floor(flat / s) % shape[i]);
    return f(...xs.map((x, k) => x.data[idx.reduce((o, v, i) => o + (padded[k][i] === 1 ? 0 : v * st[k][i]), 0)]));
  });
  return { shape, data };
}
/** Reduce over the last axis. */
function lastAxis(x: Arr, f: (row: number[]) => number[]): Arr {
  const n = x.shape[x.shape.length - 1];
  const out: number[] = [];
  for (let i = 0; i < x.data.length; i += n) out.push(...f(x.data.slice(i, i + n)));
  return { shape: [...x.shape.slice(0, -1), out.length / (x.data.length / n)], data: out };
}

function close(got: OrtTensor, want: Arr, what: string, tol = 1e-5): void {
  assert.deepEqual([...got.dims], want.shape, `${what}: shape`);
  const g = Array.from(got.data as ArrayLike<number | bigint>, Number);
  want.data.forEach((w, i) => {
    const ok = Number.isNaN(w) ? Number.isNaN(g[i]) : Math.abs(g[i] - w) <= tol * Math.max(1, Math.abs(w));
    assert.ok(ok, `${what}[${i}]: got ${g[i]}, want ${w}`);
  });
}

async function run(b: GraphBuilder, inputs: Record<string, OrtTensor>, opts?: LowerOptions): Promise<Record<string, OrtTensor>> {
  const s = await Session.create(toOnnxBytes(b.graph, opts), { threads: 1 });
  try { return await s.run(inputs); } finally { await s.dispose(); }
}
const f32In = (a: Arr) => feeds.f32(a.data, a.shape);

test('elementwise ops broadcast like numpy and match JS', async () => {
  const A = randArr([2, 3], 1), B = randArr([3], 2), P = randArr([2, 3], 3, 0.1, 3);
  const g = new GraphBuilder('elementwise');
  const a = g.input('a', 'f32', ['rows', 3]), b = g.input('b', 'f32', [3]), p = g.input('p', 'f32', ['rows', 3]);
  const want: Record<string, Arr> = {};
  const out = (name: string, t: Tensor, ref: Arr) => { g.output(name, t); want[name] = ref; };
  const fr = Math.fround;
  out('add', g.add(a, b), bcast([A, B], (x, y) => x + y));
  out('sub', g.sub(a, 1.5), bcast([A], (x) => x - 1.5));
  out('mul', g.mul(2, b), bcast([B], (y) => 2 * y));
  out('div', g.div(a, p), bcast([A, P], (x, y) => fr(x / y)));
  out('pow', g.pow(p, 1.5), bcast([P], (x) => x ** 1.5));
  out('max', g.max(a, b), bcast([A, B], Math.max));
  out('min', g.min(a, b), bcast([A, B], Math.min));
  out('where', g.where(g.greater(a, b), a, -1), bcast([A, B], (x, y) => (x > y ? x : -1)));
  out('both', g.where(g.and(g.less(a, 0), g.not(g.equal(b, 0))), 1, 0), bcast([A, B], (x, y) => (x < 0 && y !== 0 ? 1 : 0)));
  out('either', g.where(g.or(g.lessOrEqual(a, -1), g.greaterOrEqual(a, 1)), 1, 0), bcast([A], (x) => (x <= -1 || x >= 1 ? 1 : 0)));
  out('neg_abs', g.neg(g.abs(a)), bcast([A], (x) => -Math.abs(x)));
  out('exp', g.exp(a), bcast([A], Math.exp));
  out('log', g.log(p), bcast([P], Math.log));
  out('sqrt', g.sqrt(p), bcast([P], Math.sqrt));
  out('reciprocal', g.reciprocal(p), bcast([P], (x) => 1 / x));
  out('sigmoid', g.sigmoid(a), bcast([A], (x) => 1 / (1 + Math.exp(-x))));
  out('tanh', g.tanh(a), bcast([A], Math.tanh));
  out('cos', g.cos(a), bcast([A], Math.cos));
  out('sin', g.sin(a), bcast([A], Math.sin));
  out('erf', g.erf(g.mul(a, 0)), bcast([A], () => 0));
  out('cast', g.cast(g.cast(g.mul(p, 10), 'i64'), 'f32'), bcast([P], (x) => Math.trunc(fr(x * 10))));
  const r = await run(g, { a: f32In(A), b: f32In(B), p: f32In(P) });
  for (const [name, ref] of Object.entries(want)) close(r[name], ref, name);
});

test('reductions, softmax, cumsum and argmax match JS', async () => {
  const X = randArr([2, 3, 4], 4);
  const g = new GraphBuilder('reduce');
  const x = g.input('x', 'f32', ['batch', 3, 4]);
  g.output('sum', g.reduceSum(x, [-1], false));
  g.output('mean', g.reduceMean(x, [1]));
  g.output('max', g.reduceMax(x, [-1]));
  g.output('softmax', g.softmax(x, -1));
  g.output('log_softmax', g.logSoftmax(x));
  g.output('cumsum', g.cumSum(x, -1));
  g.output('cumsum_excl_rev', g.cumSum(x, 2, { exclusive: true, reverse: true }));
  g.output('argmax', g.argMax(x, -1, false));
  const r = await run(g, { x: f32In(X) });
  const sum = (v: number[]) => v.reduce((a, b) => a + b, 0);
  close(r.sum, { shape: [2, 3], data: lastAxis(X, (v) => [sum(v)]).data }, 'sum');
  close(r.max, lastAxis(X, (v) => [Math.max(...v)]), 'max');
  const mean: number[] = [];
  for (let b = 0; b < 2; b++) for (let k = 0; k < 4; k++) mean.push((X.data[b * 12 + k] + X.data[b * 12 + 4 + k] + X.data[b * 12 + 8 + k]) / 3);
  close(r.mean, { shape: [2, 1, 4], data: mean }, 'mean');
  const softmax = (v: number[]) => { const m = Math.max(...v); const e = v.map((x) => Math.exp(x - m)); return e.map((x) => x / sum(e)); };
  close(r.softmax, lastAxis(X, softmax), 'softmax');
  close(r.log_softmax, lastAxis(X, (v) => softmax(v).map(Math.log)), 'log_softmax');
  close(r.cumsum, lastAxis(X, (v) => v.map((_, i) => sum(v.slice(0, i + 1)))), 'cumsum');
  close(r.cumsum_excl_rev, lastAxis(X, (v) => v.map((_, i) => sum(v.slice(i + 1)))), 'cumsum_excl_rev');
  close(r.argmax, { shape: [2, 3], data: lastAxis(X, (v) => [v.indexOf(Math.max(...v))]).data }, 'argmax');
});

for (const microsoftOps of [true, false]) {
  test(`matMul with batch broadcasting and transB (${microsoftOps ? 'FusedMatMul' : 'standard ONNX'})`, async () => {
    const A = randArr([2, 1, 3, 4], 5), Bt = randArr([3, 5, 4], 6), B = randArr([4, 5], 7);
    const g = new GraphBuilder('matmul');
    const a = g.input('a', 'f32', ['n', 1, 3, 4]);
    const w = g.initializer('w', 'f32', [3, 5, 4], new Uint8Array(Float32Array.from(Bt.data).buffer));
    g.output('abT', g.matMul(a, w, { transB: true }));
    g.output('ab', g.matMul(a, g.constant(B.data, 'f32', B.shape)));
    const r = await run(g, { a: f32In(A) }, { microsoftOps });
    const abT: number[] = [], ab: number[] = [];
    for (let n = 0; n < 2; n++) for (let h = 0; h < 3; h++) for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += A.data[(n * 3 + i) * 4 + k] * Bt.data[(h * 5 + j) * 4 + k];
      abT.push(s);
    }
    for (let n = 0; n < 2; n++) for (let i = 0; i < 3; i++) for (let j = 0; j < 5; j++) {
      let s = 0;
      for (let k = 0; k < 4; k++) s += A.data[(n * 3 + i) * 4 + k] * B.data[k * 5 + j];
      ab.push(s);
    }
    close(r.abT, { shape: [2, 3, 3, 5], data: abT }, 'abT');
    close(r.ab, { shape: [2, 1, 3, 5], data: ab }, 'ab');
    const ops = toOnnxModel(g.graph, { microsoftOps }).graph!.node!.map((n) => n.opType);
    assert.equal(ops.includes('FusedMatMul'), microsoftOps);
  });
}

test('shape ops: reshape, transpose, (un)squeeze, concat, slice, gather, expand, shape, range', async () => {
  const X = randArr([2, 3, 4], 8);
  const g = new GraphBuilder('shapes');
  const x = g.input('x', 'f32', ['batch', 3, 4]);
  const idx = g.input('idx', 'i64', ['k']);
  const t = g.transpose(x, [0, 2, 1]);
  assert.deepEqual(t.shape, ['batch', 4, 3]);
  const flat = g.reshape(x, [0, -1]);
  assert.deepEqual(flat.shape, ['batch', 12]);
  const back = g.reshape(g.reshape(x, [-1, 4]), [-1, 3, 4]);
  assert.deepEqual(back.shape, ['batch', 3, 4]);
  const cat = g.concat([x, g.slice(x, [1], [END], [1])], 1);
  assert.deepEqual(cat.shape, ['batch', 5, 4]);
  const sl = g.slice(x, [-1, 0], [END, 4], [1, 2], [1, 2]);
  assert.deepEqual(sl.shape, ['batch', 1, 2]);
  const us = g.unsqueeze(x, [0, -1]);
  assert.deepEqual(us.shape, [1, 'batch', 3, 4, 1]);
  const total = g.squeeze(g.shape(x, 0, 1), [0]);
  const rng_ = g.range(0, total, 1, 'batch');
  g.output('transpose', t); g.output('flat', flat); g.output('back', back); g.output('concat', cat); g.output('slice', sl);
  g.output('squeeze', g.squeeze(us, [0, 4]));
  g.output('gather', g.gather(x, idx, 2));
  g.output('expand', g.expand(g.slice(x, [0], [1], [1]), [1, 2, 1]));
  g.output('shape', g.shape(x));
  g.output('range', rng_);
  g.output('x_again', x); // an input as an output needs an Identity
  const r = await run(g, { x: f32In(X), idx: feeds.i64([3, 0], [2]) });
  const at = (b: number, i: number, j: number) => X.data[b * 12 + i * 4 + j];
  const build = (shape: number[], f: (...i: number[]) => number): Arr => {
    const data: number[] = [];
    const rec = (pre: number[]) => pre.length === shape.length ? data.push(f(...pre)) : [...Array(shape[pre.length]).keys()].forEach((i) => rec([...pre, i]));
    rec([]);
    return { shape, data };
  };
  close(r.transpose, build([2, 4, 3], (b, j, i) => at(b, i, j)), 'transpose');
  close(r.flat, { shape: [2, 12], data: X.data }, 'flat');
  close(r.back, X, 'back');
  close(r.concat, build([2, 5, 4], (b, i, j) => (i < 3 ? at(b, i, j) : at(b, i - 2, j))), 'concat');
  close(r.slice, build([2, 1, 2], (b, _i, j) => at(b, 2, 2 * j)), 'slice');
  close(r.squeeze, X, 'squeeze');
  close(r.gather, build([2, 3, 2], (b, i, k) => at(b, i, [3, 0][k])), 'gather');
  close(r.expand, build([2, 2, 4], (b, _i, j) => at(b, 0, j)), 'expand');
  close(r.shape, { shape: [3], data: [2, 3, 4] }, 'shape');
  close(r.range, { shape: [2], data: [0, 1] }, 'range');
  close(r.x_again, X, 'x_again');
});

test('f16 and bf16 tensors: initializers, constants and casts', async () => {
  const vals = [0.1, -2.5, 3.14159, 65504, 1e-3];
  const g = new GraphBuilder('half');
  const h = g.initializer('h', 'f16', [5], new Uint8Array(Uint16Array.from(vals, floatToHalf).buffer));
  const bf = g.initializer('bf', 'bf16', [5], new Uint8Array(Uint16Array.from(vals, floatToBf16).buffer));
  g.output('h32', g.cast(h, 'f32'));
  g.output('bf32', g.cast(bf, 'f32'));
  g.output('h_plus', g.cast(g.add(h, 1), 'f32'));
  const r = await run(g, {});
  const bfRound = (v: number) => new Float32Array(new Uint32Array([floatToBf16(v) << 16]).buffer)[0];
  close(r.h32, { shape: [5], data: vals }, 'f16', 1e-3);
  close(r.bf32, { shape: [5], data: vals.map(bfRound) }, 'bf16', 0);
  close(r.h_plus, { shape: [5], data: vals.map((v) => v + 1) }, 'f16 + 1', 2e-3);
});

test('toOnnxBytes streams each weight once and equals the inlined ModelProto', () => {
  const g = new GraphBuilder('bytes');
  const x = g.input('x', 'f32', ['n', 4]);
  let writes = 0;
  const big = Float32Array.from({ length: 1000 }, (_, i) => i / 7);
  const w = g.initializer('w', 'f32', [250, 4], {
    byteLength: big.byteLength,
    write: (dst) => { writes++; dst.set(new Uint8Array(big.buffer)); },
  });
  const raw = g.initializer('raw', 'f32', [4], new Uint8Array(Float32Array.from([1, 2, 3, 4]).buffer));
  g.output('y', g.add(g.matMul(x, w, { transB: true }), g.reduceSum(raw, [0])));
  const bytes = toOnnxBytes(g.graph);
  assert.equal(writes, 1);
  const decoded = onnx.ModelProto.decode(bytes);
  const inlined = onnx.ModelProto.decode(onnx.ModelProto.encode(toOnnxModel(g.graph)).finish());
  assert.deepEqual(onnx.ModelProto.toObject(decoded, { bytes: String }), onnx.ModelProto.toObject(inlined, { bytes: String }));
  const wProto = decoded.graph!.initializer!.find((t) => t.name === 'w')!;
  assert.deepEqual(wProto.dims!.map(Number), [250, 4]);
  assert.deepEqual(new Float32Array(wProto.rawData!.slice().buffer), big);
});

test('build-time shape and dtype errors name the op, the node and the inputs', () => {
  const g = new GraphBuilder('errors');
  const x = g.input('x', 'f32', ['batch', 'seq', 8]);
  const w = g.input('w', 'f32', [16, 6]);
  assert.throws(() => g.scope('attn', () => g.matMul(x, w, { transB: true })),
    (e: Error) => e instanceof GraphError && /^MatMul 'attn\/MatMul_1' \(inputs f32\[batch,seq,8\], f32\[16,6\]\): inner dimensions differ/.test(e.message));
  assert.throws(() => g.add(x, g.input('i', 'i64', [8])), /Add 'Add_1'.*must share a dtype/);
  assert.throws(() => g.add(x, g.input('y', 'f32', [7])), /do not broadcast \(axis 2: 8 vs 7\)/);
  assert.throws(() => g.add(x, g.input('z', 'f32', ['other', 8])), /symbolic dims 'seq' and 'other' differ/);
  assert.throws(() => g.reshape(x, [0, 0, 3, -1]), /cannot reshape \[batch,seq,8\] \(8\*batch\*seq elements\) to \[0,0,3,-1\] \(3\*batch\*seq × inferred\)/);
  assert.throws(() => g.reshape(x, [0, 4, 2]), /cannot reshape \[batch,seq,8\] \(8\*batch\*seq elements\) to \[0,4,2\] \(8\*batch\)/);
  assert.throws(() => g.transpose(x, [0, 0, 1]), /not a permutation/);
  assert.throws(() => g.squeeze(x, [1]), /cannot squeeze axis 1/);
  assert.throws(() => g.softmax(g.input('ids', 'i64', [3])), /Softmax.*needs a float input, got i64/);
  assert.throws(() => g.where(x, 1, 0), /condition must be bool/);
  assert.throws(() => g.concat([x, g.input('c', 'f32', ['batch', 'seq', 4])], 1), /differ off the concat axis 1/);
  assert.throws(() => g.initializer('bad', 'f32', [3], new Uint8Array(8)), /needs 12 bytes, got 8/);
  assert.throws(() => g.input('x', 'f32', [1]), /already used/);
  const other = new GraphBuilder('other');
  assert.throws(() => other.neg(x), /belongs to graph 'errors'/);
  // Symbolic arithmetic used by the decoder: concat adds dims, reshape infers them.
  const past = g.input('past', 'f32', ['batch', 2, 'past', 4]);
  const cur = g.input('cur', 'f32', ['batch', 2, 'seq', 4]);
  assert.deepEqual(g.concat([past, cur], 2).shape, ['batch', 2, 'past+seq', 4]);
  assert.deepEqual(g.reshape(g.input('q', 'f32', ['batch', 4, 'seq', 4]), [0, 2, 2, -1, 4]).shape, ['batch', 2, 2, 'seq', 4]);
});

test('session weight folders of killed processes are removed by the next session', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { spawnSync } = await import('node:child_process');
  const { sessionFromGraph } = await import('../src/runtime/index.js');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-tmpdir-'));
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const stale = path.join(root, `slimlm-session-${dead}-abc123`);
  fs.mkdirSync(stale);
  fs.writeFileSync(path.join(stale, 'model.onnx.data'), 'weights of a killed run');
  const before = process.env.SLIMLM_TMPDIR;
  process.env.SLIMLM_TMPDIR = root;
  try {
    const g = new GraphBuilder('t');
    g.output('y', g.add(g.input('x', 'f32', [2]), g.constant([1, 2], 'f32')));
    const s = await sessionFromGraph(g.graph, { threads: 1 });
    await s.dispose();
    assert.deepEqual(fs.readdirSync(root), []);
  } finally {
    if (before === undefined) delete process.env.SLIMLM_TMPDIR; else process.env.SLIMLM_TMPDIR = before;
    fs.rmSync(root, { recursive: true, force: true });
  }
});
