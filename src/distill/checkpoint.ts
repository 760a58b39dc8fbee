/**
 * Training checkpoints: one safetensors file holding the parameters (HF names), the AdamW moments (adam_m.*, adam_v.*)
 * and, in its metadata, the trainer state (step, data position, seed, loss history) plus a SHA-256 over every tensor's
 * bytes. Written atomically (temp file, fsync, rename); a truncated, corrupted or foreign file is refused on load
 * with the reason, never half-loaded. The previous checkpoint is kept as checkpoint.prev.safetensors.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { openSafetensors, writeSafetensors, type TensorEntry } from '../formats/safetensors.js';
import { removeStaleTemps } from '../formats/atomic.js';
import { configFromHF, configToHF, type LlamaConfig } from '../models/config.js';
import type { OptimizerState } from './stepRunner.js';

export const CHECKPOINT_FILE = 'checkpoint.safetensors';
export const PREVIOUS_CHECKPOINT_FILE = 'checkpoint.prev.safetensors';
const FORMAT = 'slimlm-train-checkpoint/1';

export class CheckpointCorruptError extends Error {
  override name = 'CheckpointCorruptError';
}

export interface HistoryRow {
  step: number;
  epoch: number;
  loss: number;
  kd: number;
  ce: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  skipped: boolean;
  /** Validation at this step (perplexity, KL(teacher ‖ student) per token), when it ran. */
  valPpl?: number;
  valKl?: number;
}

export interface TrainerState {
  /** Optimizer steps taken (including skipped ones). */
  step: number;
  /** Updates actually applied (AdamW's bias-correction step). */
  adamStep: number;
  epoch: number;
  /** Micro-batches of `epoch` already consumed. */
  batchInEpoch: number;
  seed: number;
  tokensSeen: number;
  skippedSteps: number;
  elapsedSeconds: number;
  /** Options that must not change across a resume (loss, lr, batch size, …), as JSON. */
  runKey: string;
  history: HistoryRow[];
}

const digest = (entries: { name: string; data: Uint8Array }[]): string => {
  const h = createHash('sha256');
  for (const e of [...entries].sort((a, b) => (a.name < b.name ? -1 : 1))) { h.update(e.name); h.update(e.data); }
  return h.digest('hex');
};

const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export function saveTrainingCheckpoint(dir: string, config: LlamaConfig, shapes: Map<string, number[]>, opt: OptimizerState, state: TrainerState): string {
  const entries: TensorEntry[] = [];
  for (const [name, shape] of shapes) {
    entries.push({ name, dtype: 'f32', shape, data: bytes(opt.params.get(name)!) });
    entries.push({ name: `adam_m.${name}`, dtype: 'f32', shape, data: bytes(opt.m.get(name)!) });
    entries.push({ name: `adam_v.${name}`, dtype: 'f32', shape, data: bytes(opt.v.get(name)!) });
  }
  const path = join(dir, CHECKPOINT_FILE);
  // The current checkpoint becomes the previous one by a second name (hard link, renamed into place), then the new one
  // replaces it atomically: at every moment checkpoint.safetensors is a whole checkpoint, so a kill never loses both.
  removeStaleTemps(dir, PREVIOUS_CHECKPOINT_FILE);
  if (existsSync(path)) {
    const link = join(dir, `.${PREVIOUS_CHECKPOINT_FILE}.${process.pid}.tmp`);
    rmSync(link, { force: true });
    try { linkSync(path, link); } catch { copyFileSync(path, link); }
    renameSync(link, join(dir, PREVIOUS_CHECKPOINT_FILE));
  }
  writeSafetensors(path, entries, {
    slimlm: FORMAT,
    sha256: digest(entries as { name: string; data: Uint8Array }[]),
    config: JSON.stringify(configToHF(config)),
    state: JSON.stringify(state),
  });
  return path;
}

export interface LoadedCheckpoint { config: LlamaConfig; optimizer: OptimizerState; state: TrainerState }

/** Load and verify a training checkpoint (a file, or a directory holding checkpoint.safetensors). */
export function loadTrainingCheckpoint(pathOrDir: string): LoadedCheckpoint {
  const path = pathOrDir.endsWith('.safetensors') ? pathOrDir : join(pathOrDir, CHECKPOINT_FILE);
  if (!existsSync(path)) throw new CheckpointCorruptError(`${path}: no training checkpoint there`);
  let reader;
  try {
    reader = openSafetensors(path);
  } catch (e) {
    throw new CheckpointCorruptError(`${path}: corrupt or truncated checkpoint (${(e as Error).message}); not loaded`);
  }
  try {
    const meta = reader.metadata;
    if (meta.slimlm !== FORMAT) throw new CheckpointCorruptError(`${path}: not a slimlm training checkpoint (metadata slimlm = ${JSON.stringify(meta.slimlm)})`);
    const config = configFromHF(JSON.parse(meta.config), `${path} config`);
    const state = JSON.parse(meta.state) as TrainerState;
    const read = reader.names().map((name) => ({ name, data: reader!.read(name).data }));
    if (digest(read) !== meta.sha256) throw new CheckpointCorruptError(`${path}: checksum mismatch (the file was modified or damaged); not loaded`);
    const f32 = (d: Uint8Array) => new Float32Array(d.buffer.slice(d.byteOffset, d.byteOffset + d.byteLength));
    const optimizer: OptimizerState = { params: new Map(), m: new Map(), v: new Map() };
    for (const { name, data } of read) {
      if (name.startsWith('adam_m.')) optimizer.m.set(name.slice(7), f32(data));
      else if (name.startsWith('adam_v.')) optimizer.v.set(name.slice(7), f32(data));
      else optimizer.params.set(name, f32(data));
    }
    return { config, optimizer, state };
  } catch (e) {
    if (e instanceof CheckpointCorruptError) throw e;
    throw new CheckpointCorruptError(`${path}: unreadable checkpoint (${(e as Error).message}); not loaded`);
  } finally {
    reader.close();
  }
}
