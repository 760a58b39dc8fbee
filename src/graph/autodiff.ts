/**
 * Reverse-mode automatic differentiation by graph transformation: `gradients` appends to the same graph the nodes
 * that compute d(seed · outputs)/d(wrt), one rule per op, built from plain ONNX ops (ORT's CPU build has no
 * gradient kernels). Only nodes on a path from `wrt` to the outputs are differentiated. Every gradient has exactly
 * the (symbolic) shape of its tensor; broadcasting is undone by summing over the broadcast axes.
 */
import { isFloat } from './dtypes.js';
import { GraphError, numelOf, type Dim, type Node, type Tensor } from './ir.js';
import { END, type GraphBuilder } from './builder.js';

type Rule = (g: GraphBuilder, node: Node, dy: Tensor, needs: boolean[]) => (Tensor | null)[];

/** Sum `dy` over the axes broadcasting added, so the result has `shape` (rank and broadcast-1 axes restored). */
export function reduceToShape(g: GraphBuilder, dy: Tensor, shape: readonly Dim[]): Tensor {
  const lead = dy.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < dy.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && dy.shape[i] !== 1) axes.push(i);
  }
  if (!axes.length) return dy;
  let r = g.reduceSum(dy, axes, true);
  if (lead) r = g.squeeze(r, [...Array(lead).keys()]);
  return r;
}

/** Inverse of a Reshape: static target when the input's shape allows it, else the run-time shape of the input. */
function reshapeBack(g: GraphBuilder, dy: Tensor, x: Tensor): Tensor {
  const target: number[] = [];
  let inferred = 0;
  x.shape.forEach((d, i) => {
    if (typeof d === 'number') target.push(d);
    else if (dy.shape[i] === d) target.push(0);
    else { target.push(-1); inferred++; }
  });
  if (inferred <= 1) {
    try {
      const r = g.reshape(dy, target);
      if (r.shape.every((d, i) => d === x.shape[i])) return r;
    } catch { /* fall through to the run-time shape */ }
  }
  return g.op('ReshapeLike', [dy, x]);
}

const staticDim = (d: Dim, what: string): number => {
  if (typeof d !== 'number') throw new GraphError(`autodiff: ${what} needs a static size, got '${d}'`);
  return d;
};

/** x · y summed over its broadcast to the shape of `like`. */
const unbroadcast = (g: GraphBuilder, t: Tensor, like: Tensor) => reduceToShape(g, t, like.shape);

