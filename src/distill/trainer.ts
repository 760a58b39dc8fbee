/**
 * The training loop shared by `slimlm distill` and `slimlm train`: epochs or a step budget over a DataSource, an
 * optional teacher, warmup + decay schedule, gradient accumulation, periodic validation (perplexity, KL to the
 * teacher), atomic checkpoints every N steps with exact resume (same data order, same loss trajectory), a NaN/Inf
 * guard that skips and reports the step, a progress bar, loss curves (CSV + SVG), and the student written as a
 * Hugging Face folder (config.json, model.safetensors, tokenizer files).
 */
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { writeBytesAtomic } from '../formats/atomic.js';
import { writeHFFolder } from '../formats/hf.js';
import { expectedTensors, type LlamaConfig } from '../models/config.js';
import { progressBar, formatSeconds } from '../cli/progress.js';
import { svgChart } from '../report/plot.js';
import { CHECKPOINT_FILE, CheckpointCorruptError, loadTrainingCheckpoint, PREVIOUS_CHECKPOINT_FILE, saveTrainingCheckpoint, type HistoryRow, type LoadedCheckpoint, type TrainerState } from './checkpoint.js';
import type { LossOptions } from './losses.js';
import { learningRate, warmupSteps, type AdamWOptions, type ScheduleOptions } from './optimizer.js';
import type { MicroBatch, OptimizerState } from './stepRunner.js';
import type { TeacherKind } from './trainStep.js';
import type { DataSource, Teacher, TokenBatch } from './types.js';
import { createTrainBackend, type TrainBackend } from './worker.js';

export interface TrainerOptions {
  outDir: string;
  config: LlamaConfig;
  /** Initial weights (ignored on resume). */
  weights: Map<string, Float32Array>;
  train: DataSource;
  validation?: DataSource | null;
  teacher?: Teacher | null;
  /** 'sparse' when the teacher answers with top-k log-probs. Default dense when a teacher is given. */
  teacherKind?: Exclude<TeacherKind, 'none'>;
  loss: LossOptions;
  adamw: AdamWOptions;
  lr: number;
  schedule?: ScheduleOptions['kind'];
  /** Warmup steps (>= 1) or a fraction of all steps (< 1). Default 0. */
  warmup?: number;
  epochs: number;
  /** Optimizer steps; overrides epochs (data loops as needed). */
  maxSteps?: number;
  /** Rows per micro-batch. */
  batchSize: number;
  /** Micro-batches per optimizer step (default 1). */
  gradAccum?: number;
  evalEvery?: number;
  /** Validation batches per evaluation (default: all). */
  evalBatches?: number;
  saveEvery?: number;
  resume?: boolean;
  seed: number;
  threads?: number;
  /** Run ORT in a worker thread (default true). */
  inWorker?: boolean;
  /** Files copied into the output folder (tokenizer.json, tokenizer.model, tokenizer_config.json, …). */
  extraFiles?: Record<string, string | Uint8Array>;
  /** Diagnostics (default: stderr). */
  log?: (line: string) => void;
  /** What else defines the run for --resume (e.g. the data's fingerprint, the teacher): a resume must match it. */
  runIdentity?: Record<string, unknown>;
  /** Called after every step (tests, benchmarks). */
  onStep?: (row: HistoryRow) => void;
}

export interface TrainResult {
  steps: number;
  finalLoss: number;
  history: HistoryRow[];
  validation: { ppl: number; kl: number | null } | null;
  skippedSteps: number;
  tokensPerSecond: number;
  outDir: string;
}

/** Which options define a run: a resume with different values would not continue the same trajectory. */
function runKeyOf(o: TrainerOptions): string {
  return JSON.stringify({ loss: o.loss, adamw: o.adamw, lr: o.lr, schedule: o.schedule ?? 'cosine', warmup: o.warmup ?? 0, epochs: o.maxSteps ? null : o.epochs, maxSteps: o.maxSteps ?? null, batchSize: o.batchSize, gradAccum: o.gradAccum ?? 1, seed: o.seed, ...o.runIdentity });
}

