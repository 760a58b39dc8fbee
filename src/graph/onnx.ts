/**
 * Lowering of a `Graph` to an ONNX ModelProto (https://github.com/onnx/onnx/blob/main/docs/IR.md) using
 * `onnx-proto`'s protobufjs classes. Weights are not put in the protobufjs message: `toOnnxBytes` frames them as
 * `graph.initializer` records itself, writing each weight's bytes once, straight into the final buffer.
 */
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import onnxProto from 'onnx-proto';
import { OP_DOMAINS } from './contrib.js';
import { floatToBf16, floatToHalf, type DType } from './dtypes.js';
import { GraphError, type AttrValue, type Dim, type Graph, type Node, type Shape, type Tensor } from './ir.js';

const { onnx } = onnxProto;
type IAttr = onnxProto.onnx.IAttributeProto;
type INode = onnxProto.onnx.INodeProto;
type ITensor = onnxProto.onnx.ITensorProto;

export interface LowerOptions {
  /** Default opset of the ai.onnx domain (axes are inputs for all Reduce ops from 18). */
  opset?: number;
  /** Use com.microsoft contrib ops that ORT implements (FusedMatMul for transB). false = standard ONNX only. */
  microsoftOps?: boolean;
  producerName?: string;
  docString?: string;
}

const DT = onnx.TensorProto.DataType;
export const ONNX_DTYPE: Record<DType, number> = {
  f32: DT.FLOAT, f16: DT.FLOAT16, bf16: DT.BFLOAT16, f64: DT.DOUBLE, i64: DT.INT64, i32: DT.INT32, i8: DT.INT8, u8: DT.UINT8, bool: DT.BOOL,
};
const AT = onnx.AttributeProto.AttributeType;

function attr(name: string, v: number | number[] | string, kind: 'int' | 'float' = 'int'): IAttr {
  if (typeof v === 'string') return { name, type: AT.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
  return kind === 'float' ? { name, type: AT.FLOAT, f: v } : { name, type: AT.INT, i: v };
}

/** Little-endian bytes of a literal in `dtype`. */
export function literalBytes(dtype: DType, values: readonly number[]): Uint8Array {
  switch (dtype) {
    case 'f32': return new Uint8Array(Float32Array.from(values).buffer);
    case 'f64': return new Uint8Array(Float64Array.from(values).buffer);
    case 'f16': return new Uint8Array(Uint16Array.from(values, floatToHalf).buffer);
    case 'bf16': return new Uint8Array(Uint16Array.from(values, floatToBf16).buffer);
    case 'i64': return new Uint8Array(BigInt64Array.from(values, (v) => BigInt(Math.trunc(v))).buffer);
    case 'i32': return new Uint8Array(Int32Array.from(values).buffer);
    case 'i8': return new Uint8Array(Int8Array.from(values).buffer);
    case 'u8': return Uint8Array.from(values);
    case 'bool': return Uint8Array.from(values, (v) => (v ? 1 : 0));
  }
}

function valueInfo(name: string, dtype: DType, shape: Shape): onnxProto.onnx.IValueInfoProto {
  const dim = shape.map((d: Dim) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d }));
  return { name, type: { tensorType: { elemType: ONNX_DTYPE[dtype], shape: { dim } } } };
}

interface Lowered {
  model: onnxProto.onnx.IModelProto;
  /** Weights kept out of `model`: written by `toOnnxBytes`, or inlined by `toOnnxModel`. */
  weights: Tensor[];
}

