/**
 * Open any supported model checkpoint as canonical Hugging Face weights (docs/ARCHITECTURE.md, "Canonical weights"):
 * a HF folder / `.safetensors` file (+ config.json), a llama2.c `.bin`, or a llama.cpp `.gguf`.
 * Meta-order q/k (llama2.c, GGUF from llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`) is permuted to HF's
 * rotate-half order at load: `w.view(heads, head_dim/2, 2, in).transpose(1, 2).reshape(heads*head_dim, in)`
 * (transformers `convert_llama_weights_to_hf.py`); `writeLlamaGGUF` applies the inverse.
 * GGUF llama keys: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md#llm
 */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { expectedTensors, parameterCount, type LlamaConfig } from './config.js';
import { numel, type HostTensor } from '../formats/tensor.js';
import { SAFETENSORS_INDEX, openSafetensors, type SafetensorsReader } from '../formats/safetensors.js';
import { GGUFFile, GGUFValueType, GGML_TYPES, writeGGUF, type GGMLTypeName, type GGUFTypedValue, type GGUFWriteTensor } from '../formats/gguf.js';
import { Llama2cFile } from '../formats/llama2c.js';
import { listMatching, locateHFFiles, readHFConfig } from '../formats/hf.js';
import { toFloat32 } from '../formats/dtype.js';

export class CheckpointError extends Error {}

export interface TensorInfo {
  /** Stored dtype: 'f32' | 'f16' | 'bf16' for plain floats, ggml names ('Q4_0', 'Q6_K', ...) for GGUF blocks, 'int8_g<N>' for llama2.c v2. */
  dtype: string;
  shape: number[];
  /** Bytes this tensor occupies in the file. */
  byteSize: number;
}

export interface Checkpoint {
  format: 'safetensors' | 'llama2c' | 'gguf';
  path: string;
  config: LlamaConfig;
  /** Canonical HF names, in expectedTensors(config) order. */
  tensorNames(): string[];
  tensorInfo(name: string): TensorInfo;
  /** HF layout; f32/f16/bf16 as stored, GGUF quant types (and llama2.c int8) dequantized to f32. */
  getTensor(name: string): HostTensor;
  /** tokenizer.json / tokenizer.model / tok*.bin next to the model; the .gguf itself for GGUF (tokenizer.ggml.* metadata). */
  tokenizerPath: string | null;
  close(): void;
}

interface Entry extends TensorInfo {
  load(): HostTensor;
}

// ---------------------------------------------------------------------------------------------------------------------
// RoPE row permutation between Meta's interleaved pairs (2i, 2i+1) and HF's rotate-half pairs (i, i + head_dim/2).

function permuteRows(t: HostTensor, heads: number, toHF: boolean): HostTensor {
  const rows = t.shape[0];
  const headDim = rows / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new CheckpointError(`cannot split ${rows} rows into ${heads} heads of even size`);
  const rowBytes = t.data.byteLength / rows;
  const half = headDim / 2;
  const out = new Uint8Array(t.data.byteLength);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const meta = h * headDim + 2 * i + j;
        const hf = h * headDim + j * half + i;
        const [src, dst] = toHF ? [meta, hf] : [hf, meta];
        out.set(t.data.subarray(src * rowBytes, (src + 1) * rowBytes), dst * rowBytes);
      }
    }
  }
  return { dtype: t.dtype, shape: [...t.shape], data: out };
}

/** Meta interleaved q/k rows → HF rotate-half rows. */
export function permuteMetaToHF(t: HostTensor, heads: number): HostTensor {
  return permuteRows(t, heads, true);
}
/** HF rotate-half q/k rows → Meta interleaved rows (what llama.cpp and llama2.c expect). */
export function permuteHFToMeta(t: HostTensor, heads: number): HostTensor {
  return permuteRows(t, heads, false);
}

