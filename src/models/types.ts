import type { LlamaConfig } from './config.js';

/** Opaque per-batch key/value cache owned by the model implementation. */
export interface KVCache {
  /** Number of positions already stored (past length), including left padding. */
  readonly length: number;
  readonly batchSize: number;
}

export interface ForwardArgs {
  /** [batch][seq] token ids; every row has the same length (left-pad with any id and mask it). */
  inputIds: number[][];
  /** [batch][past + seq], 1 = real token, 0 = padding. Defaults to all ones. */
  attentionMask?: number[][];
  /** Cache from the previous call; omitted = start fresh. */
  cache?: KVCache;
  /** true: logits for every position [B, S, V]; false (default): only the last position [B, 1, V]. */
  allLogits?: boolean;
  /** Positions (past + new + still to come) the returned cache should hold without reallocating, e.g. prompt + max new tokens. */
  reserve?: number;
}

export interface ForwardResult {
  logits: Float32Array;
  /** [batch, seq or 1, vocab] */
  dims: [number, number, number];
  cache: KVCache;
}

/** What generation, serving and evaluation need from any causal LM implementation. */
export interface CausalLM {
  readonly config: LlamaConfig;
  forward(args: ForwardArgs): Promise<ForwardResult>;
  /** Drop one batch row from a cache (continuous batching), or keep only `rows`. */
  selectCacheRows?(cache: KVCache, rows: number[]): KVCache;
  dispose(): Promise<void>;
}
