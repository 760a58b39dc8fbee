/**
 * The Llama/Mistral decoder as one graph (prefill and incremental decode alike), following Hugging Face's
 * LlamaForCausalLM / MistralForCausalLM semantics.
 *
 * Inputs:  input_ids i64 [batch, seq]; attention_mask i64 [batch, past+seq] (1 = real, 0 = padding);
 *          logits_index i64 [n] (positions in 0..seq-1 that get logits); past_key.{i}/past_value.{i} f32 [batch, kvHeads, past, headDim]
 * Outputs: logits f32 [batch, n, vocab]; present_key.{i}/present_value.{i} f32 [batch, kvHeads, past+seq, headDim]
 */
import { numel, type HostTensor } from '../formats/tensor.js';
import { END, GraphBuilder, type Graph, type Tensor } from '../graph/index.js';
import { expectedTensors, type LlamaConfig } from './config.js';
import { f32InitializerData, validateLlamaWeights } from './llamaWeights.js';

export const LLAMA_IO = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  logitsIndex: 'logits_index',
  logits: 'logits',
  pastKey: (i: number) => `past_key.${i}`,
  pastValue: (i: number) => `past_value.${i}`,
  presentKey: (i: number) => `present_key.${i}`,
  presentValue: (i: number) => `present_value.${i}`,
} as const;

/** Additive bias for masked scores: HF uses the dtype minimum (not -inf) so fully masked pad rows stay finite. */
const MASKED = -3.4028234663852886e38;

/** RoPE inverse frequencies, rounded like HF's float32 computation. */
export function ropeInvFreq(headDim: number, theta: number): number[] {
  const f = Math.fround;
  return Array.from({ length: headDim / 2 }, (_, i) => f(1 / f(Math.pow(theta, f((2 * i) / headDim)))));
}

/**
 * Builds the decoder graph. Without `weights` the graph is built from the config alone (shapes, parameter count,
 * shape checking of every op) and its initializers refuse to be written, so it cannot be lowered by mistake.
 */
