/**
 * GGUF Q4_0 / Q8_0 blocks executed as MatMulNBits without requantizing: both are symmetric blocks of 32 with one scale,
 * so a Q4_0 block (d, q ∈ 0..15, w = (q − 8)·d) is a 4-bit MatMulNBits block with the implicit zero point 8, and a
 * Q8_0 block (d, q ∈ −128..127) an 8-bit block with zero point 128 after adding 128. Only the nibble order differs
 * (ggml: element j low, j+16 high; MatMulNBits: 2i low, 2i+1 high). Other ggml types are dequantized to f32.
 * Layouts: llama.cpp ggml-common.h (block_q4_0, block_q8_0); ORT ContribOperators.md (MatMulNBits).
 */
import { GGUFFile } from '../formats/gguf.js';
import { f16ToF32 } from '../formats/dtype.js';
import { hfToGGUFName, openCheckpoint, permuteMetaToHF, type Checkpoint } from './checkpoint.js';
import { linearNames } from './quantizedCheckpoint.js';
import type { QuantizedWeightProvider } from './quantized.js';

const ROWS_PERMUTED = (name: string) => /\.self_attn\.(q|k)_proj\.weight$/.test(name);

/** Q4_0 / Q8_0 raw blocks [N rows × K/32 blocks] → MatMulNBits B and scales. */
export function ggmlBlocksToNBits(type: 'Q4_0' | 'Q8_0', raw: Uint8Array, N: number, K: number) {
  const blocks = K / 32, bytes = type === 'Q4_0' ? 18 : 34, blob = type === 'Q4_0' ? 16 : 32;
  const B = new Uint8Array(N * blocks * blob), scales = new Float32Array(N * blocks);
  for (let b = 0; b < N * blocks; b++) {
    const o = b * bytes;
    scales[b] = f16ToF32(raw[o] | (raw[o + 1] << 8));
    const dst = b * blob;
    if (type === 'Q8_0') {
      for (let j = 0; j < 32; j++) B[dst + j] = (raw[o + 2 + j] + 128) & 0xff; // int8 → offset binary
    } else {
      const q = (j: number) => (j < 16 ? raw[o + 2 + j] & 15 : raw[o + 2 + j - 16] >> 4);
      for (let i = 0; i < 16; i++) B[dst + i] = q(2 * i) | (q(2 * i + 1) << 4);
    }
  }
  return { bits: (type === 'Q4_0' ? 4 : 8) as 4 | 8, blockSize: 32, N, K, B, scales, zeroPoints: null };
}

/** Linear weights stored as Q4_0/Q8_0 run natively; everything else comes dequantized from the checkpoint. */
export function ggufProvider(path: string): { ckpt: Checkpoint; provider: QuantizedWeightProvider; close(): void } {
  const ckpt = openCheckpoint(path);
  const f = GGUFFile.open(path);
  const c = ckpt.config;
  const linears = new Set(linearNames(c));
  const typeOf = (name: string) => (f.has(hfToGGUFName(name)!) ? f.tensor(hfToGGUFName(name)!).type : null);
  const native = (name: string) => linears.has(name) && (typeOf(name) === 'Q4_0' || typeOf(name) === 'Q8_0');
  const provider: QuantizedWeightProvider = {
    tensor: (name) => ckpt.getTensor(name),
    layout: (name) => (native(name) ? { kind: 'nbits', bits: typeOf(name) === 'Q4_0' ? 4 : 8, blockSize: 32, symmetric: true } : { kind: 'float' }),
    linear(name, shape) {
      if (!native(name)) return { kind: 'float', w: ckpt.getTensor(name) };
      const [N, K] = shape;
      let raw = f.readRaw(hfToGGUFName(name)!);
      if (ROWS_PERMUTED(name)) {
        const heads = name.includes('q_proj') ? c.numAttentionHeads : c.numKeyValueHeads;
        raw = permuteMetaToHF({ dtype: 'u8', shape: [N, raw.length / N], data: raw }, heads).data;
      }
      return { kind: 'nbits', w: ggmlBlocksToNBits(typeOf(name) as 'Q4_0' | 'Q8_0', raw, N, K) };
    },
  };
  return { ckpt, provider, close: () => { ckpt.close(); f.close(); } };
}
