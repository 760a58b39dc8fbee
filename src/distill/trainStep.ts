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
import { GraphBuilder, gradients, type Graph, type GradientSeed, type Tensor } from '../graph/index.js';
import { expectedTensors, type LlamaConfig } from '../models/config.js';
import { buildLlamaGraph, LLAMA_IO, type WeightSource } from '../models/llamaGraph.js';
import { closedFormLogitGrad, combinedTokenLoss, tokenLosses, type LossOptions, type TeacherTensors } from './losses.js';
import { adamWUpdate, globalNorm, sumOfSquares, type AdamWOptions } from './optimizer.js';

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
  /** Token chunks for the LM head and loss (default: defaultLmHeadChunks(vocab)); a batch needs ≥ this many positions. */
  lmHeadChunks?: number;
}

export interface TrainGraph {
  graph: Graph;
  /** Parameter names in graph-input order (expectedTensors order). */
  params: string[];
}

const trainingWeights = (): WeightSource => ({ tensor: (g, name, shape) => g.input(name, 'f32', shape) });

/**
 * Student forward (all positions, no cache) into `g`: the logits, or with `headless` the final norm's output (the
 * caller applies the LM head); plus the parameter inputs by name.
 */
function studentForward(g: GraphBuilder, config: LlamaConfig, headless = false): { out: Tensor; params: Map<string, Tensor> } {
  buildLlamaGraph(config, trainingWeights(), { cache: false, allPositions: true, builder: g, lmHead: !headless });
  const out = g.graph.outputs.splice(0).find((o) => o.name === (headless ? LLAMA_IO.hidden : LLAMA_IO.logits))!;
  const params = new Map<string, Tensor>();
  for (const t of g.graph.inputs) {
    const name = (t.source as { name: string }).name;
    if (expectedTensors(config).has(name)) params.set(name, t);
  }
  return { out: out.tensor, params };
}

/**
 * Chunks of tokens the LM head and loss run in (1 = the whole batch at once). With a large vocabulary the
 * [tokens × vocab] tensors (logits, log-probabilities, teacher probabilities, their gradient) dominate a step's
 * memory; in chunks only one chunk's exist at a time.
 */
export const defaultLmHeadChunks = (vocab: number): number => (vocab >= 8192 ? 8 : 1);

interface HeadLoss { loss: Tensor; ceSum: Tensor; kdSum: Tensor }

/**
 * LM head + loss (+ with `grad`, the closed-form or autodiff logits gradient) over `chunks` slices of the tokens, one
 * after the other (Liger-Kernel's fused linear cross-entropy, as graph nodes). Each chunk's inputs depend on the
 * previous chunk's finished results through a zero-valued scalar, so ORT cannot start a chunk before the last one's
 * vocabulary-sized tensors are dead. The chunks' logits gradients are joined for the two big backward GEMMs, as in
 * the unchunked graph. Returns the loss sums (the loss × lossScale), and with `grad` d(loss)/d(hidden), d(loss)/d(W).
 */
