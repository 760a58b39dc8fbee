/** Llama / Mistral causal LM executed by onnxruntime: one decoder graph for prefill and cached decoding. */
import type { HostTensor } from '../formats/tensor.js';
import { collectGarbage, feeds, Session, sessionFromGraph, type OrtTensor, type SessionOptions } from '../runtime/index.js';
import type { LlamaConfig } from './config.js';
import { LlamaKVCache } from './kvCache.js';
import { buildLlamaGraph, LLAMA_IO, type WeightSource } from './llamaGraph.js';
import type { CausalLM, ForwardArgs, ForwardResult, KVCache } from './types.js';
import type { EmbeddingRows } from './embeddingRows.js';

export { LlamaKVCache } from './kvCache.js';
export { WeightError, validateLlamaWeights } from './llamaWeights.js';
export { buildLlamaGraph, LLAMA_IO } from './llamaGraph.js';

export interface LlamaModelOptions {
  /** Intra-op threads for ORT (default: one per core). */
  threads?: number;
  /** ORT graph optimization level (default 'all'). */
  optimizationLevel?: SessionOptions['optimizationLevel'];
  /** ORT's fused inference kernels (RMSNorm, RoPE, joined projections; see LlamaGraphOptions.fused). Default true. */
  fused?: boolean;
}

export class ForwardError extends Error {
  override name = 'ForwardError';
}

/** Bytes of returned outputs after which a forward first runs a full GC (bounds uncollected KV caches). */
const GC_AFTER_BYTES = 256 * 2 ** 20;
/**
 * Longer inputs run in chunks of this many tokens, each over the cache of the ones before (as llama.cpp's batches):
 * attention's scores grow with new × (past + new) per head (a 7B, 1,024-token prompt peaks at 4.63 / 4.50 / 4.43 GB with
 * chunks of 256 / 128 / 64, at the same prompt speed).
 */
export const PREFILL_CHUNK = 128;

export class LlamaModel implements CausalLM {
  private returnedBytes = 0;
  private constructor(readonly config: LlamaConfig, private readonly session: Session, private readonly embeddings: EmbeddingRows | null) {}

  /**
   * Validate `weights` (canonical HF names and layout; f32/f16/bf16, computed in f32) or take any WeightSource
   * (e.g. one reading a checkpoint lazily), build the graph and load it; ORT maps the weights from a file it owns.
   */
  static async create(config: LlamaConfig, weights: ReadonlyMap<string, HostTensor> | WeightSource, opts: LlamaModelOptions = {}): Promise<LlamaModel> {
    const name = 'model.embed_tokens.weight';
    const embeddings = weights instanceof Map || config.tieWordEmbeddings ? null
      : (weights as WeightSource).embeddingRows?.(name, [config.vocabSize, config.hiddenSize]) ?? null;
    try {
      const graphOpts = { fused: opts.fused ?? true, cache: 'append', inputsEmbeds: embeddings !== null } as const;
      const graph = buildLlamaGraph(config, weights, graphOpts);
      const session = await sessionFromGraph(graph, { threads: opts.threads, optimizationLevel: opts.optimizationLevel, lower: { docString: `slimlm ${config.modelType} decoder` } });
      return new LlamaModel(config, session, embeddings);
    } catch (e) {
      embeddings?.close();
      throw e;
    }
  }