function lower(graph: Graph, opts: LowerOptions): Lowered {
  const opset = opts.opset ?? 18;
  if (opset < 18) throw new GraphError(`opset ${opset} is not supported (need >= 18)`);
  const ms = opts.microsoftOps ?? true;
  const nodes: INode[] = [];
  const smallInits: ITensor[] = [];
  const names = new Map<Tensor, string>();
  const constCache = new Map<string, string>();
  let usesMs = false;

  const constI64 = (values: number[]): string => {
    const key = `i64:${values.join(',')}`;
    let name = constCache.get(key);
    if (!name) {
      name = `const_i64_${constCache.size}`;
      constCache.set(key, name);
      smallInits.push({ name, dataType: DT.INT64, dims: [values.length], rawData: literalBytes('i64', values) });
    }
    return name;
  };
  const nameOf = (t: Tensor): string => {
    const n = names.get(t);
    if (n !== undefined) return n;
    if (t.source.kind !== 'constant') throw new GraphError(`internal: tensor ${t.id} used before it is produced`);
    const name = `const_${t.id}`;
    smallInits.push({ name, dataType: ONNX_DTYPE[t.dtype], dims: t.shape as number[], rawData: literalBytes(t.dtype, t.source.values) });
    names.set(t, name);
    return name;
  };

  for (const t of graph.inputs) names.set(t, (t.source as { name: string }).name);
  for (const t of graph.initializers) names.set(t, (t.source as { name: string }).name);
  // Name node outputs after the graph outputs they feed, so no Identity is needed.
  const outputNameOf = new Map<Tensor, string>();
  for (const o of graph.outputs) if (o.tensor.source.kind === 'node' && !outputNameOf.has(o.tensor)) outputNameOf.set(o.tensor, o.name);

  const emit = (opType: string, inputs: string[], outputs: string[], attribute: IAttr[] = [], name?: string, domain = '') => {
    if (domain === 'com.microsoft') usesMs = true;
    nodes.push({ opType, input: inputs, output: outputs, attribute, name: name ?? `${opType}_${nodes.length}`, domain });
  };

  for (const node of graph.nodes) {
    const outs = node.outputs.map((t) => outputNameOf.get(t) ?? `t${t.id}`);
    node.outputs.forEach((t, i) => names.set(t, outs[i]));
    lowerNode(node, node.inputs.map(nameOf), outs, { emit, constI64, ms });
  }

  const graphOutputs = graph.outputs.map(({ name, tensor }) => {
    if (names.get(tensor) !== name) emit('Identity', [nameOf(tensor)], [name]);
    return valueInfo(name, tensor.dtype, tensor.shape);
  });

  const weights = graph.initializers;
  const model: onnxProto.onnx.IModelProto = {
    irVersion: 8,
    producerName: opts.producerName ?? 'slimlm',
    docString: opts.docString ?? '',
    opsetImport: [{ domain: '', version: opset }, ...(usesMs ? [{ domain: 'com.microsoft', version: 1 }] : [])],
    graph: {
      name: graph.name,
      node: nodes,
      initializer: smallInits,
      input: graph.inputs.map((t) => valueInfo(names.get(t)!, t.dtype, t.shape)),
      output: graphOutputs,
    },
  };
  return { model, weights };
}

interface LowerCtx {
  emit(opType: string, inputs: string[], outputs: string[], attribute?: IAttr[], name?: string, domain?: string): void;
  constI64(values: number[]): string;
  ms: boolean;
}

