/**
 * Element-type conversions between IEEE-754 binary16 (f16), bfloat16 (bf16) and binary32 (f32), all round-to-nearest-even.
 * f16: https://en.wikipedia.org/wiki/Half-precision_floating-point_format
 * bf16: https://en.wikipedia.org/wiki/Bfloat16_floating-point_format (PyTorch rounds to nearest even; NaN stays NaN).
 * Host byte order is assumed little-endian (x86-64, arm64), matching safetensors/GGUF on disk.
 */
import { DTYPE_BYTES, numel, type DType, type HostTensor } from './tensor.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** f16 bits → f32 value (exact). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** f32 value → f16 bits, round to nearest even; overflow → ±Inf; NaN → quiet NaN (sign kept). */
export function f32ToF16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand, rounding half to even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m; // m may carry into the exponent field, which is the correct smallest normal
  }
  let h = sign | (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // carry may round up to Inf, as IEEE requires
  return h;
}

/** bf16 bits → f32 value (exact). */
export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0];
}

/** f32 value → bf16 bits, round to nearest even; NaN → quiet NaN. */
export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

let f16Table: Float32Array | null = null;
/** All 65536 f16 values as f32 (256 KiB, built on first use): bulk conversion becomes a table lookup. */
function f16Lookup(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
  }
  return f16Table;
}

/** Little-endian u16 view of bytes (copies only when unaligned). */
export function u16View(data: Uint8Array): Uint16Array {
  if (data.byteOffset % 2 === 0) return new Uint16Array(data.buffer, data.byteOffset, data.byteLength >> 1);
  return new Uint16Array(data.slice().buffer, 0, data.byteLength >> 1);
}

export function f16BytesToF32(data: Uint8Array): Float32Array {
  const src = u16View(data);
  const table = f16Lookup();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

export function bf16BytesToF32(data: Uint8Array): Float32Array {
  const src = u16View(data);
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

export function f32ToF16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16(src[i]);
  return new Uint8Array(out.buffer);
}

export function f32ToBf16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToBf16(src[i]);
  return new Uint8Array(out.buffer);
}

/** Convert any host tensor's elements to a fresh (or, for aligned f32, a shared-view) Float32Array. */
export function toFloat32(t: HostTensor): Float32Array {
  const n = numel(t.shape);
  if (t.data.byteLength !== n * DTYPE_BYTES[t.dtype]) {
    throw new Error(`toFloat32: ${t.dtype} tensor of shape [${t.shape}] needs ${n * DTYPE_BYTES[t.dtype]} bytes, has ${t.data.byteLength}`);
  }
  const { buffer, byteOffset } = t.data;
  const aligned = (k: number) => (byteOffset % k === 0 ? buffer : t.data.slice().buffer);
  const off = (k: number) => (byteOffset % k === 0 ? byteOffset : 0);
  switch (t.dtype) {
    case 'f32': return new Float32Array(aligned(4), off(4), n);
    case 'f16': return f16BytesToF32(t.data);
    case 'bf16': return bf16BytesToF32(t.data);
    case 'i64': return Float32Array.from(new BigInt64Array(aligned(8), off(8), n), Number);
    case 'i32': return Float32Array.from(new Int32Array(aligned(4), off(4), n));
    case 'i16': return Float32Array.from(new Int16Array(aligned(2), off(2), n));
    case 'i8': return Float32Array.from(new Int8Array(buffer, byteOffset, n));
    case 'u8': case 'bool': return Float32Array.from(new Uint8Array(buffer, byteOffset, n));
  }
}

/** Encode f32 values as a host tensor of a float dtype (f32 copies; f16/bf16 round to nearest even). */
export function fromFloat32(values: Float32Array, shape: number[], dtype: 'f32' | 'f16' | 'bf16' = 'f32'): HostTensor {
  if (numel(shape) !== values.length) throw new Error(`fromFloat32: ${values.length} values do not fit shape [${shape}]`);
  const data =
    dtype === 'f32' ? new Uint8Array(values.slice().buffer) : dtype === 'f16' ? f32ToF16Bytes(values) : f32ToBf16Bytes(values);
  return { dtype, shape: [...shape], data };
}

/** Re-encode a float tensor in another float dtype. */
export function castFloat(t: HostTensor, dtype: 'f32' | 'f16' | 'bf16'): HostTensor {
  if (t.dtype === dtype) return t;
  return fromFloat32(toFloat32(t), t.shape, dtype);
}

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/**
 * Write little-endian f32/f16/bf16 bytes `src` as f32 bytes into `dst` (any alignment). Used to stream weights
 * straight into a serialized model, so converting costs no whole-tensor temporary.
 */
export function writeAsF32(dtype: 'f32' | 'f16' | 'bf16', src: Uint8Array, dst: Uint8Array): void {
  const n = src.byteLength / DTYPE_BYTES[dtype];
  if (!Number.isInteger(n) || dst.byteLength !== n * 4) throw new Error(`writeAsF32: ${src.byteLength} bytes of ${dtype} do not fill ${dst.byteLength} f32 bytes`);
  if (dtype === 'f32') { dst.set(src); return; }
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const chunk = 1 << 16;
  const bits = new Uint32Array(Math.min(chunk, n));
  const floats = new Float32Array(bits.buffer);
  const bytes = new Uint8Array(bits.buffer);
  const table = dtype === 'f16' ? f16Lookup() : null;
  for (let start = 0; start < n; start += chunk) {
    const m = Math.min(chunk, n - start);
    if (table) for (let i = 0; i < m; i++) floats[i] = table[view.getUint16(2 * (start + i), true)];
    else for (let i = 0; i < m; i++) bits[i] = view.getUint16(2 * (start + i), true) << 16;
    dst.set(m === bits.length ? bytes : bytes.subarray(0, 4 * m), 4 * start);
  }
}