/** The settings two run keys disagree on, as "name: old → new". */
function runKeyChanges(before: string, now: string): string {
  let a: Record<string, unknown>, b: Record<string, unknown>;
  try { a = JSON.parse(before); b = JSON.parse(now); } catch { return `${before} → ${now}`; }
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k}: ${JSON.stringify(a[k]) ?? 'unset'} → ${JSON.stringify(b[k]) ?? 'unset'}`).join('; ');
}

const DAMAGED_CHECKPOINT_FILE = 'checkpoint.damaged.safetensors';

/**
 * The checkpoint --resume continues: checkpoint.safetensors, or the previous one when the newest is missing or fails
 * its checks (said in the log). Neither usable: the newest one's error.
 */
function resumableCheckpoint(dir: string, log: (l: string) => void): LoadedCheckpoint | null {
  const newest = join(dir, CHECKPOINT_FILE), previous = join(dir, PREVIOUS_CHECKPOINT_FILE);
  if (!existsSync(newest) && !existsSync(previous)) return null;
  try {
    return loadTrainingCheckpoint(existsSync(newest) ? newest : previous);
  } catch (e) {
    if (!existsSync(newest) || !existsSync(previous) || !(e instanceof CheckpointCorruptError)) throw e;
    const ck = loadTrainingCheckpoint(previous);
    // Set aside, so the next save does not keep it as the previous checkpoint.
    renameSync(newest, join(dir, DAMAGED_CHECKPOINT_FILE));
    log(`--resume: ${(e as Error).message}; moved it to ${DAMAGED_CHECKPOINT_FILE} and continuing from ${PREVIOUS_CHECKPOINT_FILE} (step ${ck.state.step})`);
    return ck;
  }
}

export async function runTraining(o: TrainerOptions): Promise<TrainResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  const accum = o.gradAccum ?? 1;
  const perEpoch = o.train.numBatches(o.batchSize);
  if (perEpoch < 1) throw new Error('the training data yields no batch');
  const stepsPerEpoch = Math.ceil(perEpoch / accum);
  const totalSteps = o.maxSteps ?? o.epochs * stepsPerEpoch;
  const warmup = warmupSteps(o.warmup, totalSteps);
  const schedule: ScheduleOptions = { lr: o.lr, warmupSteps: warmup, totalSteps, kind: o.schedule ?? 'cosine' };
  // CE-only runs never call the teacher (baselines, `slimlm train`).
  const teacherKind: TeacherKind = o.teacher && o.loss.loss !== 'ce' && o.loss.alpha > 0 ? o.teacherKind ?? 'dense' : 'none';
  if (o.teacher && o.teacher.vocabSize !== o.config.vocabSize) throw new Error(`teacher vocabulary ${o.teacher.vocabSize} != student vocabulary ${o.config.vocabSize}`);
  mkdirSync(o.outDir, { recursive: true });
  const shapes = expectedTensors(o.config);
  const runKey = runKeyOf(o);

  let state: TrainerState = { step: 0, adamStep: 0, epoch: 0, batchInEpoch: 0, seed: o.seed, tokensSeen: 0, skippedSteps: 0, elapsedSeconds: 0, runKey, history: [] };
  let initial: { params: Map<string, Float32Array>; m?: Map<string, Float32Array>; v?: Map<string, Float32Array> } = { params: o.weights };
  const ck = o.resume ? resumableCheckpoint(o.outDir, log) : null;
  if (!o.resume && (existsSync(join(o.outDir, CHECKPOINT_FILE)) || existsSync(join(o.outDir, PREVIOUS_CHECKPOINT_FILE)))) {
    throw new Error(`${o.outDir} holds the checkpoint of an earlier run: pass --resume to continue it, or choose another --out`);
  }
  if (ck) {
    if (ck.state.runKey !== runKey) throw new Error(`--resume: the checkpoint in ${o.outDir} was made with other settings (${runKeyChanges(ck.state.runKey, runKey)})`);
    const arch = (c: LlamaConfig) => [c.vocabSize, c.hiddenSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads, c.intermediateSize, c.headDim, c.tieWordEmbeddings].join(',');
    if (arch(ck.config) !== arch(o.config)) throw new Error(`--resume: the checkpoint holds a different student architecture (${arch(ck.config)} vs ${arch(o.config)})`);
    state = ck.state;
    initial = ck.optimizer;
    log(`resuming from step ${state.step}/${totalSteps} (epoch ${state.epoch + 1}, batch ${state.batchInEpoch})`);
  } else if (o.resume) {
    log(`--resume: no checkpoint in ${o.outDir}; starting fresh`);
  }

  const backend: TrainBackend = await createTrainBackend(o.config, initial, {
    loss: o.loss, adamw: o.adamw, teacher: teacherKind, gradAccum: accum, threads: o.threads,
  }, { inWorker: o.inWorker ?? true });

  const teacherOut = async (b: TokenBatch): Promise<MicroBatch> => ({ batch: b, teacher: teacherKind === 'none' ? null : await o.teacher!.run(b) });
  // The data cursor runs one step ahead of `state` (the next step's batches and teacher outputs are prepared while the
  // worker computes this one); `state` records only what a finished step consumed, so checkpoints stay exact.
  const cursor = { epoch: state.epoch, batch: state.batchInEpoch };
  let iterator: Iterator<TokenBatch> | null = null;
  let iterEpoch = -1;
  interface Group { micro: MicroBatch[]; epoch: number; endBatch: number }
  /** The next optimizer step's micro-batches: never across an epoch boundary, so (epoch, batchInEpoch) is a full position. */
  const nextGroup = async (): Promise<Group> => {
    if (cursor.batch >= perEpoch) { cursor.epoch++; cursor.batch = 0; }
    if (!iterator || iterEpoch !== cursor.epoch) {
      iterator = o.train.batches(cursor.epoch, o.batchSize, cursor.batch)[Symbol.iterator]();
      iterEpoch = cursor.epoch;
    }
    const batches: TokenBatch[] = [];
    while (batches.length < accum && cursor.batch < perEpoch) {
      const r = iterator.next();
      if (r.done) break;
      batches.push(r.value);
      cursor.batch++;
    }
    const group = { epoch: cursor.epoch, endBatch: cursor.batch };
    return { micro: await Promise.all(batches.map(teacherOut)), ...group };
  };

  const evaluate = async (): Promise<{ ppl: number; kl: number | null } | null> => {
    if (!o.validation) return null;
    await prefetch; // one teacher call at a time
    let ce = 0, kd = 0, tokens = 0, n = 0;
    for (const b of o.validation.batches(0, o.batchSize)) {
      if (o.evalBatches !== undefined && n++ >= o.evalBatches) break;
      const r = await backend.evaluate(await teacherOut(b));
      ce += r.ceSum; kd += r.kdSum; tokens += r.tokens;
    }
    return tokens ? { ppl: Math.exp(ce / tokens), kl: teacherKind === 'none' ? null : kd / tokens } : null;
  };

  const writeCurves = () => {
    const rows = state.history;
    const csv = ['step,epoch,loss,kd,ce,lr,grad_norm,tokens,skipped,val_ppl,val_kl',
      ...rows.map((r) => [r.step, r.epoch, r.loss, r.kd, r.ce, r.lr, r.gradNorm, r.tokens, r.skipped ? 1 : 0, r.valPpl ?? '', r.valKl ?? ''].join(','))].join('\n') + '\n';
    writeBytesAtomic(join(o.outDir, 'loss.csv'), csv);
    // The objective (α·KD + (1−α)·CE) and CE are different quantities: validation is compared with the train CE.
    const trained = rows.filter((r) => !r.skipped);
    const series = [{ name: teacherKind === 'none' ? 'train CE' : 'train objective (α·KD + (1−α)·CE)', points: trained.map((r) => [r.step, r.loss] as const) }];
    if (teacherKind !== 'none') series.push({ name: 'train CE', points: trained.map((r) => [r.step, r.ce] as const) });
    const val = rows.filter((r) => r.valPpl !== undefined).map((r) => [r.step, Math.log(r.valPpl!)] as const);
    if (val.length) series.push({ name: 'validation CE (log ppl)', points: val });
    if (series[0].points.length) writeBytesAtomic(join(o.outDir, 'loss.svg'), svgChart(series, { title: 'training loss', xLabel: 'step', yLabel: 'loss' }));
  };
  const save = async () => {
    const opt = await backend.getState();
    saveTrainingCheckpoint(o.outDir, o.config, shapes, opt, state);
    writeCurves();
  };

  let prefetch: Promise<Group> | null = null;
  const started = Date.now();
  const startElapsed = state.elapsedSeconds;
  const startTokens = state.tokensSeen;
  const bar = progressBar(o.teacher ? 'distill' : 'train', totalSteps, 'step');
  bar.tick(state.step);
  let lastEval: { ppl: number; kl: number | null } | null = null;
  try {
    prefetch = state.step < totalSteps ? nextGroup() : null;
    while (state.step < totalSteps) {
      const group = await prefetch!;
      const step = state.step + 1;
      const lr = learningRate(schedule, step);
      const running = backend.step(group.micro, lr, state.adamStep + 1);
      prefetch = step < totalSteps ? nextGroup() : null;
      prefetch?.catch(() => undefined); // surfaced when awaited
      const r = await running;
      state.step = step;
      state.epoch = group.epoch;
      state.batchInEpoch = group.endBatch;
      const realTokens = group.micro.reduce((n, { batch: b }) => n + b.attentionMask.reduce((s, v) => s + v, 0), 0);
      state.tokensSeen += realTokens;
      if (r.skipped) {
        state.skippedSteps++;
        log(`step ${step}: non-finite ${Number.isFinite(r.loss) ? 'gradient norm' : 'loss'} (loss ${r.loss}, grad norm ${r.gradNorm}); step skipped, weights and moments unchanged`);
      } else state.adamStep++;
      const row: HistoryRow = { step, epoch: state.epoch, loss: r.loss, kd: r.kd, ce: r.ce, lr, gradNorm: r.gradNorm, tokens: realTokens, skipped: r.skipped };
      if (o.evalEvery && step % o.evalEvery === 0 && step < totalSteps) {
        lastEval = await evaluate();
        if (lastEval) { row.valPpl = lastEval.ppl; if (lastEval.kl !== null) row.valKl = lastEval.kl; }
      }
      state.history.push(row);
      state.elapsedSeconds = startElapsed + (Date.now() - started) / 1000;
      const tps = (state.tokensSeen - startTokens) / Math.max(1e-9, (Date.now() - started) / 1000);
      // Without a progress bar (pipes, CI logs) each validation is one line, so long runs still show where they are.
      if (row.valPpl !== undefined && !process.stderr.isTTY) {
        log(`step ${step}/${totalSteps}: loss ${r.loss.toFixed(4)}, validation perplexity ${row.valPpl.toFixed(2)}` +
          `${row.valKl !== undefined ? `, KL to teacher ${row.valKl.toFixed(4)}` : ''}, ${tps.toFixed(0)} tok/s, ${formatSeconds(state.elapsedSeconds)}`);
      }
      bar.tick(1, `loss ${r.loss.toFixed(4)} lr ${lr.toExponential(2)} ${tps.toFixed(0)} tok/s${lastEval ? ` val ppl ${lastEval.ppl.toFixed(2)}` : ''}`);
      o.onStep?.(row);
      if (o.saveEvery && step % o.saveEvery === 0 && step < totalSteps) await save();
    }
    bar.done();
    const validation = await evaluate();
    if (validation && state.history.length) {
      const last = state.history[state.history.length - 1];
      last.valPpl = validation.ppl;
      if (validation.kl !== null) last.valKl = validation.kl;
    }
    await save();
    const opt: OptimizerState = await backend.getState();
    writeStudentFolder(o.outDir, o.config, opt.params, o.extraFiles ?? {});
    const seconds = (Date.now() - started) / 1000;
    const tokensPerSecond = (state.tokensSeen - startTokens) / Math.max(1e-9, seconds);
    const applied = state.history.filter((h) => !h.skipped);
    log(`trained ${state.step} steps in ${formatSeconds(state.elapsedSeconds)} (${tokensPerSecond.toFixed(0)} tok/s this session)` +
      `${validation ? `; validation perplexity ${validation.ppl.toFixed(3)}${validation.kl !== null ? `, KL to teacher ${validation.kl.toFixed(4)}` : ''}` : ''}` +
      `${state.skippedSteps ? `; ${state.skippedSteps} steps skipped (non-finite)` : ''}; student in ${o.outDir}`);
    return { steps: state.step, finalLoss: applied.length ? applied[applied.length - 1].loss : NaN, history: state.history, validation, skippedSteps: state.skippedSteps, tokensPerSecond, outDir: o.outDir };
  } finally {
    await backend.dispose();
  }
}

/** The student as a HF folder: config.json + model.safetensors (f32) + the given tokenizer files. */
export function writeStudentFolder(dir: string, config: LlamaConfig, params: Map<string, Float32Array>, extraFiles: Record<string, string | Uint8Array>): void {
  const shapes = expectedTensors(config);
  writeHFFolder(dir, { ...config, torchDtype: 'float32' }, [...shapes].map(([name, shape]) => {
    const p = params.get(name)!;
    return { name, dtype: 'f32' as const, shape, data: new Uint8Array(p.buffer, p.byteOffset, p.byteLength) };
  }), { extraFiles, metadata: { producer: 'slimlm distill' } });
}