/** Heads to permute for a canonical name (q: attention heads, k: kv heads), or 0 when no permutation applies. */
function ropeHeads(name: string, c: LlamaConfig): number {
  if (name.endsWith('.self_attn.q_proj.weight')) return c.numAttentionHeads;
  if (name.endsWith('.self_attn.k_proj.weight')) return c.numKeyValueHeads;
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------------
// Name maps

const LAYER_SUFFIX: [string, string, string][] = [
  // [HF suffix, GGUF suffix, llama2.c/Meta suffix]
  ['input_layernorm.weight', 'attn_norm.weight', 'attention_norm.weight'],
  ['self_attn.q_proj.weight', 'attn_q.weight', 'attention.wq.weight'],
  ['self_attn.k_proj.weight', 'attn_k.weight', 'attention.wk.weight'],
  ['self_attn.v_proj.weight', 'attn_v.weight', 'attention.wv.weight'],
  ['self_attn.o_proj.weight', 'attn_output.weight', 'attention.wo.weight'],
  ['post_attention_layernorm.weight', 'ffn_norm.weight', 'ffn_norm.weight'],
  ['mlp.gate_proj.weight', 'ffn_gate.weight', 'feed_forward.w1.weight'],
  ['mlp.up_proj.weight', 'ffn_up.weight', 'feed_forward.w3.weight'],
  ['mlp.down_proj.weight', 'ffn_down.weight', 'feed_forward.w2.weight'],
];
const GLOBAL: [string, string, string][] = [
  ['model.embed_tokens.weight', 'token_embd.weight', 'tok_embeddings.weight'],
  ['model.norm.weight', 'output_norm.weight', 'norm.weight'],
  ['lm_head.weight', 'output.weight', 'output.weight'],
];

function mapName(name: string, from: 0 | 1 | 2, to: 0 | 1 | 2): string | null {
  for (const g of GLOBAL) if (g[from] === name) return g[to];
  const prefixes = ['model.layers.', 'blk.', 'layers.'];
  const m = name.startsWith(prefixes[from]) ? /^(\d+)\.(.+)$/.exec(name.slice(prefixes[from].length)) : null;
  if (!m) return null;
  for (const s of LAYER_SUFFIX) if (s[from] === m[2]) return `${prefixes[to]}${m[1]}.${s[to]}`;
  return null;
}
/** `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight` (null if not a Llama tensor). */
export const ggufToHFName = (n: string) => mapName(n, 1, 0);
export const hfToGGUFName = (n: string) => mapName(n, 0, 1);
export const llama2cToHFName = (n: string) => mapName(n, 2, 0);

// ---------------------------------------------------------------------------------------------------------------------
// Generic checkpoint over entries, with validation against expectedTensors(config)

function buildCheckpoint(format: Checkpoint['format'], path: string, config: LlamaConfig, entries: Map<string, Entry>, tokenizerPath: string | null, close: () => void): Checkpoint {
  const expected = expectedTensors(config);
  const missing: string[] = [];
  for (const [name, shape] of expected) {
    const e = entries.get(name);
    if (!e) {
      missing.push(name);
      continue;
    }
    if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
      close();
      throw new CheckpointError(`${path}: tensor "${name}" has shape [${e.shape}] but the config implies [${shape}]`);
    }
  }
  if (missing.length) {
    close();
    const more = missing.length > 5 ? ` and ${missing.length - 5} more` : '';
    throw new CheckpointError(`${path}: missing tensor(s) ${missing.slice(0, 5).map((n) => `"${n}"`).join(', ')}${more}`);
  }
  const names = [...expected.keys()];
  const get = (name: string): Entry => {
    const e = expected.has(name) ? entries.get(name) : undefined;
    if (!e) throw new CheckpointError(`${path}: no tensor "${name}" (canonical names: model.embed_tokens.weight, model.layers.N.…)`);
    return e;
  };
  return {
    format, path, config, tokenizerPath,
    tensorNames: () => [...names],
    tensorInfo: (name) => {
      const { dtype, shape, byteSize } = get(name);
      return { dtype, shape: [...shape], byteSize };
    },
    getTensor: (name) => get(name).load(),
    close,
  };
}

/** Tensors some exporters add that carry no weights of ours. */
const IGNORABLE = /(^|\.)rotary_emb\.inv_freq$/;