function lowerNode(node: Node, ins: string[], outs: string[], ctx: LowerCtx): void {
  const a = node.attrs;
  const ints = (k: string) => a[k] as number[];
  const emit = (opType: string, inputs = ins, attribute: IAttr[] = [], domain = '') => ctx.emit(opType, inputs, outs, attribute, node.name, domain);
  switch (node.op) {
    case 'Reshape': return emit('Reshape', [ins[0], ctx.constI64(ints('shape'))]);
    case 'ReshapeTo': return emit('Reshape');
    case 'Expand': return emit('Expand', [ins[0], ctx.constI64(ints('shape'))]);
    case 'Unsqueeze': case 'Squeeze': return emit(node.op, [ins[0], ctx.constI64(ints('axes'))]);
    case 'ReduceSum': case 'ReduceMean': case 'ReduceMax': case 'ReduceSumSquare':
      return emit(node.op, [ins[0], ctx.constI64(ints('axes'))], [attr('keepdims', a.keepdims === false ? 0 : 1)]);
    case 'Slice': {
      const axes = ints('axes');
      const steps = (a.steps as number[] | null) ?? axes.map(() => 1);
      return emit('Slice', [ins[0], ctx.constI64(ints('starts')), ctx.constI64(ints('ends')), ctx.constI64(axes), ctx.constI64(steps)]);
    }
    case 'CumSum':
      return emit('CumSum', [ins[0], ctx.constI64([a.axis as number])],
        [attr('exclusive', a.exclusive ? 1 : 0), attr('reverse', a.reverse ? 1 : 0)]);
    case 'Cast': return emit('Cast', ins, [attr('to', ONNX_DTYPE[a.to as DType])]);
    case 'Range': return emit('Range');
    case 'Split': return emit('Split', ins, [attr('axis', a.axis as number)]);
    case 'MatMul':
      if (a.transA) {
        if (!ctx.ms) throw new GraphError(`${node.name}: transA needs microsoftOps (FusedMatMul)`);
        return emit('FusedMatMul', ins, [attr('transA', 1), attr('transB', a.transB ? 1 : 0)], 'com.microsoft');
      }
      if (!a.transB) return emit('MatMul');
      if (ctx.ms) return emit('FusedMatMul', ins, [attr('transB', 1)], 'com.microsoft');
      return lowerTransposedMatMul(node, ins, outs, ctx);
    case 'Pad': return emit('Pad', [ins[0], ctx.constI64(ints('pads'))]);
    case 'ZerosLike': case 'ReshapeLike': case 'ExpandLike': {
      const shape = `${outs[0]}_shape`;
      ctx.emit('Shape', [ins[node.op === 'ZerosLike' ? 0 : 1]], [shape], [], `${node.name}_shape`);
      if (node.op === 'ZerosLike') {
        const value: ITensor = { dataType: ONNX_DTYPE[node.outputs[0].dtype], dims: [1], rawData: literalBytes(node.outputs[0].dtype, [0]) };
        return emit('ConstantOfShape', [shape], [{ name: 'value', type: AT.TENSOR, t: value }]);
      }
      return emit(node.op === 'ReshapeLike' ? 'Reshape' : 'Expand', [ins[0], shape]);
    }
    default:
      return emit(node.op, ins, genericAttrs(a), OP_DOMAINS.get(node.op) ?? '');
  }
}

function lowerTransposedMatMul(node: Node, ins: string[], outs: string[], ctx: LowerCtx): void {
  const rank = node.inputs[1].rank;
  const perm = [...Array(rank).keys()];
  [perm[rank - 2], perm[rank - 1]] = [perm[rank - 1], perm[rank - 2]];
  const bt = `${outs[0]}_bT`;
  ctx.emit('Transpose', [ins[1]], [bt], [attr('perm', perm)], `${node.name}_transposeB`);
  ctx.emit('MatMul', [ins[0], bt], outs, [], node.name);
}

/** Attributes passed through as ONNX int/ints/float attributes (booleans as 0/1; null = omitted). */
function genericAttrs(attrs: Readonly<Record<string, AttrValue>>): IAttr[] {
  const out: IAttr[] = [];
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null) continue;
    if (typeof v === 'boolean') out.push(attr(k, v ? 1 : 0));
    else if (typeof v === 'number') out.push(attr(k, v, Number.isInteger(v) ? 'int' : 'float'));
    else if (typeof v === 'string') out.push(attr(k, v));
    else if (v.every((x) => typeof x === 'number')) out.push(attr(k, [...v] as number[]));
    else throw new GraphError(`attribute '${k}' [${v}] names dims: only the IR reads it`);
  }
  return out;
}

function weightProto(t: Tensor): ITensor {
  const s = t.source as { name: string };
  return { name: s.name, dataType: ONNX_DTYPE[t.dtype], dims: t.shape as number[] };
}

function weightBytes(t: Tensor): Uint8Array {
  const data = (t.source as Extract<Tensor['source'], { kind: 'initializer' }>).data;
  if (data instanceof Uint8Array) return data;
  const buf = new Uint8Array(data.byteLength);
  data.write(buf);
  return buf;
}

/** The ModelProto with every weight inlined as raw_data (copies weights; for inspection and small graphs). */
export function toOnnxModel(graph: Graph, opts: LowerOptions = {}): onnxProto.onnx.ModelProto {
  const { model, weights } = lower(graph, opts);
  model.graph!.initializer!.push(...weights.map((t) => ({ ...weightProto(t), rawData: weightBytes(t) })));
  return onnx.ModelProto.create(model);
}

const varintLength = (n: number): number => { let len = 1; while (n >= 128) { n = Math.floor(n / 128); len++; } return len; };
function writeVarint(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 128) { buf[pos++] = (n % 128) | 128; n = Math.floor(n / 128); }
  buf[pos++] = n;
  return pos;
}

