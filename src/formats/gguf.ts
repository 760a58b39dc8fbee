/**
 * GGUF reader and writer. Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
 * Quant block layouts and the reference (de)quantizers: llama.cpp `ggml/src/ggml-common.h` and `ggml/src/ggml-quants.c`
 * (https://github.com/ggml-org/llama.cpp). Dequantization follows ggml's f32 arithmetic so results match it bit for bit;
 * `quantizeQ8_0`/`quantizeQ4_0` reproduce `quantize_row_q8_0_ref`/`quantize_row_q4_0_ref` byte for byte.
 *
 * Shapes: ggml lists dimensions fastest-first (ne[0] = row length); `GGUFTensorInfo.shape` is row-major (reversed), like PyTorch.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { writeFileAtomic } from './atomic.js';
import { bf16BytesToF32, f16BytesToF32, f16ToF32, f32ToF16, f32ToF16Bytes } from './dtype.js';
import { preadExact } from './safetensors.js';
import { numel, type DType, type HostTensor } from './tensor.js';

export class GGUFError extends Error {}

const GGUF_MAGIC = 0x46554747; // "GGUF" read as little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf.md, `gguf_metadata_value_type`). */
export enum GGUFValueType {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  UINT64 = 10, INT64 = 11, FLOAT64 = 12,
}

/** ggml tensor types that can appear in a GGUF (ggml.h `enum ggml_type`); block size and bytes per block. */
export const GGML_TYPES = {
  F32: { id: 0, block: 1, bytes: 4 },
  F16: { id: 1, block: 1, bytes: 2 },
  Q4_0: { id: 2, block: 32, bytes: 18 },
  Q4_1: { id: 3, block: 32, bytes: 20 },
  Q5_0: { id: 6, block: 32, bytes: 22 },
  Q5_1: { id: 7, block: 32, bytes: 24 },
  Q8_0: { id: 8, block: 32, bytes: 34 },
  Q8_1: { id: 9, block: 32, bytes: 36 },
  Q2_K: { id: 10, block: 256, bytes: 84 },
  Q3_K: { id: 11, block: 256, bytes: 110 },
  Q4_K: { id: 12, block: 256, bytes: 144 },
  Q5_K: { id: 13, block: 256, bytes: 176 },
  Q6_K: { id: 14, block: 256, bytes: 210 },
  Q8_K: { id: 15, block: 256, bytes: 292 },
  IQ2_XXS: { id: 16, block: 256, bytes: 66 },
  IQ2_XS: { id: 17, block: 256, bytes: 74 },
  IQ3_XXS: { id: 18, block: 256, bytes: 98 },
  IQ1_S: { id: 19, block: 256, bytes: 50 },
  IQ4_NL: { id: 20, block: 32, bytes: 18 },
  IQ3_S: { id: 21, block: 256, bytes: 110 },
  IQ2_S: { id: 22, block: 256, bytes: 82 },
  IQ4_XS: { id: 23, block: 256, bytes: 136 },
  I8: { id: 24, block: 1, bytes: 1 },
  I16: { id: 25, block: 1, bytes: 2 },
  I32: { id: 26, block: 1, bytes: 4 },
  I64: { id: 27, block: 1, bytes: 8 },
  F64: { id: 28, block: 1, bytes: 8 },
  IQ1_M: { id: 29, block: 256, bytes: 56 },
  BF16: { id: 30, block: 1, bytes: 2 },
  TQ1_0: { id: 34, block: 256, bytes: 54 },
  TQ2_0: { id: 35, block: 256, bytes: 66 },
} as const;
export type GGMLTypeName = keyof typeof GGML_TYPES;
const TYPE_BY_ID = new Map<number, GGMLTypeName>(Object.entries(GGML_TYPES).map(([k, v]) => [v.id, k as GGMLTypeName]));

export function ggmlTypeName(id: number): GGMLTypeName | undefined {
  return TYPE_BY_ID.get(id);
}

/** Bytes for `n` elements of a ggml type (n must be a whole number of blocks). */
export function ggmlByteSize(type: GGMLTypeName, n: number): number {
  const t = GGML_TYPES[type];
  if (n % t.block !== 0) throw new GGUFError(`${type}: ${n} elements is not a multiple of the block size ${t.block}`);
  return (n / t.block) * t.bytes;
}

// ---------------------------------------------------------------------------------------------------------------------
// Metadata values

export type GGUFScalar = number | bigint | boolean | string;
export type GGUFArray =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array
  | BigUint64Array | BigInt64Array | boolean[] | string[] | GGUFTypedValue[];

/** A metadata value with its GGUF type, so files round-trip exactly. 64-bit integers are bigint. */
export type GGUFTypedValue =
  | { type: Exclude<GGUFValueType, GGUFValueType.ARRAY>; value: GGUFScalar }
  | { type: GGUFValueType.ARRAY; itemType: GGUFValueType; value: GGUFArray };