function firstExisting(paths: string[]): string | null {
  return paths.find((p) => existsSync(p)) ?? null;
}

/** The tokenizer file in folder `dir`: tokenizer.json, tokenizer.model, or a llama2.c tok*.bin (tok{vocab}.bin first). */
export function tokenizerBeside(dir: string, vocabSize?: number): string | null {
  return (
    firstExisting([join(dir, 'tokenizer.json'), join(dir, 'tokenizer.model'), ...(vocabSize ? [join(dir, `tok${vocabSize}.bin`)] : [])]) ??
    listMatching(dir, /^tok.*\.bin$/)[0] ??
    null
  );
}

// ---------------------------------------------------------------------------------------------------------------------
// Format openers

function openSafetensorsCheckpoint(weightsPath: string, configPath: string): Checkpoint {
  if (!existsSync(configPath)) throw new CheckpointError(`${weightsPath}: no config.json beside the weights (looked for ${configPath})`);
  const config = readHFConfig(configPath);
  const reader: SafetensorsReader = openSafetensors(weightsPath);
  const entries = new Map<string, Entry>();
  const expected = expectedTensors(config);
  try {
    for (const name of reader.names()) {
      if (IGNORABLE.test(name) || (name === 'lm_head.weight' && config.tieWordEmbeddings)) continue;
      if (!expected.has(name)) {
        // Quantized tensors beside a config.json without quantization_config: the two files come from different runs.
        const quantized = /\.(qweight|scales|qzeros|absmax|quant_map|nested_absmax|nested_quant_map|quant_state\..*)$/.test(name);
        throw new CheckpointError(quantized
          ? `${weightsPath}: holds quantized weights ("${name}") but config.json has no quantization_config; the folder was left half-written (re-run the command that wrote it)`
          : `${weightsPath}: unexpected tensor "${name}" (not part of a ${config.modelType} model with this config.json)`);
      }
      const info = reader.info(name);
      if (info.dtype !== 'f32' && info.dtype !== 'f16' && info.dtype !== 'bf16') {
        throw new CheckpointError(`${weightsPath}: tensor "${name}" has dtype ${info.dtype}; weights must be f32, f16 or bf16`);
      }
      entries.set(name, { dtype: info.dtype, shape: info.shape, byteSize: info.byteLength, load: () => reader.read(name) });
    }
  } catch (e) {
    reader.close();
    throw e;
  }
  const dir = dirname(weightsPath);
  return buildCheckpoint('safetensors', weightsPath, config, entries, tokenizerBeside(dir), () => reader.close());
}

function openLlama2c(path: string): Checkpoint {
  const f = Llama2cFile.open(path);
  const h = f.header;
  const config: LlamaConfig = {
    modelType: 'llama',
    vocabSize: h.vocabSize,
    hiddenSize: h.dim,
    intermediateSize: h.hiddenDim,
    numHiddenLayers: h.nLayers,
    numAttentionHeads: h.nHeads,
    numKeyValueHeads: h.nKvHeads,
    headDim: h.dim / h.nHeads,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    maxPositionEmbeddings: h.seqLen,
    slidingWindow: null,
    tieWordEmbeddings: h.sharedClassifier,
    bosTokenId: 1,
    eosTokenId: 2,
    padTokenId: null,
    torchDtype: 'float32',
  };
  const entries = new Map<string, Entry>();
  for (const name of f.names()) {
    const hf = llama2cToHFName(name)!;
    const shape = f.shape(name);
    const n = numel(shape);
    const q8 = f.storedType(name) === 'q8';
    const heads = ropeHeads(hf, config);
    entries.set(hf, {
      dtype: q8 ? `int8_g${h.groupSize}` : 'f32',
      shape,
      byteSize: q8 ? n + (n / h.groupSize!) * 4 : n * 4,
      load: () => (heads ? permuteMetaToHF(f.read(name), heads) : f.read(name)),
    });
  }
  return buildCheckpoint('llama2c', path, config, entries, tokenizerBeside(dirname(path), h.vocabSize), () => f.close());
}

