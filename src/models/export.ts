/**
 * Export a checkpoint as a llama.cpp GGUF (with the tokenizer in `tokenizer.ggml.*` metadata) or a Hugging Face folder.
 * GGUF tokenizer keys: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md#tokenizer and llama.cpp
 * `src/llama-vocab.cpp` (SPM vocab: `tokenizer.ggml.model = "llama"`, token types as SentencePiece's enum).
 * Quantized GGUF types follow llama-quantize's recipe (`llamaCppTensorType`), so a slimlm Q4_K_M file has the same
 * tensor types as llama.cpp's.
 */
import { basename, dirname } from 'node:path';
import { mkdirSync } from 'node:fs';
import { GGUFValueType, type GGMLTypeName, type GGUFTypedValue } from '../formats/gguf.js';
import { castFloat } from '../formats/dtype.js';
import { writeHFFolder } from '../formats/hf.js';
import type { HostTensor } from '../formats/tensor.js';
import { writeTokenizerFiles, type SentencePieceBPETokenizer } from '../tokenizers/index.js';
import { LLAMA_FTYPES, llamaCppTensorType, quantizeGGML, type LlamaFtype } from '../quantize/ggml.js';
import { hfToGGUFName, writeLlamaGGUF, type Checkpoint } from './checkpoint.js';
import { expectedTensors } from './config.js';

export class ExportError extends Error {}

/** SentencePiece piece types → llama.cpp `llama_token_type` (1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte). */
const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, user_defined: 4, unused: 5, byte: 6 } as const;

/** The `tokenizer.ggml.*` keys llama.cpp reads for a SentencePiece (SPM) vocabulary. */
export function ggufTokenizerMetadata(tok: SentencePieceBPETokenizer): Record<string, GGUFTypedValue> {
  const vocab = tok.vocabulary;
  const u32 = (value: number): GGUFTypedValue => ({ type: GGUFValueType.UINT32, value });
  const bool = (value: boolean): GGUFTypedValue => ({ type: GGUFValueType.BOOL, value });
  const meta: Record<string, GGUFTypedValue> = {
    'tokenizer.ggml.model': { type: GGUFValueType.STRING, value: 'llama' },
    'tokenizer.ggml.pre': { type: GGUFValueType.STRING, value: 'default' },
    'tokenizer.ggml.tokens': { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: vocab.map((p) => p.piece) },
    'tokenizer.ggml.scores': { type: GGUFValueType.ARRAY, itemType: GGUFValueType.FLOAT32, value: Float32Array.from(vocab, (p) => p.score) },
    'tokenizer.ggml.token_type': { type: GGUFValueType.ARRAY, itemType: GGUFValueType.INT32, value: Int32Array.from(vocab, (p) => TOKEN_TYPE[p.type]) },
  };
  if (tok.bosId !== null) meta['tokenizer.ggml.bos_token_id'] = u32(tok.bosId);
  if (tok.eosId !== null) meta['tokenizer.ggml.eos_token_id'] = u32(tok.eosId);
  if (tok.unkId !== null) meta['tokenizer.ggml.unknown_token_id'] = u32(tok.unkId);
  if (tok.padId !== null) meta['tokenizer.ggml.padding_token_id'] = u32(tok.padId);
  meta['tokenizer.ggml.add_bos_token'] = bool(tok.addBosDefault);
  meta['tokenizer.ggml.add_eos_token'] = bool(tok.addEosDefault);
  if (tok.chatTemplate) meta['tokenizer.chat_template'] = { type: GGUFValueType.STRING, value: tok.chatTemplate };
  return meta;
}

export type GGUFExportType = LlamaFtype;
export const GGUF_EXPORT_TYPES = Object.keys(LLAMA_FTYPES) as GGUFExportType[];

export interface GGUFExportOptions {
  type: GGUFExportType;
  tokenizer?: SentencePieceBPETokenizer | null;
  name?: string;
  /** Per-tensor override of the recipe (GGUF tensor name, row-major shape → type), e.g. keep the embedding in Q8_0. */
  override?: (ggufName: string, shape: readonly number[]) => GGMLTypeName | undefined;
  onTensor?: (hfName: string, type: GGMLTypeName) => void;
}

/** The ggml type each tensor gets for `type` (GGUF names). */
export function ggufExportPlan(ckpt: Pick<Checkpoint, 'config'>, opts: Pick<GGUFExportOptions, 'type' | 'override'>): Map<string, GGMLTypeName> {
  const c = ckpt.config;
  const plan = new Map<string, GGMLTypeName>();
  for (const [name, shape] of expectedTensors(c)) {
    const gguf = hfToGGUFName(name)!;
    plan.set(gguf, opts.override?.(gguf, shape) ?? llamaCppTensorType(opts.type, gguf, shape, c.numHiddenLayers, c.tieWordEmbeddings));
  }
  return plan;
}

/** Write `ckpt` as a GGUF llama.cpp loads, one tensor at a time (peak memory: about one tensor in f32). */
export function exportGGUF(ckpt: Checkpoint, out: string, opts: GGUFExportOptions): void {
  const plan = ggufExportPlan(ckpt, opts);
  if (opts.tokenizer && opts.tokenizer.vocabSize !== ckpt.config.vocabSize) {
    throw new ExportError(`tokenizer has ${opts.tokenizer.vocabSize} tokens but the model's vocabulary is ${ckpt.config.vocabSize}`);
  }
  mkdirSync(dirname(out) || '.', { recursive: true });
  writeLlamaGGUF(out, ckpt.config, (n) => ckpt.getTensor(n), {
    type: (name) => plan.get(hfToGGUFName(name)!)!,
    fileType: LLAMA_FTYPES[opts.type].id,
    name: opts.name ?? basename(ckpt.path).replace(/\.[^.]+$/, ''),
    metadata: opts.tokenizer ? ggufTokenizerMetadata(opts.tokenizer) : {},
    encode: quantizeGGML,
    onTensor: opts.onTensor,
  });
}

export interface HFExportOptions {
  dtype: 'f32' | 'f16' | 'bf16';
  /** Tokenizer to put beside the weights (any form `writeTokenizerFiles` takes, a .gguf's vocabulary included). */
  tokenizerPath?: string | null;
  onTensor?: (hfName: string) => void;
}

/** Write `ckpt` as a Hugging Face folder (config.json, model.safetensors or shards, tokenizer files). */
export function exportHF(ckpt: Checkpoint, dir: string, opts: HFExportOptions): void {
  mkdirSync(dir, { recursive: true });
  const entries = [...expectedTensors(ckpt.config)].map(([name, shape]) => ({
    name, dtype: opts.dtype, shape,
    data: () => {
      opts.onTensor?.(name);
      const t: HostTensor = ckpt.getTensor(name);
      return (t.dtype === opts.dtype ? t : castFloat(t, opts.dtype)).data;
    },
  }));
  if (opts.tokenizerPath) writeTokenizerFiles(opts.tokenizerPath, dir); // before config.json, which goes last
  writeHFFolder(dir, ckpt.config, entries);
}
