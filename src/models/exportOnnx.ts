/**
 * A model as the ONNX folder transformers.js loads (https://huggingface.co/docs/transformers.js, Optimum's layout):
 * config.json, generation_config.json, tokenizer files, onnx/model.onnx (fp32) and onnx/model_q4.onnx (int4 MatMulNBits,
 * what `dtype: 'q4'` picks). The decoder graph is slimlm's own, with Optimum's input/output names:
 * input_ids, attention_mask, past_key_values.{i}.key|value → logits [batch, seq, vocab], present.{i}.key|value.
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeBytesAtomic } from '../formats/atomic.js';
import { toOnnxBytes, type Graph } from '../graph/index.js';
import type { QuantRecipe } from '../quantize/recipe.js';
import type { Checkpoint } from './checkpoint.js';
import { checkpointWeights } from './checkpointWeights.js';
import { configToHF, eosIds } from './config.js';
import { buildLlamaGraph, LLAMA_IO, type WeightSource } from './llamaGraph.js';
import { quantizedWeightSource } from './quantized.js';
import { recipeProvider } from './quantizedCheckpoint.js';

/** Renames graph inputs and outputs in place (names only; the graph's structure is untouched). */
function renameIO(graph: Graph, rename: (name: string) => string): void {
  for (const t of graph.inputs) {
    const source = t.source as { kind: 'input'; name: string };
    source.name = rename(source.name);
  }
  for (const o of graph.outputs) (o as { name: string }).name = rename(o.name);
}

function optimumName(layers: number): (name: string) => string {
  const map = new Map<string, string>();
  for (let i = 0; i < layers; i++) {
    map.set(LLAMA_IO.pastKey(i), `past_key_values.${i}.key`);
    map.set(LLAMA_IO.pastValue(i), `past_key_values.${i}.value`);
    map.set(LLAMA_IO.presentKey(i), `present.${i}.key`);
    map.set(LLAMA_IO.presentValue(i), `present.${i}.value`);
  }
  return (name) => map.get(name) ?? name;
}

export interface OnnxExportOptions {
  /** Also write onnx/model_q4.onnx with this recipe (int4 by default); null = fp32 only. */
  quantized?: QuantRecipe | null;
  /** The tokenizer: a folder holding tokenizer.json, or a file in one (default: the model's own). */
  tokenizer?: string | null;
}

export function exportTransformersJs(ckpt: Checkpoint, dir: string, opts: OnnxExportOptions = {}): string[] {
  const c = ckpt.config;
  const tok = opts.tokenizer ?? ckpt.tokenizerPath;
  const tokDir = tok && fs.statSync(tok, { throwIfNoEntry: false })?.isDirectory() ? tok : tok ? path.dirname(tok) : null;
  // Checked before anything is written.
  if (!tokDir || !fs.existsSync(path.join(tokDir, 'tokenizer.json'))) {
    throw new Error(`transformers.js needs tokenizer.json; none in ${tokDir ?? 'the model\'s folder'} (pass --tokenizer with a folder or file holding one)`);
  }
  fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
  // Tokenizer and graphs first, config.json last: a folder with a config.json is complete.
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    const src = path.join(tokDir, f);
    if (fs.existsSync(src)) writeBytesAtomic(path.join(dir, f), fs.readFileSync(src));
  }
  const written: string[] = [];
  const writeGraph = (file: string, weights: WeightSource) => {
    const graph = buildLlamaGraph(c, weights, { allPositions: true });
    renameIO(graph, optimumName(c.numHiddenLayers));
    const out = path.join(dir, 'onnx', file);
    writeBytesAtomic(out, toOnnxBytes(graph, { docString: `slimlm ${c.modelType} decoder (transformers.js layout)` }));
    written.push(out);
  };
  writeGraph('model.onnx', checkpointWeights(ckpt));
  const recipe = opts.quantized === undefined ? { type: 'int4' as const } : opts.quantized;
  if (recipe) writeGraph('model_q4.onnx', quantizedWeightSource(recipeProvider(ckpt, recipe)));

  const eos = eosIds(c);
  writeBytesAtomic(path.join(dir, 'generation_config.json'), JSON.stringify({
    bos_token_id: c.bosTokenId, eos_token_id: eos.length === 1 ? eos[0] : eos, ...(c.padTokenId !== null ? { pad_token_id: c.padTokenId } : {}),
  }, null, 2) + '\n');
  writeBytesAtomic(path.join(dir, 'config.json'), JSON.stringify({ ...configToHF(c), use_cache: true }, null, 2) + '\n');
  return written;
}
