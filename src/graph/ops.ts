import { isFloat, isNumeric, INT_DTYPES, type DType } from './dtypes.js';
import {
  broadcastShapes, dimAdd, fail, formatShape, normAxis, reshapeShape, sliceDim, unifyDim,
  type Attrs, type Dim, type Tensor,
} from './ir.js';

export interface TensorType { dtype: DType; shape: Dim[] }

/**
 * One entry per op: its arity and its shape/dtype rule. Every op is a plain node (inputs + JSON attrs), so a
 * reverse-mode autodiff pass can later add a gradient rule per entry without touching the builder.
 */
export interface OpDef {
  /** Number of tensor inputs (a range for ops with variadic inputs). */
  arity: number | [min: number, max: number];
  infer(inputs: readonly Tensor[], attrs: Attrs): TensorType[];
}

const sameDtype = (ts: readonly Tensor[], what = 'inputs'): DType => {
  const d = ts[0].dtype;
  for (const t of ts) if (t.dtype !== d) fail(`${what} must share a dtype, got ${ts.map(String).join(', ')}`);
  return d;
};
const need = (ok: boolean, msg: string) => { if (!ok) fail(msg); };
const ints = (attrs: Attrs, key: string): number[] => {
  const v = attrs[key];
  if (!Array.isArray(v) || !v.every(Number.isInteger)) fail(`attribute '${key}' must be an integer list, got ${JSON.stringify(v)}`);
  return v as number[];
};
const int = (attrs: Attrs, key: string, fallback?: number): number => {
  const v = attrs[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(`attribute '${key}' must be an integer, got ${JSON.stringify(v)}`);
  return v;
};

const arith = (kind: 'any' | 'float' | 'int'): OpDef => ({
  arity: 2,
  infer: (xs) => {
    const dtype = sameDtype(xs);
    need(isNumeric(dtype), `needs numeric inputs, got ${dtype}`);
    if (kind === 'float') need(isFloat(dtype), `needs float inputs, got ${dtype}`);
    return [{ dtype, shape: broadcastShapes(xs.map((x) => x.shape)) }];
  },
});
const compare: OpDef = {
  arity: 2,
  infer: (xs) => { sameDtype(xs); return [{ dtype: 'bool', shape: broadcastShapes(xs.map((x) => x.shape)) }]; },
};
const logical = (arity: number): OpDef => ({
  arity,
  infer: (xs) => {
    need(xs.every((x) => x.dtype === 'bool'), `needs bool inputs, got ${xs.map(String).join(', ')}`);
    return [{ dtype: 'bool', shape: broadcastShapes(xs.map((x) => x.shape)) }];
  },
});
const unary = (kind: 'float' | 'numeric'): OpDef => ({
  arity: 1,
  infer: ([x]) => {
    need(kind === 'float' ? isFloat(x.dtype) : isNumeric(x.dtype), `needs a ${kind} input, got ${x.dtype}`);
    return [{ dtype: x.dtype, shape: [...x.shape] }];
  },
});
const reduce = (kind: 'numeric' | 'float'): OpDef => ({
  arity: 1,
  infer: ([x], attrs) => {
    need(kind === 'float' ? isFloat(x.dtype) : isNumeric(x.dtype), `needs a ${kind} input, got ${x.dtype}`);
    const axes = new Set(ints(attrs, 'axes').map((a) => normAxis(a, x.rank)));
    const keep = attrs.keepdims !== false;
    const shape: Dim[] = [];
    x.shape.forEach((d, i) => { if (!axes.has(i)) shape.push(d); else if (keep) shape.push(1); });
    return [{ dtype: x.dtype, shape }];
  },
});
const softmaxLike: OpDef = {
  arity: 1,
  infer: ([x], attrs) => {
    need(isFloat(x.dtype), `needs a float input, got ${x.dtype}`);
    normAxis(int(attrs, 'axis', -1), x.rank);
    return [{ dtype: x.dtype, shape: [...x.shape] }];
  },
};

/** Matrix product with numpy batch broadcasting; `transB` multiplies by the transpose of b's last two axes. */
const matMul: OpDef = {
  arity: 2,
  infer: ([a, b], attrs) => {
    const dtype = sameDtype([a, b]);
    need(isNumeric(dtype), `needs numeric inputs, got ${dtype}`);
    need(a.rank >= 2 && b.rank >= 2, `needs inputs of rank >= 2, got ${a} and ${b}`);
    const transB = attrs.transB === true;
    const [m, k] = attrs.transA === true ? [a.shape[a.rank - 1], a.shape[a.rank - 2]] : a.shape.slice(-2);
    const [bk, n] = transB ? [b.shape[b.rank - 1], b.shape[b.rank - 2]] : b.shape.slice(-2);
    unifyDim(k, bk, `inner dimensions differ: a ${formatShape(a.shape)} · b${transB ? 'ᵀ' : ''} ${formatShape(b.shape)}`);
    const batch = broadcastShapes([a.shape.slice(0, -2), b.shape.slice(0, -2)]);
    return [{ dtype, shape: [...batch, m, n] }];
  },
};

export const OPS: Record<string, OpDef> = {
  Add: arith('any'), Sub: arith('any'), Mul: arith('any'), Div: arith('any'), Pow: arith('float'),
  Max: arith('any'), Min: arith('any'),
  Equal: compare, Less: compare, LessOrEqual: compare, Greater: compare, GreaterOrEqual: compare,
  And: logical(2), Or: logical(2), Not: logical(1),
  Neg: unary('numeric'), Abs: unary('numeric'), Exp: unary('float'), Log: unary('float'), Sqrt: unary('float'),
  Reciprocal: unary('float'), Sigmoid: unary('float'), Tanh: unary('float'), Cos: unary('float'), Sin: unary('float'),
  Erf: unary('float'),
  Identity: { arity: 1, infer: ([x]) => [{ dtype: x.dtype, shape: [...x.shape] }] },
  Cast: {
    arity: 1,
    infer: ([x], attrs) => [{ dtype: attrs.to as DType, shape: [...x.shape] }],
  },
  Where: {
    arity: 3,
    infer: ([c, a, b]) => {
      need(c.dtype === 'bool', `condition must be bool, got ${c}`);
      return [{ dtype: sameDtype([a, b], 'branches'), shape: broadcastShapes([c.shape, a.shape, b.shape]) }];
    },
  },
  ReduceSum: reduce('numeric'), ReduceMean: reduce('float'), ReduceMax: reduce('numeric'), ReduceSumSquare: reduce('float'),
  Softmax: softmaxLike, LogSoftmax: softmaxLike,
  CumSum: {
    arity: 1,
    infer: ([x], attrs) => {
      need(isNumeric(x.dtype), `needs a numeric input, got ${x.dtype}`);
      normAxis(int(attrs, 'axis'), x.rank);
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  ArgMax: {
    arity: 1,
    infer: ([x], attrs) => {
      const axis = normAxis(int(attrs, 'axis', -1), x.rank);
      const keep = attrs.keepdims !== false;
      const shape = x.shape.flatMap((d, i) => (i !== axis ? [d] : keep ? [1] : []));
      return [{ dtype: 'i64', shape }];
    },
  },
  MatMul: matMul,
  Reshape: { arity: 1, infer: ([x], attrs) => [{ dtype: x.dtype, shape: reshapeShape(x.shape, ints(attrs, 'shape')) }] },
  Transpose: {
    arity: 1,
    infer: ([x], attrs) => {
      const perm = ints(attrs, 'perm');
      need(perm.length === x.rank && [...perm].sort((a, b) => a - b).every((p, i) => p === i),
        `perm [${perm}] is not a permutation of rank ${x.rank}`);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
    },
  },
  Unsqueeze: {
    arity: 1,
    infer: ([x], attrs) => {
      const outRank = x.rank + ints(attrs, 'axes').length;
      const axes = new Set(ints(attrs, 'axes').map((a) => normAxis(a, outRank)));
      need(axes.size === ints(attrs, 'axes').length, 'repeated axes');
      const shape: Dim[] = [];
      let k = 0;
      for (let i = 0; i < outRank; i++) shape.push(axes.has(i) ? 1 : x.shape[k++]);
      return [{ dtype: x.dtype, shape }];
    },
  },
  Squeeze: {
    arity: 1,
    infer: ([x], attrs) => {
      const axes = new Set(ints(attrs, 'axes').map((a) => normAxis(a, x.rank)));
      for (const a of axes) need(x.shape[a] === 1, `cannot squeeze axis ${a} of size ${x.shape[a]}`);
      return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.has(i)) }];
    },
  },
  /**
   * `pieces` pieces of x along `axis` with run-time sizes `split` (i64 [pieces], zeros allowed), sized `${dim}${i}`,
   * or named by `dims` (one name each) where the caller knows them.
   */
  Split: {
    arity: 2,
    infer: ([x, sizes], attrs) => {
      need(sizes.dtype === 'i64' && sizes.rank === 1, `split sizes must be i64 [n], got ${sizes}`);
      const axis = normAxis(int(attrs, 'axis'), x.rank), pieces = int(attrs, 'pieces');
      const dims = attrs.dims as Dim[] | undefined;
      need(pieces > 0 && (dims ? dims.length === pieces : typeof attrs.dim === 'string'), 'needs pieces > 0 and a dim name (or one per piece)');
      return Array.from({ length: pieces }, (_, p) => ({ dtype: x.dtype, shape: x.shape.map((s, i) => (i === axis ? dims?.[p] ?? `${attrs.dim}${p}` : s)) }));
    },
  },
  Concat: {
    arity: [1, Infinity],
    infer: (xs, attrs) => {
      const dtype = sameDtype(xs);
      const rank = xs[0].rank;
      need(xs.every((x) => x.rank === rank), `inputs must share a rank, got ${xs.map(String).join(', ')}`);
      const axis = normAxis(int(attrs, 'axis'), rank);
      const shape = [...xs[0].shape];
      for (const x of xs.slice(1)) {
        for (let i = 0; i < rank; i++) {
          shape[i] = i === axis ? dimAdd(shape[i], x.shape[i])
            : unifyDim(shape[i], x.shape[i], `inputs ${xs.map(String).join(', ')} differ off the concat axis ${axis}`);
        }
      }
      return [{ dtype, shape }];
    },
  },
  Slice: {
    arity: 1,
    infer: ([x], attrs) => {
      const starts = ints(attrs, 'starts'), ends = ints(attrs, 'ends'), axes = ints(attrs, 'axes');
      const steps = attrs.steps ? ints(attrs, 'steps') : axes.map(() => 1);
      need(starts.length === axes.length && ends.length === axes.length && steps.length === axes.length,
        'starts/ends/axes/steps lengths differ');
      const shape = [...x.shape];
      axes.forEach((a, i) => { const ax = normAxis(a, x.rank); shape[ax] = sliceDim(x.shape[ax], starts[i], ends[i], steps[i]); });
      return [{ dtype: x.dtype, shape }];
    },
  },
  Gather: {
    arity: 2,
    infer: ([data, idx], attrs) => {
      need(idx.dtype === 'i64' || idx.dtype === 'i32', `indices must be i64 or i32, got ${idx}`);
      const axis = normAxis(int(attrs, 'axis', 0), data.rank);
      return [{ dtype: data.dtype, shape: [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)] }];
    },
  },
  Expand: { arity: 1, infer: ([x], attrs) => [{ dtype: x.dtype, shape: broadcastShapes([x.shape, ints(attrs, 'shape')]) }] },
  Shape: {
    arity: 1,
    infer: ([x], attrs) => {
      const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + x.rank : v, 0), x.rank);
      const start = clamp(int(attrs, 'start', 0));
      const end = clamp(int(attrs, 'end', x.rank));
      return [{ dtype: 'i64', shape: [Math.max(0, end - start)] }];
    },
  },
  Range: {
    arity: 3,
    infer: (xs, attrs) => {
      const dtype = sameDtype(xs);
      need(xs.every((x) => x.rank === 0), `start/limit/delta must be scalars, got ${xs.map(String).join(', ')}`);
      need(dtype === 'f32' || INT_DTYPES.has(dtype), `unsupported dtype ${dtype}`);
      const length = attrs.length;
      need(typeof length === 'string' || typeof length === 'number', "attribute 'length' (the symbolic output length) is required");
      return [{ dtype, shape: [length as Dim] }];
    },
  },
  ...TRAINING_OPS(),
};

