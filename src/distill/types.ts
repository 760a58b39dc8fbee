// Interfaces shared by the data pipeline (src/data), the teachers (src/distill/teachers) and the trainer.

/** One batch of token rows, row-major [batch, seq]. */
export interface TokenBatch {
  inputIds: Int32Array;
  /** 1 = real token, 0 = padding. */
  attentionMask: Uint8Array;
  batch: number;
  seq: number;
  /** Next-token target at each position; -100 = no loss there (padding, prompt tokens, last position). */
  labels: Int32Array;
}

export type TeacherOutput =
  | { kind: 'dense'; /** [batch, seq, vocab] raw logits (T = 1) */ logits: Float32Array }
  | {
      kind: 'sparse';
      k: number;
      /** [batch, seq, k] token ids of the teacher's top-k at each position */
      ids: Int32Array;
      /** [batch, seq, k] log p of those ids under the teacher at T = 1 (full-vocabulary normalisation) */
      logprobs: Float32Array;
    };

export interface Teacher {
  readonly vocabSize: number;
  readonly description: string;
  /** Distributions predicting `labels` at each position, i.e. the next token after inputIds[b, t]. */
  run(batch: TokenBatch): Promise<TeacherOutput>;
  close(): Promise<void>;
}

export interface DataSource {
  /** Deterministic given (seed, epoch); startBatch skips that many batches (resume). */
  batches(epoch: number, batchSize: number, startBatch?: number): Iterable<TokenBatch>;
  numBatches(batchSize: number): number;
}
