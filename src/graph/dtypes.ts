/** Element types of graph tensors, named like `src/formats/tensor.ts` (plus f64). */
export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'i8' | 'u8' | 'bool';

export const DTYPE_SIZE: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, i8: 1, u8: 1, bool: 1 };

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['f32', 'f16', 'bf16', 'f64']);
export const INT_DTYPES: ReadonlySet<DType> = new Set(['i64', 'i32', 'i8', 'u8']);

export const isFloat = (d: DType): boolean => FLOAT_DTYPES.has(d);
export const isNumeric = (d: DType): boolean => d !== 'bool';

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half → float (exact). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** float → IEEE half, round to nearest even. */
export function floatToHalf(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) { r = 0; e++; if (e >= 31) return sign | 0x7c00; }
  }
  return sign | (e << 10) | r;
}

/** float → bfloat16, round to nearest even (as torch does). */
export function floatToBf16(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  if ((x & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Write little-endian f32/f16/bf16 bytes `src` as f32 bytes into `dst` (any alignment). Used to stream weights
 * straight into the serialized model, so converting costs no whole-tensor temporary.
 */
export function writeAsF32(dtype: 'f32' | 'f16' | 'bf16', src: Uint8Array, dst: Uint8Array): void {
  const n = src.byteLength / DTYPE_SIZE[dtype];
  if (!Number.isInteger(n) || dst.byteLength !== n * 4) throw new Error(`writeAsF32: ${src.byteLength} bytes of ${dtype} do not fill ${dst.byteLength} f32 bytes`);
  if (dtype === 'f32') { dst.set(src); return; }
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const chunk = 1 << 16;
  const bits = new Uint32Array(Math.min(chunk, n));
  const floats = new Float32Array(bits.buffer);
  const bytes = new Uint8Array(bits.buffer);
  const table = dtype === 'f16' ? halfTable() : null;
  for (let start = 0; start < n; start += chunk) {
    const m = Math.min(chunk, n - start);
    if (table) for (let i = 0; i < m; i++) floats[i] = table[view.getUint16(2 * (start + i), true)];
    else for (let i = 0; i < m; i++) bits[i] = view.getUint16(2 * (start + i), true) << 16;
    dst.set(m === bits.length ? bytes : bytes.subarray(0, 4 * m), 4 * start);
  }
}

let halfTableCache: Float32Array | null = null;
function halfTable(): Float32Array {
  if (!halfTableCache) {
    halfTableCache = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTableCache[h] = halfToFloat(h);
  }
  return halfTableCache;
}
