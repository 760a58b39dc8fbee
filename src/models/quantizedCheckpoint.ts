/**
 * Quantized checkpoints on disk: Hugging Face folders whose Linear weights are stored quantized.
 *  - nf4/fp4: bitsandbytes' layout (`W`, `W.absmax`, `W.quant_map`, `W.nested_*`, `W.quant_state.bitsandbytes__nf4`) with
 *    transformers' `quantization_config` ({quant_method: "bitsandbytes", load_in_4bit, bnb_4bit_*}), so the folder loads
 *    in transformers + bitsandbytes, and bnb-4bit folders made by transformers load here.
 *  - int4/int8 blockwise: ONNX Runtime MatMulNBits layout (`<module>.qweight` u8 [N, blocks, block·bits/8],
 *    `<module>.scales` f32, `<module>.qzeros` u8 when asymmetric); int8-row: `<module>.qweight` i8 [K, N] + `.scales`;
 *    `quantization_config` = {quant_method: "slimlm", layouts: {HF name: layout}} (slimlm-specific).
 * Writing streams tensor by tensor from the source checkpoint (memory-mapped shards), so peak memory stays near the
 * largest tensor in f32 plus its quantized copy.
 */
import { readFileSync } from 'node:fs';
import { toFloat32 } from '../formats/dtype.js';
import { locateHFFiles, readHFConfig, writeHFFolder } from '../formats/hf.js';
import { openSafetensors, type SafetensorsReader, type TensorEntry } from '../formats/safetensors.js';
import type { DType, HostTensor } from '../formats/tensor.js';
import { BNB4_STATE_BYTES, bnb4FromHF, bnb4ToHF } from '../quantize/bnb4.js';
import { nbitsBlocks } from '../quantize/nbits.js';
import { checkFolderRecipe, checkRecipe, quantizeLinear, recipeLayout, type QuantRecipe } from '../quantize/recipe.js';
import type { Checkpoint } from './checkpoint.js';
import { expectedTensors, type LlamaConfig } from './config.js';
import type { LinearLayout, QuantizedLinear, QuantizedWeightProvider } from './quantized.js';

export class QuantizedCheckpointError extends Error {}

const LINEAR = /\.(q|k|v|o|gate|up|down)_proj\.weight$|^lm_head\.weight$/;
const moduleOf = (name: string) => name.replace(/\.weight$/, '');
/** A tied head is stored quantized under lm_head.weight while the embedding stays float for the gather. */
const HEAD_OF_TIED = 'lm_head.weight';

/** Linear weights of `config` (HF names): the decoder projections and the LM head (the embedding when tied). */
export function linearNames(config: LlamaConfig): string[] {
  const names = [...expectedTensors(config).keys()].filter((n) => LINEAR.test(n));
  return config.tieWordEmbeddings ? [...names, 'model.embed_tokens.weight'] : names;
}

/** Quantize on the fly from a float checkpoint (eval, generate --quantize): one Linear at a time, while the graph is written. */
export function recipeProvider(ckpt: Checkpoint, recipe: QuantRecipe): QuantizedWeightProvider {
  checkRecipe(recipe);
  const linears = new Set(linearNames(ckpt.config));
  const shapes = expectedTensors(ckpt.config);
  return {
    tensor: (name) => ckpt.getTensor(name),
    storedDtype: (name) => ckpt.tensorInfo(name).dtype,
    layout: (name) => (linears.has(name) ? recipeLayout(recipe, name, shapes.get(name)?.[1]) : { kind: 'float' }),
    linear: (name, shape) => {
      const t = ckpt.getTensor(name);
      return quantizeLinear(recipeLayout(recipe, name, shape[1]), recipe, toFloat32(t), shape, torchDtype(t.dtype));
    },
  };
}

