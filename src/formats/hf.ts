/**
 * Hugging Face model folders as written by transformers' `save_pretrained`:
 * https://huggingface.co/docs/transformers/main_classes/model#transformers.PreTrainedModel.save_pretrained
 * (`config.json`, `model.safetensors` or `model.safetensors.index.json` + shards, tokenizer files beside them).
 */
import { existsSync, readFileSync, readdirSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { configFromHF, configToHF, type LlamaConfig } from '../models/config.js';
import { writeBytesAtomic } from './atomic.js';
import { DTYPE_BYTES, numel } from './tensor.js';
import { SAFETENSORS_INDEX, ShardedSafetensors, toEntries, writeSafetensors, writeShardedSafetensors, type TensorInput } from './safetensors.js';

export interface HFFolderFiles {
  dir: string;
  config: string | null;
  /** `model.safetensors`, or the shard index `model.safetensors.index.json`, or null when the folder holds no weights. */
  weights: string | null;
  weightsKind: 'single' | 'sharded' | null;
  tokenizerJson: string | null;
  tokenizerModel: string | null;
  tokenizerConfig: string | null;
  generationConfig: string | null;
}

const file = (dir: string, name: string) => (existsSync(join(dir, name)) ? join(dir, name) : null);

/** Locate the standard files of a HF folder (null for what is absent). Prefers the single file when both forms exist. */
export function locateHFFiles(dir: string): HFFolderFiles {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`${dir}: not a directory`);
  const single = file(dir, 'model.safetensors');
  const index = file(dir, SAFETENSORS_INDEX);
  return {
    dir,
    config: file(dir, 'config.json'),
    weights: single ?? index,
    weightsKind: single ? 'single' : index ? 'sharded' : null,
    tokenizerJson: file(dir, 'tokenizer.json'),
    tokenizerModel: file(dir, 'tokenizer.model'),
    tokenizerConfig: file(dir, 'tokenizer_config.json'),
    generationConfig: file(dir, 'generation_config.json'),
  };
}

/** Parse `config.json` of a folder (or a path to the file itself). */
export function readHFConfig(pathOrDir: string): LlamaConfig {
  const path = pathOrDir.endsWith('.json') ? pathOrDir : join(pathOrDir, 'config.json');
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: cannot read config (${(e as Error).message})`);
  }
  return configFromHF(json, path);
}

export interface WriteHFOptions {
  /** Shard when the weights exceed this many bytes (transformers' default max_shard_size is 5 GB). */
  maxShardBytes?: number;
  /** Extra files to write verbatim (e.g. tokenizer.json, tokenizer_config.json, generation_config.json). */
  extraFiles?: Record<string, string | Uint8Array>;
  /** Extra `__metadata__` entries for the safetensors files. */
  metadata?: Record<string, string>;
  /** Extra config.json fields (e.g. quantization_config), written with it in one file. */
  extraConfig?: Record<string, unknown>;
}

const TORCH_DTYPES: Record<string, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/**
 * Write a HF folder loadable by transformers: weights (single file or shards + index), then extra files, then
 * `config.json` last, each file atomically. Stale weight files of the other layout are removed afterwards.
 */
export function writeHFFolder(dir: string, config: LlamaConfig, tensors: TensorInput, opts: WriteHFOptions = {}): void {
  mkdirSync(dir, { recursive: true });
  const entries = toEntries(tensors);
  const total = entries.reduce((s, e) => s + numel(e.shape) * DTYPE_BYTES[e.dtype], 0);
  const maxShard = opts.maxShardBytes ?? 5e9;
  const oldShards = existsSync(join(dir, SAFETENSORS_INDEX)) ? safeShardList(join(dir, SAFETENSORS_INDEX)) : [];
  if (total > maxShard) {
    const written = writeShardedSafetensors(dir, entries, maxShard, opts.metadata);
    rmSync(join(dir, 'model.safetensors'), { force: true });
    for (const f of oldShards) if (!written.includes(f)) rmSync(join(dir, f), { force: true });
  } else {
    writeSafetensors(join(dir, 'model.safetensors'), entries, opts.metadata);
    rmSync(join(dir, SAFETENSORS_INDEX), { force: true });
    for (const f of oldShards) rmSync(join(dir, f), { force: true });
  }
  for (const [name, content] of Object.entries(opts.extraFiles ?? {})) writeBytesAtomic(join(dir, name), content);
  // torch_dtype names the dtype the float weights are stored in, as transformers' save_pretrained writes it.
  const floatDtypes = new Set(entries.map((e) => TORCH_DTYPES[e.dtype]).filter(Boolean));
  const torchDtype = floatDtypes.size === 1 ? { torch_dtype: [...floatDtypes][0] } : {};
  writeBytesAtomic(join(dir, 'config.json'), JSON.stringify({ ...configToHF(config), ...torchDtype, ...opts.extraConfig }, null, 2) + '\n');
}

function safeShardList(indexPath: string): string[] {
  try {
    return ShardedSafetensors.open(indexPath).shardFiles();
  } catch {
    return [];
  }
}

/** Files of `dir` whose names match, sorted (used to find llama2.c `tok*.bin` tokenizers). */
export function listMatching(dir: string, re: RegExp): string[] {
  try {
    return readdirSync(dir).filter((f) => re.test(f)).sort().map((f) => join(dir, f));
  } catch {
    return [];
  }
}

/**
 * Bytes of a model on disk: the file itself, or a folder's weight files (.safetensors, .bin, .gguf). A trainer's
 * resumable checkpoints (`checkpoint*.safetensors`: weights plus optimizer moments) are not part of the model.
 */
export function weightFilesBytes(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).filter((f) => /\.(safetensors|bin|gguf)$/.test(f) && !f.startsWith('checkpoint'))
    .reduce((n, f) => n + statSync(join(path, f)).size, 0);
}
