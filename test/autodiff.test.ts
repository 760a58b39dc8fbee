// Finite-difference checks of every gradient rule: loss = Σ r ⊙ op(x) with a fixed random r, central differences in f64.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { END, GraphBuilder, gradients, toOnnxBytes, DIFFERENTIABLE_OPS, type DType, type Tensor } from '../src/graph/index.js';
import { ort, Session } from '../src/runtime/index.js';
import { rng } from './llama-reference.js';

interface In { shape: number[]; dtype?: DType; lo?: number; hi?: number; values?: number[]; grad?: boolean }
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

async function gradCheck(what: string, ins: In[], build: (g: GraphBuilder, xs: Tensor[]) => Tensor, opts: { dtype?: DType; tol?: number } = {}) {
  const fdt = opts.dtype ?? 'f64';
  const g = new GraphBuilder(what);
  const r = rng(what.length * 7919 + 1);
  const xs = ins.map((s, i) => g.input(`x${i}`, s.dtype ?? fdt, s.shape));
  const y = build(g, xs);
  const weights = g.input('r', fdt, y.shape);
  const loss = g.reduceSum(g.mul(y, weights), [...Array(y.rank).keys()], false);
  g.output('loss', loss);
  const wrt = xs.filter((_, i) => (ins[i].dtype ?? fdt) === fdt && ins[i].grad !== false);
  const dxs = gradients(g, loss, wrt);
  dxs.forEach((d, i) => { assert.ok(d, `${what}: no gradient for input ${i}`); g.output(`d${i}`, d!); });
  const session = await Session.create(toOnnxBytes(g.graph), { threads: 1 });
  const ortType = (d: DType) => (d === 'f64' ? 'float64' : d === 'f32' ? 'float32' : d === 'i64' ? 'int64' : d === 'bool' ? 'bool' : 'int32');
  const make = (d: DType, data: number[], shape: number[]) =>
    new ort.Tensor(ortType(d) as 'float64', d === 'i64' ? BigInt64Array.from(data, BigInt) as never : d === 'f64' ? Float64Array.from(data) : d === 'f32' ? Float32Array.from(data) : d === 'bool' ? Uint8Array.from(data) : Int32Array.from(data), shape);
  const values = ins.map((s) => s.values ?? Array.from({ length: size(s.shape) }, () => (s.lo ?? -2) + ((s.hi ?? 2) - (s.lo ?? -2)) * r()));
  const rv = Array.from({ length: size(y.shape as number[]) }, () => r() * 2 - 1);
  const feeds = (vals: number[][]) => Object.fromEntries([...ins.map((s, i) => [`x${i}`, make(s.dtype ?? fdt, vals[i], s.shape)]), ['r', make(fdt, rv, y.shape as number[])]]);
  const out = await session.run(feeds(values));
  const eps = fdt === 'f64' ? 1e-6 : 1e-2;
  const tol = opts.tol ?? (fdt === 'f64' ? 1e-6 : 2e-2);
  let k = 0;
  for (let i = 0; i < ins.length; i++) {
    if ((ins[i].dtype ?? fdt) !== fdt || ins[i].grad === false) continue;
    const analytic = Array.from(out[`d${k++}`].data as Float64Array);
    for (let j = 0; j < values[i].length; j++) {
      const at = (delta: number) => values.map((v, m) => (m === i ? v.map((e, n) => (n === j ? e + delta : e)) : v));
      const lp = Number((await session.run(feeds(at(eps)), ['loss'])).loss.data[0]);
      const lm = Number((await session.run(feeds(at(-eps)), ['loss'])).loss.data[0]);
      const numeric = (lp - lm) / (2 * eps);
      assert.ok(Math.abs(numeric - analytic[j]) <= tol * Math.max(1, Math.abs(numeric)),
        `${what}: d/dx${i}[${j}] analytic ${analytic[j]} vs numeric ${numeric}`);
    }
  }
  await session.dispose();
}

const covered = new Set<string>();
const check = (op: string, ...args: Parameters<typeof gradCheck>) => { covered.add(op); return gradCheck(...args); };

test('elementwise gradients match finite differences (with broadcasting)', async () => {
  await check('Add', 'add', [{ shape: [2, 3] }, { shape: [3] }], (g, [a, b]) => g.add(a, b));
  await check('Sub', 'sub', [{ shape: [2, 1] }, { shape: [2, 3] }], (g, [a, b]) => g.sub(a, b));
  await check('Mul', 'mul', [{ shape: [2, 3] }, { shape: [1, 3] }], (g, [a, b]) => g.mul(a, b));
  await check('Div', 'div', [{ shape: [2, 3] }, { shape: [3], lo: 0.5, hi: 2 }], (g, [a, b]) => g.div(a, b));
  await check('Pow', 'pow', [{ shape: [2, 3], lo: 0.5, hi: 2 }, { shape: [3], lo: -1, hi: 2 }], (g, [a, b]) => g.pow(a, b));
  await check('Max', 'max', [{ shape: [2, 3] }, { shape: [2, 3] }], (g, [a, b]) => g.max(a, b));
  await check('Min', 'min', [{ shape: [2, 3] }, { shape: [2, 3] }], (g, [a, b]) => g.min(a, b));
  await check('Neg', 'neg', [{ shape: [4] }], (g, [x]) => g.neg(x));
  await check('Abs', 'abs', [{ shape: [4] }], (g, [x]) => g.abs(x));
  await check('Exp', 'exp', [{ shape: [4] }], (g, [x]) => g.exp(x));
  await check('Log', 'log', [{ shape: [4], lo: 0.2, hi: 3 }], (g, [x]) => g.log(x));
  await check('Sqrt', 'sqrt', [{ shape: [4], lo: 0.2, hi: 3 }], (g, [x]) => g.sqrt(x));
  await check('Reciprocal', 'reciprocal', [{ shape: [4], lo: 0.3, hi: 3 }], (g, [x]) => g.reciprocal(x));
  await check('Sigmoid', 'sigmoid', [{ shape: [4] }], (g, [x]) => g.sigmoid(x));
  await check('Tanh', 'tanh', [{ shape: [4] }], (g, [x]) => g.tanh(x));
  await check('Cos', 'cos', [{ shape: [4] }], (g, [x]) => g.cos(x));
  await check('Sin', 'sin', [{ shape: [4] }], (g, [x]) => g.sin(x));
  await check('Erf', 'erf', [{ shape: [4] }], (g, [x]) => g.erf(x), { dtype: 'f32' });
  await check('Identity', 'identity', [{ shape: [3] }], (g, [x]) => g.identity(x));
  await check('Cast', 'cast', [{ shape: [3] }], (g, [x]) => g.cast(g.cast(x, 'f64'), 'f32'), { dtype: 'f32' });
  await check('Where', 'where', [{ shape: [2, 3], dtype: 'bool', values: [1, 0, 1, 0, 0, 1] }, { shape: [2, 3] }, { shape: [3] }],
    (g, [c, a, b]) => g.where(c, a, b));
});

