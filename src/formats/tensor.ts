/** Host-side tensors: raw little-endian bytes plus dtype and shape. Shared by every format module. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i64' | 'i32' | 'i16' | 'i8' | 'u8' | 'bool';

export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, i64: 8, i32: 4, i16: 2, i8: 1, u8: 1, bool: 1 };

export interface HostTensor {
  dtype: DType;
  shape: number[];
  /** Raw little-endian element bytes; may be a view into a larger buffer (mind byteOffset). */
  data: Uint8Array;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
