/**
 * Which tensors get which quantization: the documented, overridable recipe of `slimlm quantize` / `slimlm eval --type`.
 * Defaults (docs/QUANTIZATION.md):
 *  - norms and the token embedding (read by Gather) stay in their float dtype;
 *  - every Linear inside the decoder layers gets the chosen type;
 *  - the LM head: int4/int4-asym → 8-bit, in the recipe's block size (the role llama.cpp gives Q6_K/Q8_0 on
 *    `output.weight`; blocks of 32 where its rows are not whole blocks of that size);
 *    nf4/fp4 → kept in float, as transformers + bitsandbytes do (`llm_int8_skip_modules` = lm_head); int8 → int8.
 *  - int4/int8 blocks: a Linear whose rows are not a whole number of blocks stays float (llama-quantize's rule);
 *  `keep` (a RegExp on HF names) keeps more Linear layers in float; `lmHead` overrides the head's treatment.
 */
import type { LinearLayout, QuantizedLinear } from '../models/quantized.js';
import { quantizeBnb4 } from './bnb4.js';
import { quantizeInt8Rows, quantizeNBits } from './nbits.js';

export const LINEAR_QUANT_TYPES = ['nf4', 'fp4', 'int8', 'int8-row', 'int4', 'int4-asym'] as const;
export type LinearQuantType = (typeof LINEAR_QUANT_TYPES)[number];

export interface QuantRecipe {
  type: LinearQuantType;
  /** Block size: 64 for nf4/fp4 (bitsandbytes), 32 for int4/int8 by default. */
  blockSize?: number;
  /** bitsandbytes double quantization of the absmax values (nf4/fp4). */
  doubleQuant?: boolean;
  /** Linear weights (HF names) kept in float. */
  keep?: RegExp;
  /** LM head: 'int8' (8-bit, the recipe's block size), 'float', or 'same' as the other Linear layers. */
  lmHead?: 'int8' | 'float' | 'same';
}

const LM_HEAD = /^(lm_head\.weight|model\.embed_tokens\.weight)$/;

/** Block sizes ONNX Runtime's MatMulNBits and MatMulBnb4 execute. */
export const BLOCK_SIZES = [16, 32, 64, 128, 256] as const;

/** Throws a RangeError naming what is wrong with a recipe (before anything is read or written). */
export function checkRecipe(r: QuantRecipe): void {
  if (!LINEAR_QUANT_TYPES.includes(r.type)) throw new RangeError(`quantization type must be one of ${LINEAR_QUANT_TYPES.join(', ')}, got ${JSON.stringify(r.type)}`);
  if (r.blockSize !== undefined && !(BLOCK_SIZES as readonly number[]).includes(r.blockSize)) {
    throw new RangeError(`block size must be ${BLOCK_SIZES.join(', ')} (what ONNX Runtime's MatMulNBits/MatMulBnb4 run), got ${r.blockSize}`);
  }
  if (r.lmHead !== undefined && !['int8', 'float', 'same'].includes(r.lmHead)) throw new RangeError(`LM head treatment must be int8, float or same, got ${JSON.stringify(r.lmHead)}`);
}

/** checkRecipe, plus what a written folder cannot hold: bitsandbytes' nf4/fp4 layout has no 8-bit head. */
export function checkFolderRecipe(r: QuantRecipe): void {
  checkRecipe(r);
  if ((r.type === 'nf4' || r.type === 'fp4') && r.lmHead === 'int8') {
    throw new RangeError(`an ${r.type} folder follows bitsandbytes' layout, which has no 8-bit head: use lm-head float or same (eval --type ${r.type} --lm-head int8 measures it on the fly)`);
  }
}

export function recipeBlockSize(r: QuantRecipe): number {
  return r.blockSize ?? (r.type === 'nf4' || r.type === 'fp4' ? 64 : 32);
}

function headTreatment(r: QuantRecipe): 'int8' | 'float' | 'same' {
  return r.lmHead ?? (r.type === 'nf4' || r.type === 'fp4' ? 'float' : r.type.startsWith('int4') ? 'int8' : 'same');
}

/**
 * Layout of Linear `name` (the LM head is `lm_head.weight`, or `model.embed_tokens.weight` when tied). As llama.cpp's
 * llama-quantize does, a weight whose rows (`inFeatures`) are not a whole number of blocks stays float rather than
 * ending every row in a partial block.
 */
export function recipeLayout(r: QuantRecipe, name: string, inFeatures?: number): LinearLayout {
  const layout = blockLayout(r, name, inFeatures);
  const rowBlocked = layout.kind === 'nbits';
  return rowBlocked && inFeatures !== undefined && inFeatures % layout.blockSize !== 0 ? { kind: 'float' } : layout;
}

/** Whether Linear `name` stays float only because its rows are not whole blocks (what `slimlm quantize` warns about). */
export function fallsBackToFloat(r: QuantRecipe, name: string, inFeatures: number): boolean {
  const layout = blockLayout(r, name, inFeatures);
  return layout.kind === 'nbits' && inFeatures % layout.blockSize !== 0;
}

function blockLayout(r: QuantRecipe, name: string, inFeatures?: number): LinearLayout {
  if (r.keep?.test(name)) return { kind: 'float' };
  const block = recipeBlockSize(r);
  if (LM_HEAD.test(name)) {
    const head = headTreatment(r);
    if (head === 'float') return { kind: 'float' };
    if (head === 'int8') {
      // MatMulNBits' 8-bit GEMV is faster with bigger blocks, and 8-bit blocks of 256 cost no measurable quality
      // (docs/QUANTIZATION.md); rows that are not whole blocks of the recipe's size take blocks of 32 rather than float.
      const headBlock = inFeatures === undefined || inFeatures % block === 0 ? block : 32;
      return { kind: 'nbits', bits: 8, blockSize: headBlock, symmetric: true };
    }
  }
  switch (r.type) {
    case 'nf4': case 'fp4': return { kind: 'bnb4', quantType: r.type, blocksize: block };
    case 'int8': return { kind: 'nbits', bits: 8, blockSize: block, symmetric: true };
    case 'int8-row': return { kind: 'int8-row' };
    case 'int4': return { kind: 'nbits', bits: 4, blockSize: block, symmetric: true };
    case 'int4-asym': return { kind: 'nbits', bits: 4, blockSize: block, symmetric: false };
  }
}

/** Quantize one Linear weight [N, K] (f32 values) as `layout` says. `dtype` is recorded in bnb's quant state. */
export function quantizeLinear(layout: LinearLayout, r: QuantRecipe, w: Float32Array, shape: readonly number[], dtype = 'float32'): QuantizedLinear {
  const [N, K] = shape;
  switch (layout.kind) {
    case 'float': return { kind: 'float', w: { dtype: 'f32', shape: [N, K], data: new Uint8Array(w.buffer, w.byteOffset, w.byteLength) } };
    case 'bnb4': return { kind: 'bnb4', w: quantizeBnb4(w, [N, K], { quantType: layout.quantType, blocksize: layout.blocksize, doubleQuant: r.doubleQuant ?? true, dtype }) };
    case 'nbits': return { kind: 'nbits', w: quantizeNBits(w, N, K, { bits: layout.bits, blockSize: layout.blockSize, symmetric: layout.symmetric }) };
    case 'int8-row': return { kind: 'int8-row', w: quantizeInt8Rows(w, N, K) };
  }
}