/** Shortest decimal that rounds to the same f32 (GGUF stores eps/theta as f32: 1e-5, not 9.999999747378752e-6). */
function shortestF32(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const v = Number(x.toPrecision(p));
    if (Math.fround(v) === Math.fround(x)) return v;
  }
  return x;
}

/** LlamaConfig from a llama-architecture GGUF's metadata. */
export function configFromGGUF(f: GGUFFile): LlamaConfig {
  const arch = f.string('general.architecture');
  if (arch !== 'llama') throw new CheckpointError(`${f.path}: general.architecture is ${JSON.stringify(arch)}; only "llama" (Llama/Mistral) is supported`);
  const k = (key: string) => `${arch}.${key}`;
  const ropeScaling = f.string(k('rope.scaling.type'));
  if (ropeScaling && ropeScaling !== 'none' && !(ropeScaling === 'linear' && f.number(k('rope.scaling.factor'), 1) === 1)) {
    throw new CheckpointError(`${f.path}: rope scaling "${ropeScaling}" is not supported`);
  }
  if (f.has('rope_freqs.weight')) throw new CheckpointError(`${f.path}: tensor "rope_freqs.weight" (Llama 3.1 RoPE scaling) is not supported`);
  const hidden = f.number(k('embedding_length'));
  const heads = f.number(k('attention.head_count'));
  const headDim = f.number(k('attention.key_length'), hidden / heads);
  const ropeDim = f.number(k('rope.dimension_count'), headDim);
  if (ropeDim !== headDim) throw new CheckpointError(`${f.path}: partial rotary embeddings (rope.dimension_count ${ropeDim} != head dim ${headDim}) are not supported`);
  const tokens = f.value('tokenizer.ggml.tokens') as string[] | undefined;
  const vocab = f.has('token_embd.weight') ? f.tensor('token_embd.weight').shape[0] : tokens?.length ?? f.number(k('vocab_size'));
  const window = f.number(k('attention.sliding_window'), 0);
  const tokenId = (key: string) => (f.metadata.has(key) ? f.number(key) : null);
  return {
    modelType: window > 0 ? 'mistral' : 'llama',
    vocabSize: vocab,
    hiddenSize: hidden,
    intermediateSize: f.number(k('feed_forward_length')),
    numHiddenLayers: f.number(k('block_count')),
    numAttentionHeads: heads,
    numKeyValueHeads: f.number(k('attention.head_count_kv'), heads),
    headDim,
    rmsNormEps: shortestF32(f.number(k('attention.layer_norm_rms_epsilon'), 1e-5)),
    ropeTheta: shortestF32(f.number(k('rope.freq_base'), 10000)),
    maxPositionEmbeddings: f.number(k('context_length'), 2048),
    slidingWindow: window > 0 ? window : null,
    tieWordEmbeddings: !f.has('output.weight'),
    bosTokenId: tokenId('tokenizer.ggml.bos_token_id'),
    eosTokenId: tokenId('tokenizer.ggml.eos_token_id'),
    padTokenId: tokenId('tokenizer.ggml.padding_token_id'),
  };
}

function openGGUF(path: string): Checkpoint {
  const f = GGUFFile.open(path);
  let config: LlamaConfig;
  const entries = new Map<string, Entry>();
  try {
    config = configFromGGUF(f);
    const nLayers = config.numHiddenLayers;
    const tokens = f.value('tokenizer.ggml.tokens') as string[] | undefined;
    if (tokens && tokens.length !== config.vocabSize) {
      throw new CheckpointError(`${path}: tokenizer.ggml.tokens has ${tokens.length} entries but token_embd.weight has ${config.vocabSize} rows`);
    }
    let maxBlock = -1;
    for (const t of f.tensors) {
      const hf = ggufToHFName(t.name);
      if (!hf) throw new CheckpointError(`${path}: unexpected tensor "${t.name}" for a llama model`);
      const block = /^blk\.(\d+)\./.exec(t.name);
      if (block) maxBlock = Math.max(maxBlock, Number(block[1]));
      const heads = ropeHeads(hf, config);
      const plain = t.type === 'F32' || t.type === 'F16' || t.type === 'BF16';
      entries.set(hf, {
        dtype: plain ? t.type.toLowerCase() : t.type,
        shape: t.shape,
        byteSize: t.byteSize,
        load: () => (heads ? permuteMetaToHF(f.read(t.name), heads) : f.read(t.name)),
      });
    }
    if (maxBlock + 1 !== nLayers) throw new CheckpointError(`${path}: llama.block_count is ${nLayers} but tensors cover ${maxBlock + 1} blocks`);
  } catch (e) {
    f.close();
    throw e;
  }
  return buildCheckpoint('gguf', path, config, entries, path, () => f.close());
}

