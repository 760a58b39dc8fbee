/**
 * Logits processors and token sampling on one vocab-sized logits vector, with Hugging Face transformers semantics
 * (https://github.com/huggingface/transformers/blob/main/src/transformers/generation/logits_process.py).
 * Processors work in place and mark removed tokens with -Infinity, like HF's `filter_value`.
 */
import type { Rng } from './rng.js';

/** Unique token ids seen so far in a row (prompt + output), for the repetition penalty. */
export class TokenHistory {
  readonly ids: number[] = [];
  private readonly seen = new Set<number>();

  constructor(ids: Iterable<number> = []) {
    for (const id of ids) this.add(id);
  }

  add(id: number): void {
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.ids.push(id);
  }
}

/**
 * HF RepetitionPenaltyLogitsProcessor (CTRL, https://arxiv.org/abs/1909.05858): each distinct previous token's logit is
 * divided by `penalty` when positive and multiplied by it when negative, so penalty > 1 discourages repeats.
 */
export function applyRepetitionPenalty(logits: Float32Array, previous: TokenHistory | Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  const ids = previous instanceof TokenHistory ? previous.ids : new Set(previous);
  for (const id of ids) {
    if (id < 0 || id >= logits.length) continue;
    const v = logits[id];
    logits[id] = v < 0 ? v * penalty : v / penalty;
  }
}

export function applyTemperature(logits: Float32Array, temperature: number): void {
  if (temperature === 1) return;
  const inv = 1 / temperature;
  for (let i = 0; i < logits.length; i++) logits[i] *= inv;
}

/** HF TopKLogitsWarper: removes tokens whose logit is below the k-th largest (ties with it are kept). 0 = off. */
export function applyTopK(logits: Float32Array, k: number, heap?: Float32Array): void {
  if (k <= 0 || k >= logits.length) return;
  // Min-heap of the k largest values seen; its root is the k-th largest.
  const h = heap && heap.length >= k ? heap : new Float32Array(k);
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (!(v > -Infinity)) continue; // -Infinity and NaN never count
    if (n < k) {
      let j = n++;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (h[p] <= v) break;
        h[j] = h[p];
        j = p;
      }
      h[j] = v;
    } else if (v > h[0]) {
      siftDownRoot(h, k, v);
    }
  }
  if (n < k) return;
  const threshold = h[0];
  for (let i = 0; i < logits.length; i++) if (logits[i] < threshold) logits[i] = -Infinity;
}

function siftDownRoot(h: Float32Array, n: number, v: number): void {
  let j = 0;
  for (;;) {
    let c = 2 * j + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1] < h[c]) c++;
    if (h[c] >= v) break;
    h[j] = h[c];
    j = c;
  }
  h[j] = v;
}

/** Reusable buffers for the processors that sort; one per row avoids per-step vocab-sized allocations. */
export class SamplingScratch {
  readonly order: Int32Array;
  readonly heap: Float32Array;
  constructor(vocabSize: number, topK = 0) {
    this.order = new Int32Array(vocabSize);
    this.heap = new Float32Array(Math.max(1, Math.min(topK, vocabSize)));
  }
}

/**
 * HF TopPLogitsWarper (nucleus): keeps the most probable tokens whose cumulative probability first reaches `topP`
 * (the token that crosses it is kept; at least one token always is). Ties are ordered by lower token id first.
 */
export function applyTopP(logits: Float32Array, topP: number, scratch?: SamplingScratch): void {
  if (topP >= 1) return;
  const s = scratch && scratch.order.length >= logits.length ? scratch : new SamplingScratch(logits.length);
  const max = maxFinite(logits);
  if (!(max > -Infinity) || max === Infinity) return;
  // Only tokens within a factor TAIL of the top can be in the nucleus when they alone already reach topP;
  // sorting just those keeps a 32k vocabulary cheap. Otherwise sort every finite token.
  let sum = 0;
  let headSum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp(logits[i] - max);
    sum += e;
    if (e >= TAIL) headSum += e;
  }
  const headOnly = headSum >= topP * sum;
  let n = 0;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (headOnly ? Math.exp(v - max) >= TAIL : v > -Infinity) s.order[n++] = i;
  }
  const order = s.order.subarray(0, n);
  order.sort((a, b) => logits[b] - logits[a] || a - b);
  const target = topP * sum;
  let cum = 0;
  let keep = 0;
  while (keep < n && (keep === 0 || cum < target)) cum += Math.exp(logits[order[keep++]] - max);
  // Everything past the kept prefix goes, including tokens never sorted.
  const threshold = logits[order[keep - 1]];
  for (let j = keep; j < n; j++) logits[order[j]] = -Infinity;
  if (headOnly) for (let i = 0; i < logits.length; i++) if (logits[i] < threshold) logits[i] = -Infinity;
}

