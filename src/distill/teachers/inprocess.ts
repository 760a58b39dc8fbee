/**
 * In-process teacher: any model slimlm loads (HF folder, safetensors, llama2.c .bin, GGUF; fp32 or dequantized), run forward
 * with all-position logits and no gradients (an inference graph has none). Returns dense logits or the top-k.
 */
import { AutoModelForCausalLM, AutoTokenizer, type LoadOptions } from '../../api.js';
import type { CausalLM } from '../../models/types.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../types.js';
import { checkBatch, denseToTopK, TeacherError } from './common.js';

export interface InProcessTeacherOptions extends LoadOptions {
  /** Return the top-k as sparse log-probabilities instead of dense logits. */
  topK?: number;
  /** Rows per forward pass (bounds the [rows, seq, vocab] logits buffer). Default: the whole batch. */
  microBatch?: number;
}

export class InProcessTeacher implements Teacher {
  readonly vocabSize: number;
  /** Vocabulary pieces of the tokenizer found beside the model (for vocabulary checks), if any. */
  tokens: string[] | null = null;

  constructor(private readonly model: CausalLM, readonly description: string, private readonly opts: InProcessTeacherOptions = {}) {
    this.vocabSize = model.config.vocabSize;
    if (opts.topK !== undefined && (!Number.isInteger(opts.topK) || opts.topK < 1 || opts.topK > this.vocabSize)) {
      throw new TeacherError(`top-k must be an integer in 1..${this.vocabSize}, got ${opts.topK}`);
    }
  }

  static async load(path: string, opts: InProcessTeacherOptions = {}): Promise<InProcessTeacher> {
    const m = await AutoModelForCausalLM.fromPretrained(path, opts);
    const t = new InProcessTeacher(m.model, `${path} (in-process, ${m.source.format})`, opts);
    if (m.source.tokenizerPath) {
      const tok = await AutoTokenizer.fromPretrained(m.source.tokenizerPath);
      t.tokens = Array.from({ length: tok.vocabSize }, (_, i) => tok.idToToken(i) ?? '');
    }
    return t;
  }

  /** Dense [batch, seq, vocab] logits of the teacher. */
  async logits(batch: TokenBatch): Promise<Float32Array> {
    checkBatch(batch, this.vocabSize, this.description);
    const { seq } = batch;
    const V = this.vocabSize;
    const out = new Float32Array(batch.batch * seq * V);
    const step = Math.max(1, this.opts.microBatch ?? batch.batch);
    for (let b0 = 0; b0 < batch.batch; b0 += step) {
      const rows = Array.from({ length: Math.min(step, batch.batch - b0) }, (_, i) => b0 + i);
      const inputIds = rows.map((b) => Array.from(batch.inputIds.subarray(b * seq, (b + 1) * seq)));
      const attentionMask = rows.map((b) => Array.from(batch.attentionMask.subarray(b * seq, (b + 1) * seq)));
      // A row of only padding would have no real query; its logits are never read.
      for (const m of attentionMask) if (!m.includes(1)) m[0] = 1;
      const r = await this.model.forward({ inputIds, attentionMask, allLogits: true });
      out.set(r.logits, b0 * seq * V);
    }
    return out;
  }

  async run(batch: TokenBatch): Promise<TeacherOutput> {
    const logits = await this.logits(batch);
    if (this.opts.topK === undefined) return { kind: 'dense', logits };
    return denseToTopK(logits, batch, this.vocabSize, this.opts.topK);
  }

  close(): Promise<void> {
    return this.model.dispose();
  }
}
