/**
 * One training step as ONE graph: the student decoder (weights as graph inputs), the KD/CE loss, the backward pass
 * (src/graph/autodiff.ts) and the AdamW update; ORT runs it in a single session.run. Gradient accumulation uses a
 * second graph of the same shape that stops after the backward pass and adds into running gradient sums.
 *
 * Inputs:  every parameter under its HF name; adam_m.<name>, adam_v.<name>; grad_acc.<name> (when accumulating);
 *          input_ids, attention_mask, labels i64 [batch, seq]; teacher_logits f32 [batch, seq, vocab] (dense) or
 *          teacher_ids i64 + teacher_logprobs f32 [batch, seq, k] (sparse); loss_scale, lr, step f32 scalars.
 * Outputs: loss (Σ token loss × loss_scale), kd_sum, ce_sum (unscaled sums over real tokens), grad_norm (global, before
 *          clipping); step graph: new.<name>, new_m.<name>, new_v.<name>; accumulate graph: grad_out.<name>;
 *          optional grad_norm.<name> per tensor.
 * A step whose loss or gradient norm is not finite outputs its inputs unchanged (so callers may write the new state
 * over the old state's buffers).
 */
import { GraphBuilder, gradients, type Graph, type Tensor } from '../graph/index.js';
import { expectedTensors, type LlamaConfig } from '../models/config.js';
import { buildLlamaGraph, LLAMA_IO, type WeightSource } from '../models/llamaGraph.js';
import { closedFormLogitGrad, combinedTokenLoss, tokenLosses, type LossOptions, type TeacherTensors } from './losses.js';
import { adamWUpdate, globalNorm, type AdamWOptions } from './optimizer.js';

export const TRAIN_IO = {
  inputIds: LLAMA_IO.inputIds,
  attentionMask: LLAMA_IO.attentionMask,
  labels: 'labels',
  teacherLogits: 'teacher_logits',
  teacherIds: 'teacher_ids',
  teacherLogprobs: 'teacher_logprobs',
  lossScale: 'loss_scale',
  lr: 'lr',
  step: 'step',
  loss: 'loss',
  kdSum: 'kd_sum',
  ceSum: 'ce_sum',
  gradNorm: 'grad_norm',
  m: (n: string) => `adam_m.${n}`,
  v: (n: string) => `adam_v.${n}`,
  gradAcc: (n: string) => `grad_acc.${n}`,
  newParam: (n: string) => `new.${n}`,
  newM: (n: string) => `new_m.${n}`,
  newV: (n: string) => `new_v.${n}`,
  gradOut: (n: string) => `grad_out.${n}`,
  tensorGradNorm: (n: string) => `grad_norm.${n}`,
} as const;

export type TeacherKind = 'dense' | 'sparse' | 'none';

export interface TrainGraphOptions {
  loss: LossOptions;
  adamw: AdamWOptions;
  teacher: TeacherKind;
  /** 'step': forward + backward + AdamW; 'accumulate': forward + backward, gradients added to grad_acc inputs. */
  mode: 'step' | 'accumulate';
  /** Step graph also takes grad_acc.<name> (the sum of earlier micro-batches' gradients). */
  withGradAcc: boolean;
  /** Output grad_norm.<name> per tensor (tests, parity). */
  perTensorGradNorms?: boolean;
  /** Closed-form logits gradient for CE / dense KL (default true); false = autodiff through the loss graph. */
  closedFormLossGrad?: boolean;
}

export interface TrainGraph {
  graph: Graph;
  /** Parameter names in graph-input order (expectedTensors order). */
  params: string[];
}

const trainingWeights = (): WeightSource => ({ tensor: (g, name, shape) => g.input(name, 'f32', shape) });

/** Student forward (all positions, no cache) into `g`; returns the logits tensor and the parameter inputs. */
function studentForward(g: GraphBuilder, config: LlamaConfig): { logits: Tensor; params: Map<string, Tensor> } {
  buildLlamaGraph(config, trainingWeights(), { cache: false, allPositions: true, builder: g });
  const out = g.graph.outputs.splice(0).find((o) => o.name === LLAMA_IO.logits)!;
  const params = new Map<string, Tensor>();
  for (const t of g.graph.inputs) {
    const name = (t.source as { name: string }).name;
    if (expectedTensors(config).has(name)) params.set(name, t);
  }
  return { logits: out.tensor, params };
}

function teacherInputs(g: GraphBuilder, kind: TeacherKind, vocab: number): TeacherTensors | null {
  if (kind === 'dense') return { kind, logits: g.input(TRAIN_IO.teacherLogits, 'f32', ['batch', 'seq', vocab]) };
  if (kind === 'sparse') {
    return { kind, ids: g.input(TRAIN_IO.teacherIds, 'i64', ['batch', 'seq', 'k']), logprobs: g.input(TRAIN_IO.teacherLogprobs, 'f32', ['batch', 'seq', 'k']) };
  }
  return null;
}