const SCALAR_BYTES: Partial<Record<GGUFValueType, number>> = {
  [GGUFValueType.UINT8]: 1, [GGUFValueType.INT8]: 1, [GGUFValueType.UINT16]: 2, [GGUFValueType.INT16]: 2,
  [GGUFValueType.UINT32]: 4, [GGUFValueType.INT32]: 4, [GGUFValueType.FLOAT32]: 4, [GGUFValueType.BOOL]: 1,
  [GGUFValueType.UINT64]: 8, [GGUFValueType.INT64]: 8, [GGUFValueType.FLOAT64]: 8,
};

/** Typed-array constructor for numeric array items (read and write use the same element layout, little-endian). */
function arrayCtor(t: GGUFValueType) {
  switch (t) {
    case GGUFValueType.UINT8: return Uint8Array;
    case GGUFValueType.INT8: return Int8Array;
    case GGUFValueType.UINT16: return Uint16Array;
    case GGUFValueType.INT16: return Int16Array;
    case GGUFValueType.UINT32: return Uint32Array;
    case GGUFValueType.INT32: return Int32Array;
    case GGUFValueType.FLOAT32: return Float32Array;
    case GGUFValueType.FLOAT64: return Float64Array;
    case GGUFValueType.UINT64: return BigUint64Array;
    case GGUFValueType.INT64: return BigInt64Array;
    default: return null;
  }
}

/** Plain JS view of a typed value: numbers, bigints, strings, booleans and arrays thereof. */
export function plainValue(v: GGUFTypedValue): unknown {
  if (v.type !== GGUFValueType.ARRAY) return v.value;
  if (v.itemType === GGUFValueType.ARRAY) return (v.value as GGUFTypedValue[]).map(plainValue);
  return v.value;
}

/** Infer a GGUF type for a plain value (non-negative integers → u32, negative → i32, other numbers → f32). */
export function ggufValue(v: unknown): GGUFTypedValue {
  if (typeof v === 'string') return { type: GGUFValueType.STRING, value: v };
  if (typeof v === 'boolean') return { type: GGUFValueType.BOOL, value: v };
  if (typeof v === 'bigint') return { type: v < 0n ? GGUFValueType.INT64 : GGUFValueType.UINT64, value: v };
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return { type: GGUFValueType.UINT32, value: v };
    if (Number.isInteger(v) && v < 0 && v >= -0x80000000) return { type: GGUFValueType.INT32, value: v };
    return { type: GGUFValueType.FLOAT32, value: v };
  }
  if (v instanceof Float32Array) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.FLOAT32, value: v };
  if (v instanceof Int32Array) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.INT32, value: v };
  if (v instanceof Uint32Array) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.UINT32, value: v };
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: v as string[] };
    if (v.every((x) => typeof x === 'boolean')) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.BOOL, value: v as boolean[] };
    if (v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= -0x80000000 && x <= 0x7fffffff)) {
      return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.INT32, value: Int32Array.from(v as number[]) };
    }
    if (v.every((x) => typeof x === 'number')) return { type: GGUFValueType.ARRAY, itemType: GGUFValueType.FLOAT32, value: Float32Array.from(v as number[]) };
  }
  throw new GGUFError(`cannot infer a GGUF type for ${JSON.stringify(v)}; pass a typed value`);
}

// ---------------------------------------------------------------------------------------------------------------------
// Reader

export interface GGUFTensorInfo {
  name: string;
  type: GGMLTypeName;
  /** Row-major shape (ggml's ne reversed). */
  shape: number[];
  /** ggml ne[] as stored (fastest dimension first). */
  ne: number[];
  /** Absolute offset in the file, and stored byte size. */
  offset: number;
  byteSize: number;
}

/** Cursor over a growing window of the file, read on demand (metadata can be tens of MB: token lists). */
class Cursor {
  pos: number;
  private buf: Uint8Array = new Uint8Array(0);
  private bufStart = 0;
  private dv = new DataView(this.buf.buffer);
  constructor(private fd: number, private fileSize: number, private path: string, start: number) {
    this.pos = start;
  }
  private ensure(n: number, what: string): number {
    if (this.pos + n > this.fileSize) throw new GGUFError(`${this.path}: truncated file: ${what} needs ${n} bytes at offset ${this.pos}, file has ${this.fileSize}`);
    if (this.pos < this.bufStart || this.pos + n > this.bufStart + this.buf.length) {
      const len = Math.min(Math.max(n, 1 << 20), this.fileSize - this.pos);
      this.buf = preadExact(this.fd, this.pos, len, this.path);
      this.dv = new DataView(this.buf.buffer);
      this.bufStart = this.pos;
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }
  u8(w: string) { const at = this.ensure(1, w); return this.dv.getUint8(at); }
  i8(w: string) { const at = this.ensure(1, w); return this.dv.getInt8(at); }
  u16(w: string) { const at = this.ensure(2, w); return this.dv.getUint16(at, true); }
  i16(w: string) { const at = this.ensure(2, w); return this.dv.getInt16(at, true); }
  u32(w: string) { const at = this.ensure(4, w); return this.dv.getUint32(at, true); }
  i32(w: string) { const at = this.ensure(4, w); return this.dv.getInt32(at, true); }
  f32(w: string) { const at = this.ensure(4, w); return this.dv.getFloat32(at, true); }
  f64(w: string) { const at = this.ensure(8, w); return this.dv.getFloat64(at, true); }
  u64(w: string) { const at = this.ensure(8, w); return this.dv.getBigUint64(at, true); }
  i64(w: string) { const at = this.ensure(8, w); return this.dv.getBigInt64(at, true); }
  // (`ensure` may swap the buffer, so it runs before `this.dv` is read.)
  /** u64 that must fit a JS safe integer (counts, lengths, offsets). */
  count(w: string, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.u64(w);
    if (v > BigInt(Math.floor(max))) throw new GGUFError(`${this.path}: ${w} ${v} at offset ${this.pos - 8} does not fit in the file's ${this.fileSize} bytes: truncated or corrupt file`);
    return Number(v);
  }
  bytes(n: number, w: string): Uint8Array {
    if (n > this.fileSize - this.pos) throw new GGUFError(`${this.path}: truncated file: ${w} needs ${n} bytes at offset ${this.pos}, file has ${this.fileSize}`);
    if (n > 1 << 20) {
      const out = preadExact(this.fd, this.pos, n, this.path);
      this.pos += n;
      return out;
    }
    const at = this.ensure(n, w);
    return this.buf.subarray(at, at + n);
  }
}

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true }); // a string (a vocabulary piece) may start with U+FEFF

