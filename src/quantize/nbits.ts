/**
 * Blockwise int4 / int8 weights in the layout ONNX Runtime's com.microsoft `MatMulNBits` executes
 * (https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.MatMulNBits):
 *   B           uint8 [N, ceil(K/block), block·bits/8]; 4-bit: element 2i in the low nibble, 2i+1 in the high nibble
 *   scales      f32 [N · ceil(K/block)]
 *   zero_points uint8, 4-bit packed two per byte (low nibble first) [N · ceil(ceil(K/block)/2)], 8-bit [N · blocks];
 *               absent = symmetric with the implicit zero point 2^(bits-1) (8 or 128)
 *   w[n, k] = (q[n, k] − zp[n, k/block]) · scale[n, k/block]
 * Symmetric int4 maps the block's signed extreme to −8 (as ggml's Q4_0 and ORT's quantizer do), using all 16 levels;
 * asymmetric spans [min, max] with a zero point so that 0 stays exactly representable. A partial last block is zero padded.
 * Also per-row int8 (absmax/127 per output row) for ORT's DynamicQuantizeMatMul (B int8 [K, N], scale per column of B).
 */
export interface NBitsWeight {
  bits: 4 | 8;
  blockSize: number;
  /** Rows (out features) and columns (in features) of the [N, K] weight. */
  N: number;
  K: number;
  B: Uint8Array;
  scales: Float32Array;
  zeroPoints: Uint8Array | null;
}

export interface NBitsOptions {
  bits: 4 | 8;
  blockSize?: number;
  symmetric?: boolean;
}

const f = Math.fround;

export function nbitsBlocks(K: number, blockSize: number): number {
  return Math.ceil(K / blockSize);
}

/** Quantize a row-major [N, K] f32 weight (HF Linear layout) for MatMulNBits. */
export function quantizeNBits(w: Float32Array, N: number, K: number, opts: NBitsOptions): NBitsWeight {
  const { bits } = opts;
  const blockSize = opts.blockSize ?? 32;
  const symmetric = opts.symmetric ?? true;
  if (bits !== 4 && bits !== 8) throw new RangeError(`MatMulNBits bits must be 4 or 8, got ${bits}`);
  if (blockSize < 16 || (blockSize & (blockSize - 1)) !== 0) throw new RangeError(`block size must be a power of two >= 16, got ${blockSize}`);
  if (w.length !== N * K) throw new RangeError(`${w.length} values for a [${N}, ${K}] weight`);
  const blocks = nbitsBlocks(K, blockSize);
  const blob = (blockSize * bits) / 8;
  const qmax = (1 << bits) - 1, mid = 1 << (bits - 1);
  const B = new Uint8Array(N * blocks * blob);
  const scales = new Float32Array(N * blocks);
  const zp = symmetric ? null : new Uint8Array(bits === 4 ? N * Math.ceil(blocks / 2) : N * blocks);
  const q = new Uint8Array(blockSize);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const start = n * K + b * blockSize, len = Math.min(blockSize, K - b * blockSize);
      let scale: number, zero: number;
      if (symmetric) {
        let amax = 0, max = 0;
        for (let i = 0; i < len; i++) { const v = w[start + i]; if (Math.abs(v) > amax) { amax = Math.abs(v); max = v; } }
        scale = f(max / -mid); // the signed extreme lands on -mid (-8 / -128)
        zero = mid;
      } else {
        let lo = 0, hi = 0; // the range always holds 0, so 0 is exact
        for (let i = 0; i < len; i++) { lo = Math.min(lo, w[start + i]); hi = Math.max(hi, w[start + i]); }
        scale = f((hi - lo) / qmax);
        zero = scale ? Math.min(qmax, Math.max(0, Math.round(-lo / scale))) : mid;
      }
      const inv = scale ? 1 / scale : 0;
      q.fill(zero);
      for (let i = 0; i < len; i++) q[i] = Math.min(qmax, Math.max(0, Math.round(w[start + i] * inv) + zero));
      const at = (n * blocks + b) * blob;
      if (bits === 8) B.set(q, at);
      else for (let i = 0; i < blockSize; i += 2) B[at + i / 2] = q[i] | (q[i + 1] << 4);
      scales[n * blocks + b] = scale;
      if (zp) {
        if (bits === 8) zp[n * blocks + b] = zero;
        else zp[n * Math.ceil(blocks / 2) + (b >> 1)] |= b & 1 ? zero << 4 : zero;
      }
    }
  }
  return { bits, blockSize, N, K, B, scales, zeroPoints: zp };
}

export function dequantizeNBits(q: NBitsWeight): Float32Array {
  const { bits, blockSize, N, K } = q;
  const blocks = nbitsBlocks(K, blockSize), blob = (blockSize * bits) / 8, mid = 1 << (bits - 1);
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize), i = k % blockSize, at = (n * blocks + b) * blob;
      const v = bits === 8 ? q.B[at + i] : (q.B[at + (i >> 1)] >> ((i & 1) * 4)) & 15;
      let zero = mid;
      if (q.zeroPoints) zero = bits === 8 ? q.zeroPoints[n * blocks + b] : (q.zeroPoints[n * Math.ceil(blocks / 2) + (b >> 1)] >> ((b & 1) * 4)) & 15;
      out[n * K + k] = f((v - zero) * q.scales[n * blocks + b]);
    }
  }
  return out;
}

/** Storage bits per weight (packed values, f32 scales, zero points). */
export function nbitsBitsPerWeight(q: NBitsWeight): number {
  return ((q.B.byteLength + q.scales.byteLength + (q.zeroPoints?.byteLength ?? 0)) * 8) / (q.N * q.K);
}

export interface Int8RowWeight {
  N: number;
  K: number;
  /** int8 values transposed to [K, N] (DynamicQuantizeMatMul's B). */
  BT: Int8Array;
  /** One scale per output row (absmax / 127). */
  scales: Float32Array;
}

/** Per-row symmetric int8 (bitsandbytes' LLM.int8 vector-wise scheme without outliers). */
export function quantizeInt8Rows(w: Float32Array, N: number, K: number): Int8RowWeight {
  const BT = new Int8Array(N * K), scales = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let amax = 0;
    for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
    const scale = f(amax / 127), inv = scale ? 127 / amax : 0;
    scales[n] = scale;
    for (let k = 0; k < K; k++) BT[k * N + n] = Math.round(w[n * K + k] * inv);
  }
  return { N, K, BT, scales };
}

export function dequantizeInt8Rows(q: Int8RowWeight): Float32Array {
  const out = new Float32Array(q.N * q.K);
  for (let n = 0; n < q.N; n++) for (let k = 0; k < q.K; k++) out[n * q.K + k] = f(q.BT[k * q.N + n] * q.scales[n]);
  return out;
}
