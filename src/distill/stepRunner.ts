/**
 * Owns the training sessions and the optimizer state (parameters, Adam moments) and runs optimizer steps over
 * micro-batches: gradient accumulation, loss normalisation over all real tokens of the step, and the NaN/Inf guard
 * (a step whose loss or gradient norm is not finite leaves every parameter and moment untouched). Runs in a worker
 * thread for the trainer (./worker.ts), or in-thread for tests.
 */
import { toOnnxBytes } from '../graph/index.js';
import type { LlamaConfig } from '../models/config.js';
import { expectedTensors } from '../models/config.js';
import { collectGarbage, feeds, ort, Session, type OrtTensor } from '../runtime/index.js';
import type { LossOptions } from './losses.js';
import type { AdamWOptions } from './optimizer.js';
import { buildEvalGraph, buildTrainGraph, defaultLmHeadChunks, TRAIN_IO, type TeacherKind } from './trainStep.js';
import type { TeacherOutput, TokenBatch } from './types.js';

export interface RunnerOptions {
  loss: LossOptions;
  adamw: AdamWOptions;
  teacher: TeacherKind;
  /** Micro-batches per optimizer step (>1 builds the accumulate graph too). */
  gradAccum: number;
  threads?: number;
  perTensorGradNorms?: boolean;
  closedFormLossGrad?: boolean;
  /** Token chunks for the LM head and loss (default from the vocabulary size; see trainStep.ts). */
  lmHeadChunks?: number;
  /** Use the given arrays as the live state instead of copies (they are overwritten by every step). */
  adoptState?: boolean;
}

export interface MicroBatch { batch: TokenBatch; teacher: TeacherOutput | null }

export interface StepResult {
  /** Mean token loss of the step (alpha·KD + (1−alpha)·CE). */
  loss: number;
  kd: number;
  ce: number;
  gradNorm: number;
  tokens: number;
  /** The loss or gradient norm was not finite: nothing was updated. */
  skipped: boolean;
  gradNorms?: Record<string, number>;
}

interface Sessions { step: Session; accumulate: Session | null }

export interface EvalResult { ceSum: number; kdSum: number; tokens: number }

export interface OptimizerState {
  params: Map<string, Float32Array>;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export function countTargets(b: TokenBatch): number {
  let n = 0;
  for (const l of b.labels) if (l !== -100) n++;
  return n;
}

const scalar = (v: number) => feeds.f32([v], []);

export function batchFeeds(mb: MicroBatch, kind: TeacherKind, vocab: number): Record<string, OrtTensor> {
  const { batch: b, teacher } = mb;
  const dims = [b.batch, b.seq];
  const out: Record<string, OrtTensor> = {
    [TRAIN_IO.inputIds]: feeds.i64(BigInt64Array.from(b.inputIds, (x) => BigInt(x)), dims),
    [TRAIN_IO.attentionMask]: feeds.i64(BigInt64Array.from(b.attentionMask, (x) => BigInt(x)), dims),
    [TRAIN_IO.labels]: feeds.i64(BigInt64Array.from(b.labels, (x) => BigInt(x)), dims),
  };
  if (kind === 'none') return out;
  if (!teacher) throw new Error('this run distills from a teacher, but a batch came without teacher outputs');
  if (teacher.kind !== kind) throw new Error(`the graph was built for a ${kind} teacher but got ${teacher.kind} outputs`);
  if (teacher.kind === 'dense') {
    if (teacher.logits.length !== b.batch * b.seq * vocab) throw new Error(`teacher logits hold ${teacher.logits.length} values, expected ${b.batch}×${b.seq}×${vocab}`);
    out[TRAIN_IO.teacherLogits] = feeds.f32(teacher.logits, [...dims, vocab]);
  } else {
    if (teacher.ids.length !== b.batch * b.seq * teacher.k) throw new Error(`teacher top-k holds ${teacher.ids.length} ids, expected ${b.batch}×${b.seq}×${teacher.k}`);
    for (const id of teacher.ids) if (id < 0 || id >= vocab) throw new Error(`teacher token id ${id} is outside the student's vocabulary (${vocab})`);
    out[TRAIN_IO.teacherIds] = feeds.i64(BigInt64Array.from(teacher.ids, (x) => BigInt(x)), [...dims, teacher.k]);
    out[TRAIN_IO.teacherLogprobs] = feeds.f32(teacher.logprobs, [...dims, teacher.k]);
  }
  return out;
}

/**
 * The optimizer state lives in Float32Arrays that ORT reads as inputs and writes its new values into (pre-allocated
 * outputs over the same buffers): ORT allocates no second copy of the state, and the state never moves. The step graph
 * outputs its inputs unchanged when the loss or gradient norm is not finite, so a skipped step cannot corrupt it.
 */
export class StepRunner {
  private readonly evalSessions = new Map<number, Session>(); // by LM-head chunks
  private small: Sessions | null = null;
  private readonly stateFeeds: Record<string, OrtTensor> = {};
  private readonly inPlace: Record<string, OrtTensor | null>;
  private constructor(
    readonly config: LlamaConfig,
    private readonly opts: RunnerOptions,
    private readonly main: Sessions,
    private readonly chunks: number,
    private readonly state: OptimizerState,
  ) {
    const shapes = expectedTensors(config);
    this.inPlace = Object.fromEntries(main.step.outputNames.map((n) => [n, null]));
    for (const [n, shape] of shapes) {
      for (const [input, output, buf] of [[n, TRAIN_IO.newParam(n), state.params], [TRAIN_IO.m(n), TRAIN_IO.newM(n), state.m], [TRAIN_IO.v(n), TRAIN_IO.newV(n), state.v]] as const) {
        this.stateFeeds[input] = this.inPlace[output] = feeds.f32(buf.get(n)!, shape);
      }
    }
  }

