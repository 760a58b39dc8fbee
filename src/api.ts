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
import { chatFormat, replyEndIds, type ChatFormat, type ChatMessage } from './chat/index.js';

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

  /** transformers.js spelling. */
  static from_pretrained(modelOrTokenizerPath: string): Promise<Tokenizer> {
    return AutoTokenizer.fromPretrained(modelOrTokenizerPath);
  }
}

/** A loaded causal LM with its config; `generate` is greedy by default, as in transformers. */
export class PreTrainedCausalLM {
  constructor(readonly model: CausalLM, readonly config: LlamaConfig, readonly source: { path: string; format: string; tokenizerPath: string | null }) {}

  /** Options in slimlm's camelCase or transformers.js' snake_case (max_new_tokens, do_sample, …). */
  async generate(inputIds: number[], options: PipelineGenerationKwargs = {}, callbacks?: Parameters<typeof generate>[3]): Promise<GenerateResult> {
    return generate(this.model, inputIds, { eosTokenIds: eosIds(this.config), ...toGenerateOptions(options, inputIds.length) }, callbacks);
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

  /** transformers.js spelling. */
  static from_pretrained(modelPath: string, options: LoadOptions = {}): Promise<PreTrainedCausalLM> {
    return AutoModelForCausalLM.fromPretrained(modelPath, options);
  }
}

async function resolveTokenizerPath(p: string): Promise<string> {
  const fs = await import('node:fs');
  const stat = fs.statSync(p, { throwIfNoEntry: false });
  if (!stat) throw new Error(`no such file or folder: ${p}`);
  const name = path.basename(p);
  // tokenizer.json under any name (not a model's config.json or shard index), a SentencePiece .model, a llama2.c tok*.bin.
  const isTokenizerFile = stat.isFile() && (/\.model$|^tok.*\.bin$/.test(name) || (name.endsWith('.json') && name !== 'config.json' && !name.endsWith('.index.json')));
  if (isTokenizerFile) return p;
  const beside = stat.isDirectory() ? tokenizerBeside(p) : null;
  if (beside) return beside;
  if (stat.isDirectory() && !fs.existsSync(path.join(p, 'config.json'))) {
    throw new Error(`${p}: no tokenizer in this folder (tokenizer.json, tokenizer.model or a llama2.c tok*.bin)`);
  }
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
  /** Prompt + new tokens, as in transformers (max_new_tokens wins when both are given). */
  max_length?: number;
  do_sample?: boolean;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  repetition_penalty?: number;
  stop_strings?: string[];
  eos_token_id?: number | number[];
  skip_special_tokens?: boolean;
  return_full_text?: boolean;
  returnFullText?: boolean;
}

const CAMEL_OPTIONS = new Set(['maxNewTokens', 'doSample', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed', 'stopStrings',
  'eosTokenIds', 'signal', 'tokenizer', 'skipSpecialTokens']);
const SNAKE_OPTIONS: Record<string, keyof GenerateOptions> = {
  max_new_tokens: 'maxNewTokens', do_sample: 'doSample', top_k: 'topK', top_p: 'topP', min_p: 'minP',
  repetition_penalty: 'repetitionPenalty', stop_strings: 'stopStrings', skip_special_tokens: 'skipSpecialTokens',
};

/**
 * Generation options from camelCase or transformers.js snake_case names; an unknown name is an error rather than
 * silently ignored. `promptLength` turns max_length (prompt included) into new tokens.
 */
export function toGenerateOptions(kw: PipelineGenerationKwargs, promptLength = 0): GenerateOptions {
  if (kw === null || typeof kw !== 'object') throw new TypeError('generation options must be an object');
  const o: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(kw)) {
    if (value === undefined || key === 'return_full_text' || key === 'returnFullText' || key === 'max_length') continue;
    if (CAMEL_OPTIONS.has(key)) o[key] = value;
    else if (key in SNAKE_OPTIONS) o[SNAKE_OPTIONS[key]] = value;
    else if (key === 'eos_token_id') o.eosTokenIds = Array.isArray(value) ? value : [value];
    else throw new TypeError(`unknown generation option ${JSON.stringify(key)} (known: ${[...CAMEL_OPTIONS, ...Object.keys(SNAKE_OPTIONS), 'eos_token_id', 'max_length', 'return_full_text'].join(', ')})`);
  }
  if (kw.max_length !== undefined && o.maxNewTokens === undefined) {
    if (!Number.isInteger(kw.max_length)) throw new TypeError(`max_length must be an integer, got ${kw.max_length}`);
    o.maxNewTokens = Math.max(0, kw.max_length - promptLength);
  }
  return o as GenerateOptions;
}