/**
 * Open a checkpoint: a HF folder (config.json + model.safetensors or its shard index), a `.safetensors` file or
 * `model.safetensors.index.json` with config.json beside it, a llama2.c `.bin`, or a `.gguf`.
 */
export function openCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new CheckpointError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory()) {
    const files = locateHFFiles(path);
    if (!files.config) throw new CheckpointError(`${path}: folder has no config.json`);
    if (!files.weights) throw new CheckpointError(`${path}: folder has neither model.safetensors nor ${SAFETENSORS_INDEX}`);
    return openSafetensorsCheckpoint(files.weights, files.config);
  }
  const name = basename(path).toLowerCase();
  if (name.endsWith('.safetensors') || name.endsWith('.safetensors.index.json')) return openSafetensorsCheckpoint(path, join(dirname(path), 'config.json'));
  if (name.endsWith('.gguf')) return openGGUF(path);
  if (name.endsWith('.bin')) return openLlama2c(path);
  throw new CheckpointError(`${path}: unknown checkpoint type (expected a folder, .safetensors, .gguf or llama2.c .bin)`);
}

// ---------------------------------------------------------------------------------------------------------------------
// Inspection

export interface CheckpointSummary {
  format: Checkpoint['format'];
  path: string;
  tensorCount: number;
  parameterCount: number;
  /** Bytes of tensor data as stored. */
  storedBytes: number;
  /** Per stored dtype: tensors, parameters, bytes. */
  dtypes: Record<string, { tensors: number; parameters: number; bytes: number }>;
  tokenizerPath: string | null;
}

export function checkpointSizeBytes(c: Checkpoint): number {
  return c.tensorNames().reduce((s, n) => s + c.tensorInfo(n).byteSize, 0);
}

