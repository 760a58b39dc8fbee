import { DTYPE_SIZE, type DType } from './dtypes.js';

/** A dimension: a known size, or a symbolic name ('batch', 'seq', 'past+seq') resolved at run time. */
export type Dim = number | string;
export type Shape = readonly Dim[];

export class GraphError extends Error {
  override name = 'GraphError';
}

/** Attribute values are plain JSON so graphs can be inspected, hashed and transformed (e.g. by autodiff later). */
export type AttrValue = number | string | boolean | readonly number[] | readonly Dim[] | null;
export type Attrs = Readonly<Record<string, AttrValue>>;

/**
 * Bytes of an initializer in its graph dtype. A Uint8Array is used as is; a writer produces the bytes directly
 * into the serialized model (e.g. bf16 → f32 conversion), so large weights are copied exactly once.
 */
export type InitializerData = Uint8Array | { byteLength: number; write(dst: Uint8Array): void };

export type TensorSource =
  | { kind: 'input'; name: string }
  | { kind: 'initializer'; name: string; data: InitializerData }
  /** Small literal (scalars, index lists); numbers are converted to the tensor's dtype at lowering. */
  | { kind: 'constant'; values: readonly number[] }
  | { kind: 'node'; node: Node; index: number };

export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly source: TensorSource,
  ) {}
  get rank(): number { return this.shape.length; }
  toString(): string { return `${this.dtype}${formatShape(this.shape)}`; }
}

export interface Node {
  readonly id: number;
  readonly op: string;
  /** Scoped, unique name (e.g. 'layers.3/attn/MatMul_17'); used in errors and as the ONNX node name. */
  readonly name: string;
  readonly inputs: readonly Tensor[];
  readonly attrs: Attrs;
  readonly outputs: readonly Tensor[];
}

export interface GraphOutput { name: string; tensor: Tensor }

/** A symbolic dataflow graph: inputs, initializers, constants, nodes in topological (creation) order, outputs. */
export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Tensor[] = [];
  readonly initializers: Tensor[] = [];
  readonly outputs: GraphOutput[] = [];
  private nextId = 0;
  constructor(readonly name: string) {}

  newId(): number { return this.nextId++; }
}

export function formatShape(s: Shape): string {
  return `[${s.join(',')}]`;
}

export function numelOf(shape: Shape): number | null {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number') return null;
    n *= d;
  }
  return n;
}

export function byteLengthOf(dtype: DType, shape: Shape): number | null {
  const n = numelOf(shape);
  return n === null ? null : n * DTYPE_SIZE[dtype];
}

/** Thrown by shape/dtype inference; the builder prefixes the op and node name. */
export class InferError extends Error {}
export function fail(msg: string): never {
  throw new InferError(msg);
}

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) fail(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Two dims that must be equal; a symbol meeting a number takes the number (checked again by ORT at run time). */
export function unifyDim(a: Dim, b: Dim, what: string): Dim {
  if (a === b) return a;
  if (typeof a === 'number' && typeof b === 'number') fail(`${what}: ${a} != ${b}`);
  if (typeof a === 'number') return a;
  if (typeof b === 'number') return b;
  return fail(`${what}: symbolic dims '${a}' and '${b}' differ`);
}

/** Numpy-style broadcasting of any number of shapes. */
export function broadcastShapes(shapes: Shape[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const k = i - (rank - s.length);
      if (k < 0) continue;
      const e = s[k];
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (d !== e) {
        if (typeof d === 'number' && typeof e === 'number') {
          fail(`shapes ${shapes.map(formatShape).join(' and ')} do not broadcast (axis ${i}: ${d} vs ${e})`);
        }
        d = unifyDim(d, e, `shapes ${shapes.map(formatShape).join(' and ')} do not broadcast at axis ${i}`);
      }
    }
    out.push(d);
  }
  return out;
}

export function dimAdd(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  return `${a}+${b}`;
}

/** A product of dims as numeric factor × multiset of symbols, for reshape inference. */
interface SymProduct { num: number; syms: string[] }
function product(shape: Shape): SymProduct {
  let num = 1;
  const syms: string[] = [];
  for (const d of shape) {
    if (typeof d === 'number') num *= d;
    else if (/^[^+\-/()[\]:]+$/.test(d)) for (const f of d.split('*')) /^\d+$/.test(f) ? (num *= Number(f)) : syms.push(f); // '3*batch'
    else syms.push(d);
  }
  return { num, syms: syms.sort() };
}
const formatProduct = (p: SymProduct) => [...(p.num !== 1 || !p.syms.length ? [String(p.num)] : []), ...p.syms].join('*');

/** ONNX Reshape semantics: 0 copies the input dim at that index, -1 is inferred. */
export function reshapeShape(input: Shape, target: readonly number[]): Dim[] {
  const out: (Dim | null)[] = [];
  let inferAt = -1;
  target.forEach((t, i) => {
    if (!Number.isInteger(t) || t < -1) fail(`invalid target dim ${t}`);
    if (t === 0) {
      if (i >= input.length) fail(`target dim ${i} is 0 (copy) but the input has rank ${input.length}`);
      out.push(input[i]);
    } else if (t === -1) {
      if (inferAt >= 0) fail('more than one -1 in target shape');
      inferAt = i;
      out.push(null);
    } else out.push(t);
  });
  const have = product(input);
  const known = product(out.filter((d): d is Dim => d !== null));
  const counts = () => fail(`cannot reshape ${formatShape(input)} (${formatProduct(have)} elements) to [${target.join(',')}] (${formatProduct(known)}${inferAt >= 0 ? ' × inferred' : ''})`);
  const rest = { num: have.num / known.num, syms: [...have.syms] };
  for (const s of known.syms) {
    const k = rest.syms.indexOf(s);
    if (k < 0) counts();
    rest.syms.splice(k, 1);
  }
  if (!Number.isInteger(rest.num)) counts();
  if (inferAt < 0) {
    if (rest.num !== 1 || rest.syms.length) counts();
    return out as Dim[];
  }
  out[inferAt] = rest.syms.length ? formatProduct(rest) : rest.num;
  return out as Dim[];
}

/** Output length of an ONNX Slice on one axis (positive steps). Symbolic dims get the best expression we can prove. */
export function sliceDim(dim: Dim, start: number, end: number, step: number): Dim {
  if (!Number.isInteger(step) || step <= 0) fail(`only positive integer slice steps are supported, got ${step}`);
  const toEnd = end >= Number.MAX_SAFE_INTEGER;
  if (typeof dim === 'number') {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + dim : v, 0), dim);
    const s = clamp(start);
    const e = toEnd ? dim : clamp(end);
    return Math.max(0, Math.ceil((e - s) / step));
  }
  let len: Dim | null = null;
  if (start >= 0 && end >= 0 && !toEnd) len = end - start;
  else if (start < 0 && (toEnd || end < 0)) len = (toEnd ? 0 : end) - start;
  else if (start === 0 && toEnd) len = dim;
  if (typeof len === 'number') return Math.max(0, Math.ceil(len / step));
  return step === 1 && len !== null ? len : `${dim}[${start}:${toEnd ? '' : end}:${step}]`;
}