export class GGUFFile {
  readonly version: number;
  readonly metadata = new Map<string, GGUFTypedValue>();
  readonly tensors: GGUFTensorInfo[] = [];
  readonly alignment: number;
  /** Absolute offset where the tensor data section starts. */
  readonly dataOffset: number;
  readonly fileSize: number;
  private readonly byName = new Map<string, GGUFTensorInfo>();
  private fd: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
    this.fileSize = fstatSync(fd).size;
    const c = new Cursor(fd, this.fileSize, path, 0);
    const magic = c.u32('magic');
    if (magic !== GGUF_MAGIC) throw new GGUFError(`${path}: not a GGUF file (magic 0x${magic.toString(16).padStart(8, '0')}, expected "GGUF")`);
    this.version = c.u32('version');
    if (this.version !== 2 && this.version !== 3) throw new GGUFError(`${path}: unsupported GGUF version ${this.version} (supported: 2, 3)`);
    // Every tensor info / KV takes at least 8 bytes, which bounds the counts of a corrupt header by the file size.
    const nTensors = c.count('tensor count', this.fileSize / 8);
    const nKV = c.count('metadata count', this.fileSize / 8);
    const readString = (w: string) => utf8.decode(c.bytes(c.count(`${w} length`, this.fileSize), w));
    const readValue = (type: number, w: string): GGUFTypedValue => {
      switch (type) {
        case GGUFValueType.UINT8: return { type, value: c.u8(w) };
        case GGUFValueType.INT8: return { type, value: c.i8(w) };
        case GGUFValueType.UINT16: return { type, value: c.u16(w) };
        case GGUFValueType.INT16: return { type, value: c.i16(w) };
        case GGUFValueType.UINT32: return { type, value: c.u32(w) };
        case GGUFValueType.INT32: return { type, value: c.i32(w) };
        case GGUFValueType.FLOAT32: return { type, value: c.f32(w) };
        case GGUFValueType.FLOAT64: return { type, value: c.f64(w) };
        case GGUFValueType.UINT64: return { type, value: c.u64(w) };
        case GGUFValueType.INT64: return { type, value: c.i64(w) };
        case GGUFValueType.BOOL: {
          const b = c.u8(w);
          if (b > 1) throw new GGUFError(`${path}: ${w}: invalid bool byte ${b}`);
          return { type, value: b === 1 };
        }
        case GGUFValueType.STRING: return { type, value: readString(w) };
        case GGUFValueType.ARRAY: {
          const itemType = c.u32(`${w} item type`);
          const n = c.count(`${w} array length`, this.fileSize - c.pos);
          // Each string / nested array item takes at least 8 / 12 bytes: reject impossible lengths before allocating.
          const minItem = itemType === GGUFValueType.STRING ? 8 : itemType === GGUFValueType.ARRAY ? 12 : 1;
          if (n * minItem > this.fileSize - c.pos) throw new GGUFError(`${path}: truncated file: ${w} claims ${n} items, more than the file can hold`);
          const Ctor = arrayCtor(itemType);
          if (Ctor) {
            const bytes = c.bytes(n * SCALAR_BYTES[itemType as GGUFValueType]!, w);
            return { type, itemType, value: new Ctor(bytes.slice().buffer) };
          }
          if (itemType === GGUFValueType.BOOL) return { type, itemType, value: Array.from(c.bytes(n, w), (b) => b !== 0) };
          if (itemType === GGUFValueType.STRING) {
            const out = new Array<string>(n);
            for (let i = 0; i < n; i++) out[i] = readString(w);
            return { type, itemType, value: out };
          }
          if (itemType === GGUFValueType.ARRAY) {
            const out = new Array<GGUFTypedValue>(n);
            for (let i = 0; i < n; i++) out[i] = readValue(GGUFValueType.ARRAY, w);
            return { type, itemType, value: out };
          }
          throw new GGUFError(`${path}: ${w}: unknown array item type ${itemType}`);
        }
        default:
          throw new GGUFError(`${path}: ${w}: unknown metadata value type ${type} at offset ${c.pos - 4}`);
      }
    };
    for (let i = 0; i < nKV; i++) {
      const key = readString(`metadata key #${i}`);
      const type = c.u32(`metadata "${key}" type`);
      if (this.metadata.has(key)) throw new GGUFError(`${path}: duplicate metadata key "${key}"`);
      this.metadata.set(key, readValue(type, `metadata "${key}"`));
    }
    const al = this.metadata.get('general.alignment');
    if (al !== undefined) {
      if (al.type !== GGUFValueType.UINT32 || typeof al.value !== 'number' || al.value === 0 || (al.value & (al.value - 1)) !== 0) {
        throw new GGUFError(`${path}: general.alignment must be a power-of-two u32, got ${String(al.value)}`);
      }
    }
    this.alignment = al ? (al.value as number) : GGUF_DEFAULT_ALIGNMENT;
    const infos: { name: string; ne: number[]; type: number; rel: number }[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = readString(`tensor #${i} name`);
      const nDims = c.u32(`tensor "${name}" n_dims`);
      if (nDims > 4) throw new GGUFError(`${path}: tensor "${name}": ${nDims} dimensions (ggml allows at most 4)`);
      const ne: number[] = [];
      for (let d = 0; d < nDims; d++) ne.push(c.count(`tensor "${name}" dim ${d}`, 2 ** 40));
      const type = c.u32(`tensor "${name}" type`);
      const rel = c.count(`tensor "${name}" offset`);
      infos.push({ name, ne, type, rel });
    }
    this.dataOffset = Math.ceil(c.pos / this.alignment) * this.alignment;
    for (const { name, ne, type, rel } of infos) {
      const typeName = ggmlTypeName(type);
      if (!typeName) throw new GGUFError(`${path}: tensor "${name}": unknown ggml type ${type}`);
      if (this.byName.has(name)) throw new GGUFError(`${path}: duplicate tensor name "${name}"`);
      const n = numel(ne);
      if (ne.length && ne[0] % GGML_TYPES[typeName].block !== 0) {
        throw new GGUFError(`${path}: tensor "${name}": row length ${ne[0]} is not a multiple of the ${typeName} block size ${GGML_TYPES[typeName].block}`);
      }
      if (rel % this.alignment !== 0) throw new GGUFError(`${path}: tensor "${name}": data offset ${rel} is not a multiple of the alignment ${this.alignment}`);
      const byteSize = ggmlByteSize(typeName, n);
      const offset = this.dataOffset + rel;
      if (offset + byteSize > this.fileSize) {
        throw new GGUFError(`${path}: tensor "${name}" (${typeName} [${[...ne].reverse()}]) needs bytes ${offset}..${offset + byteSize} but the file has ${this.fileSize}; truncated?`);
      }
      const info: GGUFTensorInfo = { name, type: typeName, shape: [...ne].reverse(), ne, offset, byteSize };
      this.tensors.push(info);
      this.byName.set(name, info);
    }
    const sorted = [...this.tensors].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].offset < sorted[i - 1].offset + sorted[i - 1].byteSize) {
        throw new GGUFError(`${path}: tensor "${sorted[i].name}" overlaps tensor "${sorted[i - 1].name}"`);
      }
    }
  }

  static open(path: string): GGUFFile {
    const fd = openSync(path, 'r');
    try {
      return new GGUFFile(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Typed metadata value, or undefined. */
  get(key: string): GGUFTypedValue | undefined {
    return this.metadata.get(key);
  }
  /** Plain metadata value (numbers, bigint for 64-bit ints, strings, typed arrays), or undefined. */
  value(key: string): unknown {
    const v = this.metadata.get(key);
    return v && plainValue(v);
  }
  /** A numeric metadata value as a JS number, or `fallback` when absent; throws if present with a non-numeric type. */
  number(key: string, fallback?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (fallback === undefined) throw new GGUFError(`${this.path}: missing metadata key "${key}"`);
      return fallback;
    }
    if (typeof v.value === 'number') return v.value;
    if (typeof v.value === 'bigint') return Number(v.value);
    throw new GGUFError(`${this.path}: metadata "${key}" is not a number (GGUF type ${GGUFValueType[v.type]})`);
  }
  string(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (typeof v.value !== 'string') throw new GGUFError(`${this.path}: metadata "${key}" is not a string`);
    return v.value;
  }

  tensor(name: string): GGUFTensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new GGUFError(`${this.path}: no tensor "${name}"`);
    return t;
  }
  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** Stored bytes of a tensor (quant blocks as they are on disk). */
  readRaw(name: string): Uint8Array {
    const t = this.tensor(name);
    if (this.fd === null) throw new GGUFError(`${this.path}: reading tensor "${name}" after close()`);
    return preadExact(this.fd, t.offset, t.byteSize, `${this.path}: tensor "${name}"`);
  }

  /** Tensor values as f32, dequantizing block types. */
  readF32(name: string): Float32Array {
    const t = this.tensor(name);
    try {
      return dequantize(t.type, this.readRaw(name), numel(t.shape));
    } catch (e) {
      if (e instanceof GGUFError && !e.message.startsWith(this.path)) throw new GGUFError(`${this.path}: tensor "${name}": ${e.message}`);
      throw e;
    }
  }

  /** Host tensor in row-major shape: F32/F16/BF16/I8..I64 as stored, block-quantized types dequantized to f32. */
  read(name: string): HostTensor {
    const t = this.tensor(name);
    const plain: Partial<Record<GGMLTypeName, DType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16', I8: 'i8', I16: 'i16', I32: 'i32', I64: 'i64' };
    const dtype = plain[t.type];
    if (dtype) return { dtype, shape: [...t.shape], data: this.readRaw(name) };
    const f = this.readF32(name);
    return { dtype: 'f32', shape: [...t.shape], data: new Uint8Array(f.buffer, f.byteOffset, f.byteLength) };
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Dequantization (ggml-quants.c `dequantize_row_*`). Math.fround keeps every intermediate in f32 like the C code.

const fr = Math.fround;
const QK_K = 256;

function h(b: Uint8Array, o: number): number {
  return f16ToF32(b[o] | (b[o + 1] << 8));
}

/** K-quant 6-bit scale/min pair j of a Q4_K/Q5_K `scales[12]` (ggml's get_scale_min_k4). */
function scaleMinK4(j: number, q: Uint8Array, o: number): [number, number] {
  if (j < 4) return [q[o + j] & 63, q[o + j + 4] & 63];
  return [(q[o + j + 4] & 0xf) | ((q[o + j - 4] >> 6) << 4), (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)];
}

type Dequant = (b: Uint8Array, o: number, y: Float32Array, yo: number) => void;

const DEQUANT: Partial<Record<GGMLTypeName, Dequant>> = {
  Q4_0(b, o, y, yo) {
    const d = h(b, o);
    for (let j = 0; j < 16; j++) {
      const q = b[o + 2 + j];
      y[yo + j] = fr(((q & 0xf) - 8) * d);
      y[yo + j + 16] = fr(((q >> 4) - 8) * d);
    }
  },
  Q4_1(b, o, y, yo) {
    const d = h(b, o), m = h(b, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = b[o + 4 + j];
      y[yo + j] = fr(fr((q & 0xf) * d) + m);
      y[yo + j + 16] = fr(fr((q >> 4) * d) + m);
    }
  },
  Q5_0(b, o, y, yo) {
    const d = h(b, o);
    const qh = (b[o + 2] | (b[o + 3] << 8) | (b[o + 4] << 16) | (b[o + 5] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 6 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[yo + j] = fr((((q & 0xf) | h0) - 16) * d);
      y[yo + j + 16] = fr((((q >> 4) | h1) - 16) * d);
    }
  },
  Q5_1(b, o, y, yo) {
    const d = h(b, o), m = h(b, o + 2);
    const qh = (b[o + 4] | (b[o + 5] << 8) | (b[o + 6] << 16) | (b[o + 7] << 24)) >>> 0;
    for (let j = 0; j < 16; j++) {
      const q = b[o + 8 + j];
      const h0 = ((qh >>> j) << 4) & 0x10;
      const h1 = (qh >>> (j + 12)) & 0x10;
      y[yo + j] = fr(fr(((q & 0xf) | h0) * d) + m);
      y[yo + j + 16] = fr(fr(((q >> 4) | h1) * d) + m);
    }
  },
  Q8_0(b, o, y, yo) {
    const d = h(b, o);
    for (let j = 0; j < 32; j++) y[yo + j] = fr(((b[o + 2 + j] << 24) >> 24) * d);
  },
  Q2_K(b, o, y, yo) {
    // scales[16] | qs[64] | d | dmin
    const d = h(b, o + 80), min = h(b, o + 82);
    let q = o + 16, is = 0;
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (const half of [0, 16]) {
          const sc = b[o + is++];
          const dl = fr(d * (sc & 0xf)), ml = fr(min * (sc >> 4));
          for (let l = 0; l < 16; l++) y[yo++] = fr(fr(dl * ((b[q + l + half] >> shift) & 3)) - ml);
        }
      }
      q += 32;
    }
  },
  Q3_K(b, o, y, yo) {
    // hmask[32] | qs[64] | scales[12] | d ; 16 signed 6-bit scales packed as 4 low bits + 2 high bits
    const dAll = h(b, o + 108);
    const s = o + 96;
    const scales = new Int8Array(16);
    for (let j = 0; j < 16; j++) {
      const lo = j < 8 ? b[s + j] & 0xf : b[s + j - 8] >> 4;
      const hi = (b[s + 8 + (j % 4)] >> (2 * (j >> 2))) & 3;
      scales[j] = (lo | (hi << 4)) - 32;
    }
    let q = o + 32, is = 0, m = 1;
    for (let n = 0; n < QK_K; n += 128) {
      for (let shift = 0; shift < 8; shift += 2) {
        for (const half of [0, 16]) {
          const dl = fr(dAll * scales[is++]);
          for (let l = 0; l < 16; l++) {
            const v = ((b[q + l + half] >> shift) & 3) - (b[o + l + half] & m ? 0 : 4);
            y[yo++] = fr(dl * v);
          }
        }
        m <<= 1;
      }
      q += 32;
    }
  },
  Q4_K(b, o, y, yo) {
    // d | dmin | scales[12] | qs[128]
    const d = h(b, o), min = h(b, o + 2);
    let q = o + 16;
    for (let is = 0; is < 8; is += 2) {
      const [sc1, m1] = scaleMinK4(is, b, o + 4), [sc2, m2] = scaleMinK4(is + 1, b, o + 4);
      const d1 = fr(d * sc1), mm1 = fr(min * m1), d2 = fr(d * sc2), mm2 = fr(min * m2);
      for (let l = 0; l < 32; l++) y[yo++] = fr(fr(d1 * (b[q + l] & 0xf)) - mm1);
      for (let l = 0; l < 32; l++) y[yo++] = fr(fr(d2 * (b[q + l] >> 4)) - mm2);
      q += 32;
    }
  },
  Q5_K(b, o, y, yo) {
    // d | dmin | scales[12] | qh[32] | qs[128]
    const d = h(b, o), min = h(b, o + 2);
    const qh = o + 16;
    let ql = o + 48, u1 = 1, u2 = 2;
    for (let is = 0; is < 8; is += 2) {
      const [sc1, m1] = scaleMinK4(is, b, o + 4), [sc2, m2] = scaleMinK4(is + 1, b, o + 4);
      const d1 = fr(d * sc1), mm1 = fr(min * m1), d2 = fr(d * sc2), mm2 = fr(min * m2);
      for (let l = 0; l < 32; l++) y[yo++] = fr(fr(d1 * ((b[ql + l] & 0xf) + (b[qh + l] & u1 ? 16 : 0))) - mm1);
      for (let l = 0; l < 32; l++) y[yo++] = fr(fr(d2 * ((b[ql + l] >> 4) + (b[qh + l] & u2 ? 16 : 0))) - mm2);
      ql += 32;
      u1 <<= 2;
      u2 <<= 2;
    }
  },
  Q6_K(b, o, y, yo) {
    // ql[128] | qh[64] | scales[16] (int8) | d
    const d = h(b, o + 208);
    let ql = o, qh = o + 128, sc = o + 192;
    for (let n = 0; n < QK_K; n += 128) {
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const q1 = ((b[ql + l] & 0xf) | (((b[qh + l] >> 0) & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32] & 0xf) | (((b[qh + l] >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l] >> 4) | (((b[qh + l] >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32] >> 4) | (((b[qh + l] >> 6) & 3) << 4)) - 32;
        const s = (k: number) => fr(d * ((b[sc + is + k] << 24) >> 24));
        y[yo + l] = fr(s(0) * q1);
        y[yo + l + 32] = fr(s(2) * q2);
        y[yo + l + 64] = fr(s(4) * q3);
        y[yo + l + 96] = fr(s(6) * q4);
      }
      yo += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  },
  Q8_K(b, o, y, yo) {
    // d (f32) | qs[256] (int8) | bsums[16] (int16, unused here)
    const d = new DataView(b.buffer, b.byteOffset + o, 4).getFloat32(0, true);
    for (let j = 0; j < QK_K; j++) y[yo + j] = fr(d * ((b[o + 4 + j] << 24) >> 24));
  },
};

/** Types `dequantize` supports. */
export const DEQUANTIZABLE: GGMLTypeName[] = ['F32', 'F16', 'BF16', 'I8', 'I16', 'I32', ...(Object.keys(DEQUANT) as GGMLTypeName[])];

/** Dequantize `n` elements of raw ggml data to f32. */
export function dequantize(type: GGMLTypeName, raw: Uint8Array, n: number): Float32Array {
  const want = ggmlByteSize(type, n);
  if (raw.byteLength !== want) throw new GGUFError(`${type}: ${n} elements need ${want} bytes, got ${raw.byteLength}`);
  switch (type) {
    case 'F32': return new Float32Array(raw.slice().buffer);
    case 'F16': return f16BytesToF32(raw);
    case 'BF16': return bf16BytesToF32(raw);
    case 'I8': return Float32Array.from(new Int8Array(raw.buffer, raw.byteOffset, n));
    case 'I16': return Float32Array.from(new Int16Array(raw.slice().buffer));
    case 'I32': return Float32Array.from(new Int32Array(raw.slice().buffer));
  }
  const fn = DEQUANT[type];
  if (!fn) throw new GGUFError(`dequantization of ${type} is not supported (supported: ${DEQUANTIZABLE.join(', ')})`);
  const { block, bytes } = GGML_TYPES[type];
  const y = new Float32Array(n);
  for (let i = 0, o = 0; i < n; i += block, o += bytes) fn(raw, o, y, i);
  return y;
}

// ---------------------------------------------------------------------------------------------------------------------
// Reference quantizers (same arithmetic as ggml's quantize_row_q8_0_ref / quantize_row_q4_0_ref)

/** C roundf: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new GGUFError(`Q8_0: ${x.length} values is not a multiple of 32`);
  const out = new Uint8Array((x.length / 32) * 34);
  for (let i = 0, o = 0; i < x.length; i += 32, o += 34) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[i + j]));
    const d = fr(amax / 127);
    const id = d ? fr(1 / d) : 0;
    const dh = f32ToF16(d);
    out[o] = dh & 0xff;
    out[o + 1] = dh >> 8;
    for (let j = 0; j < 32; j++) out[o + 2 + j] = roundf(fr(x[i + j] * id)) & 0xff;
  }
  return out;
}

export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new GGUFError(`Q4_0: ${x.length} values is not a multiple of 32`);
  const out = new Uint8Array((x.length / 32) * 18);
  for (let i = 0, o = 0; i < x.length; i += 32, o += 18) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[i + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    // The scale maps the signed extreme to -8, so the largest magnitude uses the full 4-bit range.
    const d = fr(max / -8);
    const id = d ? fr(1 / d) : 0;
    const dh = f32ToF16(d);
    out[o] = dh & 0xff;
    out[o + 1] = dh >> 8;
    for (let j = 0; j < 16; j++) {
      // (int8_t)(v + 8.5f) truncates toward zero; values are in [0.5, 16.5] so truncation = floor.
      const q0 = Math.min(15, Math.trunc(fr(fr(x[i + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fr(fr(x[i + j + 16] * id) + 8.5)));
      out[o + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

/** Quantize f32 values to a writable ggml type (F32, F16, Q8_0, Q4_0). */
export function quantize(type: GGMLTypeName, x: Float32Array): Uint8Array {
  switch (type) {
    case 'F32': return new Uint8Array(x.slice().buffer);
    case 'F16': return f32ToF16Bytes(x);
    case 'Q8_0': return quantizeQ8_0(x);
    case 'Q4_0': return quantizeQ4_0(x);
    default: throw new GGUFError(`quantization to ${type} is not supported (supported: F32, F16, Q8_0, Q4_0)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Writer

export interface GGUFWriteTensor {
  name: string;
  /** Row-major shape (written reversed as ggml ne). */
  shape: number[];
  type: GGMLTypeName;
  /** f32 values to convert/quantize to `type`, or raw bytes already in `type` (e.g. copied blocks); may be a thunk. */
  data: Float32Array | Uint8Array | (() => Float32Array | Uint8Array);
}

export interface GGUFWriteOptions {
  /** Key → typed value (or a plain value whose type `ggufValue` infers). Insertion order is kept. */
  metadata: Map<string, GGUFTypedValue | GGUFScalar | unknown> | Record<string, GGUFTypedValue | unknown>;
  tensors: GGUFWriteTensor[];
  alignment?: number;
}

class ByteWriter {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(1 << 16);
  private dv = new DataView(this.cur.buffer);
  private n = 0;
  length = 0;
  private room(k: number): number {
    if (this.n + k > this.cur.length) {
      this.chunks.push(this.cur.subarray(0, this.n));
      this.cur = new Uint8Array(Math.max(1 << 16, k));
      this.dv = new DataView(this.cur.buffer);
      this.n = 0;
    }
    const at = this.n;
    this.n += k;
    this.length += k;
    return at;
  }
  // `room` may start a new chunk (and DataView), so it runs before `this.dv` is read.
  u8(v: number) { const at = this.room(1); this.dv.setUint8(at, v); }
  i8(v: number) { const at = this.room(1); this.dv.setInt8(at, v); }
  u16(v: number) { const at = this.room(2); this.dv.setUint16(at, v, true); }
  i16(v: number) { const at = this.room(2); this.dv.setInt16(at, v, true); }
  u32(v: number) { const at = this.room(4); this.dv.setUint32(at, v, true); }
  i32(v: number) { const at = this.room(4); this.dv.setInt32(at, v, true); }
  f32(v: number) { const at = this.room(4); this.dv.setFloat32(at, v, true); }
  f64(v: number) { const at = this.room(8); this.dv.setFloat64(at, v, true); }
  u64(v: number | bigint) { const at = this.room(8); this.dv.setBigUint64(at, BigInt(v), true); }
  i64(v: number | bigint) { const at = this.room(8); this.dv.setBigInt64(at, BigInt(v), true); }
  bytes(b: Uint8Array) { const at = this.room(b.length); this.cur.set(b, at); }
  string(s: string) { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  finish(): Uint8Array {
    const all = new Uint8Array(this.length);
    let p = 0;
    for (const c of [...this.chunks, this.cur.subarray(0, this.n)]) { all.set(c, p); p += c.length; }
    return all;
  }
}

function writeValue(w: ByteWriter, v: GGUFTypedValue, key: string): void {
  const bad = () => new GGUFError(`metadata "${key}": value ${String(v.value)} does not fit GGUF type ${GGUFValueType[v.type]}`);
  const num = (lo: number, hi: number) => {
    const x = v.value;
    if (typeof x !== 'number' || !Number.isInteger(x) || x < lo || x > hi) throw bad();
    return x;
  };
  switch (v.type) {
    case GGUFValueType.UINT8: return w.u8(num(0, 0xff));
    case GGUFValueType.INT8: return w.i8(num(-0x80, 0x7f));
    case GGUFValueType.UINT16: return w.u16(num(0, 0xffff));
    case GGUFValueType.INT16: return w.i16(num(-0x8000, 0x7fff));
    case GGUFValueType.UINT32: return w.u32(num(0, 0xffffffff));
    case GGUFValueType.INT32: return w.i32(num(-0x80000000, 0x7fffffff));
    case GGUFValueType.FLOAT32: if (typeof v.value !== 'number') throw bad(); return w.f32(v.value);
    case GGUFValueType.FLOAT64: if (typeof v.value !== 'number') throw bad(); return w.f64(v.value);
    case GGUFValueType.UINT64: if (typeof v.value !== 'bigint' && typeof v.value !== 'number') throw bad(); return w.u64(v.value);
    case GGUFValueType.INT64: if (typeof v.value !== 'bigint' && typeof v.value !== 'number') throw bad(); return w.i64(v.value);
    case GGUFValueType.BOOL: if (typeof v.value !== 'boolean') throw bad(); return w.u8(v.value ? 1 : 0);
    case GGUFValueType.STRING: if (typeof v.value !== 'string') throw bad(); return w.string(v.value);
    case GGUFValueType.ARRAY: {
      const items = v.value as ArrayLike<unknown>;
      w.u32(v.itemType);
      w.u64(items.length);
      const Ctor = arrayCtor(v.itemType);
      if (Ctor) {
        const typed = items instanceof Ctor ? items : (Ctor as unknown as { from(a: ArrayLike<unknown>): ArrayBufferView }).from(items);
        w.bytes(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
        return;
      }
      for (let i = 0; i < items.length; i++) {
        const item = items[i];
        if (v.itemType === GGUFValueType.ARRAY) writeValue(w, item as GGUFTypedValue, key);
        else writeValue(w, { type: v.itemType, value: item } as GGUFTypedValue, key);
      }
      return;
    }
    default: throw new GGUFError(`metadata "${key}": unknown GGUF type ${(v as { type: number }).type}`);
  }
}

function isTyped(v: unknown): v is GGUFTypedValue {
  return !!v && typeof v === 'object' && 'type' in v && 'value' in v && typeof (v as { type: unknown }).type === 'number';
}

/** Write a GGUF v3 file atomically: header, metadata, tensor infos, then tensor data each padded to the alignment. */
export function writeGGUF(path: string, opts: GGUFWriteOptions): void {
  const entries = opts.metadata instanceof Map ? [...opts.metadata] : Object.entries(opts.metadata);
  const meta = new Map<string, GGUFTypedValue>();
  for (const [k, v] of entries) meta.set(k, isTyped(v) ? v : ggufValue(v));
  const alignment = opts.alignment ?? (meta.get('general.alignment')?.value as number | undefined) ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) throw new GGUFError(`alignment ${alignment} must be a power of two`);
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) meta.set('general.alignment', { type: GGUFValueType.UINT32, value: alignment });
  const align = (n: number) => Math.ceil(n / alignment) * alignment;

  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(3);
  w.u64(opts.tensors.length);
  w.u64(meta.size);
  for (const [k, v] of meta) {
    w.string(k);
    w.u32(v.type);
    writeValue(w, v, k);
  }
  let rel = 0;
  const names = new Set<string>();
  const sizes: number[] = [];
  for (const t of opts.tensors) {
    if (names.has(t.name)) throw new GGUFError(`${path}: duplicate tensor name "${t.name}"`);
    names.add(t.name);
    if (!GGML_TYPES[t.type]) throw new GGUFError(`${path}: tensor "${t.name}": unknown type ${t.type}`);
    if (t.shape.length < 1 || t.shape.length > 4) throw new GGUFError(`${path}: tensor "${t.name}": ${t.shape.length} dimensions (1..4 allowed)`);
    const rowLen = t.shape[t.shape.length - 1];
    if (rowLen % GGML_TYPES[t.type].block !== 0) throw new GGUFError(`${path}: tensor "${t.name}": row length ${rowLen} is not a multiple of the ${t.type} block size`);
    const size = ggmlByteSize(t.type, numel(t.shape));
    w.string(t.name);
    w.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) w.u64(d);
    w.u32(GGML_TYPES[t.type].id);
    w.u64(rel);
    sizes.push(size);
    rel = align(rel + size);
  }
  const header = w.finish();
  writeFileAtomic(path, (sink) => {
    sink.write(header);
    sink.pad(align(header.length) - header.length);
    opts.tensors.forEach((t, i) => {
      const src = typeof t.data === 'function' ? t.data() : t.data;
      const n = numel(t.shape);
      let bytes: Uint8Array;
      if (src instanceof Float32Array) {
        if (src.length !== n) throw new GGUFError(`${path}: tensor "${t.name}": ${src.length} values for shape [${t.shape}]`);
        bytes = quantize(t.type, src);
      } else {
        bytes = src;
      }
      if (bytes.byteLength !== sizes[i]) throw new GGUFError(`${path}: tensor "${t.name}": ${t.type} [${t.shape}] needs ${sizes[i]} bytes, got ${bytes.byteLength}`);
      sink.write(bytes);
      sink.pad(align(sizes[i]) - sizes[i]); // llama.cpp pads after every tensor, the last one too
    });
  });
}