type PipelineInput = string | readonly ChatMessage[];
type PipelineOutput = Array<{ generated_text: string | ChatMessage[] }>;

export interface TextGenerationPipeline {
  /** A text, or a chat (messages rendered by the tokenizer's chat template; the reply comes back appended to them). */
  (input: PipelineInput, kwargs?: PipelineGenerationKwargs): Promise<PipelineOutput>;
  /** Several inputs: one result list each, as in transformers.js. */
  (inputs: readonly PipelineInput[], kwargs?: PipelineGenerationKwargs): Promise<PipelineOutput[]>;
  readonly model: PreTrainedCausalLM;
  readonly tokenizer: Tokenizer;
  dispose(): Promise<void>;
}

const isMessage = (x: unknown): x is ChatMessage => typeof x === 'object' && x !== null && typeof (x as ChatMessage).role === 'string';

export async function pipeline(task: 'text-generation', modelPath: string = DEFAULT_MODEL, options: LoadOptions & { tokenizer?: string } = {}): Promise<TextGenerationPipeline> {
  if (task !== 'text-generation') throw new Error(`unsupported pipeline task ${JSON.stringify(task)} (supported: text-generation)`);
  const model = await AutoModelForCausalLM.fromPretrained(modelPath, options);
  let tokenizer: Tokenizer;
  try {
    tokenizer = await AutoTokenizer.fromPretrained(options.tokenizer ?? modelPath);
    if (tokenizer.vocabSize !== model.config.vocabSize) {
      throw new Error(`tokenizer vocabulary (${tokenizer.vocabSize}) does not match the model's (${model.config.vocabSize})`);
    }
  } catch (e) {
    await model.dispose();
    throw e;
  }
  let chat: ChatFormat | null = null;
  const one = async (input: PipelineInput, kwargs: PipelineGenerationKwargs): Promise<PipelineOutput> => {
    if (typeof input === 'string') {
      const promptIds = tokenizer.encode(input);
      const result = await model.generate(promptIds, { ...toGenerateOptions(kwargs, promptIds.length), tokenizer });
      // result.text: the continuation as decoded after the prompt, a stop string cut off.
      const prompt = tokenizer.decode(promptIds, { skipSpecialTokens: true });
      const continuation = result.text ?? tokenizer.decode([...promptIds, ...result.tokens], { skipSpecialTokens: true }).slice(prompt.length);
      const returnFull = kwargs.return_full_text ?? kwargs.returnFullText ?? true;
      return [{ generated_text: returnFull ? prompt + continuation : continuation }];
    }
    if (!Array.isArray(input) || !input.every(isMessage)) throw new TypeError('text-generation input must be a string or an array of {role, content} messages');
    chat ??= chatFormat(tokenizer as Tokenizer & { chatTemplate?: string | null });
    const promptIds = chat.encode(input, { addGenerationPrompt: true });
    const o = toGenerateOptions(kwargs, promptIds.length);
    const result = await model.generate(promptIds, {
      ...o, tokenizer, stopStrings: [...(o.stopStrings ?? []), ...chat.stopStrings],
      eosTokenIds: o.eosTokenIds ?? replyEndIds(model.config, tokenizer, chat),
    });
    const reply = result.text ?? tokenizer.decode(result.tokens, { skipSpecialTokens: true });
    return [{ generated_text: [...input, { role: 'assistant', content: reply.trim() }] }];
  };
  const run = async (input: PipelineInput | readonly PipelineInput[], kwargs: PipelineGenerationKwargs = {}) => {
    // A list of strings or of chats is a batch; a list of messages is one chat.
    const batch = Array.isArray(input) && input.length > 0 && !isMessage(input[0]);
    if (!batch) return one(input as PipelineInput, kwargs);
    const out: PipelineOutput[] = [];
    for (const x of input as readonly PipelineInput[]) out.push(await one(x, kwargs));
    return out;
  };
  return Object.assign(run, { model, tokenizer, dispose: () => model.dispose() }) as TextGenerationPipeline;
}
