export {
  generate,
  generateBatch,
  resolveGenerationOptions,
  type FinishReason,
  type GenerateCallbacks,
  type GenerateOptions,
  type GenerateResult,
  type GenerationTimings,
  type GenerationTokenizer,
  type ResolvedGenerationOptions,
} from './generate.js';
export {
  Sampler,
  SamplingScratch,
  TokenHistory,
  applyMinP,
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  argmax,
  sampleFromLogits,
  softmax,
  type SamplingParams,
} from './sampling.js';
export { StopStringBuffer } from './stop.js';
export { Xoshiro128ss, createRng, type Rng } from './rng.js';
