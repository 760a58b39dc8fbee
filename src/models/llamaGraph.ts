/**
 * The Llama/Mistral decoder as one graph (prefill and incremental decode alike), following Hugging Face's
 * LlamaForCausalLM / MistralForCausalLM semantics.
 *
 * Inputs:  input_ids i64 [batch, seq]; attention_mask i64 [batch, past+seq] (1 = real, 0 = padding);
 *          logits_index i64 [n] (positions in 0..seq-1 that get logits); past_key.{i}/past_value.{i} f32 [batch, kvHeads, past, headDim]
 * Outputs: logits f32 [batch, n, vocab]; present_key.{i}/present_value.{i} f32 [batch, kvHeads, past+seq, headDim]
 *
 * With `cache: 'append'` (what LlamaModel runs) past_key.{i}/past_value.{i} are buffers [batch, kvHeads, capacity, headDim]
 * whose first `past` positions are valid (past = attention_mask length − seq), and the outputs are only this call's
 * keys/values, new_key.{i}/new_value.{i} [batch, seq, kvHeads·headDim]: the caller appends them to its buffers, so a
 * decode step returns a few KB instead of the whole cache (onnxruntime-node copies every output).
 */
import { numel, type HostTensor } from '../formats/tensor.js';
import { END, GraphBuilder, type Graph, type Tensor } from '../graph/index.js';
import { expectedTensors, type LlamaConfig } from './config.js';
import type { EmbeddingRows } from './embeddingRows.js';
import { f32InitializerData, validateLlamaWeights } from './llamaWeights.js';

export const LLAMA_IO = {
  inputIds: 'input_ids',
  inputsEmbeds: 'inputs_embeds',
  attentionMask: 'attention_mask',
  logitsIndex: 'logits_index',
  logits: 'logits',
  hidden: 'hidden',
  pastKey: (i: number) => `past_key.${i}`,
  pastValue: (i: number) => `past_value.${i}`,
  presentKey: (i: number) => `present_key.${i}`,
  presentValue: (i: number) => `present_value.${i}`,
  newKey: (i: number) => `new_key.${i}`,
  newValue: (i: number) => `new_value.${i}`,
} as const;

/** Additive bias for masked scores: HF uses the dtype minimum (not -inf) so fully masked pad rows stay finite. */
const MASKED = -3.4028234663852886e38;

/** RoPE inverse frequencies, rounded like HF's float32 computation. */
export function ropeInvFreq(headDim: number, theta: number): number[] {
  const f = Math.fround;
  return Array.from({ length: headDim / 2 }, (_, i) => f(1 / f(Math.pow(theta, f((2 * i) / headDim)))));
}

/** Where the decoder's weights come from: initializers (inference), graph inputs (training), quantized blocks, … */
export interface WeightSource {
  /** A weight as a tensor (embeddings, norms; Linear weights too unless `linear` is given). Called once per name. */
  tensor(g: GraphBuilder, name: string, shape: number[]): Tensor;
  /** x · Wᵀ for the Linear weight `name` of HF shape [out, in]; default: MatMul with `tensor(name)` transposed. */
  linear?(g: GraphBuilder, x: Tensor, name: string, shape: number[]): Tensor;
  /**
   * x times several Linear weights of the same input size as ONE matrix (outputs concatenated on the last axis), or
   * undefined when they cannot be joined: one bigger GEMV instead of several small ones (q/k/v, gate/up).
   */
  fusedLinear?(g: GraphBuilder, x: Tensor, names: string[], shapes: number[][]): Tensor | undefined;
  /** The untied token-embedding table for Gather, in any float dtype (rows are cast to f32 after the lookup). */
  embedding?(g: GraphBuilder, name: string, shape: number[]): Tensor;
  /** The untied table as rows read outside the graph (the graph then takes inputs_embeds), when the source can. */
  embeddingRows?(name: string, shape: number[]): EmbeddingRows | undefined;
}

