/** Helpers every teacher shares: top-k of a distribution, log-probabilities, vocabulary checks, batch rows. */
import { createHash } from 'node:crypto';
import type { Tokenizer } from '../../tokenizers/index.js';
import type { TeacherOutput, TokenBatch } from '../types.js';

/** Positions without a teacher distribution (padding) hold id 0 and this log-probability: finite, so masking by multiplication stays NaN-free. */
export const PAD_LOGPROB = -1e9;
/** log of the smallest positive f32: where a probability underflowed to 0. */
export const UNDERFLOW_LOGPROB = Math.log(1.401298464324817e-45);

export class VocabularyMismatchError extends Error {
  override name = 'VocabularyMismatchError';
}

export class TeacherError extends Error {
  override name = 'TeacherError';
}

/**
 * Top-k of one row of logits as log-probabilities under the full-vocabulary softmax, highest first (ties: lower id first).
 * Writes into ids/logprobs at `out`.
 */
export function topKLogSoftmax(logits: Float32Array, offset: number, vocab: number, k: number, ids: Int32Array, logprobs: Float32Array, out: number): void {
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) if (logits[offset + v] > max) max = logits[offset + v];
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[offset + v] - max);
  const logZ = max + Math.log(sum);
  // Insertion into a sorted k-buffer; most values fall below the current k-th and cost one comparison.
  const topV = new Float64Array(k).fill(-Infinity);
  const topI = new Int32Array(k).fill(-1);
  for (let v = 0; v < vocab; v++) {
    const x = logits[offset + v];
    if (!(x > topV[k - 1])) continue;
    let j = k - 1;
    while (j > 0 && x > topV[j - 1]) { topV[j] = topV[j - 1]; topI[j] = topI[j - 1]; j--; }
    topV[j] = x; topI[j] = v;
  }
  for (let j = 0; j < k; j++) {
    ids[out + j] = topI[j] < 0 ? 0 : topI[j];
    logprobs[out + j] = topI[j] < 0 ? PAD_LOGPROB : topV[j] - logZ;
  }
}

/** Dense [B, S, V] logits → sparse top-k; padding positions get id 0 / PAD_LOGPROB. */
export function denseToTopK(logits: Float32Array, batch: TokenBatch, vocab: number, k: number): TeacherOutput & { kind: 'sparse' } {
  if (!Number.isInteger(k) || k < 1 || k > vocab) throw new TeacherError(`top-k must be an integer in 1..${vocab}, got ${k}`);
  const n = batch.batch * batch.seq;
  const ids = new Int32Array(n * k);
  const logprobs = new Float32Array(n * k).fill(PAD_LOGPROB);
  for (let p = 0; p < n; p++) if (batch.attentionMask[p]) topKLogSoftmax(logits, p * vocab, vocab, k, ids, logprobs, p * k);
  return { kind: 'sparse', k, ids, logprobs };
}

/** Real tokens of each row (attention mask 1), in order. */
export function batchRows(batch: TokenBatch): { ids: number[]; positions: number[] }[] {
  return Array.from({ length: batch.batch }, (_, b) => {
    const ids: number[] = [];
    const positions: number[] = [];
    for (let t = 0; t < batch.seq; t++) {
      const p = b * batch.seq + t;
      if (batch.attentionMask[p]) { ids.push(batch.inputIds[p]); positions.push(t); }
    }
    return { ids, positions };
  });
}

export function checkBatch(batch: TokenBatch, vocabSize: number, who: string): void {
  const n = batch.batch * batch.seq;
  if (batch.inputIds.length !== n || batch.attentionMask.length !== n) throw new TeacherError(`${who}: batch arrays do not match [${batch.batch}, ${batch.seq}]`);
  for (let p = 0; p < n; p++) {
    const id = batch.inputIds[p];
    if (batch.attentionMask[p] && (id < 0 || id >= vocabSize)) {
      throw new VocabularyMismatchError(`${who}: token id ${id} is outside the teacher's vocabulary (size ${vocabSize}); the data was tokenized for another vocabulary`);
    }
  }
}

/** sha256 over the vocabulary's pieces: equal hashes mean the same id ↔ token mapping. */
export function vocabularyHash(tokens: ArrayLike<string | undefined> | Tokenizer): string {
  const h = createHash('sha256');
  const list = 'idToToken' in tokens ? Array.from({ length: tokens.vocabSize }, (_, i) => tokens.idToToken(i)) : Array.from(tokens);
  for (const t of list) h.update(`${t ?? ''}\u0000`);
  return h.digest('hex');
}

/** Teacher and student must index the same vocabulary; names the first differing id when token lists are known. */
export function assertSameVocabulary(
  teacher: { vocabSize: number; description: string; tokens?: readonly string[] | null },
  student: { vocabSize?: number; tokenizer?: Tokenizer | null },
): void {
  if (student.vocabSize !== undefined && teacher.vocabSize !== student.vocabSize) {
    throw new VocabularyMismatchError(`vocabulary mismatch: teacher ${teacher.description} has ${teacher.vocabSize} tokens, the student ${student.vocabSize}; distillation needs the same tokenizer on both sides`);
  }
  const tok = student.tokenizer;
  if (tok && tok.vocabSize > teacher.vocabSize) {
    throw new VocabularyMismatchError(`vocabulary mismatch: the student's tokenizer has ${tok.vocabSize} tokens, more than teacher ${teacher.description} (${teacher.vocabSize})`);
  }
  if (teacher.tokens && tok) {
    for (let i = 0; i < teacher.vocabSize; i++) {
      const s = tok.idToToken(i);
      if (s !== undefined && teacher.tokens[i] !== undefined && s !== teacher.tokens[i]) {
        throw new VocabularyMismatchError(`vocabulary mismatch: token ${i} is ${JSON.stringify(teacher.tokens[i])} for teacher ${teacher.description} but ${JSON.stringify(s)} for the student's tokenizer`);
      }
    }
  }
}