export function buildLlamaGraph(config: LlamaConfig, weights?: ReadonlyMap<string, HostTensor>): Graph {
  if (weights) validateLlamaWeights(config, weights);
  const c = config;
  const nH = c.numAttentionHeads, kvH = c.numKeyValueHeads, D = c.headDim, rep = nH / kvH;
  const g = new GraphBuilder(`${c.modelType}_decoder`);
  const shapes = expectedTensors(c);
  const weight = (name: string): Tensor => {
    if (!weights) {
      const shape = shapes.get(name)!;
      const missing = { byteLength: numel(shape) * 4, write(): void { throw new Error(`${name}: the graph was built without weights`); } };
      return g.initializer(name, 'f32', shape, missing);
    }
    const t = weights.get(name)!;
    return g.initializer(name, 'f32', t.shape, f32InitializerData(t));
  };
  const linear = (x: Tensor, w: Tensor) => g.matMul(x, w, { transB: true });
  const rmsNorm = (x: Tensor, w: Tensor) => g.scope('rms_norm', () => {
    const variance = g.reduceMean(g.mul(x, x), [-1]);
    return g.mul(g.mul(x, g.reciprocal(g.sqrt(g.add(variance, c.rmsNormEps)))), w);
  });

  const inputIds = g.input(LLAMA_IO.inputIds, 'i64', ['batch', 'seq']);
  const mask = g.input(LLAMA_IO.attentionMask, 'i64', ['batch', 'past+seq']);
  const logitsIndex = g.input(LLAMA_IO.logitsIndex, 'i64', ['n_logits']);

  // Cache indices: keys are 0..total-1, queries total-seq..total-1 (left padding included, as HF's cache_position).
  const { bias, cos, sin } = g.scope('mask_and_rope', () => {
    const total = g.squeeze(g.shape(mask, 1, 2), [0]);
    const seq = g.squeeze(g.shape(inputIds, 1, 2), [0]);
    const keyIdx = g.range(0, total, 1, 'past+seq');
    const queryIdx = g.range(g.sub(total, seq), total, 1, 'seq');
    const distance = g.sub(g.unsqueeze(queryIdx, [1]), g.unsqueeze(keyIdx, [0])); // [seq, past+seq]
    let allowed = g.greaterOrEqual(distance, 0);
    if (c.slidingWindow !== null) allowed = g.and(allowed, g.less(distance, c.slidingWindow));
    const isReal = g.unsqueeze(g.not(g.equal(mask, 0)), [1]); // [batch, 1, past+seq]
    const bias = g.unsqueeze(g.where(g.and(g.unsqueeze(allowed, [0]), isReal), 0, MASKED), [1, 2]); // [batch,1,1,seq,past+seq]

    // Positions count real tokens only: cumsum(mask) - 1, taken at the query columns.
    const positions = g.gather(g.sub(g.cumSum(mask, 1), 1), queryIdx, 1); // [batch, seq]
    const invFreq = g.constant(ropeInvFreq(D, c.ropeTheta), 'f32');
    const freqs = g.mul(g.unsqueeze(g.cast(positions, 'f32'), [2]), invFreq); // [batch, seq, D/2]
    const angles = g.unsqueeze(g.concat([freqs, freqs], -1), [1]); // [batch, 1, seq, D]
    return { bias, cos: g.cos(angles), sin: g.sin(angles) };
  });
  // HF rotate-half RoPE: x·cos + [-x2, x1]·sin.
  const rope = (x: Tensor) => g.scope('rope', () => {
    const x1 = g.slice(x, [0], [D / 2], [-1]);
    const x2 = g.slice(x, [D / 2], [END], [-1]);
    return g.add(g.mul(x, cos), g.mul(g.concat([g.neg(x2), x1], -1), sin));
  });
  const heads = (x: Tensor, n: number) => g.transpose(g.reshape(x, [0, 0, n, D]), [0, 2, 1, 3]); // [batch, n, seq, D]

  const embed = weight('model.embed_tokens.weight');
  let h = g.scope('embed', () => g.gather(embed, inputIds, 0));
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}.`;
    h = g.scope(`layers.${i}`, () => {
      const x = rmsNorm(h, weight(p + 'input_layernorm.weight'));
      const attn = g.scope('attn', () => {
        const q = rope(heads(linear(x, weight(p + 'self_attn.q_proj.weight')), nH));
        const k = rope(heads(linear(x, weight(p + 'self_attn.k_proj.weight')), kvH));
        const v = heads(linear(x, weight(p + 'self_attn.v_proj.weight')), kvH);
        const keys = g.concat([g.input(LLAMA_IO.pastKey(i), 'f32', ['batch', kvH, 'past', D]), k], 2);
        const values = g.concat([g.input(LLAMA_IO.pastValue(i), 'f32', ['batch', kvH, 'past', D]), v], 2);
        g.output(LLAMA_IO.presentKey(i), keys);
        g.output(LLAMA_IO.presentValue(i), values);
        // Grouped-query attention without repeating K/V: queries grouped per kv head, K/V broadcast over the group.
        const qg = g.reshape(g.mul(q, 1 / Math.sqrt(D)), [0, kvH, rep, -1, D]); // [batch, kvH, rep, seq, D]
        const scores = g.add(g.matMul(qg, g.unsqueeze(keys, [2]), { transB: true }), bias); // [batch, kvH, rep, seq, past+seq]
        const ctx = g.matMul(g.softmax(scores, -1), g.unsqueeze(values, [2])); // [batch, kvH, rep, seq, D]
        const merged = g.reshape(g.transpose(g.reshape(ctx, [0, nH, -1, D]), [0, 2, 1, 3]), [0, 0, nH * D]);
        return linear(merged, weight(p + 'self_attn.o_proj.weight'));
      });
      const h1 = g.add(h, attn);
      const mlp = g.scope('mlp', () => {
        const y = rmsNorm(h1, weight(p + 'post_attention_layernorm.weight'));
        const gate = linear(y, weight(p + 'mlp.gate_proj.weight'));
        const silu = g.mul(gate, g.sigmoid(gate));
        return linear(g.mul(silu, linear(y, weight(p + 'mlp.up_proj.weight'))), weight(p + 'mlp.down_proj.weight'));
      });
      return g.add(h1, mlp);
    });
  }
  const logits = g.scope('lm_head', () => {
    const selected = g.gather(h, logitsIndex, 1); // [batch, n_logits, hidden]: the LM head only where asked
    const normed = rmsNorm(selected, weight('model.norm.weight'));
    return linear(normed, c.tieWordEmbeddings ? embed : weight('lm_head.weight'));
  });
  g.output(LLAMA_IO.logits, logits);
  return g.graph;
}

/** Number of weight elements a graph holds (its initializers). */
export function graphParameterCount(graph: Graph): number {
  return graph.initializers.reduce((n, t) => n + numel(t.shape as number[]), 0);
}
