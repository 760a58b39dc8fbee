/**
 * The library API, shaped like transformers.js: AutoTokenizer, AutoModelForCausalLM.fromPretrained, pipeline('text-generation').
 * Paths are local (a HF folder, a .safetensors, a llama2.c .bin or a .gguf); nothing is downloaded.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { openCheckpoint, tokenizerBeside, type Checkpoint } from './models/checkpoint.js';
import { isQuantizedCheckpoint } from './models/quantizedCheckpoint.js';
import { loadModel } from './models/quantizedModel.js';
import { createLlamaModel } from './models/llama.js';
import type { LlamaConfig } from './models/config.js';
import { eosIds } from './models/config.js';
import type { CausalLM } from './models/types.js';
import { checkpointWeights } from './models/checkpointWeights.js';
import { loadTokenizer, type Tokenizer } from './tokenizers/index.js';
import { generate, type GenerateOptions, type GenerateResult } from './generate/index.js';

/** The shipped default model: stories260K from ../shared beside the package. */
export const DEFAULT_MODEL = path.resolve(fileURLToPath(new URL('../..', import.meta.url)), 'shared/models/stories260K/stories260K.bin');

export interface LoadOptions {
  /** ORT intra-op threads (default: all cores). */
  threads?: number;
}

export class AutoTokenizer {
  /** A tokenizer file or a folder (also a model path: the tokenizer found next to the model). */
  static async fromPretrained(modelOrTokenizerPath: string): Promise<Tokenizer> {
    return loadTokenizer(await resolveTokenizerPath(modelOrTokenizerPath));
  }
}

/** A loaded causal LM with its config; `generate` is greedy by default, as in transformers. */
export class PreTrainedCausalLM {
  constructor(readonly model: CausalLM, readonly config: LlamaConfig, readonly source: { path: string; format: string; tokenizerPath: string | null }) {}

  generate(inputIds: number[], options: GenerateOptions = {}, callbacks?: Parameters<typeof generate>[3]): Promise<GenerateResult> {
    return generate(this.model, inputIds, { eosTokenIds: eosIds(this.config), ...options }, callbacks);
  }

  dispose(): Promise<void> {
    return this.model.dispose();
  }
}

export class AutoModelForCausalLM {
  static async fromPretrained(modelPath: string, options: LoadOptions = {}): Promise<PreTrainedCausalLM> {
    if (isQuantizedCheckpoint(modelPath)) {
      const q = await loadModel(modelPath, { threads: options.threads });
      return new PreTrainedCausalLM(q.model, q.config, { path: modelPath, format: q.format, tokenizerPath: q.tokenizerPath });
    }
    const ckpt = await openCheckpoint(modelPath);
    try {
      // Tensors are read one at a time while ORT's weight file is written: the process never holds the model twice.
      const model = await createLlamaModel(ckpt.config, checkpointWeights(ckpt), { threads: options.threads });
      return new PreTrainedCausalLM(model, ckpt.config, { path: ckpt.path, format: ckpt.format, tokenizerPath: ckpt.tokenizerPath });
    } finally {
      ckpt.close();
    }
  }
}

async function resolveTokenizerPath(p: string): Promise<string> {
  const fs = await import('node:fs');
  const stat = fs.statSync(p, { throwIfNoEntry: false });
  if (!stat) throw new Error(`no such file or folder: ${p}`);
  const isTokenizerFile = stat.isFile() && /(^tokenizer\.json$|\.model$|^tok.*\.bin$)/.test(path.basename(p));
  if (isTokenizerFile) return p;
  const beside = stat.isDirectory() ? tokenizerBeside(p) : null;
  if (beside) return beside;
  // A model file or folder: ask the checkpoint where its tokenizer lives.
  let ckpt: Checkpoint | undefined;
  try {
    ckpt = await openCheckpoint(p);
    if (!ckpt.tokenizerPath) throw new Error(`no tokenizer found next to ${p}; pass one explicitly`);
    return ckpt.tokenizerPath;
  } finally {
    ckpt?.close();
  }
}

/** transformers.js-style generation kwargs (snake_case) accepted beside slimlm's camelCase ones. */
export interface PipelineGenerationKwargs extends GenerateOptions {
  max_new_tokens?: number;
  do_sample?: boolean;
  top_k?: number;
  top_p?: number;
  repetition_penalty?: number;
  return_full_text?: boolean;
  returnFullText?: boolean;
}

export function toGenerateOptions(kw: PipelineGenerationKwargs): GenerateOptions {
  const { max_new_tokens, do_sample, top_k, top_p, repetition_penalty, return_full_text, returnFullText, ...rest } = kw;
  const o: GenerateOptions = { ...rest };
  if (max_new_tokens !== undefined) o.maxNewTokens = max_new_tokens;
  if (do_sample !== undefined) o.doSample = do_sample;
  if (top_k !== undefined) o.topK = top_k;
  if (top_p !== undefined) o.topP = top_p;
  if (repetition_penalty !== undefined) o.repetitionPenalty = repetition_penalty;
  return o;
}

export interface TextGenerationPipeline {
  (text: string, kwargs?: PipelineGenerationKwargs): Promise<Array<{ generated_text: string }>>;
  readonly model: PreTrainedCausalLM;
  readonly tokenizer: Tokenizer;
  dispose(): Promise<void>;
}

export async function pipeline(task: 'text-generation', modelPath: string = DEFAULT_MODEL, options: LoadOptions & { tokenizer?: string } = {}): Promise<TextGenerationPipeline> {
  if (task !== 'text-generation') throw new Error(`unsupported pipeline task ${JSON.stringify(task)} (supported: text-generation)`);
  const model = await AutoModelForCausalLM.fromPretrained(modelPath, options);
  const tokenizer = await AutoTokenizer.fromPretrained(options.tokenizer ?? modelPath);
  const run = async (text: string, kwargs: PipelineGenerationKwargs = {}) => {
    const promptIds = tokenizer.encode(text);
    const result = await model.generate(promptIds, { ...toGenerateOptions(kwargs), tokenizer });
    const full = tokenizer.decode([...promptIds, ...result.tokens], { skipSpecialTokens: true });
    const prompt = tokenizer.decode(promptIds, { skipSpecialTokens: true });
    const returnFull = kwargs.return_full_text ?? kwargs.returnFullText ?? true;
    return [{ generated_text: returnFull ? full : full.slice(prompt.length) }];
  };
  return Object.assign(run, { model, tokenizer, dispose: () => model.dispose() });
}
