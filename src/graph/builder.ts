import { type DType } from './dtypes.js';
import {
  byteLengthOf, formatShape, Graph, GraphError, InferError, Tensor,
  type Attrs, type Dim, type InitializerData, type Node, type Shape,
} from './ir.js';
import { checkArity, OPS } from './ops.js';

/** A tensor or a plain number (becomes a scalar constant of the other operand's dtype). */
export type TensorLike = Tensor | number;

/** Marks "to the end of the axis" in `slice`. */
export const END = Number.MAX_SAFE_INTEGER;

/**
 * Builds a `Graph` op by op. Shapes and dtypes are checked as each node is added; errors name the op, the node and
 * the input types.
 */
export class GraphBuilder {
  readonly graph: Graph;
  private scopes: string[] = [];
  private names = new Set<string>();
  private opCounts = new Map<string, number>();

  constructor(name = 'graph') {
    this.graph = new Graph(name);
  }

  // ---- sources and sinks ----
  input(name: string, dtype: DType, shape: Shape): Tensor {
    this.checkName(name);
    const t = new Tensor(this.graph, this.graph.newId(), dtype, [...shape], { kind: 'input', name });
    this.graph.inputs.push(t);
    return t;
  }

  /** A weight. `data` must hold exactly the tensor's bytes in `dtype` (or write them on demand). */
  initializer(name: string, dtype: DType, shape: readonly number[], data: InitializerData): Tensor {
    this.checkName(name);
    const expected = byteLengthOf(dtype, shape);
    if (expected !== data.byteLength) {
      throw new GraphError(`initializer '${name}' ${dtype}${formatShape(shape)} needs ${expected} bytes, got ${data.byteLength}`);
    }
    const t = new Tensor(this.graph, this.graph.newId(), dtype, [...shape], { kind: 'initializer', name, data });
    this.graph.initializers.push(t);
    return t;
  }

  /** A small literal; `shape` defaults to a scalar (one value) or a vector. */
  constant(values: number | readonly number[], dtype: DType = 'f32', shape?: readonly number[]): Tensor {
    const vals = typeof values === 'number' ? [values] : values;
    const s = shape ?? (typeof values === 'number' ? [] : [vals.length]);
    if (s.reduce((a, b) => a * b, 1) !== vals.length) throw new GraphError(`constant: ${vals.length} values do not fill shape ${formatShape(s)}`);
    return new Tensor(this.graph, this.graph.newId(), dtype, [...s], { kind: 'constant', values: [...vals] });
  }

  output(name: string, t: Tensor): void {
    this.own(t, 'output');
    if (this.graph.outputs.some((o) => o.name === name) || this.names.has(name)) throw new GraphError(`output name '${name}' is already used`);
    this.graph.outputs.push({ name, tensor: t });
  }

  /** Run `fn` with node names prefixed by `name/` (for readable errors and ONNX node names). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try { return fn(); } finally { this.scopes.pop(); }
  }

  // ---- elementwise ----
  add(a: TensorLike, b: TensorLike) { return this.binary('Add', a, b); }
  sub(a: TensorLike, b: TensorLike) { return this.binary('Sub', a, b); }
  mul(a: TensorLike, b: TensorLike) { return this.binary('Mul', a, b); }
  div(a: TensorLike, b: TensorLike) { return this.binary('Div', a, b); }
  pow(a: TensorLike, b: TensorLike) { return this.binary('Pow', a, b); }
  max(a: TensorLike, b: TensorLike) { return this.binary('Max', a, b); }
  min(a: TensorLike, b: TensorLike) { return this.binary('Min', a, b); }
  equal(a: TensorLike, b: TensorLike) { return this.binary('Equal', a, b); }
  less(a: TensorLike, b: TensorLike) { return this.binary('Less', a, b); }
  lessOrEqual(a: TensorLike, b: TensorLike) { return this.binary('LessOrEqual', a, b); }
  greater(a: TensorLike, b: TensorLike) { return this.binary('Greater', a, b); }
  greaterOrEqual(a: TensorLike, b: TensorLike) { return this.binary('GreaterOrEqual', a, b); }
  and(a: Tensor, b: Tensor) { return this.op('And', [a, b]); }
  or(a: Tensor, b: Tensor) { return this.op('Or', [a, b]); }
  not(x: Tensor) { return this.op('Not', [x]); }
  neg(x: Tensor) { return this.op('Neg', [x]); }
  abs(x: Tensor) { return this.op('Abs', [x]); }
  exp(x: Tensor) { return this.op('Exp', [x]); }
  log(x: Tensor) { return this.op('Log', [x]); }
  sqrt(x: Tensor) { return this.op('Sqrt', [x]); }
  reciprocal(x: Tensor) { return this.op('Reciprocal', [x]); }
  sigmoid(x: Tensor) { return this.op('Sigmoid', [x]); }
  tanh(x: Tensor) { return this.op('Tanh', [x]); }
  cos(x: Tensor) { return this.op('Cos', [x]); }
  sin(x: Tensor) { return this.op('Sin', [x]); }
  erf(x: Tensor) { return this.op('Erf', [x]); }
  identity(x: Tensor) { return this.op('Identity', [x]); }
  cast(x: Tensor, to: DType) { return x.dtype === to ? x : this.op('Cast', [x], { to }); }
  /** cond ? a : b; number branches take the other branch's dtype, or `dtype` when both are numbers. */
  where(cond: Tensor, a: TensorLike, b: TensorLike, dtype: DType = 'f32') {
    const ref = typeof a !== 'number' ? a : typeof b !== 'number' ? b : dtype;
    return this.op('Where', [cond, this.lift(a, ref), this.lift(b, ref)]);
  }

