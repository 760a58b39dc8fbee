/**
 * llama.cpp's k-quant and Q5_0 reference quantizers, byte for byte, plus the tensor-type recipes of `llama-quantize`.
 * Sources: llama.cpp `ggml/src/ggml-quants.c` (`quantize_row_q4_K_ref`, `quantize_row_q6_K_ref`, `quantize_row_q5_0_ref`,
 * `make_qkx2_quants`, `make_qx_quants`, `nearest_int`) and `src/llama-quant.cpp` (`llama_tensor_get_type_impl`,
 * `tensor_type_fallback`). Without an importance matrix `llama-quantize` calls exactly these `_ref` functions.
 * ggml-base is compiled without -march flags (no FMA contraction), so every float operation rounds to f32: each one
 * is wrapped in Math.fround here, in the C evaluation order.
 */
import { GGML_TYPES, quantize, type GGMLTypeName } from '../formats/gguf.js';
import { f16ToF32, f32ToF16 } from '../formats/dtype.js';

const fr = Math.fround;
const QK_K = 256;

/** ggml's nearest_int: add 1.5·2²³ in f32 (round half to even), read the integer back. */
const nearestInt = (x: number): number => fr(x + 12582912) - 12582912;

function putF16(out: Uint8Array, at: number, v: number): void {
  const h = f32ToF16(v);
  out[at] = h & 0xff;
  out[at + 1] = h >> 8;
}

/** make_qkx2_quants: asymmetric (scale, min) search over `nstep + 1` candidate scales, weighted squared error. */
function makeQkx2Quants(n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number,
  Laux: Uint8Array, rmin: number, rdelta: number, nstep: number): { scale: number; min: number } {
  let min = x[xo], max = x[xo];
  let sumW = weights[0];
  let sumX = fr(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i];
    sumW = fr(sumW + w);
    sumX = fr(sumX + fr(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    return { scale: 0, min: -min };
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[xo + i] - min)))));
    L[lo + i] = l;
    const diff = fr(fr(fr(scale * l) + min) - x[xo + i]);
    bestError = fr(bestError + fr(weights[i] * fr(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(fr(rdelta) * is)) + nmax) / fr(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[xo + i] - min)))));
      Laux[i] = l;
      const w = weights[i];
      sumL = fr(sumL + fr(w * l));
      sumL2 = fr(sumL2 + fr(fr(w * l) * l));
      sumXL = fr(sumXL + fr(fr(w * l) * x[xo + i]));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let cur = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * Laux[i]) + thisMin) - x[xo + i]);
        cur = fr(cur + fr(weights[i] * fr(diff * diff)));
      }
      if (cur < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i];
        bestError = cur;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, min: -min };
}

/** make_qx_quants with rmse_type 1 (weights x²), no importance: symmetric scale search over 19 candidates. */
function makeQxQuants(n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number): number {
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) { amax = ax; max = x[xo + i]; }
  }
  if (amax < 1e-15) { // GROUP_MAX_EPS
    L.fill(0, lo, lo + n);
    return 0;
  }
  let iscale = fr(-nmax / max);
  let sumLX = 0, sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
    L[lo + i] = l + nmax;
    const w = fr(v * v);
    sumLX = fr(sumLX + fr(fr(w * v) * l));
    sumL2 = fr(sumL2 + fr(fr(w * l) * l));
  }
  let scale = sumL2 ? fr(sumLX / sumL2) : 0;
  let best = fr(scale * sumLX);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(fr(0.1) * is)) / max);
    sumLX = sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * v))));
      const w = fr(v * v);
      sumLX = fr(sumLX + fr(fr(w * v) * l));
      sumL2 = fr(sumL2 + fr(fr(w * l) * l));
    }
    if (sumL2 > 0 && fr(sumLX * sumLX) > fr(best * sumL2)) {
      for (let i = 0; i < n; i++) L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * x[xo + i]))));
      scale = fr(sumLX / sumL2);
      best = fr(scale * sumLX);
    }
  }
  return scale;
}

function checkBlocks(type: string, x: Float32Array, block: number): void {
  if (x.length % block !== 0) throw new RangeError(`${type}: ${x.length} values is not a multiple of ${block}`);
}