const torchDtype = (d: DType) => (d === 'bf16' ? 'bfloat16' : d === 'f16' ? 'float16' : 'float32');
const u8 = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Tensor entries (names, dtypes, shapes known up front; bytes produced lazily) for one quantized Linear. */
function linearEntries(name: string, layout: LinearLayout, recipe: QuantRecipe, shape: readonly number[], get: () => QuantizedLinear, storeAs: string): TensorEntry[] {
  const [N, K] = shape;
  const mod = moduleOf(storeAs);
  const as = <K extends QuantizedLinear['kind']>(k: K) => () => { const q = get(); if (q.kind !== k) throw new Error(`${name}: expected ${k}`); return q as Extract<QuantizedLinear, { kind: K }>; };
  switch (layout.kind) {
    case 'float': return [{ name: storeAs, dtype: 'f32', shape: [N, K], data: () => as('float')().w.data }];
    case 'nbits': {
      const blocks = nbitsBlocks(K, layout.blockSize), nb = as('nbits');
      const out: TensorEntry[] = [
        { name: `${mod}.qweight`, dtype: 'u8', shape: [N, blocks, (layout.blockSize * layout.bits) / 8], data: () => nb().w.B },
        { name: `${mod}.scales`, dtype: 'f32', shape: [N * blocks], data: () => u8(nb().w.scales) },
      ];
      if (!layout.symmetric) out.push({ name: `${mod}.qzeros`, dtype: 'u8', shape: [layout.bits === 4 ? N * Math.ceil(blocks / 2) : N * blocks], data: () => nb().w.zeroPoints! });
      return out;
    }
    case 'int8-row': {
      const rw = as('int8-row');
      return [
        { name: `${mod}.qweight`, dtype: 'i8', shape: [K, N], data: () => u8(rw().w.BT) },
        { name: `${mod}.scales`, dtype: 'f32', shape: [N], data: () => u8(rw().w.scales) },
      ];
    }
    case 'bnb4': {
      // Sizes depend only on the element count, block size and double quantization; the state JSON is padded.
      const n = N * K, blocks = Math.ceil(n / layout.blocksize), dq = recipe.doubleQuant ?? true;
      let cache: { q: QuantizedLinear; m: Map<string, HostTensor> } | null = null;
      const part = (key: string) => () => {
        const q = as('bnb4')();
        if (cache?.q !== q) cache = { q, m: new Map(bnb4ToHF(storeAs, q.w, true)) };
        return cache.m.get(key)!.data;
      };
      const e = (suffix: string, dtype: DType, shape: number[]): TensorEntry => ({ name: storeAs + suffix, dtype, shape, data: part(storeAs + suffix) });
      return [
        e('', 'u8', [Math.ceil(n / 2), 1]),
        e('.absmax', dq ? 'u8' : 'f32', [blocks]),
        e('.quant_map', 'f32', [16]),
        ...(dq ? [e('.nested_absmax', 'f32', [Math.ceil(blocks / 256)]), e('.nested_quant_map', 'f32', [256])] : []),
        e(`.quant_state.bitsandbytes__${layout.quantType}`, 'u8', [BNB4_STATE_BYTES]),
      ];
    }
  }
}

/** The dtype a float tensor keeps in a quantized folder: its own when f32/f16/bf16 (a GGUF block type becomes f32). */
export function floatStorageDtype(stored: string): DType {
  return stored === 'f32' || stored === 'f16' || stored === 'bf16' ? stored : 'f32';
}

export interface QuantizeProgress {
  (name: string, done: number, total: number): void;
}

/**
 * Stream `ckpt` into a quantized HF folder at `dir`. Non-Linear tensors keep their stored float dtype.
 * Returns the written layouts.
 */
export function writeQuantizedCheckpoint(ckpt: Checkpoint, dir: string, recipe: QuantRecipe, onTensor?: QuantizeProgress): Record<string, LinearLayout> {
  checkFolderRecipe(recipe);
  const c = ckpt.config;
  const linears = new Set(linearNames(c));
  const names = [...expectedTensors(c).keys()];
  const layouts: Record<string, LinearLayout> = {};
  let memo: { name: string; q: QuantizedLinear } | null = null;
  let done = 0;
  const total = names.length + (c.tieWordEmbeddings && recipeLayout(recipe, 'model.embed_tokens.weight', c.hiddenSize).kind !== 'float' ? 1 : 0);
  const quantized = (name: string, layout: LinearLayout, shape: readonly number[]) => () => {
    if (memo?.name !== name) {
      const t = ckpt.getTensor(name.replace('#head', ''));
      memo = { name, q: quantizeLinear(layout, recipe, toFloat32(t), shape, torchDtype(t.dtype)) };
      onTensor?.(name, ++done, total);
    }
    return memo.q;
  };
  const entries: TensorEntry[] = [];
  for (const name of [...names, ...(c.tieWordEmbeddings ? ['model.embed_tokens.weight#head'] : [])]) {
    const real = name.replace('#head', '');
    const shape = expectedTensors(c).get(real)!;
    const isHead = name.endsWith('#head');
    const layout: LinearLayout = linears.has(real) && (isHead || real !== 'model.embed_tokens.weight') ? recipeLayout(recipe, real, shape[1]) : { kind: 'float' };
    if (layout.kind === 'float') {
      if (isHead) continue; // a float tied head is the embedding itself
      const info = ckpt.tensorInfo(real);
      const dtype = floatStorageDtype(info.dtype);
      entries.push({ name: real, dtype, shape, data: () => { const t = ckpt.getTensor(real); onTensor?.(real, ++done, total); return t.dtype === dtype ? t.data : u8(toFloat32(t)); } });
      continue;
    }
    layouts[isHead ? HEAD_OF_TIED : real] = layout;
    entries.push(...linearEntries(real, layout, recipe, shape, quantized(name, layout, shape), isHead ? HEAD_OF_TIED : real));
  }
  // config.json is written last, quantization_config included: a folder is never seen with quantized weights and a float config.
  const quantizationConfig = recipe.type === 'nf4' || recipe.type === 'fp4'
    ? {
      quant_method: 'bitsandbytes', load_in_4bit: true, load_in_8bit: false, bnb_4bit_quant_type: recipe.type,
      bnb_4bit_use_double_quant: recipe.doubleQuant ?? true, bnb_4bit_compute_dtype: 'float32', bnb_4bit_quant_storage: 'uint8',
      // Exactly the Linear modules stored in float (transformers reads null as "skip lm_head").
      llm_int8_skip_modules: [...linears].filter((n) => !layouts[n === 'model.embed_tokens.weight' ? HEAD_OF_TIED : n])
        .map((n) => (n === 'lm_head.weight' || n === 'model.embed_tokens.weight' ? 'lm_head' : n.replace(/\.weight$/, ''))),
    }
    : { quant_method: 'slimlm', format: 'onnxruntime-matmulnbits', recipe: { ...recipe, keep: recipe.keep?.source ?? null }, layouts };
  writeHFFolder(dir, c, entries, { extraConfig: { quantization_config: quantizationConfig } });
  return layouts;
}