export interface LlamaGraphOptions {
  /**
   * true (default): KV cache inputs past_key.i / past_value.i and outputs present_key.i / present_value.i (the layout of
   * transformers.js and Optimum exports). 'append': past buffers with spare capacity in, this call's keys/values out.
   */
  cache?: boolean | 'append';
  /** Logits for every position, without the logits_index input (training, perplexity). Default false. */
  allPositions?: boolean;
  /** Build into this builder (e.g. a training step that appends a loss and the backward pass). */
  builder?: GraphBuilder;
  /**
   * Inference kernels of ONNX Runtime instead of plain ops: SimplifiedLayerNormalization (RMSNorm),
   * SkipSimplifiedLayerNormalization (residual add + RMSNorm), RotaryEmbedding, fused q/k/v and gate/up projections, and
   * with `cache: 'append'` grouped attention straight over the buffers (no copy of the past).
   * Fewer, bigger nodes per token; they have no gradient rules, so training graphs keep the default (false).
   */
  fused?: boolean;
  /** false: stop before the LM head and output `hidden` (the final RMSNorm's output; training applies the head in chunks). */
  lmHead?: boolean;
  /** Take the token embeddings as input `inputs_embeds` f32 [batch, seq, hidden] instead of input_ids (untied models). */
  inputsEmbeds?: boolean;
}

/** Weights as f32 initializers (f16/bf16 converted while the model is serialized). */
export function initializerWeights(config: LlamaConfig, weights: ReadonlyMap<string, HostTensor>): WeightSource {
  validateLlamaWeights(config, weights);
  return { tensor: (g, name, shape) => g.initializer(name, 'f32', shape, f32InitializerData(weights.get(name)!)) };
}

/** Shapes only: the graph can be built and checked, its parameters counted, but its initializers refuse to be written. */
export const shapeOnlyWeights: WeightSource = {
  tensor: (g, name, shape) => g.initializer(name, 'f32', shape, {
    byteLength: numel(shape) * 4,
    write(): void { throw new Error(`${name}: the graph was built without weights`); },
  }),
};