test('reduction, softmax and matmul gradients match finite differences', async () => {
  await check('ReduceSum', 'reduceSum', [{ shape: [2, 3, 2] }], (g, [x]) => g.reduceSum(x, [1], false));
  await check('ReduceMean', 'reduceMean', [{ shape: [2, 3] }], (g, [x]) => g.reduceMean(x, [-1]));
  await check('Softmax', 'softmax', [{ shape: [2, 4] }], (g, [x]) => g.softmax(x, -1));
  await check('LogSoftmax', 'logSoftmax', [{ shape: [2, 4] }], (g, [x]) => g.logSoftmax(x, -1));
  await check('MatMul', 'matMul', [{ shape: [2, 3] }, { shape: [3, 4] }], (g, [a, b]) => g.matMul(a, b));
  await check('MatMul', 'matMul-transB-linear', [{ shape: [2, 2, 3] }, { shape: [4, 3] }], (g, [a, b]) => g.matMul(a, b, { transB: true }));
  await check('MatMul', 'matMul-batched-broadcast', [{ shape: [2, 3, 2, 3] }, { shape: [2, 1, 4, 3] }], (g, [a, b]) => g.matMul(a, b, { transB: true }));
  await check('MatMul', 'matMul-linear', [{ shape: [2, 2, 3] }, { shape: [3, 4] }], (g, [a, b]) => g.matMul(a, b));
});

test('shape and indexing gradients match finite differences', async () => {
  await check('Reshape', 'reshape', [{ shape: [2, 6] }], (g, [x]) => g.reshape(x, [0, 2, -1]));
  await check('Transpose', 'transpose', [{ shape: [2, 3, 4] }], (g, [x]) => g.transpose(x, [2, 0, 1]));
  await check('Unsqueeze', 'unsqueeze', [{ shape: [2, 3] }], (g, [x]) => g.unsqueeze(x, [1]));
  await check('Squeeze', 'squeeze', [{ shape: [2, 1, 3] }], (g, [x]) => g.squeeze(x, [1]));
  await check('Expand', 'expand', [{ shape: [1, 3] }], (g, [x]) => g.expand(x, [2, 3]));
  await check('Slice', 'slice', [{ shape: [2, 6] }], (g, [x]) => g.slice(x, [1], [END], [-1]));
  await check('Concat', 'concat', [{ shape: [2, 2] }, { shape: [2, 3] }], (g, [a, b]) => g.concat([g.neg(b), a], -1));
  await check('Gather', 'gather-embedding', [{ shape: [4, 3] }, { shape: [2, 3], dtype: 'i64', values: [0, 2, 2, 3, 0, 0] }],
    (g, [table, ids]) => g.gather(table, ids, 0));
  await check('GatherElements', 'gatherElements', [{ shape: [2, 5] }, { shape: [2, 2], dtype: 'i64', values: [4, 4, 0, 1] }],
    (g, [x, ids]) => g.op('GatherElements', [x, ids], { axis: 1 }));
  await check('ReshapeLike', 'reshapeLike', [{ shape: [2, 6] }, { shape: [3, 4], grad: false }], (g, [x, like]) => g.op('ReshapeLike', [x, like]));
  await check('ExpandLike', 'expandLike', [{ shape: [1, 4] }, { shape: [3, 4], grad: false }], (g, [x, like]) => g.op('ExpandLike', [x, like]));
});

test('symbolic dims: gradients keep the forward shapes (batch, seq)', async () => {
  const g = new GraphBuilder('sym');
  const x = g.input('x', 'f32', ['batch', 'seq', 4]);
  const w = g.input('w', 'f32', [6, 4]);
  const h = g.reshape(g.matMul(x, w, { transB: true }), [0, 0, 2, 3]);
  const loss = g.reduceSum(g.mul(h, h), [0, 1, 2, 3], false);
  const [dx, dw] = gradients(g, loss, [x, w]);
  assert.deepEqual(dx!.shape, ['batch', 'seq', 4]);
  assert.deepEqual(dw!.shape, [6, 4]);
});

test('every differentiable op has a finite-difference check', () => {
  const missing = DIFFERENTIABLE_OPS.filter((op) => !covered.has(op));
  assert.deepEqual(missing, [], `ops without a check: ${missing.join(', ')}`);
});