/** quantize_row_q4_K_ref: 256-value super-blocks of 8×32, 6-bit scales and mins, 4-bit values (144 bytes). */
export function quantizeQ4_K(x: Float32Array): Uint8Array {
  checkBlocks('Q4_K', x, QK_K);
  const out = new Uint8Array((x.length / QK_K) * 144);
  const L = new Uint8Array(QK_K), Laux = new Uint8Array(32), weights = new Float32Array(32);
  const scales = new Float32Array(8), mins = new Float32Array(8);
  for (let xo = 0, o = 0; xo < x.length; xo += QK_K, o += 144) {
    let maxScale = 0, maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(x[xo + 32 * j + l] * x[xo + 32 * j + l]));
      const avX = fr(Math.sqrt(fr(sumX2 / 32)));
      for (let l = 0; l < 32; l++) weights[l] = fr(avX + Math.abs(x[xo + 32 * j + l]));
      const r = makeQkx2Quants(32, 15, x, xo + 32 * j, weights, L, 32 * j, Laux, -1, 0.1, 20);
      scales[j] = r.scale;
      mins[j] = r.min;
      if (r.scale > maxScale) maxScale = r.scale;
      if (r.min > maxMin) maxMin = r.min;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    const sc = o + 4;
    for (let j = 0; j < 8; j++) {
      const ls = Math.min(63, nearestInt(fr(invScale * scales[j])) & 0xff); // uint8_t then MIN, as in C
      const lm = Math.min(63, nearestInt(fr(invMin * mins[j])) & 0xff);
      if (j < 4) {
        out[sc + j] = ls;
        out[sc + j + 4] = lm;
      } else {
        out[sc + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
        out[sc + j - 4] |= (ls >> 4) << 6;
        out[sc + j] |= (lm >> 4) << 6;
      }
    }
    putF16(out, o, fr(maxScale / 63));
    putF16(out, o + 2, fr(maxMin / 63));
    const d0 = f16ToF32(out[o] | (out[o + 1] << 8)), dmin0 = f16ToF32(out[o + 2] | (out[o + 3] << 8));
    for (let j = 0; j < 8; j++) {
      const [s, m] = j < 4 ? [out[sc + j] & 63, out[sc + j + 4] & 63]
        : [(out[sc + j + 4] & 0xf) | ((out[sc + j - 4] >> 6) << 4), (out[sc + j + 4] >> 4) | ((out[sc + j] >> 6) << 4)];
      const d = fr(d0 * s);
      if (!d) continue;
      const dm = fr(dmin0 * m);
      for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = Math.max(0, Math.min(15, nearestInt(fr(fr(x[xo + 32 * j + ii] + dm) / d))));
    }
    let q = o + 16;
    for (let j = 0; j < QK_K; j += 64) {
      for (let l = 0; l < 32; l++) out[q + l] = L[j + l] | (L[j + l + 32] << 4);
      q += 32;
    }
  }
  return out;
}

/** quantize_row_q6_K_ref: 256-value super-blocks of 16×16, int8 scales, 6-bit values (210 bytes). */
export function quantizeQ6_K(x: Float32Array): Uint8Array {
  checkBlocks('Q6_K', x, QK_K);
  const out = new Uint8Array((x.length / QK_K) * 210);
  const L = new Int8Array(QK_K), scales = new Float32Array(16);
  for (let xo = 0, o = 0; xo < x.length; xo += QK_K, o += 210) {
    let maxScale = 0, maxAbsScale = 0;
    for (let ib = 0; ib < 16; ib++) {
      const scale = makeQxQuants(16, 32, x, xo + 16 * ib, L, 16 * ib);
      scales[ib] = scale;
      if (Math.abs(scale) > maxAbsScale) { maxAbsScale = Math.abs(scale); maxScale = scale; }
    }
    if (maxAbsScale < 1e-15) continue; // all-zero block: zero bytes, d = +0
    const iscale = fr(-128 / maxScale);
    putF16(out, o + 208, fr(1 / iscale));
    const d0 = f16ToF32(out[o + 208] | (out[o + 209] << 8));
    for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(fr(iscale * scales[ib]))) & 0xff;
    for (let j = 0; j < 16; j++) {
      const d = fr(d0 * ((out[o + 192 + j] << 24) >> 24));
      if (!d) continue;
      for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(fr(x[xo + 16 * j + ii] / d)))) + 32;
    }
    let ql = o, qh = o + 128;
    for (let j = 0; j < QK_K; j += 128) {
      for (let l = 0; l < 32; l++) {
        const q1 = L[j + l] & 0xf, q2 = L[j + l + 32] & 0xf, q3 = L[j + l + 64] & 0xf, q4 = L[j + l + 96] & 0xf;
        out[ql + l] = q1 | (q3 << 4);
        out[ql + l + 32] = q2 | (q4 << 4);
        out[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6);
      }
      ql += 64;
      qh += 32;
    }
  }
  return out;
}