  // ---- reductions ----
  reduceSum(x: Tensor, axes: number[], keepdims = true) { return this.op('ReduceSum', [x], { axes, keepdims }); }
  reduceMean(x: Tensor, axes: number[], keepdims = true) { return this.op('ReduceMean', [x], { axes, keepdims }); }
  reduceMax(x: Tensor, axes: number[], keepdims = true) { return this.op('ReduceMax', [x], { axes, keepdims }); }
  softmax(x: Tensor, axis = -1) { return this.op('Softmax', [x], { axis }); }
  logSoftmax(x: Tensor, axis = -1) { return this.op('LogSoftmax', [x], { axis }); }
  cumSum(x: Tensor, axis: number, opts: { exclusive?: boolean; reverse?: boolean } = {}) {
    return this.op('CumSum', [x], { axis, exclusive: opts.exclusive ?? false, reverse: opts.reverse ?? false });
  }
  argMax(x: Tensor, axis = -1, keepdims = true) { return this.op('ArgMax', [x], { axis, keepdims }); }

  // ---- linear algebra ----
  /** a @ b, or a @ bᵀ (last two axes) with `transB`: HF Linear weights are [out, in], so x @ Wᵀ needs no transposed copy. */
  matMul(a: Tensor, b: Tensor, opts: { transB?: boolean } = {}) { return this.op('MatMul', [a, b], { transB: opts.transB ?? false }); }

  // ---- shapes ----
  /** ONNX semantics: 0 copies the input dim at that index, -1 is inferred. */
  reshape(x: Tensor, shape: number[]) { return this.op('Reshape', [x], { shape }); }
  transpose(x: Tensor, perm: number[]) { return this.op('Transpose', [x], { perm }); }
  unsqueeze(x: Tensor, axes: number[]) { return this.op('Unsqueeze', [x], { axes }); }
  squeeze(x: Tensor, axes: number[]) { return this.op('Squeeze', [x], { axes }); }
  concat(xs: Tensor[], axis: number) { return this.op('Concat', xs, { axis }); }
  /** Static slice; use `END` for "to the end". */
  slice(x: Tensor, starts: number[], ends: number[], axes: number[], steps?: number[]) {
    return this.op('Slice', [x], { starts, ends, axes, steps: steps ?? null });
  }
  gather(data: Tensor, indices: Tensor, axis = 0) { return this.op('Gather', [data, indices], { axis }); }
  /** Broadcast to a static shape (numpy rules, so 1s keep the input's dims). */
  expand(x: Tensor, shape: number[]) { return this.op('Expand', [x], { shape }); }
  shape(x: Tensor, start = 0, end = x.rank) { return this.op('Shape', [x], { start, end }); }
  /** [start, limit) by delta; `length` names (or states) the output's size for shape checking. */
  range(start: TensorLike, limit: TensorLike, delta: TensorLike, length: Dim, dtype: DType = 'i64') {
    return this.op('Range', [start, limit, delta].map((v) => this.lift(v, dtype)), { length });
  }

  // ---- core ----
  /** Add a node of any registered op; returns its first output. */
  op(op: string, inputs: Tensor[], attrs: Attrs = {}): Tensor {
    return this.opMulti(op, inputs, attrs)[0];
  }

  opMulti(op: string, inputs: Tensor[], attrs: Attrs = {}): Tensor[] {
    const count = (this.opCounts.get(op) ?? 0) + 1;
    this.opCounts.set(op, count);
    const name = [...this.scopes, `${op}_${count}`].join('/');
    for (const t of inputs) this.own(t, `${op} '${name}'`);
    let types;
    try {
      checkArity(op, inputs.length);
      types = OPS[op].infer(inputs, attrs);
    } catch (e) {
      if (!(e instanceof InferError)) throw e;
      throw new GraphError(`${op} '${name}' (inputs ${inputs.map(String).join(', ') || 'none'}): ${e.message}`);
    }
    const outputs: Tensor[] = [];
    const node: Node = { id: this.graph.newId(), op, name, inputs, attrs, outputs };
    types.forEach((t, index) => outputs.push(new Tensor(this.graph, this.graph.newId(), t.dtype, t.shape, { kind: 'node', node, index })));
    this.graph.nodes.push(node);
    return outputs;
  }

  private binary(op: string, a: TensorLike, b: TensorLike): Tensor {
    if (typeof a === 'number' && typeof b === 'number') throw new GraphError(`${op}: at least one operand must be a tensor`);
    const ref = (typeof a === 'number' ? b : a) as Tensor;
    return this.op(op, [this.lift(a, ref), this.lift(b, ref)]);
  }

  private lift(v: TensorLike, like: Tensor | DType): Tensor {
    if (typeof v !== 'number') return v;
    return this.constant(v, typeof like === 'string' ? like : like.dtype);
  }

  private own(t: Tensor, where: string): void {
    if (t.graph !== this.graph) throw new GraphError(`${where}: tensor ${t} belongs to graph '${t.graph.name}', not '${this.graph.name}'`);
  }

  private checkName(name: string): void {
    if (!name || this.names.has(name)) throw new GraphError(`name '${name}' is empty or already used by an input or initializer`);
    this.names.add(name);
  }
}
