/**
 * AdamW as graph nodes (decoupled weight decay, bias correction; Loshchilov & Hutter 2019, PyTorch's torch.optim.AdamW)
 * with global-norm gradient clipping folded into the moment updates, plus the learning-rate schedule (computed in JS
 * and fed to the graph as an input each step).
 */
import type { GraphBuilder, Tensor } from '../graph/index.js';

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global L2 norm of the gradients to this (0 or Infinity = no clipping). */
  maxGradNorm: number;
}

export const DEFAULT_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, maxGradNorm: 1 };

/**
 * HF Trainer's convention: no weight decay on norm weights (and biases); decay on matrices and embeddings.
 * Applied to parameters of rank >= 2.
 */
export const decays = (shape: readonly number[]): boolean => shape.length >= 2;

export interface AdamWInputs {
  /** f32 scalar: learning rate of this step. */
  lr: Tensor;
  /** f32 scalar: 1-based optimizer step (bias correction). */
  step: Tensor;
}

export interface AdamWParam { param: Tensor; grad: Tensor; m: Tensor; v: Tensor }

/** ‖t‖² as an f32 scalar, in one pass (no t² tensor). */
export const sumOfSquares = (g: GraphBuilder, t: Tensor): Tensor => g.op('ReduceSumSquare', [t], { axes: [...Array(t.rank).keys()], keepdims: false });

/** √(Σ‖g‖²) over all gradients (f32 scalar). */
export function globalNorm(g: GraphBuilder, grads: Tensor[]): Tensor {
  return g.sqrt(grads.map((d) => sumOfSquares(g, d)).reduce((a, b) => g.add(a, b)));
}

/**
 * One AdamW update of every parameter. Clipping (torch.nn.utils.clip_grad_norm_: coef = min(1, max/(norm + 1e-6)))
 * scales the gradient, folded into the moment coefficients so it costs no extra pass over the weights:
 *   m' = β1·m + (1−β1)·c·g,  v' = β2·v + (1−β2)·c²·g²,
 *   p' = p·(1 − lr·wd) − lr/(1−β1ᵗ) · m' / (√v' / √(1−β2ᵗ) + ε)   (13 elementwise passes per parameter)
 * `finite` (bool scalar): when false the step is a no-op — gradients are zeroed and the coefficients become
 * β1 = β2 = decay = 1, step size 0 — so m' = m, v' = v and p' = p exactly. This lets the caller write the outputs
 * over the inputs' buffers (no NaN/Inf can reach the state) at the cost of one pass over the gradients.
 */
export function adamWUpdate(g: GraphBuilder, params: AdamWParam[], inputs: AdamWInputs, opts: AdamWOptions, gradNorm: Tensor, finite?: Tensor) {
  return g.scope('adamw', () => {
    const { eps } = opts;
    const when = (value: Tensor | number, noop: number): Tensor | number => (finite ? g.where(finite, value, noop) : value);
    const b1 = when(opts.beta1, 1), b2 = when(opts.beta2, 1);
    const clip = opts.maxGradNorm > 0 && Number.isFinite(opts.maxGradNorm)
      ? g.min(g.div(g.constant(opts.maxGradNorm), g.add(gradNorm, 1e-6)), 1) : g.constant(1);
    const gradCoef = when(g.mul(clip, 1 - opts.beta1), 0);
    const sqCoef = when(g.mul(g.mul(clip, clip), 1 - opts.beta2), 0);
    // m'/(√v'/√bc2 + ε)·lr/bc1 = m'/(√v' + ε√bc2)·(lr·√bc2/bc1): the bias corrections become two scalars.
    const sqrtBc2 = g.sqrt(g.sub(1, g.pow(g.constant(opts.beta2), inputs.step)));
    const stepSize = when(g.div(g.mul(inputs.lr, sqrtBc2), g.sub(1, g.pow(g.constant(opts.beta1), inputs.step))), 0);
    const epsHat = g.mul(sqrtBc2, eps);
    const decay = when(g.sub(1, g.mul(inputs.lr, opts.weightDecay)), 1);
    return params.map(({ param, grad: raw, m, v }) => {
      const grad = finite ? g.where(finite, raw, 0) : raw; // NaN·0 is NaN: zero the gradient itself
      const m2 = g.add(g.mul(m, b1), g.mul(grad, gradCoef));
      const v2 = g.add(g.mul(v, b2), g.mul(g.mul(grad, grad), sqCoef));
      const decayed = opts.weightDecay && decays(param.shape as number[]) ? g.mul(param, decay) : param;
      const p2 = g.sub(decayed, g.mul(g.div(m2, g.add(g.sqrt(v2), epsHat)), stepSize));
      return { param: p2, m: m2, v: v2 };
    });
  });
}

export interface ScheduleOptions {
  /** Peak learning rate. */
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  kind: 'cosine' | 'linear' | 'constant';
  /** Floor as a fraction of lr at the end of the decay (default 0). */
  minLrRatio?: number;
}

/** Learning rate for 1-based optimizer step `step`: linear warmup to lr, then cosine/linear decay (HF get_*_schedule_with_warmup). */
/** Warmup as trainers take it: whole steps, or a fraction of all steps below 1 (rounded up, as transformers does). */
export function warmupSteps(warmup: number | undefined, totalSteps: number): number {
  if (warmup === undefined) return 0;
  if (!(warmup >= 0) || (warmup >= 1 && !Number.isInteger(warmup))) throw new RangeError(`warmup must be a whole number of steps or a fraction below 1, got ${warmup}`);
  return warmup < 1 ? Math.ceil(warmup * totalSteps) : warmup;
}

export function learningRate(s: ScheduleOptions, step: number): number {
  const i = step - 1; // HF schedules are indexed from 0 (the lr used by the first step)
  if (i < s.warmupSteps) return (s.lr * i) / Math.max(1, s.warmupSteps);
  if (s.kind === 'constant') return s.lr;
  const progress = Math.min(1, (i - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps));
  const floor = s.minLrRatio ?? 0;
  const factor = s.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return s.lr * (floor + (1 - floor) * factor);
}