const TAIL = 1e-4;

/** HF MinPLogitsWarper: removes tokens whose probability is below minP × the top token's probability. 0 = off. */
export function applyMinP(logits: Float32Array, minP: number): void {
  if (minP <= 0) return;
  const max = maxFinite(logits);
  // p_i < minP * p_max  <=>  exp(l_i - max) < minP; the top token always survives.
  const cutoff = max + Math.log(minP);
  for (let i = 0; i < logits.length; i++) if (logits[i] < cutoff && Math.exp(logits[i] - max) < minP) logits[i] = -Infinity;
}

function maxFinite(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  return max;
}

/** Index of the largest logit, lowest index on ties; NaN entries are ignored. */
export function argmax(logits: Float32Array): number {
  let best = -1;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v > bestValue || (best < 0 && v === -Infinity)) {
      best = i;
      bestValue = v;
    }
  }
  if (best < 0) throw new Error('cannot pick a token: every logit is NaN (the model produced invalid output)');
  return best;
}

/** Softmax in float64 (into `out`, default a new array); -Infinity entries get probability 0. */
export function softmax(logits: Float32Array, out = new Float64Array(logits.length)): Float64Array {
  const max = maxFinite(logits);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += out[i] = Math.exp(logits[i] - max);
  for (let i = 0; i < logits.length; i++) out[i] /= sum;
  return out;
}

/** Draws one token from softmax(logits), walking token ids in ascending order so a seed reproduces exactly. */
export function sampleFromLogits(logits: Float32Array, rng: Rng): number {
  const max = maxFinite(logits);
  if (max === Infinity) return argmax(logits);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i] !== -Infinity) sum += Math.exp(logits[i] - max);
  if (!(sum > 0) || !Number.isFinite(sum)) throw new Error('cannot sample: logits are NaN or all -Infinity (the model produced invalid output)');
  const u = rng.nextFloat() * sum;
  let cum = 0;
  let last = -1;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i] === -Infinity) continue;
    const p = Math.exp(logits[i] - max);
    if (p > 0) {
      cum += p;
      last = i;
      if (u < cum) return i;
    }
  }
  return last; // rounding left u just above the final cumulative sum
}

export interface SamplingParams {
  /** false: greedy (argmax). Temperature 0 is greedy too. */
  doSample: boolean;
  temperature: number;
  /** 0 = off. */
  topK: number;
  /** 1 = off. */
  topP: number;
  /** 0 = off. */
  minP: number;
  /** 1 = off. */
  repetitionPenalty: number;
}

/**
 * The full per-step pipeline in HF order: repetition penalty → (greedy argmax) → temperature → top-k → top-p → min-p
 * → draw. Owns its scratch buffers, so a step allocates nothing vocab-sized.
 */
export class Sampler {
  private readonly work: Float32Array;
  private readonly scratch: SamplingScratch;

  constructor(
    vocabSize: number,
    readonly params: SamplingParams,
    private readonly rng: Rng,
  ) {
    this.work = new Float32Array(vocabSize);
    this.scratch = new SamplingScratch(params.topP < 1 ? vocabSize : 0, params.topK);
  }

  get greedy(): boolean {
    return !this.params.doSample || this.params.temperature === 0;
  }

  /** Picks the next token from one position's logits; `logits` itself is left untouched. */
  sample(logits: Float32Array, history?: TokenHistory): number {
    if (logits.length !== this.work.length) throw new Error(`logits have ${logits.length} entries, sampler expects ${this.work.length}`);
    const p = this.params;
    const x = this.work;
    x.set(logits);
    if (history && p.repetitionPenalty !== 1) applyRepetitionPenalty(x, history, p.repetitionPenalty);
    if (this.greedy) return argmax(x);
    applyTemperature(x, p.temperature);
    applyTopK(x, p.topK, this.scratch.heap);
    applyTopP(x, p.topP, this.scratch);
    applyMinP(x, p.minP);
    return sampleFromLogits(x, this.rng);
  }
}
