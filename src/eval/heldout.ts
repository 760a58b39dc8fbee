/**
 * Held-out quality of a causal LM on token rows (e.g. a chat data set's validation split): perplexity over the
 * positions that carry a label (answers only when prompts are masked, as in training), and against a reference model
 * on the same positions, mean KL(reference ‖ model) and top-1 agreement.
 */
import type { DataSource, TokenBatch } from '../distill/types.js';
import type { CausalLM } from '../models/types.js';
import { argmax, klDivergence, logSoftmax } from './perplexity.js';

export interface HeldOutResult {
  positions: number;
  nll: number;
  perplexity: number;
  meanKL?: number;
  top1Agreement?: number;
  seconds: number;
}

async function batchLogits(model: CausalLM, batch: TokenBatch): Promise<Float32Array> {
  const { seq } = batch;
  const rows = [...Array(batch.batch).keys()];
  const inputIds = rows.map((b) => Array.from(batch.inputIds.subarray(b * seq, (b + 1) * seq)));
  const attentionMask = rows.map((b) => Array.from(batch.attentionMask.subarray(b * seq, (b + 1) * seq)));
  return (await model.forward({ inputIds, attentionMask, allLogits: true })).logits;
}

export async function evaluateHeldOut(model: CausalLM, data: DataSource, opts: { batchSize?: number; reference?: CausalLM; maxBatches?: number } = {}): Promise<HeldOutResult> {
  const V = model.config.vocabSize;
  if (opts.reference && opts.reference.config.vocabSize !== V) {
    throw new Error(`reference vocabulary ${opts.reference.config.vocabSize} differs from the model's ${V}`);
  }
  let positions = 0, nll = 0, kl = 0, agree = 0, seconds = 0, done = 0;
  for (const batch of data.batches(0, opts.batchSize ?? 16)) {
    if (opts.maxBatches !== undefined && done++ >= opts.maxBatches) break;
    const t0 = performance.now();
    const logits = await batchLogits(model, batch);
    seconds += (performance.now() - t0) / 1000;
    const ref = opts.reference ? await batchLogits(opts.reference, batch) : null;
    for (let p = 0; p < batch.labels.length; p++) {
      const label = batch.labels[p];
      if (label < 0) continue;
      const row = logits.subarray(p * V, (p + 1) * V);
      const logQ = logSoftmax(row);
      nll -= logQ[label];
      positions++;
      if (ref) {
        const refRow = ref.subarray(p * V, (p + 1) * V);
        kl += klDivergence(logSoftmax(refRow), logQ);
        if (argmax(refRow) === argmax(row)) agree++;
      }
    }
  }
  if (positions === 0) throw new Error('no labelled positions to evaluate');
  return {
    positions, nll: nll / positions, perplexity: Math.exp(nll / positions), seconds,
    ...(opts.reference ? { meanKL: kl / positions, top1Agreement: agree / positions } : {}),
  };
}
