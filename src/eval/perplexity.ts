/**
 * Perplexity, KL divergence and top-1 agreement of a causal LM, on llama.cpp's perplexity windows
 * (llama.cpp `tools/perplexity/perplexity.cpp`, `perplexity()` with the default `--ppl-stride 0`):
 *  - the token stream is cut into non-overlapping chunks of `ctx` tokens (a trailing partial chunk is dropped);
 *  - the first token of every chunk is replaced by BOS when the model uses one;
 *  - each chunk is evaluated from scratch, and only its second half is scored: logits at positions
 *    first = ctx/2 … ctx−2 predict tokens first+1 … ctx−1 (so every scored token has at least ctx/2 of context);
 *  - PPL = exp(mean NLL over all scored tokens).
 * With a reference model the same positions give mean KL(reference ‖ model) and the share of positions where both
 * models' argmax agree (llama.cpp's `--kl-divergence` reports the same statistics).
 */
import type { CausalLM } from '../models/types.js';

export interface EvalOptions {
  /** Chunk length in tokens (llama.cpp -c). */
  ctx: number;
  /** BOS id written over each chunk's first token; null = leave the text as is. */
  bosId: number | null;
  /** Stop after this many chunks (default: all). */
  maxChunks?: number;
  onChunk?: (done: number, total: number) => void;
}

export interface EvalResult {
  chunks: number;
  scoredTokens: number;
  nll: number;
  perplexity: number;
  /** Against the reference model, when given. */
  meanKL?: number;
  top1Agreement?: number;
  /** Reference perplexity on the same windows. */
  referencePerplexity?: number;
  /** Seconds spent in the evaluated model's forward passes, and tokens it processed per second. */
  seconds: number;
  tokensPerSecond: number;
}

/** log-softmax of one row, in f64. */
export function logSoftmax(row: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) max = Math.max(max, row[i]);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row as ArrayLike<number>, (v) => v - lse);
}

/** KL(p ‖ q) from log-probabilities. */
export function klDivergence(logP: Float64Array, logQ: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < logP.length; i++) if (logP[i] > -Infinity) kl += Math.exp(logP[i]) * (logP[i] - logQ[i]);
  return Math.max(0, kl);
}

/** Index of the largest value, the first on ties. */
export const argmax = (a: ArrayLike<number>) => { let b = 0; for (let i = 1; i < a.length; i++) if (a[i] > a[b]) b = i; return b; };

export function chunkCount(tokens: number, ctx: number): number {
  return Math.floor(tokens / ctx);
}

export async function evaluatePerplexity(model: CausalLM, tokens: readonly number[], opts: EvalOptions, reference?: CausalLM): Promise<EvalResult> {
  const { ctx } = opts;
  if (!Number.isInteger(ctx) || ctx < 4) throw new RangeError(`ctx must be an integer >= 4, got ${ctx}`);
  let chunks = chunkCount(tokens.length, ctx);
  if (chunks === 0) throw new RangeError(`the data holds ${tokens.length} tokens, fewer than one window of ${ctx}`);
  if (opts.maxChunks !== undefined && !(Number.isInteger(opts.maxChunks) && opts.maxChunks >= 1)) throw new RangeError(`maxChunks must be a positive integer, got ${opts.maxChunks}`);
  if (opts.maxChunks !== undefined) chunks = Math.min(chunks, opts.maxChunks);
  const first = Math.floor(ctx / 2);
  let nll = 0, refNll = 0, kl = 0, agree = 0, scored = 0, ms = 0;
  for (let c = 0; c < chunks; c++) {
    const ids = tokens.slice(c * ctx, (c + 1) * ctx);
    if (opts.bosId !== null) ids[0] = opts.bosId;
    const t0 = performance.now();
    const out = await model.forward({ inputIds: [ids], allLogits: true });
    ms += performance.now() - t0;
    const V = out.dims[2];
    const ref = reference ? await reference.forward({ inputIds: [ids], allLogits: true }) : null;
    if (ref && ref.dims[2] !== V) throw new RangeError(`the reference model's vocabulary (${ref.dims[2]}) differs from the model's (${V}): KL needs the same tokens`);
    for (let j = first; j < ctx - 1; j++) {
      const row = out.logits.subarray(j * V, (j + 1) * V);
      const lp = logSoftmax(row);
      nll -= lp[ids[j + 1]];
      if (ref) {
        const refRow = ref.logits.subarray(j * V, (j + 1) * V);
        const lr = logSoftmax(refRow);
        refNll -= lr[ids[j + 1]];
        kl += klDivergence(lr, lp);
        if (argmax(row) === argmax(refRow)) agree++;
      }
      scored++;
    }
    opts.onChunk?.(c + 1, chunks);
  }
  const result: EvalResult = {
    chunks, scoredTokens: scored, nll: nll / scored, perplexity: Math.exp(nll / scored),
    seconds: ms / 1000, tokensPerSecond: (chunks * ctx) / (ms / 1000),
  };
  if (reference) Object.assign(result, { meanKL: kl / scored, top1Agreement: agree / scored, referencePerplexity: Math.exp(refNll / scored) });
  return result;
}
