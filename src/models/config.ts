/**
 * Llama/Mistral decoder configuration, the project's single in-memory form.
 * Hugging Face `config.json` reference: https://huggingface.co/docs/transformers/model_doc/mistral#transformers.MistralConfig
 */
export interface LlamaConfig {
  modelType: 'llama' | 'mistral';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  /** Mistral: token i attends to token j iff 0 <= i - j < slidingWindow. null = full causal attention. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  eosTokenId: number | number[] | null;
  padTokenId: number | null;
  /** dtype the checkpoint was saved in (informational, from `torch_dtype`/`dtype`). */
  torchDtype?: string;
}

export class ConfigError extends Error {}

function need(json: Record<string, unknown>, key: string, source: string): number {
  const v = json[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ConfigError(`${source}: "${key}" must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function optNumber(json: Record<string, unknown>, key: string, fallback: number): number {
  const v = json[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function tokenId(v: unknown): number | null {
  return typeof v === 'number' && Number.isInteger(v) ? v : null;
}

/** Parse a Hugging Face `config.json` object (LlamaForCausalLM / MistralForCausalLM). */
export function configFromHF(json: unknown, source = 'config.json'): LlamaConfig {
  if (!json || typeof json !== 'object') throw new ConfigError(`${source}: not a JSON object`);
  const j = json as Record<string, unknown>;
  const modelType = j.model_type;
  if (modelType !== 'llama' && modelType !== 'mistral') {
    throw new ConfigError(`${source}: unsupported model_type ${JSON.stringify(modelType)} (supported: llama, mistral)`);
  }
  const hiddenSize = need(j, 'hidden_size', source);
  const numAttentionHeads = need(j, 'num_attention_heads', source);
  const numKeyValueHeads = optNumber(j, 'num_key_value_heads', numAttentionHeads);
  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new ConfigError(`${source}: num_attention_heads (${numAttentionHeads}) is not a multiple of num_key_value_heads (${numKeyValueHeads})`);
  }
  const headDim = optNumber(j, 'head_dim', hiddenSize / numAttentionHeads);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new ConfigError(`${source}: head_dim ${headDim} must be an even integer`);
  // RoPE: transformers ≤ 4 writes rope_theta (+ rope_scaling); transformers 5 writes rope_parameters {rope_type, rope_theta, …}.
  // Only plain RoPE is implemented: any scaling type other than "default" is refused rather than run wrong.
  let ropeTheta = optNumber(j, 'rope_theta', 10000);
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const r = j[key] as Record<string, unknown> | null | undefined;
    if (r === undefined || r === null) continue;
    if (typeof r !== 'object' || Array.isArray(r)) throw new ConfigError(`${source}: ${key} must be an object`);
    const type = r.rope_type ?? r.type ?? 'default';
    if (type !== 'default') throw new ConfigError(`${source}: ${key} ${JSON.stringify(r)} is not supported (only plain RoPE, rope_type "default")`);
    if (typeof r.rope_theta === 'number') ropeTheta = r.rope_theta;
  }
  const act = j.hidden_act ?? j.hidden_activation ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw new ConfigError(`${source}: hidden_act ${JSON.stringify(act)} is not supported (Llama/Mistral use silu)`);
  const sw = j.sliding_window;
  return {
    modelType,
    vocabSize: need(j, 'vocab_size', source),
    hiddenSize,
    intermediateSize: need(j, 'intermediate_size', source),
    numHiddenLayers: need(j, 'num_hidden_layers', source),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps: optNumber(j, 'rms_norm_eps', 1e-6),
    ropeTheta,
    maxPositionEmbeddings: optNumber(j, 'max_position_embeddings', 2048),
    slidingWindow: modelType === 'mistral' && typeof sw === 'number' && sw > 0 ? sw : null,
    tieWordEmbeddings: j.tie_word_embeddings === true,
    bosTokenId: tokenId(j.bos_token_id),
    eosTokenId: Array.isArray(j.eos_token_id) ? (j.eos_token_id as number[]) : tokenId(j.eos_token_id),
    padTokenId: tokenId(j.pad_token_id),
    torchDtype: typeof j.torch_dtype === 'string' ? j.torch_dtype : typeof j.dtype === 'string' ? j.dtype : undefined,
  };
}

/** Serialize to a Hugging Face `config.json` object that transformers loads. */
export function configToHF(c: LlamaConfig): Record<string, unknown> {
  const arch = c.modelType === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM';
  return {
    architectures: [arch],
    model_type: c.modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numHiddenLayers,
    num_attention_heads: c.numAttentionHeads,
    num_key_value_heads: c.numKeyValueHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    max_position_embeddings: c.maxPositionEmbeddings,
    sliding_window: c.slidingWindow,
    tie_word_embeddings: c.tieWordEmbeddings,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    pad_token_id: c.padTokenId,
    torch_dtype: c.torchDtype ?? 'float32',
  };
}

/** Canonical (Hugging Face) tensor names and shapes for a config; lm_head only when untied. */
export function expectedTensors(c: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  m.set('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]);
  for (let i = 0; i < c.numHiddenLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(p + 'input_layernorm.weight', [c.hiddenSize]);
    m.set(p + 'self_attn.q_proj.weight', [q, c.hiddenSize]);
    m.set(p + 'self_attn.k_proj.weight', [kv, c.hiddenSize]);
    m.set(p + 'self_attn.v_proj.weight', [kv, c.hiddenSize]);
    m.set(p + 'self_attn.o_proj.weight', [c.hiddenSize, q]);
    m.set(p + 'post_attention_layernorm.weight', [c.hiddenSize]);
    m.set(p + 'mlp.gate_proj.weight', [c.intermediateSize, c.hiddenSize]);
    m.set(p + 'mlp.up_proj.weight', [c.intermediateSize, c.hiddenSize]);
    m.set(p + 'mlp.down_proj.weight', [c.hiddenSize, c.intermediateSize]);
  }
  m.set('model.norm.weight', [c.hiddenSize]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, c.hiddenSize]);
  return m;
}

export function parameterCount(c: LlamaConfig): number {
  let n = 0;
  for (const shape of expectedTensors(c).values()) n += shape.reduce((a, b) => a * b, 1);
  return n;
}

export function eosIds(c: LlamaConfig): number[] {
  return c.eosTokenId === null ? [] : Array.isArray(c.eosTokenId) ? c.eosTokenId : [c.eosTokenId];
}