function chunkedLmHead(g: GraphBuilder, hidden: Tensor, W: Tensor, labels: Tensor, teacher: TeacherTensors | null, loss: LossOptions, chunks: number, config: LlamaConfig, grad: { lossScale: Tensor; closedForm: boolean }): HeadLoss & { dHidden: Tensor; dW: Tensor };
function chunkedLmHead(g: GraphBuilder, hidden: Tensor, W: Tensor, labels: Tensor, teacher: TeacherTensors | null, loss: LossOptions, chunks: number, config: LlamaConfig): HeadLoss;
function chunkedLmHead(g: GraphBuilder, hidden: Tensor, W: Tensor, labels: Tensor, teacher: TeacherTensors | null, loss: LossOptions, chunks: number, config: LlamaConfig, grad?: { lossScale: Tensor; closedForm: boolean }): HeadLoss & { dHidden?: Tensor; dW?: Tensor } {
  const H = config.hiddenSize, V = config.vocabSize;
  const pieces = g.scope('lm_head_chunks', () => {
    // Token rows are viewed as [1, tokens, ·] and split on axis 1 into ⌊(c+1)·n/chunks⌋ − ⌊c·n/chunks⌋ rows: no piece
    // is empty when n ≥ chunks (ORT's broadcasting rejects some empty shapes; the runner uses an unchunked graph below).
    const rowsOf = (t: Tensor) => g.reshape(t, t.rank === 2 ? [1, -1] : [1, -1, 0]);
    const n = g.shape(rowsOf(labels), 1, 2);
    const bound = (c: number) => g.div(g.mul(n, c), chunks);
    const sizes = g.concat(Array.from({ length: chunks }, (_, c) => g.sub(bound(c + 1), bound(c))), 0);
    const split = (t: Tensor) => g.opMulti('Split', [rowsOf(t), sizes], { axis: 1, pieces: chunks, dim: 'chunk' });
    return {
      x: split(hidden), labels: split(labels),
      t: !teacher ? null : teacher.kind === 'dense' ? { logits: split(teacher.logits) } : { ids: split(teacher.ids), logprobs: split(teacher.logprobs) },
    };
  });
  const sums: HeadLoss[] = [];
  const dz: Tensor[] = [];
  let after: Tensor | null = null; // 0, computed from the previous chunk's results (a data dependency, no value)
  for (let c = 0; c < chunks; c++) {
    g.scope(`chunk${c}`, () => {
      // The chunk's rows and labels wait for the previous chunk; every teacher pass starts from the labels' mask.
      const x = after ? g.add(pieces.x[c], after) : pieces.x[c];
      const labelsC = after ? g.add(pieces.labels[c], g.cast(after, 'i64')) : pieces.labels[c];
      const t = pieces.t;
      const tc: TeacherTensors | null = !teacher || !t ? null : teacher.kind === 'dense'
        ? { kind: 'dense', logits: t.logits![c] } : { kind: 'sparse', ids: t.ids![c], logprobs: t.logprobs![c] };
      const z = g.matMul(x, W, { transB: true });
      const losses = tokenLosses(g, z, labelsC, tc, loss);
      const total = sumAll(g, combinedTokenLoss(g, losses, loss));
      const sum: HeadLoss = { loss: total, ceSum: sumAll(g, losses.ce), kdSum: losses.kd ? sumAll(g, losses.kd) : g.constant(0) };
      sums.push(sum);
      let last = g.add(sum.loss, g.add(sum.ceSum, sum.kdSum));
      if (grad) {
        const closed = grad.closedForm ? closedFormLogitGrad(g, losses, loss, g.mul(losses.valid, grad.lossScale)) : null;
        const d = g.reshape(closed ?? gradients(g, g.mul(total, grad.lossScale), [z])[0]!, [-1, V]);
        dz.push(d);
        last = g.add(last, sumAll(g, g.slice(d, [0], [1], [0])));
      }
      after = g.mul(g.cast(g.op('IsNaN', [last]), 'f32'), 0); // exactly 0 even when `last` is NaN or ±Inf
    });
  }
  const total = (k: keyof HeadLoss) => sums.map((s) => s[k]).reduce((a, b) => g.add(a, b));
  const sum = { loss: grad ? g.mul(total('loss'), grad.lossScale) : total('loss'), ceSum: total('ceSum'), kdSum: total('kdSum') };
  if (!grad) return sum;
  return g.scope('lm_head_grad', () => {
    const dZ = g.concat(dz, 0); // [tokens, V]
    const x2 = g.concat(pieces.x.map((x) => g.reshape(x, [-1, H])), 0); // the rows in dZ's (symbolic) order
    const dHidden = g.op('ReshapeLike', [g.matMul(dZ, W), hidden]);
    // (xᵀ·dZ)ᵀ: MLAS is faster on [H, tokens]·[tokens, V] than with the large dZ transposed (as autodiff's Linear rule).
    const dW = g.transpose(g.matMul(g.transpose(x2, [1, 0]), dZ), [1, 0]);
    return { ...sum, dHidden, dW };
  });
}

