/** slimlm's public library API. */
export { AutoTokenizer, AutoModelForCausalLM, PreTrainedCausalLM, pipeline, DEFAULT_MODEL } from './api.js';
export type { LoadOptions, TextGenerationPipeline, PipelineGenerationKwargs } from './api.js';
export { configFromHF, configToHF, parameterCount, expectedTensors } from './models/config.js';
export type { LlamaConfig } from './models/config.js';
export type { CausalLM, KVCache, ForwardArgs, ForwardResult } from './models/types.js';
export { openCheckpoint } from './models/checkpoint.js';
export type { Checkpoint } from './models/checkpoint.js';
export { loadTokenizer } from './tokenizers/index.js';
export type { Tokenizer } from './tokenizers/index.js';
export * from './generate/index.js';