/** A folder's config.json declares quantized weights (slimlm or bitsandbytes 4-bit). */
export function isQuantizedCheckpoint(path: string): boolean {
  try {
    const files = locateHFFiles(path);
    if (!files.config) return false;
    const q = (JSON.parse(readFileSync(files.config, 'utf8')) as { quantization_config?: { quant_method?: string } }).quantization_config;
    return q?.quant_method === 'slimlm' || q?.quant_method === 'bitsandbytes';
  } catch {
    return false;
  }
}

export interface QuantizedCheckpoint {
  path: string;
  config: LlamaConfig;
  provider: QuantizedWeightProvider;
  /** Stored bytes of every tensor. */
  storedBytes: number;
  layouts: Record<string, LinearLayout>;
  close(): void;
}

/** Open a quantized HF folder (written by `slimlm quantize`, or a bitsandbytes 4-bit folder saved by transformers). */
export function openQuantizedCheckpoint(dir: string): QuantizedCheckpoint {
  const files = locateHFFiles(dir);
  if (!files.config || !files.weights) throw new QuantizedCheckpointError(`${dir}: not a HF folder with config.json and safetensors weights`);
  const config = readHFConfig(files.config);
  const qc = (JSON.parse(readFileSync(files.config, 'utf8')) as { quantization_config?: Record<string, unknown> }).quantization_config ?? {};
  const st: SafetensorsReader = openSafetensors(files.weights);
  const has = (n: string) => st.has(n);
  const layouts: Record<string, LinearLayout> = {};
  for (const name of linearNames(config)) {
    const stored = config.tieWordEmbeddings && name === 'model.embed_tokens.weight' ? HEAD_OF_TIED : name;
    const bnbKey = ['nf4', 'fp4'].map((t) => `${stored}.quant_state.bitsandbytes__${t}`).find(has);
    if (bnbKey) {
      const state = JSON.parse(new TextDecoder().decode(st.read(bnbKey).data)) as { quant_type: 'nf4' | 'fp4'; blocksize: number };
      layouts[name] = { kind: 'bnb4', quantType: state.quant_type, blocksize: state.blocksize };
    } else if (qc.quant_method === 'slimlm' && (qc.layouts as Record<string, LinearLayout> | undefined)?.[stored]) {
      layouts[name] = (qc.layouts as Record<string, LinearLayout>)[stored];
    } else if (has(name)) {
      layouts[name] = { kind: 'float' };
    } else if (!(config.tieWordEmbeddings && name === 'model.embed_tokens.weight')) {
      throw new QuantizedCheckpointError(`${dir}: ${name} is neither stored in float nor quantized`);
    } else {
      layouts[name] = { kind: 'float' };
    }
  }
  const stored = (name: string) => (config.tieWordEmbeddings && name === 'model.embed_tokens.weight' && layouts[name].kind !== 'float' ? HEAD_OF_TIED : name);
  const f32 = (t: HostTensor) => new Float32Array(t.data.slice().buffer);
  const provider: QuantizedWeightProvider = {
    tensor: (name) => st.read(name),
    tensorFile: (name) => (st.has(name) ? { path: st.fileOf(name), ...st.info(name) } : undefined),
    layout: (name) => layouts[name] ?? { kind: 'float' },
    linear(name, shape) {
      const layout = layouts[name];
      const mod = moduleOf(stored(name));
      const [N, K] = shape;
      switch (layout.kind) {
        case 'float': return { kind: 'float', w: st.read(name) };
        case 'bnb4': return { kind: 'bnb4', w: bnb4FromHF(stored(name), (n) => (st.has(n) ? st.read(n) : undefined)) };
        case 'int8-row': return { kind: 'int8-row', w: { N, K, BT: new Int8Array(st.read(`${mod}.qweight`).data.slice().buffer), scales: f32(st.read(`${mod}.scales`)) } };
        case 'nbits': return {
          kind: 'nbits',
          w: { bits: layout.bits, blockSize: layout.blockSize, N, K, B: st.read(`${mod}.qweight`).data, scales: f32(st.read(`${mod}.scales`)),
            zeroPoints: layout.symmetric ? null : st.read(`${mod}.qzeros`).data },
        };
      }
    },
  };
  const storedBytes = st.names().reduce((s, n) => s + st.info(n).byteLength, 0);
  return { path: dir, config, provider, storedBytes, layouts, close: () => st.close() };
}
