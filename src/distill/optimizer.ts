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

/** √(Σ‖g‖²) over all gradients (f32 scalar). */
export function globalNorm(g: GraphBuilder, grads: Tensor[]): Tensor {
  const squares = grads.map((d) => g.reduceSum(g.mul(d, d), [...Array(d.rank).keys()], false));
  return g.sqrt(squares.reduce((a, b) => g.add(a, b)));
}

/**
 * One AdamW update of every parameter. Clipping (torch.nn.utils.clip_grad_norm_: coef = min(1, max/(norm + 1e-6)))
 * scales the gradient, folded into the moment coefficients so it costs no extra pass over the weights:
 *   m' = β1·m + (1−β1)·c·g,  v' = β2·v + (1−β2)·c²·g²,
 *   p' = p·(1 − lr·wd) − lr/(1−β1ᵗ) · m' / (√v' / √(1−β2ᵗ) + ε)   (13 elementwise passes per parameter)
 */
export function adamWUpdate(g: GraphBuilder, params: AdamWParam[], inputs: AdamWInputs, opts: AdamWOptions, gradNorm: Tensor) {
  return g.scope('adamw', () => {
    const { beta1: b1, beta2: b2, eps } = opts;
    const clip = opts.maxGradNorm > 0 && Number.isFinite(opts.maxGradNorm)
      ? g.min(g.div(g.constant(opts.maxGradNorm), g.add(gradNorm, 1e-6)), 1) : g.constant(1);
    const gradCoef = g.mul(clip, 1 - b1);
    const sqCoef = g.mul(g.mul(clip, clip), 1 - b2);
    // m'/(√v'/√bc2 + ε)·lr/bc1 = m'/(√v' + ε√bc2)·(lr·√bc2/bc1): the bias corrections become two scalars.
    const sqrtBc2 = g.sqrt(g.sub(1, g.pow(g.constant(b2), inputs.step)));
    const stepSize = g.div(g.mul(inputs.lr, sqrtBc2), g.sub(1, g.pow(g.constant(b1), inputs.step)));
    const epsHat = g.mul(sqrtBc2, eps);
    const decay = g.sub(1, g.mul(inputs.lr, opts.weightDecay));
    return params.map(({ param, grad, m, v }) => {
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
export function learningRate(s: ScheduleOptions, step: number): number {
  const i = step - 1; // HF schedules are indexed from 0 (the lr used by the first step)
  if (i < s.warmupSteps) return (s.lr * i) / Math.max(1, s.warmupSteps);
  if (s.kind === 'constant') return s.lr;
  const progress = Math.min(1, (i - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps));
  const floor = s.minLrRatio ?? 0;
  const factor = s.kind === 'cosine' ? 0.5 * (1 + Math.cos(Math.PI * progress)) : 1 - progress;
  return s.lr * (floor + (1 - floor) * factor);
}
