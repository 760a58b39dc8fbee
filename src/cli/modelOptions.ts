/** What `generate` and `chat` share: the model/tokenizer pair and the sampling flags. */
import { AutoModelForCausalLM, AutoTokenizer, DEFAULT_MODEL, type PreTrainedCausalLM } from '../api.js';
import type { GenerateOptions } from '../generate/index.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { int, num, str, threads, UsageError, type Values } from './common.js';

export const samplingFlags = {
  temperature: { type: 'string' }, 'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'repetition-penalty': { type: 'string' }, seed: { type: 'string' },
} as const;

/** Sampling defaults like llama.cpp's: temperature 0.8, top-k 40, top-p 0.95; temperature 0 = greedy. */
export function samplingOptions(v: Values): GenerateOptions {
  const temperature = num(v, 'temperature', 0.8)!;
  return {
    temperature, doSample: temperature > 0, topK: int(v, 'top-k', 40), topP: num(v, 'top-p', 0.95),
    repetitionPenalty: num(v, 'repetition-penalty', 1), seed: int(v, 'seed'),
  };
}

/** --model (default: the shipped stories260K) and --tokenizer (default: next to the model), vocabularies checked. */
export async function loadModelAndTokenizer(v: Values): Promise<{ modelPath: string; model: PreTrainedCausalLM; tokenizer: Tokenizer }> {
  const modelPath = str(v, 'model') ?? DEFAULT_MODEL;
  const model = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: threads(v) });
  try {
    const tokenizer = await AutoTokenizer.fromPretrained(str(v, 'tokenizer') ?? modelPath);
    if (tokenizer.vocabSize !== model.config.vocabSize) {
      throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) does not match the model's (${model.config.vocabSize})`);
    }
    return { modelPath, model, tokenizer };
  } catch (e) {
    await model.dispose();
    throw e;
  }
}