/** Builds the decoder graph; `weights` may be a map of canonical HF tensors, any WeightSource, or absent (shapes only). */
export function buildLlamaGraph(config: LlamaConfig, weights?: ReadonlyMap<string, HostTensor> | WeightSource, opts: LlamaGraphOptions = {}): Graph {
  const source = weights === undefined ? shapeOnlyWeights : weights instanceof Map ? initializerWeights(config, weights) : weights as WeightSource;
  const useCache = (opts.cache ?? true) !== false;
  const append = opts.cache === 'append';
  const fused = opts.fused ?? false;
  // Fused + append: attention of each kv head's query group over the whole buffer plus the new keys (attendGrouped).
  const grouped = fused && append;
  const c = config;
  const nH = c.numAttentionHeads, kvH = c.numKeyValueHeads, D = c.headDim, rep = nH / kvH;
  const g = opts.builder ?? new GraphBuilder(`${c.modelType}_decoder`);
  const shapes = expectedTensors(c);
  const made = new Map<string, Tensor>();
  const weight = (name: string): Tensor => {
    let t = made.get(name);
    if (!t) made.set(name, t = source.tensor(g, name, shapes.get(name)!));
    return t;
  };
  const linear = (x: Tensor, name: string): Tensor =>
    source.linear ? source.linear(g, x, name, shapes.get(name)!) : g.matMul(x, weight(name), { transB: true });
  const rmsNorm = (x: Tensor, w: Tensor) => g.scope('rms_norm', () => {
    if (fused) return g.op('SimplifiedLayerNormalization', [x, w], { axis: -1, epsilon: c.rmsNormEps, stash_type: 1 });
    const variance = g.reduceMean(g.mul(x, x), [-1]);
    return g.mul(g.mul(x, g.reciprocal(g.sqrt(g.add(variance, c.rmsNormEps)))), w);
  });
  /** residual + x, and its RMSNorm. */
  const addNorm = (residual: Tensor, x: Tensor, w: Tensor): { sum: Tensor; normed: Tensor } => {
    if (!fused) { const sum = g.add(residual, x); return { sum, normed: rmsNorm(sum, w) }; }
    const [normed, , , sum] = g.opMulti('SkipSimplifiedLayerNormalization', [x, residual, w], { epsilon: c.rmsNormEps });
    return { sum, normed };
  };
  /** x times the Linear weights `names`, one output each (a single fused GEMV where the source can join them). */
  const linears = (x: Tensor, names: string[]): Tensor[] => {
    const joined = fused ? source.fusedLinear?.(g, x, names, names.map((n) => shapes.get(n)!)) : undefined;
    if (!joined) return names.map((n) => linear(x, n));
    let start = 0;
    return names.map((n) => { const N = shapes.get(n)![0]; return g.slice(joined, [start], [start += N], [-1]); });
  };

  if (opts.inputsEmbeds && c.tieWordEmbeddings) throw new Error('inputs_embeds: a tied embedding is also the LM head; keep input_ids');
  const input = opts.inputsEmbeds ? g.input(LLAMA_IO.inputsEmbeds, 'f32', ['batch', 'seq', c.hiddenSize]) : g.input(LLAMA_IO.inputIds, 'i64', ['batch', 'seq']);
  const totalDim = useCache ? 'past+seq' : 'seq';
  const pastDim = append ? 'capacity' : 'past';
  const mask = g.input(LLAMA_IO.attentionMask, 'i64', ['batch', totalDim]);
  const logitsIndex = opts.allPositions ? null : g.input(LLAMA_IO.logitsIndex, 'i64', ['n_logits']);

  // Cache indices: keys are 0..total-1, queries total-seq..total-1 (left padding included, as HF's cache_position).
  const { bias, positions, cos, sin, pastIdx, pastKeysIn, splitSizes } = g.scope('mask_and_rope', () => {
    const total = g.squeeze(g.shape(mask, 1, 2), [0]);
    const seqLength = g.shape(input, 1, 2);
    const seq = g.squeeze(seqLength, [0]);
    const past = g.sub(total, seq);
    // The valid part of the past buffers (plain graph).
    const pastIdx = append && !grouped ? g.range(0, past, 1, 'past') : null;
    // The keys' cache positions: 0..total-1, or for the grouped attention the buffer's slots 0..capacity-1 (valid below
    // `past`) followed by the new keys past..total-1.
    const pastKeysIn = grouped ? g.input(LLAMA_IO.pastKey(0), 'f32', ['batch', kvH, 'capacity', D]) : null;
    const queryIdx = g.range(past, total, 1, 'seq');
    // Slots at or beyond `past` hold nothing of this sequence (spare room, or another branch's keys): they get
    // position `total`, after every query, so the causal rule masks them.
    const capacity = pastKeysIn ? g.shape(pastKeysIn, 2, 3) : null;
    const slots = capacity ? g.range(0, g.squeeze(capacity, [0]), 1, 'capacity') : null;
    const keyIdx = slots ? g.concat([g.where(g.less(slots, past), slots, total), queryIdx], 0) : g.range(0, total, 1, totalDim);
    // Where the grouped attention's probabilities split into the buffer's part and the new keys' part.
    const splitSizes = capacity ? g.concat([capacity, seqLength], 0) : null;
    const distance = g.sub(g.unsqueeze(queryIdx, [1]), g.unsqueeze(keyIdx, [0])); // [seq, keys]
    let allowed = g.greaterOrEqual(distance, 0);
    if (c.slidingWindow !== null) allowed = g.and(allowed, g.less(distance, c.slidingWindow));
    const maskAt = pastKeysIn ? g.gather(mask, g.where(g.less(keyIdx, total), keyIdx, 0), 1) : mask; // [batch, keys]
    const isReal = g.unsqueeze(g.not(g.equal(maskAt, 0)), [1]); // [batch, 1, keys]
    const bias = g.unsqueeze(g.where(g.and(g.unsqueeze(allowed, [0]), isReal), 0, MASKED), [1, 2]); // [batch,1,1,seq,keys]

    // Positions count real tokens only: cumsum(mask) - 1, taken at the query columns.
    const positions = g.gather(g.sub(g.cumSum(mask, 1), 1), queryIdx, 1); // [batch, seq]
    // Left padding has position -1; RotaryEmbedding rejects it (its keys are masked, any position does).
    if (fused) return { bias, positions: g.where(g.less(positions, 0), 0, positions), cos: null, sin: null, pastIdx, pastKeysIn, splitSizes };
    const invFreq = g.constant(ropeInvFreq(D, c.ropeTheta), 'f32');
    const freqs = g.mul(g.unsqueeze(g.cast(positions, 'f32'), [2]), invFreq); // [batch, seq, D/2]
    const angles = g.unsqueeze(g.concat([freqs, freqs], -1), [1]); // [batch, 1, seq, D]
    return { bias, positions, cos: g.cos(angles), sin: g.sin(angles), pastIdx, pastKeysIn, splitSizes };
  });
  // RotaryEmbedding reads cos/sin of each position from tables (rounded like HF's f32 angles).
  const ropeTables = fused ? ropeCaches(g, c) : null;
  // HF rotate-half RoPE: x·cos + [-x2, x1]·sin.
  const rope = (x: Tensor) => g.scope('rope', () => {
    if (ropeTables) return g.op('RotaryEmbedding', [x, positions, ropeTables.cos, ropeTables.sin], { interleaved: 0 });
    const x1 = g.slice(x, [0], [D / 2], [-1]);
    const x2 = g.slice(x, [D / 2], [END], [-1]);
    return g.add(g.mul(x, cos!), g.mul(g.concat([g.neg(x2), x1], -1), sin!));
  });
  const heads = (x: Tensor, n: number) => g.transpose(g.reshape(x, [0, 0, n, D]), [0, 2, 1, 3]); // [batch, n, seq, D]
  /**
   * Grouped-query attention over the append buffers without copying them: each kv head's query heads are the rows of
   * one GEMM ([rep·seq, D] · [D, capacity] for the buffer, · [D, seq] for the new keys), one softmax over both, and
   * the buffer's spare or foreign slots masked by the bias. q/k/v are rows [batch, seq, heads·D], RoPE applied.
   */
  let groupedBias: Tensor | null = null;
  const attendGrouped = (q: Tensor, k: Tensor, v: Tensor, pastK: Tensor, pastV: Tensor): Tensor => {
    const kvHeads = (x: Tensor) => g.transpose(g.reshape(x, [0, 0, kvH, D]), [0, 2, 1, 3]); // [batch, kvH, seq, D]
    // Rows (r, s) of group h: query head h·rep + r at position s.
    const qg = g.reshape(g.transpose(g.reshape(g.mul(q, 1 / Math.sqrt(D)), [0, 0, kvH, rep, D]), [0, 2, 3, 1, 4]), [0, kvH, -1, D]);
    const kNew = kvHeads(k), vNew = kvHeads(v);
    const scores = g.concat([g.matMul(qg, pastK, { transB: true }), g.matMul(qg, kNew, { transB: true })], -1); // [batch, kvH, rep·seq, keys]
    // The bias repeated for each query head of a group, in the scores' row order (built once, at layer 0; ReshapeTo
    // moves no data, it gives the rows the scores' dim names).
    if (!groupedBias) {
      const shape = g.concat([g.shape(scores, 0, 1), g.constant([1], 'i64'), g.shape(qg, 2, 3), g.shape(scores, 3, 4)], 0);
      const rows = g.concat(Array(rep).fill(g.squeeze(bias, [1])), 2); // [batch, 1, rep·seq, keys]
      groupedBias = g.op('ReshapeTo', [rows, shape], { dims: [scores.shape[0], 1, qg.shape[2], scores.shape[3]] });
    }
    const probs = g.softmax(g.add(scores, groupedBias), -1);
    const [pPast, pNew] = g.opMulti('Split', [probs, splitSizes!], { axis: -1, pieces: 2, dims: ['capacity', 'seq'] });
    const ctx = g.add(g.matMul(pPast, pastV), g.matMul(pNew, vNew)); // [batch, kvH, rep·seq, D]
    return g.reshape(g.transpose(g.reshape(ctx, [0, kvH, rep, -1, D]), [0, 3, 1, 2, 4]), [0, 0, nH * D]);
  };

  const embedName = 'model.embed_tokens.weight';
  const embedTable = () => (!c.tieWordEmbeddings && source.embedding ? source.embedding(g, embedName, shapes.get(embedName)!) : weight(embedName));
  let h = opts.inputsEmbeds ? input : g.scope('embed', () => g.cast(g.gather(embedTable(), input, 0), 'f32'));
  let x = g.scope('layers.0', () => rmsNorm(h, weight('model.layers.0.input_layernorm.weight')));
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}.`;
    g.scope(`layers.${i}`, () => {
      const attn = g.scope('attn', () => {
        const [qx, kx, vx] = linears(x, ['q', 'k', 'v'].map((m) => `${p}self_attn.${m}_proj.weight`));
        if (grouped) {
          // RoPE on [batch, seq, heads·D] rows; this call's keys/values leave as they are.
          const q = rope(qx), k = rope(kx);
          const pastK = i === 0 ? pastKeysIn! : g.input(LLAMA_IO.pastKey(i), 'f32', ['batch', kvH, pastDim, D]);
          const ctx = attendGrouped(q, k, vx, pastK, g.input(LLAMA_IO.pastValue(i), 'f32', ['batch', kvH, pastDim, D]));
          g.output(LLAMA_IO.newKey(i), k);
          g.output(LLAMA_IO.newValue(i), vx);
          return linear(ctx, p + 'self_attn.o_proj.weight');
        }
        const q = rope(heads(qx, nH));
        const k = rope(heads(kx, kvH));
        const v = heads(vx, kvH);
        let keys = k, values = v;
        if (useCache) {
          const past = (name: string) => {
            const buffer = g.input(name, 'f32', ['batch', kvH, pastDim, D]);
            return pastIdx ? g.gather(buffer, pastIdx, 2) : buffer;
          };
          keys = g.concat([past(LLAMA_IO.pastKey(i)), k], 2);
          values = g.concat([past(LLAMA_IO.pastValue(i)), v], 2);
          const rows = (x: Tensor) => g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, kvH * D]); // [batch, seq, kvH·D]
          g.output(append ? LLAMA_IO.newKey(i) : LLAMA_IO.presentKey(i), append ? rows(k) : keys);
          g.output(append ? LLAMA_IO.newValue(i) : LLAMA_IO.presentValue(i), append ? rows(v) : values);
        }
        // Grouped-query attention without repeating K/V: queries grouped per kv head, K/V broadcast over the group.
        const qg = g.reshape(g.mul(q, 1 / Math.sqrt(D)), [0, kvH, rep, -1, D]); // [batch, kvH, rep, seq, D]
        const scores = g.add(g.matMul(qg, g.unsqueeze(keys, [2]), { transB: true }), bias); // [batch, kvH, rep, seq, past+seq]
        const ctx = g.matMul(g.softmax(scores, -1), g.unsqueeze(values, [2])); // [batch, kvH, rep, seq, D]
        const merged = g.reshape(g.transpose(g.reshape(ctx, [0, nH, -1, D]), [0, 2, 1, 3]), [0, 0, nH * D]);
        return linear(merged, p + 'self_attn.o_proj.weight');
      });
      const { sum: h1, normed: y } = addNorm(h, attn, weight(p + 'post_attention_layernorm.weight'));
      const mlp = g.scope('mlp', () => {
        const [gate, up] = linears(y, [p + 'mlp.gate_proj.weight', p + 'mlp.up_proj.weight']);
        const silu = g.mul(gate, g.sigmoid(gate));
        return linear(g.mul(silu, up), p + 'mlp.down_proj.weight');
      });
      // The next layer's input norm joins this residual add (one SkipSimplifiedLayerNormalization when fused).
      if (i + 1 < c.numHiddenLayers) ({ sum: h, normed: x } = addNorm(h1, mlp, weight(`model.layers.${i + 1}.input_layernorm.weight`)));
      else h = g.add(h1, mlp);
    });
  }
  if (opts.lmHead === false) {
    g.output(LLAMA_IO.hidden, g.scope('lm_head', () => rmsNorm(h, weight('model.norm.weight'))));
    return g.graph;
  }
  const logits = g.scope('lm_head', () => {
    const selected = logitsIndex ? g.gather(h, logitsIndex, 1) : h; // [batch, n_logits, hidden]: the LM head only where asked
    const normed = rmsNorm(selected, weight('model.norm.weight'));
    return linear(normed, c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  });
  g.output(LLAMA_IO.logits, logits);
  return g.graph;
}

/** cos/sin tables [maxPositionEmbeddings, headDim/2] for RotaryEmbedding: cos(f32(position · invFreq)) as HF computes them. */
function ropeCaches(g: GraphBuilder, c: LlamaConfig): { cos: Tensor; sin: Tensor } {
  const invFreq = ropeInvFreq(c.headDim, c.ropeTheta), half = c.headDim / 2, rows = c.maxPositionEmbeddings;
  const table = (fn: (a: number) => number) => {
    const t = new Float32Array(rows * half);
    for (let p = 0; p < rows; p++) for (let j = 0; j < half; j++) t[p * half + j] = fn(Math.fround(p * invFreq[j]));
    return new Uint8Array(t.buffer);
  };
  return {
    cos: g.initializer('rope.cos_cache', 'f32', [rows, half], table(Math.cos)),
    sin: g.initializer('rope.sin_cache', 'f32', [rows, half], table(Math.sin)),
  };
}

/** Number of weight elements a graph holds (its initializers). */
export function graphParameterCount(graph: Graph): number {
  return graph.initializers.reduce((n, t) => n + numel(t.shape as number[]), 0);
}