const RULES: Record<string, Rule> = {
  Identity: (_g, _n, dy) => [dy],
  Add: (g, { inputs: [a, b] }, dy, n) => [n[0] ? unbroadcast(g, dy, a) : null, n[1] ? unbroadcast(g, dy, b) : null],
  Sub: (g, { inputs: [a, b] }, dy, n) => [n[0] ? unbroadcast(g, dy, a) : null, n[1] ? unbroadcast(g, g.neg(dy), b) : null],
  Mul: (g, { inputs: [a, b] }, dy, n) => [n[0] ? unbroadcast(g, g.mul(dy, b), a) : null, n[1] ? unbroadcast(g, g.mul(dy, a), b) : null],
  Div: (g, { inputs: [a, b], outputs: [y] }, dy, n) => {
    const da = n[0] || n[1] ? g.div(dy, b) : null;
    return [n[0] ? unbroadcast(g, da!, a) : null, n[1] ? unbroadcast(g, g.neg(g.mul(da!, y)), b) : null];
  },
  Pow: (g, { inputs: [a, b], outputs: [y] }, dy, n) => [
    n[0] ? unbroadcast(g, g.mul(dy, g.mul(b, g.pow(a, g.sub(b, 1)))), a) : null,
    n[1] ? unbroadcast(g, g.mul(dy, g.mul(y, g.log(a))), b) : null,
  ],
  // Ties go to the first input (as torch.maximum splits them evenly; ties are measure-zero for trained weights).
  Max: (g, { inputs: [a, b] }, dy, n) => {
    const pickA = g.greaterOrEqual(a, b);
    return [n[0] ? unbroadcast(g, g.where(pickA, dy, 0), a) : null, n[1] ? unbroadcast(g, g.where(pickA, 0, dy), b) : null];
  },
  Min: (g, { inputs: [a, b] }, dy, n) => {
    const pickA = g.lessOrEqual(a, b);
    return [n[0] ? unbroadcast(g, g.where(pickA, dy, 0), a) : null, n[1] ? unbroadcast(g, g.where(pickA, 0, dy), b) : null];
  },
  Neg: (g, _n, dy) => [g.neg(dy)],
  Abs: (g, { inputs: [x] }, dy) => [g.where(g.less(x, 0), g.neg(dy), dy)],
  Exp: (g, { outputs: [y] }, dy) => [g.mul(dy, y)],
  Log: (g, { inputs: [x] }, dy) => [g.div(dy, x)],
  Sqrt: (g, { outputs: [y] }, dy) => [g.div(g.mul(dy, 0.5), y)],
  Reciprocal: (g, { outputs: [y] }, dy) => [g.neg(g.mul(dy, g.mul(y, y)))],
  Sigmoid: (g, { outputs: [y] }, dy) => [g.mul(dy, g.mul(y, g.sub(1, y)))],
  Tanh: (g, { outputs: [y] }, dy) => [g.mul(dy, g.sub(1, g.mul(y, y)))],
  Cos: (g, { inputs: [x] }, dy) => [g.neg(g.mul(dy, g.sin(x)))],
  Sin: (g, { inputs: [x] }, dy) => [g.mul(dy, g.cos(x))],
  Erf: (g, { inputs: [x] }, dy) => [g.mul(dy, g.mul(g.exp(g.neg(g.mul(x, x))), 2 / Math.sqrt(Math.PI)))],
  Cast: (g, { inputs: [x] }, dy) => [isFloat(x.dtype) ? g.cast(dy, x.dtype) : null],
  Where: (g, { inputs: [c, a, b] }, dy, n) => [
    null,
    n[1] ? unbroadcast(g, g.where(c, dy, 0), a) : null,
    n[2] ? unbroadcast(g, g.where(c, 0, dy), b) : null,
  ],
  ReduceSum: (g, { inputs: [x], attrs }, dy) => [g.op('ExpandLike', [keepDims(g, dy, x, attrs), x])],
  ReduceMean: (g, { inputs: [x], attrs }, dy) => {
    const axes = (attrs.axes as number[]).map((a) => (a < 0 ? a + x.rank : a));
    const count = axes.reduce((n, a) => n * staticDim(x.shape[a], `ReduceMean over axis ${a}`), 1);
    return [g.op('ExpandLike', [g.mul(keepDims(g, dy, x, attrs), 1 / count), x])];
  },
  Softmax: (g, { outputs: [y], attrs }, dy) => {
    const axis = (attrs.axis as number | undefined) ?? -1;
    return [g.mul(y, g.sub(dy, g.reduceSum(g.mul(dy, y), [axis])))];
  },
  LogSoftmax: (g, { outputs: [y], attrs }, dy) => {
    const axis = (attrs.axis as number | undefined) ?? -1;
    return [g.sub(dy, g.mul(g.exp(y), g.reduceSum(dy, [axis])))];
  },
  MatMul: (g, node, dy, n) => matMulGrad(g, node, dy, n),
  Reshape: (g, { inputs: [x] }, dy) => [reshapeBack(g, dy, x)],
  ReshapeLike: (g, { inputs: [x] }, dy) => [reshapeBack(g, dy, x), null],
  Transpose: (g, { attrs }, dy) => {
    const perm = attrs.perm as number[];
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [g.transpose(dy, inv)];
  },
  Unsqueeze: (g, { inputs: [x] }, dy) => [reshapeBack(g, dy, x)],
  Squeeze: (g, { inputs: [x] }, dy) => [reshapeBack(g, dy, x)],
  Expand: (g, { inputs: [x] }, dy) => [unbroadcast(g, dy, x)],
  ExpandLike: (g, { inputs: [x] }, dy) => [unbroadcast(g, dy, x), null],
  Slice: (g, { inputs: [x], attrs }, dy) => {
    const pads = new Array(2 * x.rank).fill(0);
    const axes = attrs.axes as number[], starts = attrs.starts as number[], steps = (attrs.steps as number[] | null) ?? axes.map(() => 1);
    axes.forEach((a, i) => {
      const ax = a < 0 ? a + x.rank : a;
      if (steps[i] !== 1) throw new GraphError('autodiff: Slice with a step other than 1');
      const size = staticDim(x.shape[ax], 'Slice gradient (padding)');
      const begin = Math.min(Math.max(starts[i] < 0 ? starts[i] + size : starts[i], 0), size);
      const len = staticDim(dy.shape[ax], 'Slice gradient (padding)');
      pads[ax] = begin;
      pads[ax + x.rank] = size - begin - len;
    });
    return [g.op('Pad', [dy], { pads })];
  },
  // Pieces are sliced from the front while the sizes before them are static, else from the back (one symbolic piece).
  Concat: (g, { inputs, attrs }, dy, n) => {
    const axis = (attrs.axis as number) < 0 ? (attrs.axis as number) + dy.rank : (attrs.axis as number);
    const sizes = inputs.map((x) => x.shape[axis]);
    const sumStatic = (ds: Dim[]) => (ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((a, b) => a + b, 0) : null);
    return inputs.map((_, i) => {
      if (!n[i]) return null;
      const before = sumStatic(sizes.slice(0, i)), after = sumStatic(sizes.slice(i + 1)), len = sizes[i];
      if (before !== null && typeof len === 'number') return g.slice(dy, [before], [before + len], [axis]);
      if (before !== null && after !== null) return g.slice(dy, [before], [after ? -after : END], [axis]);
      if (after !== null && typeof len === 'number') return g.slice(dy, [-(after + len)], [after ? -after : END], [axis]);
      throw new GraphError('autodiff: Concat gradient needs static sizes on one side of each symbolic piece');
    });
  },
  Gather: (g, { inputs: [data, idx], attrs }, dy, n) => {
    if (!n[0]) return [null, null];
    if (((attrs.axis as number) ?? 0) !== 0) throw new GraphError('autodiff: Gather is differentiable only along axis 0');
    // Embedding backward: scatter-add rows of dy into zeros of the table's shape.
    const rowShape = data.shape.slice(1).map((d) => staticDim(d, 'Gather gradient'));
    const rows = g.reshape(dy, [-1, ...rowShape]);
    const indices = g.reshape(g.cast(idx, 'i64'), [-1, 1]);
    return [g.op('ScatterND', [g.op('ZerosLike', [data]), indices, rows], { reduction: 'add' }), null];
  },
  GatherElements: (g, { inputs: [data, idx], attrs }, dy, n) => [
    n[0] ? g.op('ScatterElements', [g.op('ZerosLike', [data]), idx, dy], { axis: attrs.axis ?? 0, reduction: 'add' }) : null,
    null,
  ],
};