const TAG_MODEL_GRAPH = (7 << 3) | 2;
const TAG_GRAPH_INITIALIZER = (5 << 3) | 2;
const TAG_TENSOR_RAW_DATA = (9 << 3) | 2;

/**
 * Serialized ModelProto, weights written once into the output buffer. The graph field is written first and once
 * (its encoded nodes followed by the weight records), then the rest of the model: valid for every protobuf reader,
 * including protobufjs, which does not merge repeated occurrences of a message field.
 */
export function toOnnxBytes(graph: Graph, opts: LowerOptions = {}): Uint8Array {
  const { model, weights } = lower(graph, opts);
  const graphHead = onnx.GraphProto.encode(model.graph!).finish();
  const rest = onnx.ModelProto.encode({ ...model, graph: null }).finish();
  const records = weights.map((t) => {
    const header = onnx.TensorProto.encode(weightProto(t)).finish();
    const dataLen = (t.source as Extract<Tensor['source'], { kind: 'initializer' }>).data.byteLength;
    const msgLen = header.length + 1 + varintLength(dataLen) + dataLen;
    return { t, header, dataLen, msgLen };
  });
  const graphLen = graphHead.length + records.reduce((n, r) => n + 1 + varintLength(r.msgLen) + r.msgLen, 0);
  const total = 1 + varintLength(graphLen) + graphLen + rest.length;
  if (total > 2 ** 31 - 1) {
    throw new GraphError(`model is ${(total / 2 ** 30).toFixed(2)} GiB; ONNX protobufs are limited to 2 GiB (external data is not supported yet)`);
  }
  const buf = new Uint8Array(total);
  let pos = 0;
  buf[pos++] = TAG_MODEL_GRAPH;
  pos = writeVarint(buf, pos, graphLen);
  buf.set(graphHead, pos);
  pos += graphHead.length;
  for (const r of records) {
    buf[pos++] = TAG_GRAPH_INITIALIZER;
    pos = writeVarint(buf, pos, r.msgLen);
    buf.set(r.header, pos);
    pos += r.header.length;
    buf[pos++] = TAG_TENSOR_RAW_DATA;
    pos = writeVarint(buf, pos, r.dataLen);
    const data = (r.t.source as Extract<Tensor['source'], { kind: 'initializer' }>).data;
    const dst = buf.subarray(pos, pos + r.dataLen);
    if (data instanceof Uint8Array) dst.set(data);
    else data.write(dst);
    pos += r.dataLen;
  }
  buf.set(rest, pos);
  pos += rest.length;
  if (pos !== total) throw new GraphError(`internal: wrote ${pos} of ${total} model bytes`);
  return buf;
}

/** Offsets of external weights are page aligned so ONNX Runtime can memory-map them instead of copying. */
const EXTERNAL_ALIGNMENT = 4096;

/**
 * Writes `modelPath` (the graph) and `modelPath + '.data'` (every weight, as ONNX external data), one tensor in memory
 * at a time. ONNX Runtime memory-maps page-aligned external data, so a session made from these files holds the weights
 * once, in the page cache, and models over protobuf's 2 GiB limit work. Returns the data file's path.
 */
export function writeOnnxWithExternalData(graph: Graph, modelPath: string, opts: LowerOptions = {}): string {
  const dataPath = `${modelPath}.data`;
  const location = dataPath.slice(dataPath.lastIndexOf('/') + 1);
  const { model, weights } = lower(graph, opts);
  const fd = openSync(dataPath, 'w');
  try {
    let offset = 0;
    for (const t of weights) {
      const bytes = weightBytes(t);
      offset = Math.ceil(offset / EXTERNAL_ALIGNMENT) * EXTERNAL_ALIGNMENT;
      writeSync(fd, bytes, 0, bytes.byteLength, offset);
      model.graph!.initializer!.push({
        ...weightProto(t),
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [{ key: 'location', value: location }, { key: 'offset', value: String(offset) }, { key: 'length', value: String(bytes.byteLength) }],
      });
      offset += bytes.byteLength;
    }
  } finally {
    closeSync(fd);
  }
  writeFileSync(modelPath, onnx.ModelProto.encode(model).finish());
  return dataPath;
}
