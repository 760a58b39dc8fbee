/**
 * GGUF teacher through node-llama-cpp (llama.cpp): the way to distill from a quantized Mistral-7B on a laptop.
 * Each row is evaluated with `LlamaContextSequence.controlledEvaluate`, asking for `generateNext.probabilities` at every
 * position (https://node-llama-cpp.withcat.ai/api/classes/LlamaContextSequence#controlledevaluate). With the default greedy
 * sampler the probabilities are llama.cpp's plain softmax over the full vocabulary, sorted high to low; we take log p.
 */
import { availableParallelism } from 'node:os';
import { GGUFFile, plainValue } from '../../formats/gguf.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../types.js';
import { batchRows, checkBatch, PAD_LOGPROB, TeacherError, UNDERFLOW_LOGPROB } from './common.js';

type NLC = typeof import('node-llama-cpp');
type Llama = Awaited<ReturnType<NLC['getLlama']>>;
type LlamaModel = Awaited<ReturnType<Llama['loadModel']>>;
type LlamaContext = Awaited<ReturnType<LlamaModel['createContext']>>;
type Token = Parameters<LlamaModel['detokenize']>[0][number];

export interface GGUFTeacherOptions {
  /** Top-k as sparse log-probabilities (default); 0 or undefined with `dense: true` returns dense log-probabilities. */
  topK?: number;
  dense?: boolean;
  threads?: number;
  /** Context length to allocate (default 512, grown when a longer row arrives). */
  contextSize?: number;
  /**
   * KV cache precision: llama.cpp's default F16 (half the memory; ~5e-3 error in log-probs) or F32, which also turns off
   * flash attention (its CPU path computes Q·K in F16) so the output matches an f32 reference to ~1e-4.
   */
  kvCacheType?: 'F16' | 'F32';
}

export class GGUFTeacher implements Teacher {
  readonly description: string;

  private constructor(
    private readonly llama: Llama, private readonly model: LlamaModel, readonly vocabSize: number,
    readonly tokens: string[] | null, readonly path: string, private readonly opts: GGUFTeacherOptions,
  ) {
    this.description = `${path} (node-llama-cpp)`;
    if (!opts.dense && (!Number.isInteger(opts.topK) || opts.topK! < 1 || opts.topK! > vocabSize)) {
      throw new TeacherError(`GGUF teacher: top-k must be an integer in 1..${vocabSize} (or ask for dense output), got ${opts.topK}`);
    }
  }

  private context: LlamaContext | null = null;

  static async load(path: string, opts: GGUFTeacherOptions = {}): Promise<GGUFTeacher> {
    // Vocabulary from the file's own metadata, read by our GGUF parser (no weights loaded).
    const f = GGUFFile.open(path);
    let tokens: string[] | null = null;
    try {
      const t = f.metadata.get('tokenizer.ggml.tokens');
      tokens = t ? (plainValue(t) as string[]) : null;
    } finally {
      f.close();
    }
    const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
    // Prebuilt CPU binary only: never build from source or download at run time.
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
    const vocabSize = tokens?.length ?? (model as unknown as { tokens: { vocabSize?: number } }).tokens.vocabSize;
    if (!vocabSize) throw new TeacherError(`${path}: cannot tell the vocabulary size (no tokenizer.ggml.tokens)`);
    return new GGUFTeacher(llama, model, vocabSize, tokens, path, { topK: 64, ...opts });
  }

  private async contextFor(length: number): Promise<LlamaContext> {
    if (this.context && this.context.contextSize >= length) return this.context;
    await this.context?.dispose();
    const size = Math.max(length, this.opts.contextSize ?? 512);
    this.context = await this.model.createContext({ contextSize: size, batchSize: size, sequences: 1, threads: this.opts.threads ?? availableParallelism(), // node-llama-cpp's 0 ("all hardware threads") ran 30× slower here
      experimentalKvCacheKeyType: this.opts.kvCacheType ?? 'F16', experimentalKvCacheValueType: this.opts.kvCacheType ?? 'F16',
      ...(this.opts.kvCacheType === 'F32' ? { flashAttention: false } : {}) });
    return this.context;
  }

  async run(batch: TokenBatch): Promise<TeacherOutput> {
    checkBatch(batch, this.vocabSize, this.description);
    const V = this.vocabSize;
    const k = this.opts.dense ? V : this.opts.topK!;
    const positions = batch.batch * batch.seq;
    const dense = this.opts.dense ? new Float32Array(positions * V).fill(UNDERFLOW_LOGPROB) : null;
    const ids = dense ? null : new Int32Array(positions * k);
    const logprobs = dense ? null : new Float32Array(positions * k).fill(PAD_LOGPROB);
    const context = await this.contextFor(batch.seq);
    const sequence = context.getSequence();
    try {
      for (const [b, row] of batchRows(batch).entries()) {
        if (row.ids.length === 0) continue;
        await sequence.clearHistory();
        const input = row.ids.map((id) => [id as Token, { generateNext: { probabilities: true } }] as [Token, { generateNext: { probabilities: boolean } }]);
        const results = await sequence.controlledEvaluate(input);
        row.positions.forEach((t, i) => {
          const probs = results[i]?.next.probabilities;
          if (!probs) throw new TeacherError(`${this.description}: no probabilities for position ${t}`);
          const at = b * batch.seq + t;
          let j = 0;
          for (const [token, p] of probs) {
            const lp = p > 0 ? Math.log(p) : UNDERFLOW_LOGPROB;
            if (dense) dense[at * V + token] = lp;
            else {
              // Sorted high to low: the first k entries are the top-k.
              ids![at * k + j] = token; logprobs![at * k + j] = lp;
              if (++j === k) break;
            }
          }
        });
      }
    } finally {
      sequence.dispose();
    }
    return dense ? { kind: 'dense', logits: dense } : { kind: 'sparse', k, ids: ids!, logprobs: logprobs! };
  }

  async close(): Promise<void> {
    await this.context?.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}