/** dy of a reduction with its reduced axes restored as size 1 (so it broadcasts back over the input). */
function keepDims(g: GraphBuilder, dy: Tensor, x: Tensor, attrs: Node['attrs']): Tensor {
  if (attrs.keepdims !== false) return dy;
  const axes = (attrs.axes as number[]).map((a) => (a < 0 ? a + x.rank : a)).sort((a, b) => a - b);
  return g.unsqueeze(dy, axes);
}

/**
 * y = op(a) · op(b) with numpy batch broadcasting. da = dy · op(b)ᵀ, db = op(a)ᵀ · dy (transposes folded into
 * FusedMatMul's transA/transB). A rank-2 weight under rank-3+ activations is the Linear case: the batch axes are
 * flattened so db is one GEMM instead of a batched product followed by a sum.
 */
function matMulGrad(g: GraphBuilder, { inputs: [a, b], attrs }: Node, dy: Tensor, n: boolean[]): (Tensor | null)[] {
  if (attrs.transA) throw new GraphError('autodiff: MatMul with transA');
  const transB = attrs.transB === true;
  const mm = (x: Tensor, y: Tensor, transA: boolean, tB: boolean) => g.op('MatMul', [x, y], { transA, transB: tB });
  let da: Tensor | null = null, db: Tensor | null = null;
  if (n[0]) da = unbroadcast(g, mm(dy, b, false, !transB), a);
  if (n[1]) {
    if (b.rank === 2 && a.rank > 2) {
      const k = staticDim(a.shape[a.rank - 1], 'MatMul gradient'), m = staticDim(dy.shape[dy.rank - 1], 'MatMul gradient');
      // aᵀ is transposed explicitly (it is small: tokens × in) and the product computed as [in, out]: MLAS is ~1.5×
      // faster on that than with transA on the large [tokens, vocab] gradient (bench/train.ts, LM head).
      const a2t = g.transpose(g.reshape(a, [-1, k]), [1, 0]), dy2 = g.reshape(dy, [-1, m]);
      const prod = g.matMul(a2t, dy2); // [k, m] = aᵀ · dy
      db = transB ? g.transpose(prod, [1, 0]) : prod;
    } else {
      db = unbroadcast(g, transB ? mm(dy, a, true, false) : mm(a, dy, true, false), b);
    }
  }
  return [da, db];
}

