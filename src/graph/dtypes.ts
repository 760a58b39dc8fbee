/** Element types of graph tensors, named like `src/formats/tensor.ts` (plus f64). */
export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'i8' | 'u8' | 'bool';

export const DTYPE_SIZE: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, i8: 1, u8: 1, bool: 1 };

export const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['f32', 'f16', 'bf16', 'f64']);
export const INT_DTYPES: ReadonlySet<DType> = new Set(['i64', 'i32', 'i8', 'u8']);

export const isFloat = (d: DType): boolean => FLOAT_DTYPES.has(d);
export const isNumeric = (d: DType): boolean => d !== 'bool';

// Scalar and bulk conversions live with the file formats; the graph re-exports the ones lowering needs.
export { f16ToF32 as halfToFloat, f32ToF16 as floatToHalf, f32ToBf16 as floatToBf16, writeAsF32 } from '../formats/dtype.js';