/** The LM head's weight input: the tied embedding, or lm_head.weight (created when the headless forward made none). */
function headWeight(g: GraphBuilder, config: LlamaConfig, params: Map<string, Tensor>): { name: string; W: Tensor } {
  const name = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  if (!params.has(name)) params.set(name, g.input(name, 'f32', expectedTensors(config).get(name)!));
  return { name, W: params.get(name)! };
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
  const chunks = opts.lmHeadChunks ?? defaultLmHeadChunks(config.vocabSize);
  const { out, params } = studentForward(g, config, chunks > 1);
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

  let head: HeadLoss, seeds: GradientSeed[] | Tensor;
  let headGrad: { name: string; dW: Tensor } | null = null;
  if (chunks > 1) {
    const { name, W } = headWeight(g, config, params);
    const h = chunkedLmHead(g, out, W, labels, teacher, opts.loss, chunks, config, { lossScale, closedForm: opts.closedFormLossGrad !== false });
    head = h;
    seeds = [{ tensor: out, grad: h.dHidden }];
    headGrad = { name, dW: h.dW };
  } else {
    const losses = tokenLosses(g, out, labels, teacher, opts.loss);
    head = { loss: g.mul(sumAll(g, combinedTokenLoss(g, losses, opts.loss)), lossScale), ceSum: sumAll(g, losses.ce), kdSum: losses.kd ? sumAll(g, losses.kd) : g.constant(0) };
    const dLogits = opts.closedFormLossGrad === false ? null : closedFormLogitGrad(g, losses, opts.loss, g.mul(losses.valid, lossScale));
    seeds = dLogits ? [{ tensor: out, grad: dLogits }] : head.loss;
  }
  const loss = head.loss;
  g.output(TRAIN_IO.loss, loss);
  g.output(TRAIN_IO.ceSum, head.ceSum);
  g.output(TRAIN_IO.kdSum, head.kdSum.source.kind === 'node' ? head.kdSum : g.identity(head.kdSum));

  const paramTensors = names.map((n) => params.get(n)!);
  const raw = gradients(g, seeds, paramTensors).map((d, i) => {
    if (headGrad && names[i] === headGrad.name) return d ? g.add(d, headGrad.dW) : headGrad.dW; // tied: gather path + head
    if (!d) throw new Error(`internal: no gradient for ${names[i]}`);
    return d;
  });
  const grads = gradAcc ? raw.map((d, i) => g.add(d, gradAcc[i])) : raw;
  if (opts.perTensorGradNorms) names.forEach((n, i) => g.output(TRAIN_IO.tensorGradNorm(n), g.sqrt(sumOfSquares(g, grads[i]))));
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
 * Validation graph: forward + per-token CE and KL(teacher ‖ student) at T = 1, summed over real tokens (the LM head in
 * `lmHeadChunks` token chunks, as in training). Outputs ce_sum, kd_sum (KL; 0 without a teacher).
 */
export function buildEvalGraph(config: LlamaConfig, teacherKind: TeacherKind, sparseTail: LossOptions['sparseTail'], lmHeadChunks = defaultLmHeadChunks(config.vocabSize)): TrainGraph {
  const g = new GraphBuilder(`${config.modelType}_eval`);
  const { out, params } = studentForward(g, config, lmHeadChunks > 1);
  const labels = g.input(TRAIN_IO.labels, 'i64', ['batch', 'seq']);
  const teacher = teacherInputs(g, teacherKind, config.vocabSize);
  const loss: LossOptions = { loss: 'kl', temperature: 1, alpha: 1, jsdBeta: 0.5, sparseTail };
  if (lmHeadChunks > 1) {
    const head = chunkedLmHead(g, out, headWeight(g, config, params).W, labels, teacher, loss, lmHeadChunks, config);
    g.output(TRAIN_IO.ceSum, head.ceSum);
    g.output(TRAIN_IO.kdSum, teacher ? head.kdSum : g.identity(g.constant(0)));
  } else {
    const losses = tokenLosses(g, out, labels, teacher, loss);
    g.output(TRAIN_IO.ceSum, sumAll(g, losses.ce));
    g.output(TRAIN_IO.kdSum, losses.kd ? sumAll(g, losses.kd) : g.identity(g.constant(0)));
  }
  return { graph: g.graph, params: [...expectedTensors(config).keys()] };
}