/** quantize_row_q5_0_ref: 32-value blocks, f16 scale, 5-bit values (22 bytes); llama.cpp's fallback for Q4_K rows of 32k. */
export function quantizeQ5_0(x: Float32Array): Uint8Array {
  checkBlocks('Q5_0', x, 32);
  const out = new Uint8Array((x.length / 32) * 22);
  for (let xo = 0, o = 0; xo < x.length; xo += 32, o += 22) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[xo + j];
      if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; }
    }
    const d = fr(max / -16);
    const id = d ? fr(1 / d) : 0;
    putF16(out, o, d);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      // (int8_t)(x + 16.5f): truncation toward zero; values are >= 0.5 here.
      const xi0 = Math.min(31, Math.trunc(fr(fr(x[xo + j] * id) + 16.5)));
      const xi1 = Math.min(31, Math.trunc(fr(fr(x[xo + 16 + j] * id) + 16.5)));
      out[o + 6 + j] = (xi0 & 0xf) | ((xi1 & 0xf) << 4);
      qh |= ((xi0 & 0x10) >> 4) << j;
      qh |= ((xi1 & 0x10) >> 4) << (j + 16);
    }
    new DataView(out.buffer).setUint32(o + 2, qh >>> 0, true);
  }
  return out;
}

/** Quantize f32 values to any ggml type slimlm writes. */
export function quantizeGGML(type: GGMLTypeName, x: Float32Array): Uint8Array {
  switch (type) {
    case 'Q5_0': return quantizeQ5_0(x);
    case 'Q4_K': return quantizeQ4_K(x);
    case 'Q6_K': return quantizeQ6_K(x);
    // F32, F16, Q8_0, Q4_0: the GGUF module's reference quantizers.
    case 'F32': case 'F16': case 'Q8_0': case 'Q4_0': return quantize(type, x);
    default: throw new RangeError(`quantization to ${type} is not supported (F32, F16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K)`);
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// llama-quantize's tensor-type recipe for the llama architecture

/** File types slimlm writes, with llama.cpp's `general.file_type` (enum llama_ftype). */
export const LLAMA_FTYPES = {
  f32: { id: 0, base: 'F32' }, f16: { id: 1, base: 'F16' }, q4_0: { id: 2, base: 'Q4_0' }, q8_0: { id: 7, base: 'Q8_0' },
  q4_k_m: { id: 15, base: 'Q4_K' },
} as const satisfies Record<string, { id: number; base: GGMLTypeName }>;
export type LlamaFtype = keyof typeof LLAMA_FTYPES;

const FALLBACK: Partial<Record<GGMLTypeName, GGMLTypeName>> = { Q4_K: 'Q5_0', Q6_K: 'Q8_0' };

/** Rows not a multiple of the block size take llama.cpp's fallback type, then F16. */
function fallback(type: GGMLTypeName, rowLength: number): GGMLTypeName {
  if (rowLength % GGML_TYPES[type].block === 0) return type;
  const next = FALLBACK[type] ?? type;
  return rowLength % GGML_TYPES[next].block === 0 ? next : 'F16';
}

/**
 * The ggml type llama-quantize gives a GGUF llama tensor (`blk.N.attn_v.weight`, `output.weight`, …) for `ftype`:
 * 1-D tensors and norms stay F32; the output matrix (or the tied embedding) gets Q6_K (Q8_0 if its rows do not fit
 * 256) for every quantized ftype except Q8_0; for Q4_K_M, attn_v and ffn_down get Q6_K in the layers `use_more_bits` picks
 * (the first and last eighth and every third layer between).
 */
export function llamaCppTensorType(ftype: LlamaFtype, ggufName: string, shape: readonly number[], nLayers: number, tied: boolean): GGMLTypeName {
  const base: GGMLTypeName = LLAMA_FTYPES[ftype].base;
  if (shape.length < 2 || ggufName.endsWith('_norm.weight')) return 'F32';
  if (base === 'F32' || base === 'F16') return base;
  const rowLength = shape[shape.length - 1];
  if (ggufName === 'output.weight' || (tied && ggufName === 'token_embd.weight')) {
    if (rowLength % GGML_TYPES[base].block !== 0 || base === 'Q8_0') return fallback('Q8_0', rowLength);
    return fallback('Q6_K', rowLength);
  }
  let type: GGMLTypeName = base;
  const layer = Number(/^blk\.(\d+)\./.exec(ggufName)?.[1] ?? -1);
  const useMoreBits = (i: number, n: number) => i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
  if (ftype === 'q4_k_m' && layer >= 0 && (ggufName.endsWith('.attn_v.weight') || ggufName.endsWith('.ffn_down.weight')) && useMoreBits(layer, nLayers)) {
    type = 'Q6_K';
  }
  return fallback(type, rowLength);
}
