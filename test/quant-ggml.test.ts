/**
 * GGUF k-quants byte-identical to llama.cpp: test/fixtures/llamacpp/kquant-q4_k_m.gguf was made by llama.cpp's own
 * llama-quantize (Q4_K_M, built from the source node-llama-cpp 3.21.1 ships; scripts/llamacpp/make_kquant_fixture.sh)
 * from the F32 GGUF that scripts/llamacpp/kquant-input.ts writes. slimlm regenerates those inputs, picks each tensor's
 * type with its copy of llama-quantize's recipe, quantizes with its own Q4_K/Q6_K code, and must produce the same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GGUFFile } from '../src/formats/gguf.js';
import { hfToGGUFName, permuteHFToMeta } from '../src/models/checkpoint.js';
import { toFloat32 } from '../src/formats/dtype.js';
import { llamaCppTensorType, quantizeGGML } from '../src/quantize/ggml.js';
import { KQUANT_CONFIG, kquantInputTensors } from '../scripts/llamacpp/kquant-input.js';

test('Q4_K_M from llama-quantize: same tensor types (recipe) and byte-identical Q4_K / Q6_K blocks', () => {
  const f = GGUFFile.open('test/fixtures/llamacpp/kquant-q4_k_m.gguf');
  const inputs = kquantInputTensors();
  const types = new Set<string>();
  try {
    for (const [hf, t] of inputs) {
      const name = hfToGGUFName(hf)!;
      const info = f.tensor(name);
      const type = llamaCppTensorType('q4_k_m', name, t.shape, KQUANT_CONFIG.numHiddenLayers, KQUANT_CONFIG.tieWordEmbeddings);
      assert.equal(type, info.type, `${name}: recipe`);
      types.add(type);
      const heads = hf.includes('q_proj') ? KQUANT_CONFIG.numAttentionHeads : hf.includes('k_proj') ? KQUANT_CONFIG.numKeyValueHeads : 0;
      const values = toFloat32(heads ? permuteHFToMeta(t, heads) : t);
      const ours = quantizeGGML(type, values), theirs = f.readRaw(name);
      assert.equal(ours.length, theirs.length, name);
      const firstDiff = ours.findIndex((b, i) => b !== theirs[i]);
      assert.equal(firstDiff, -1, `${name} (${type}): first differing byte ${firstDiff}`);
    }
  } finally {
    f.close();
  }
  assert.ok(types.has('Q4_K') && types.has('Q6_K'), [...types].join(','));
});