/** What `slimlm inspect` prints about a checkpoint. */
export function describeCheckpoint(c: Checkpoint): CheckpointSummary {
  const dtypes: CheckpointSummary['dtypes'] = {};
  for (const n of c.tensorNames()) {
    const info = c.tensorInfo(n);
    const d = (dtypes[info.dtype] ??= { tensors: 0, parameters: 0, bytes: 0 });
    d.tensors++;
    d.parameters += numel(info.shape);
    d.bytes += info.byteSize;
  }
  return {
    format: c.format,
    path: c.path,
    tensorCount: c.tensorNames().length,
    parameterCount: parameterCount(c.config),
    storedBytes: checkpointSizeBytes(c),
    dtypes,
    tokenizerPath: c.tokenizerPath,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// GGUF export

export interface LlamaGGUFOptions {
  /** ggml type for 2-D weights (norms are always F32). Default F16. Rows not divisible by the block size fall back to F16. */
  type?: GGMLTypeName | ((hfName: string, shape: number[]) => GGMLTypeName);
  /** Extra metadata (e.g. tokenizer.ggml.* from the tokenizer module); overrides the generated keys. */
  metadata?: Record<string, GGUFTypedValue | unknown>;
  name?: string;
  /** Encodes f32 values into `type` (types writeGGUF cannot quantize itself, e.g. Q4_K/Q6_K from src/quantize). */
  encode?: (type: GGMLTypeName, values: Float32Array) => Uint8Array;
  /** llama.cpp `general.file_type` (enum llama_ftype); default from `type` when it is a single type. */
  fileType?: number;
  /** Called after each tensor is written (progress). */
  onTensor?: (hfName: string, type: GGMLTypeName) => void;
}

const FILE_TYPE: Partial<Record<GGMLTypeName, number>> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

/**
 * Write a llama-architecture GGUF that llama.cpp loads: llama.* metadata from `config`, tensors renamed to GGUF names,
 * q/k permuted back to Meta order. `getTensor` yields canonical HF tensors (e.g. `checkpoint.getTensor`).
 */
export function writeLlamaGGUF(path: string, config: LlamaConfig, getTensor: (hfName: string) => HostTensor, opts: LlamaGGUFOptions = {}): void {
  const u32 = (value: number): GGUFTypedValue => ({ type: GGUFValueType.UINT32, value });
  const f32 = (value: number): GGUFTypedValue => ({ type: GGUFValueType.FLOAT32, value });
  const pick = (name: string, shape: number[]): GGMLTypeName => {
    if (shape.length < 2) return 'F32';
    const t = typeof opts.type === 'function' ? opts.type(name, shape) : opts.type ?? 'F16';
    return shape[shape.length - 1] % GGML_TYPES[t].block === 0 ? t : 'F16';
  };
  const mainType = typeof opts.type === 'string' ? opts.type : 'F16';
  const meta: Record<string, GGUFTypedValue | unknown> = {
    'general.architecture': 'llama',
    'general.name': opts.name ?? 'slimlm',
    ...((opts.fileType ?? FILE_TYPE[mainType]) !== undefined ? { 'general.file_type': u32(opts.fileType ?? FILE_TYPE[mainType]!) } : {}),
    'llama.vocab_size': u32(config.vocabSize),
    'llama.context_length': u32(config.maxPositionEmbeddings),
    'llama.embedding_length': u32(config.hiddenSize),
    'llama.block_count': u32(config.numHiddenLayers),
    'llama.feed_forward_length': u32(config.intermediateSize),
    'llama.rope.dimension_count': u32(config.headDim),
    'llama.attention.head_count': u32(config.numAttentionHeads),
    'llama.attention.head_count_kv': u32(config.numKeyValueHeads),
    'llama.attention.layer_norm_rms_epsilon': f32(config.rmsNormEps),
    'llama.rope.freq_base': f32(config.ropeTheta),
  };
  if (config.headDim * config.numAttentionHeads !== config.hiddenSize) {
    meta['llama.attention.key_length'] = u32(config.headDim);
    meta['llama.attention.value_length'] = u32(config.headDim);
  }
  if (config.slidingWindow !== null) meta['llama.attention.sliding_window'] = u32(config.slidingWindow);
  if (config.bosTokenId !== null) meta['tokenizer.ggml.bos_token_id'] = u32(config.bosTokenId);
  const eos = Array.isArray(config.eosTokenId) ? config.eosTokenId[0] : config.eosTokenId;
  if (eos !== null && eos !== undefined) meta['tokenizer.ggml.eos_token_id'] = u32(eos);
  if (config.padTokenId !== null) meta['tokenizer.ggml.padding_token_id'] = u32(config.padTokenId);
  Object.assign(meta, opts.metadata ?? {});

  const tensors: GGUFWriteTensor[] = [...expectedTensors(config)].map(([name, shape]) => {
    const type = pick(name, shape);
    return {
      name: hfToGGUFName(name)!,
      shape,
      type,
      data: () => {
        let t = getTensor(name);
        if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
          throw new CheckpointError(`${path}: tensor "${name}" has shape [${t.shape}], config implies [${shape}]`);
        }
        const heads = ropeHeads(name, config);
        if (heads) t = permuteHFToMeta(t, heads);
        opts.onTensor?.(name, type);
        if (type === 'F16' && t.dtype === 'f16') return t.data;
        if (type === 'F32' && t.dtype === 'f32') return t.data;
        return opts.encode ? opts.encode(type, toFloat32(t)) : toFloat32(t);
      },
    };
  });
  writeGGUF(path, { metadata: meta, tensors });
}