const sumAll = (g: GraphBuilder, t: Tensor) => g.reduceSum(t, [...Array(t.rank).keys()], false);

export function buildTrainGraph(config: LlamaConfig, opts: TrainGraphOptions): TrainGraph {
  const g = new GraphBuilder(`${config.modelType}_train_${opts.mode}`);
  const { logits, params } = studentForward(g, config);
  const names = [...expectedTensors(config).keys()];
  const labels = g.input(TRAIN_IO.labels, 'i64', ['batch', 'seq']);
  const teacher = teacherInputs(g, opts.teacher, config.vocabSize);
  const lossScale = g.input(TRAIN_IO.lossScale, 'f32', []);
  const lr = opts.mode === 'step' ? g.input(TRAIN_IO.lr, 'f32', []) : null;
  const step = opts.mode === 'step' ? g.input(TRAIN_IO.step, 'f32', []) : null;
  const moments = opts.mode === 'step'
    ? names.map((n) => ({ m: g.input(TRAIN_IO.m(n), 'f32', expectedTensors(config).get(n)!), v: g.input(TRAIN_IO.v(n), 'f32', expectedTensors(config).get(n)!) }))
    : null;
  const gradAcc = opts.mode === 'accumulate' || opts.withGradAcc
    ? names.map((n) => g.input(TRAIN_IO.gradAcc(n), 'f32', expectedTensors(config).get(n)!)) : null;

  const losses = tokenLosses(g, logits, labels, teacher, opts.loss);
  const loss = g.mul(sumAll(g, combinedTokenLoss(g, losses, opts.loss)), lossScale);
  g.output(TRAIN_IO.loss, loss);
  g.output(TRAIN_IO.ceSum, sumAll(g, losses.ce));
  g.output(TRAIN_IO.kdSum, losses.kd ? sumAll(g, losses.kd) : g.identity(g.constant(0)));

  const paramTensors = names.map((n) => params.get(n)!);
  const dLogits = opts.closedFormLossGrad === false ? null : closedFormLogitGrad(g, losses, opts.loss, g.mul(losses.valid, lossScale));
  const seeds = dLogits ? [{ tensor: logits, grad: dLogits }] : loss;
  const raw = gradients(g, seeds, paramTensors).map((d, i) => {
    if (!d) throw new Error(`internal: no gradient for ${names[i]}`);
    return d;
  });
  const grads = gradAcc ? raw.map((d, i) => g.add(d, gradAcc[i])) : raw;
  if (opts.perTensorGradNorms) names.forEach((n, i) => g.output(TRAIN_IO.tensorGradNorm(n), g.sqrt(sumAll(g, g.mul(grads[i], grads[i])))));
  if (opts.mode === 'accumulate') {
    names.forEach((n, i) => g.output(TRAIN_IO.gradOut(n), grads[i]));
    g.output(TRAIN_IO.gradNorm, globalNorm(g, raw));
    return { graph: g.graph, params: names };
  }
  const norm = globalNorm(g, grads);
  g.output(TRAIN_IO.gradNorm, norm);
  const isFinite = (t: Tensor) => g.not(g.or(g.op('IsNaN', [t]), g.op('IsInf', [t])));
  const finite = g.and(isFinite(loss), isFinite(norm)); // false: the update leaves every input value as it was
  const updated = adamWUpdate(g, names.map((_, i) => ({ param: paramTensors[i], grad: grads[i], ...moments![i] })), { lr: lr!, step: step! }, opts.adamw, norm, finite);
  names.forEach((n, i) => {
    g.output(TRAIN_IO.newParam(n), updated[i].param);
    g.output(TRAIN_IO.newM(n), updated[i].m);
    g.output(TRAIN_IO.newV(n), updated[i].v);
  });
  return { graph: g.graph, params: names };
}

/**
 * Validation graph: forward + per-token CE and KL(teacher ‖ student) at T = 1, summed over real tokens.
 * Outputs ce_sum, kd_sum (KL; 0 without a teacher).
 */
export function buildEvalGraph(config: LlamaConfig, teacherKind: TeacherKind, sparseTail: LossOptions['sparseTail']): TrainGraph {
  const g = new GraphBuilder(`${config.modelType}_eval`);
  const { logits } = studentForward(g, config);
  const labels = g.input(TRAIN_IO.labels, 'i64', ['batch', 'seq']);
  const teacher = teacherInputs(g, teacherKind, config.vocabSize);
  const losses = tokenLosses(g, logits, labels, teacher, { loss: 'kl', temperature: 1, alpha: 1, jsdBeta: 0.5, sparseTail });
  g.output(TRAIN_IO.ceSum, sumAll(g, losses.ce));
  g.output(TRAIN_IO.kdSum, losses.kd ? sumAll(g, losses.kd) : g.identity(g.constant(0)));
  return { graph: g.graph, params: [...expectedTensors(config).keys()] };
}
