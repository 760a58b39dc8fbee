/**
 * The input of the llama.cpp k-quant fixture: a one-layer llama (hidden 256, FFN 256, 4 heads / 1 kv head, vocab 256)
 * with seeded, deterministic weights of varied scale, written as an F32 GGUF. test/quant-ggml.test.ts regenerates the same
 * tensors with `kquantInputTensors()` and quantizes them itself.
 *
 *   node --import tsx scripts/llamacpp/kquant-input.ts OUT.gguf
 */
import type { HostTensor } from '../../src/formats/tensor.js';
import { writeLlamaGGUF } from '../../src/models/checkpoint.js';
import { expectedTensors, type LlamaConfig } from '../../src/models/config.js';

export const KQUANT_CONFIG: LlamaConfig = {
  modelType: 'llama', vocabSize: 256, hiddenSize: 256, intermediateSize: 256, numHiddenLayers: 1, numAttentionHeads: 4,
  numKeyValueHeads: 1, headDim: 64, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 128, slidingWindow: null,
  tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: null,
};

/** Canonical HF tensors: Gaussian-ish values whose scale changes per row, with occasional outliers and an all-zero row. */
export function kquantInputTensors(): Map<string, HostTensor> {
  let s = 20240601;
  const u = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) + 0.5) / 2 ** 32;
  const out = new Map<string, HostTensor>();
  for (const [name, shape] of expectedTensors(KQUANT_CONFIG)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    if (shape.length === 1) v.fill(1);
    else {
      const cols = shape[1];
      for (let i = 0; i < n; i++) {
        const row = Math.floor(i / cols);
        const scale = 0.01 * (1 + (row % 7));
        const g = Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
        v[i] = row === 3 ? 0 : u() < 0.002 ? g * scale * 20 : g * scale;
      }
    }
    out.set(name, { dtype: 'f32', shape, data: new Uint8Array(v.buffer) });
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2];
  if (!out) throw new Error('usage: kquant-input.ts OUT.gguf');
  const t = kquantInputTensors();
  writeLlamaGGUF(out, KQUANT_CONFIG, (n) => t.get(n)!, { type: 'F32', name: 'slimlm-kquant-fixture' });
}
