/**
 * ONNX Runtime contrib ops (domain com.microsoft) the quantized decoder uses, registered into OPS like the standard ones.
 * Specs: https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md
 *  - MatMulNBits: Y = A · dequant(B)ᵀ, B blockwise 2/4/8-bit [N, ceil(K/block), block·bits/8], scales [N·blocks],
 *    optional packed zero points; attributes K, N, bits, block_size, accuracy_level.
 *  - MatMulBnb4: Y = A · dequant(B)ᵀ with bitsandbytes FP4/NF4 blocks (B packed [(N·K+1)/2], absmax [N·K/block]);
 *    attributes K, N, block_size, quant_type (0 FP4, 1 NF4).
 *  - DynamicQuantizeMatMul: A quantized to uint8 on the fly times int8 B [K, N] with per-column scales.
 *  - SimplifiedLayerNormalization (ai.onnx domain in ORT) = RMSNorm: x / sqrt(mean(x²) + epsilon) · scale, over the last axis.
 *  - SkipSimplifiedLayerNormalization: the same on input + skip; outputs [normed, mean, inv_std_var, input + skip].
 *  - RotaryEmbedding: RoPE from position_ids and cos/sin caches [max_pos, D/2]; interleaved 0 = rotate-half (HF).
 */
import { isFloat } from './dtypes.js';
import { fail, type Dim } from './ir.js';
import { OPS, type OpDef } from './ops.js';

export const MS_DOMAIN = 'com.microsoft';

/** Op name → ONNX domain, for ops outside the default domain. */
export const OP_DOMAINS: ReadonlyMap<string, string> = new Map([
  ['MatMulNBits', MS_DOMAIN], ['MatMulBnb4', MS_DOMAIN], ['DynamicQuantizeMatMul', MS_DOMAIN],
  ['SkipSimplifiedLayerNormalization', MS_DOMAIN], ['RotaryEmbedding', MS_DOMAIN],
]);

const intAttr = (v: unknown, key: string): number => {
  if (typeof v !== 'number' || !Number.isInteger(v)) fail(`attribute '${key}' must be an integer, got ${JSON.stringify(v)}`);
  return v;
};

/** A [..., K] times a stored [N, K] weight → [..., N]. */
const quantizedMatMul = (arity: OpDef['arity'], weightDtypes: string[]): OpDef => ({
  arity,
  infer: ([a, b], attrs) => {
    if (!isFloat(a.dtype)) fail(`A must be float, got ${a}`);
    if (!weightDtypes.includes(b.dtype)) fail(`B must be ${weightDtypes.join('/')}, got ${b}`);
    const K = intAttr(attrs.K, 'K'), N = intAttr(attrs.N, 'N');
    const k = a.shape[a.rank - 1];
    if (typeof k === 'number' && k !== K) fail(`A's last dimension ${k} is not K=${K}`);
    return [{ dtype: a.dtype, shape: [...a.shape.slice(0, -1), N as Dim] }];
  },
});

Object.assign(OPS, {
  MatMulNBits: quantizedMatMul([3, 4], ['u8']),
  MatMulBnb4: quantizedMatMul(3, ['u8']),
  DynamicQuantizeMatMul: {
    arity: [3, 5],
    infer: ([a, b]) => {
      if (a.dtype !== 'f32') fail(`A must be f32, got ${a}`);
      if (b.dtype !== 'i8' && b.dtype !== 'u8') fail(`B must be int8/uint8 [K, N], got ${b}`);
      return [{ dtype: 'f32', shape: [...a.shape.slice(0, -1), b.shape[1]] }];
    },
  },
  SimplifiedLayerNormalization: { arity: 2, infer: ([x]) => [{ dtype: x.dtype, shape: [...x.shape] }] },
  SkipSimplifiedLayerNormalization: {
    arity: [3, 4],
    infer: ([x]) => {
      const stat = { dtype: 'f32' as const, shape: [...x.shape.slice(0, -1), 1 as Dim] };
      return [{ dtype: x.dtype, shape: [...x.shape] }, stat, stat, { dtype: x.dtype, shape: [...x.shape] }];
    },
  },
  RotaryEmbedding: { arity: 4, infer: ([x]) => [{ dtype: x.dtype, shape: [...x.shape] }] },
} satisfies Record<string, OpDef>);