  async forward(args: ForwardArgs): Promise<ForwardResult> {
    const { inputIds } = args;
    const c = this.config;
    const batch = inputIds.length;
    const seq = inputIds[0]?.length ?? 0;
    if (!batch || !seq) throw new ForwardError('inputIds must hold at least one row with at least one token');
    const ids: number[] = [];
    inputIds.forEach((row, b) => {
      if (row.length !== seq) throw new ForwardError(`inputIds rows must have equal length (row 0 has ${seq}, row ${b} has ${row.length}); left-pad and mask`);
      for (const id of row) {
        if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new ForwardError(`inputIds row ${b}: token id ${id} is outside the vocabulary 0..${c.vocabSize - 1}`);
        ids.push(id);
      }
    });

    const cache = args.cache === undefined ? undefined : this.ownCache(args.cache);
    if (cache && cache.batchSize !== batch) throw new ForwardError(`cache holds ${cache.batchSize} rows but inputIds has ${batch}`);
    const past = cache?.length ?? 0;
    const mask = args.attentionMask ?? Array.from({ length: batch }, (_, b) => [...(cache?.mask[b] ?? []), ...Array(seq).fill(1)]);
    if (mask.length !== batch) throw new ForwardError(`attentionMask has ${mask.length} rows but inputIds has ${batch}`);
    mask.forEach((row, b) => {
      if (row.length !== past + seq) throw new ForwardError(`attentionMask row ${b} has length ${row.length}; it must cover past + new tokens (${past} + ${seq})`);
      if (row.some((v) => v !== 0 && v !== 1)) throw new ForwardError(`attentionMask row ${b} must hold only 0 and 1`);
    });

    if (seq > PREFILL_CHUNK) return this.forwardChunks(args, cache, mask);

    const logitsAt = args.allLogits ? Array.from({ length: seq }, (_, i) => i) : [seq - 1];
    const step = (cache ?? LlamaKVCache.empty(this, c.numHiddenLayers, batch, c.numKeyValueHeads, c.headDim)).prepare(seq, args.reserve);
    const input: Record<string, OrtTensor> = {
      ...(this.embeddings
        ? { [LLAMA_IO.inputsEmbeds]: feeds.f32(this.embeddings.lookup(ids), [batch, seq, c.hiddenSize]) }
        : { [LLAMA_IO.inputIds]: feeds.i64(ids, [batch, seq]) }),
      [LLAMA_IO.attentionMask]: feeds.i64(mask.flat(), [batch, past + seq]),
      [LLAMA_IO.logitsIndex]: feeds.i64(logitsAt, [logitsAt.length]),
    };
    for (let i = 0; i < c.numHiddenLayers; i++) {
      input[LLAMA_IO.pastKey(i)] = step.keys[i];
      input[LLAMA_IO.pastValue(i)] = step.values[i];
    }
    // Every output is copied into a fresh buffer, garbage after this call that V8 may keep for a long time, since it
    // counts only as external memory (logits, a prompt's keys/values, grown caches). Collect once enough has piled up.
    if (this.returnedBytes > GC_AFTER_BYTES) {
      collectGarbage();
      this.returnedBytes = 0;
    }
    const out = await this.session.run(input);
    for (const t of Object.values(out)) this.returnedBytes += (t.data as ArrayBufferView).byteLength;
    const layers = [...Array(c.numHiddenLayers).keys()];
    const next = step.append(layers.map((i) => out[LLAMA_IO.newKey(i)]), layers.map((i) => out[LLAMA_IO.newValue(i)]), mask.map((row) => [...row]));
    return { logits: out[LLAMA_IO.logits].data as Float32Array, dims: [batch, logitsAt.length, c.vocabSize], cache: next };
  }

  /** A long input as consecutive chunks over a growing cache: the same logits and cache as one forward. */
  private async forwardChunks(args: ForwardArgs, cache: LlamaKVCache | undefined, mask: number[][]): Promise<ForwardResult> {
    const seq = args.inputIds[0].length, past = cache?.length ?? 0, vocab = this.config.vocabSize;
    const parts: Float32Array[] = [];
    let last: ForwardResult | undefined;
    for (let start = 0; start < seq; start += PREFILL_CHUNK) {
      const end = Math.min(seq, start + PREFILL_CHUNK);
      // The previous chunk's returned keys/values are appended and garbage now (a 7B's 128-token chunk: 34 MB).
      if (start) collectGarbage();
      last = await this.forward({
        inputIds: args.inputIds.map((row) => row.slice(start, end)), attentionMask: mask.map((row) => row.slice(0, past + end)),
        cache: last?.cache ?? cache, allLogits: args.allLogits, reserve: Math.max(args.reserve ?? 0, past + seq),
      });
      if (args.allLogits) parts.push(last.logits);
    }
    if (!args.allLogits) return last!;
    // [batch, chunk, vocab] pieces → [batch, seq, vocab].
    const batch = args.inputIds.length, logits = new Float32Array(batch * seq * vocab);
    let offset = 0;
    for (const part of parts) {
      const n = part.length / (batch * vocab);
      for (let b = 0; b < batch; b++) logits.set(part.subarray(b * n * vocab, (b + 1) * n * vocab), (b * seq + offset) * vocab);
      offset += n;
    }
    return { logits, dims: [batch, seq, vocab], cache: last!.cache };
  }

  selectCacheRows(cache: KVCache, rows: number[]): KVCache {
    return this.ownCache(cache).selectRows(rows);
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
    this.embeddings?.close();
  }

  private ownCache(cache: KVCache): LlamaKVCache {
    if (!(cache instanceof LlamaKVCache) || cache.owner !== this) throw new ForwardError('cache was not produced by this model');
    return cache;
  }
}

export function createLlamaModel(config: LlamaConfig, weights: ReadonlyMap<string, HostTensor> | WeightSource, opts?: LlamaModelOptions): Promise<LlamaModel> {
  return LlamaModel.create(config, weights, opts);
}