export interface GradientSeed {
  /** A tensor of the forward graph. */
  tensor: Tensor;
  /** d(loss)/d(tensor); default 1 (only for scalars). */
  grad?: Tensor;
}

/** Ops `gradients` can differentiate (inputs of other ops are treated as constants). */
export const DIFFERENTIABLE_OPS: readonly string[] = Object.keys(RULES);

/**
 * Append the backward pass of `seeds` to `g` and return d(Σ seeds)/d(w) for each w in `wrt` (null when no seed
 * depends on w). Integer and boolean tensors never carry gradients.
 */
export function gradients(g: GraphBuilder, seeds: GradientSeed[] | Tensor, wrt: readonly Tensor[]): (Tensor | null)[] {
  const seedList = Array.isArray(seeds) ? seeds : [{ tensor: seeds }];
  const nodes = g.graph.nodes.slice();
  // Forward: which tensors depend on wrt.
  const active = new Set<Tensor>(wrt);
  for (const node of nodes) {
    if (node.inputs.some((t) => active.has(t))) for (const t of node.outputs) if (isFloat(t.dtype)) active.add(t);
  }
  // Backward reachability: which active tensors feed a seed.
  const useful = new Set<Tensor>(seedList.map((s) => s.tensor).filter((t) => active.has(t)));
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i];
    if (node.outputs.some((t) => useful.has(t))) for (const t of node.inputs) if (active.has(t)) useful.add(t);
  }

  const wrtSet = new Set(wrt);
  const grads = new Map<Tensor, Tensor>();
  const accumulate = (t: Tensor, d: Tensor) => {
    const prev = grads.get(t);
    grads.set(t, prev ? g.add(prev, d) : d);
  };
  g.scope('grad', () => {
    for (const { tensor, grad } of seedList) {
      if (!useful.has(tensor)) continue;
      if (!grad && numelOf(tensor.shape) !== 1) throw new GraphError(`autodiff: seed ${tensor} is not a scalar; pass its gradient`);
      accumulate(tensor, grad ?? g.op('ExpandLike', [g.constant(1, tensor.dtype), tensor]));
    }
    for (let i = nodes.length - 1; i >= 0; i--) {
      const node = nodes[i];
      const needs = node.inputs.map((t) => useful.has(t));
      if (!needs.some(Boolean)) continue;
      if (node.outputs.length !== 1) throw new GraphError(`autodiff: ${node.op} '${node.name}' has ${node.outputs.length} outputs`);
      const dy = grads.get(node.outputs[0]);
      if (!dy) continue;
      const rule = RULES[node.op];
      if (!rule) throw new GraphError(`autodiff: no gradient rule for ${node.op} ('${node.name}'); differentiable ops: ${DIFFERENTIABLE_OPS.join(', ')}`);
      const dxs = g.scope(node.name.replace(/\//g, '.'), () => rule(g, node, dy, needs));
      node.inputs.forEach((x, k) => {
        const dx = dxs[k];
        if (!needs[k] || !dx) return;
        if (dx.rank !== x.rank) throw new GraphError(`autodiff internal: ${node.op} '${node.name}' gradient ${dx} for input ${x}`);
        // Same run-time shape under another symbolic name (e.g. a slice of 'k+1'): rename by a copy-free Reshape.
        accumulate(x, dx.shape.every((d, j) => d === x.shape[j]) ? dx : g.op('ReshapeLike', [dx, x]));
      });
      if (!wrtSet.has(node.outputs[0])) grads.delete(node.outputs[0]); // free the map; the node is done
    }
  });
  return wrt.map((w) => grads.get(w) ?? null);
}