  /** `params` in HF layout (f32; copied unless `opts.adoptState`, so the caller's arrays are not modified); moments default to zeros. */
  static async create(config: LlamaConfig, state: { params: Map<string, Float32Array>; m?: Map<string, Float32Array>; v?: Map<string, Float32Array> }, opts: RunnerOptions): Promise<StepRunner> {
    const shapes = expectedTensors(config);
    for (const [name, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      for (const [kind, map] of [['parameter', state.params], ['first moment', state.m], ['second moment', state.v]] as const) {
        const p = map?.get(name);
        if (map && (!p || p.length !== n)) throw new Error(`${kind} ${name}: expected ${n} values, got ${p?.length ?? 'none'}`);
      }
    }
    const own = (map: Map<string, Float32Array> | undefined) => new Map([...shapes.keys()].map((k) => [k,
      !map ? new Float32Array(shapes.get(k)!.reduce((a, b) => a * b, 1)) : opts.adoptState ? map.get(k)! : Float32Array.from(map.get(k)!)]));
    const chunks = opts.lmHeadChunks ?? defaultLmHeadChunks(config.vocabSize);
    return new StepRunner(config, opts, await StepRunner.sessions(config, opts, chunks), chunks, { params: own(state.params), m: own(state.m), v: own(state.v) });
  }

  private static async sessions(config: LlamaConfig, opts: RunnerOptions, lmHeadChunks: number): Promise<Sessions> {
    const sessionOpts = { threads: opts.threads, enableMemPattern: false };
    const accum = opts.gradAccum > 1;
    const common = { loss: opts.loss, adamw: opts.adamw, teacher: opts.teacher, perTensorGradNorms: opts.perTensorGradNorms, closedFormLossGrad: opts.closedFormLossGrad, lmHeadChunks };
    const step = await Session.create(toOnnxBytes(buildTrainGraph(config, { ...common, mode: 'step', withGradAcc: accum }).graph), sessionOpts);
    const accumulate = accum ? await Session.create(toOnnxBytes(buildTrainGraph(config, { ...common, mode: 'accumulate', withGradAcc: true }).graph), sessionOpts) : null;
    return { step, accumulate };
  }

  /** The chunked graphs need ≥ `chunks` positions per micro-batch; smaller batches get unchunked graphs, built once. */
  private async sessionsFor(micro: MicroBatch[]): Promise<Sessions> {
    if (micro.every((mb) => mb.batch.batch * mb.batch.seq >= this.chunks)) return this.main;
    this.small ??= await StepRunner.sessions(this.config, this.opts, 1);
    return this.small;
  }

  /** The live state: later steps overwrite these arrays (copy what must outlive the next step). */
  getState(): OptimizerState { return this.state; }

  /** One optimizer step over `micro` (at most gradAccum micro-batches); `step` is 1-based. */
  async step(micro: MicroBatch[], lr: number, step: number): Promise<StepResult> {
    if (!micro.length || micro.length > this.opts.gradAccum) throw new Error(`a step takes 1..${this.opts.gradAccum} micro-batches, got ${micro.length}`);
    // The binding returned a copy of every output of the last step (the whole state): free it before this step's.
    collectGarbage();
    const { step: stepSession, accumulate: accumSession } = await this.sessionsFor(micro);
    const tokens = micro.reduce((n, mb) => n + countTargets(mb.batch), 0);
    const lossScale = scalar(tokens ? 1 / tokens : 0);
    const names = [...this.state.params.keys()];
    const paramFeeds = Object.fromEntries(names.map((n) => [n, this.stateFeeds[n]]));
    let acc: Record<string, OrtTensor> | null = accumSession
      ? Object.fromEntries(names.map((n) => [TRAIN_IO.gradAcc(n), feeds.f32(new Float32Array(this.state.params.get(n)!.length), expectedTensors(this.config).get(n)!)]))
      : null;
    let loss = 0, kd = 0, ce = 0;
    for (const mb of micro.slice(0, -1)) {
      const out = await accumSession!.run({ ...paramFeeds, ...acc, ...batchFeeds(mb, this.opts.teacher, this.config.vocabSize), [TRAIN_IO.lossScale]: lossScale });
      loss += num(out[TRAIN_IO.loss]); kd += num(out[TRAIN_IO.kdSum]); ce += num(out[TRAIN_IO.ceSum]);
      acc = Object.fromEntries(names.map((n) => [TRAIN_IO.gradAcc(n), out[TRAIN_IO.gradOut(n)]]));
    }
    // An earlier micro-batch already made the loss non-finite: skip without running the update.
    if (!Number.isFinite(loss)) return { loss, kd: tokens ? kd / tokens : 0, ce: tokens ? ce / tokens : 0, gradNorm: NaN, tokens, skipped: true };
    const out = await stepSession.run({
      ...this.stateFeeds, ...(acc ?? {}), ...batchFeeds(micro[micro.length - 1], this.opts.teacher, this.config.vocabSize),
      [TRAIN_IO.lossScale]: lossScale, [TRAIN_IO.lr]: scalar(lr), [TRAIN_IO.step]: scalar(step),
    }, this.inPlace);
    const stepLoss = num(out[TRAIN_IO.loss]);
    loss += stepLoss; kd += num(out[TRAIN_IO.kdSum]); ce += num(out[TRAIN_IO.ceSum]);
    const gradNorm = num(out[TRAIN_IO.gradNorm]);
    // The same test the graph made: when it fails, the outputs written over the state were the state itself.
    const skipped = !Number.isFinite(stepLoss) || !Number.isFinite(gradNorm);
    const result: StepResult = { loss, kd: tokens ? kd / tokens : 0, ce: tokens ? ce / tokens : 0, gradNorm, tokens, skipped };
    if (this.opts.perTensorGradNorms) result.gradNorms = Object.fromEntries(names.map((n) => [n, num(out[TRAIN_IO.tensorGradNorm(n)])]));
    return result;
  }

  /** Summed CE and KL(teacher ‖ student) at T = 1 over the batch's real targets, with the current parameters. */
  async evaluate(mb: MicroBatch): Promise<EvalResult> {
    const chunks = mb.batch.batch * mb.batch.seq >= this.chunks ? this.chunks : 1;
    let session = this.evalSessions.get(chunks);
    if (!session) {
      const graph = buildEvalGraph(this.config, this.opts.teacher, this.opts.loss.sparseTail, chunks).graph;
      this.evalSessions.set(chunks, session = await Session.create(toOnnxBytes(graph), { threads: this.opts.threads, enableMemPattern: false }));
    }
    const paramFeeds = Object.fromEntries([...this.state.params.keys()].map((n) => [n, this.stateFeeds[n]]));
    const out = await session.run({ ...paramFeeds, ...batchFeeds(mb, this.opts.teacher, this.config.vocabSize) });
    return { ceSum: num(out[TRAIN_IO.ceSum]), kdSum: num(out[TRAIN_IO.kdSum]), tokens: countTargets(mb.batch) };
  }

  async dispose(): Promise<void> {
    for (const s of [this.main, this.small]) {
      await s?.step.dispose();
      await s?.accumulate?.dispose();
    }
    for (const s of this.evalSessions.values()) await s.dispose();
  }
}

const num = (t: OrtTensor): number => Number((t.data as Float32Array)[0]);
export { ort };
