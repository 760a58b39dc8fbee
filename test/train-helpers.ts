// Small stand-ins for the trainer tests: a tiny student config, random token rows, and a bigram "teacher".
import { TokenDataset, type TokenRow } from '../src/data/index.js';
import type { LlamaConfig } from '../src/models/config.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../src/distill/types.js';
import { gaussian } from '../src/distill/student.js';

export const TINY: LlamaConfig = {
  modelType: 'llama', vocabSize: 48, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2, numAttentionHeads: 2,
  numKeyValueHeads: 1, headDim: 8, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 64, slidingWindow: null,
  tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: 0,
};

/** Rows of a Markov chain over the vocabulary (learnable structure), lengths 6..12. */
export function markovRows(n: number, vocab: number, seed: number): TokenRow[] {
  const r = gaussian(seed);
  const u = () => (r() * 0.3 + 0.5) % 1;
  const rows: TokenRow[] = [];
  for (let i = 0; i < n; i++) {
    const len = 6 + Math.floor(Math.abs(r()) * 3) % 7;
    const ids = new Int32Array(len);
    ids[0] = 1;
    for (let t = 1; t < len; t++) ids[t] = 3 + ((ids[t - 1] * 7 + (u() < 0.8 ? 1 : 5)) % (vocab - 3));
    rows.push({ ids, targets: new Uint8Array(len).fill(1) });
  }
  return rows;
}

export function dataset(rows: TokenRow[], seed = 0, padding: 'longest' | 'max_length' = 'longest'): TokenDataset {
  return new TokenDataset(rows, { seed, shuffle: true, padId: 0, maxLength: 12, padding, dropLast: false });
}

/** Logits depend on the current token only: a fixed random bigram table, optionally slow or poisoned (NaN) on some calls. */
export class BigramTeacher implements Teacher {
  readonly description = 'bigram test teacher';
  private table: Float32Array;
  calls = 0;
  constructor(readonly vocabSize: number, seed = 7, private readonly opts: { delayMs?: number; nanOnCall?: number } = {}) {
    const r = gaussian(seed);
    this.table = Float32Array.from({ length: vocabSize * vocabSize }, (_, i) => 3 * r() + (i % vocabSize === (Math.floor(i / vocabSize) * 7 + 1) % vocabSize ? 4 : 0));
  }
  async run(b: TokenBatch): Promise<TeacherOutput> {
    this.calls++;
    if (this.opts.delayMs) await new Promise((res) => setTimeout(res, this.opts.delayMs));
    const V = this.vocabSize;
    const logits = new Float32Array(b.batch * b.seq * V);
    for (let i = 0; i < b.batch * b.seq; i++) logits.set(this.table.subarray(b.inputIds[i] * V, (b.inputIds[i] + 1) * V), i * V);
    if (this.opts.nanOnCall === this.calls) logits[5] = NaN;
    return { kind: 'dense', logits };
  }
  async close(): Promise<void> {}
}