export function checkArity(op: string, n: number): void {
  const def = OPS[op];
  if (!def) fail(`unknown op '${op}'`);
  const [lo, hi] = typeof def.arity === 'number' ? [def.arity, def.arity] : def.arity;
  if (n < lo || n > hi) fail(`expects ${lo === hi ? lo : `${lo}..${hi}`} inputs, got ${n}`);
}

/** Ops that autodiff (src/graph/autodiff.ts) and the losses emit: index scatter/gather, padding, shape-following helpers. */
function TRAINING_OPS(): Record<string, OpDef> {
  const same = (x: Tensor): TensorType[] => [{ dtype: x.dtype, shape: [...x.shape] }];
  return {
    /** ONNX GatherElements: out[i][j] = data[i][idx[i][j]] along `axis`; out has idx's shape. */
    GatherElements: {
      arity: 2,
      infer: ([data, idx], attrs) => {
        need(idx.dtype === 'i64' || idx.dtype === 'i32', `indices must be i64 or i32, got ${idx}`);
        need(idx.rank === data.rank, `indices rank ${idx.rank} != data rank ${data.rank}`);
        normAxis(int(attrs, 'axis', 0), data.rank);
        return [{ dtype: data.dtype, shape: [...idx.shape] }];
      },
    },
    /** ONNX ScatterElements (attr reduction: 'none' | 'add'); out has data's shape. */
    ScatterElements: { arity: 3, infer: ([data]) => same(data) },
    /** ONNX ScatterND (attr reduction: 'none' | 'add'); out has data's shape. */
    ScatterND: { arity: 3, infer: ([data]) => same(data) },
    /** Zero padding with static `pads` = [begin_0.., end_0..] (ONNX order). */
    Pad: {
      arity: 1,
      infer: ([x], attrs) => {
        const pads = ints(attrs, 'pads');
        need(pads.length === 2 * x.rank, `pads needs ${2 * x.rank} values, got ${pads.length}`);
        return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (pads[i] === 0 && pads[i + x.rank] === 0 ? d : dimAdd(dimAdd(d, pads[i]), pads[i + x.rank]))) }];
      },
    },
    /** Zeros of `like`'s run-time shape (Shape + ConstantOfShape). */
    ZerosLike: { arity: 1, infer: ([like]) => same(like) },
    /** x reshaped to the run-time shape `shape` (i64 [rank]), whose dims the caller names in `dims`. */
    ReshapeTo: {
      arity: 2,
      infer: ([x, shape], attrs) => {
        const dims = attrs.dims as Dim[];
        need(shape.dtype === 'i64' && shape.rank === 1 && Array.isArray(dims) && shape.shape[0] === dims.length, `shape must be i64 [${dims?.length}], got ${shape}`);
        return [{ dtype: x.dtype, shape: [...dims] }];
      },
    },
    /** x reshaped to `like`'s run-time shape. */
    ReshapeLike: { arity: 2, infer: ([x, like]) => [{ dtype: x.dtype, shape: [...like.shape] }] },
    /** x broadcast to `like`'s run-time shape. */
    ExpandLike: {
      arity: 2,
      infer: ([x, like]) => [{ dtype: x.dtype, shape: broadcastShapes([x.shape, like.shape]) }],
    },
    IsNaN: { arity: 1, infer: ([x]) => [{ dtype: 'bool', shape: [...x.shape] }] },
    IsInf: { arity: 1, infer: ([x]) => [{ dtype: 'bool', shape: [...x.shape] }] },
  };
}
