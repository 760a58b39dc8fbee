/**
 * Load any model for inference, quantized or not: a quantized HF folder (slimlm or bitsandbytes 4-bit), or any
 * checkpoint openCheckpoint reads, optionally quantized on the fly by a recipe (what `slimlm eval --type` measures).
 */
import { dirname } from 'node:path';
import { DTYPE_BYTES, numel } from '../formats/tensor.js';
import { recipeLayout, type QuantRecipe } from '../quantize/recipe.js';
import { openCheckpoint, checkpointSizeBytes, tokenizerBeside } from './checkpoint.js';
import { checkpointWeights } from './checkpointWeights.js';
import type { LlamaConfig } from './config.js';
import { createLlamaModel, type LlamaModel } from './llama.js';
import { ggufProvider } from './quantizedGGUF.js';
import { linearLayoutBytes, quantizedWeightSource, type QuantizedSourceOptions } from './quantized.js';
import { floatStorageDtype, isQuantizedCheckpoint, linearNames, openQuantizedCheckpoint, recipeProvider } from './quantizedCheckpoint.js';

export interface LoadModelOptions extends QuantizedSourceOptions {
  threads?: number;
  /** Quantize the Linear layers of a float checkpoint while loading. */
  quantize?: QuantRecipe;
  /** ORT's fused inference kernels (default true; false = the plain graph, for comparisons). */
  fused?: boolean;
}

export interface LoadedModel {
  model: LlamaModel;
  config: LlamaConfig;
  format: string;
  /** Bytes of weights as stored (or, with `quantize`, as the source stores them). */
  storedBytes: number;
  tokenizerPath: string | null;
}

export async function loadModel(path: string, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  if (isQuantizedCheckpoint(path)) {
    if (opts.quantize) throw new Error(`${path} is already quantized; quantize on the fly (${opts.quantize.type}) only from a float model`);
    const q = openQuantizedCheckpoint(path);
    try {
      const model = await createLlamaModel(q.config, quantizedWeightSource(q.provider, opts), { threads: opts.threads, fused: opts.fused });
      return { model, config: q.config, format: 'quantized-safetensors', storedBytes: q.storedBytes, tokenizerPath: tokenizerBeside(path, q.config.vocabSize) };
    } finally {
      q.close();
    }
  }
  if (path.endsWith('.gguf') && !opts.quantize) {
    const g = ggufProvider(path);
    try {
      const model = await createLlamaModel(g.ckpt.config, quantizedWeightSource(g.provider, opts), { threads: opts.threads, fused: opts.fused });
      return { model, config: g.ckpt.config, format: 'gguf', storedBytes: checkpointSizeBytes(g.ckpt), tokenizerPath: g.ckpt.tokenizerPath };
    } finally {
      g.close();
    }
  }
  const ckpt = openCheckpoint(path);
  try {
    const source = opts.quantize ? quantizedWeightSource(recipeProvider(ckpt, opts.quantize), opts) : checkpointWeights(ckpt);
    const model = await createLlamaModel(ckpt.config, source, { threads: opts.threads, fused: opts.fused });
    // With a recipe, the size is what `slimlm quantize` would store: quantized Linear layers, other tensors as stored.
    let storedBytes = checkpointSizeBytes(ckpt);
    if (opts.quantize) {
      const linears = new Set(linearNames(ckpt.config));
      storedBytes = 0;
      for (const name of ckpt.tensorNames()) {
        const info = ckpt.tensorInfo(name);
        const layout = linears.has(name) && name !== 'model.embed_tokens.weight' ? recipeLayout(opts.quantize, name, info.shape[1]) : { kind: 'float' as const };
        // Float tensors in the dtype `slimlm quantize` stores them in.
        storedBytes += layout.kind !== 'float' ? linearLayoutBytes(layout, info.shape[0], info.shape[1], opts.quantize.doubleQuant ?? true)
          : numel(info.shape) * DTYPE_BYTES[floatStorageDtype(info.dtype)];
      }
      const head = ckpt.config.tieWordEmbeddings ? recipeLayout(opts.quantize, 'model.embed_tokens.weight', ckpt.config.hiddenSize) : null;
      if (head && head.kind !== 'float') storedBytes += linearLayoutBytes(head, ckpt.config.vocabSize, ckpt.config.hiddenSize);
    }
    return { model, config: ckpt.config, format: ckpt.format, storedBytes, tokenizerPath: ckpt.tokenizerPath ?? tokenizerBeside(dirname(path), ckpt.config.vocabSize) };
  } finally {
    ckpt.close();
  }
}
