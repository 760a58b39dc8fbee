/**
 * Distillation and language-model losses as graph fragments, per token ([batch, seq]); the caller masks, sums and
 * scales them. All divergences work on log-probabilities along the last axis, so the same code serves dense teacher
 * logits (over the vocabulary) and sparse top-k teachers (over k ids plus a tail bucket).
 *
 * - kl:  T² · KL(p_T ‖ q_T)            (Hinton et al. 2015, forward KL on temperature-softened distributions)
 * - rkl: T² · KL(q_T ‖ p_T)            (reverse KL, mode seeking)
 * - jsd: T² · [β KL(p_T ‖ m) + (1−β) KL(q_T ‖ m)], m = β p_T + (1−β) q_T  (generalized JSD as in TRL's GKD)
 * - ce:  −log q(label) at T = 1
 * Positions whose label is -100 carry no loss: their terms are selected away with Where (never multiplied by 0), so a
 * non-finite teacher or student value there cannot turn the sum into NaN.
 *
 * Sparse teachers give log p (at T = 1) of their top-k ids. Tail handling (`sparseTail`):
 * - 'bucket' (default): the k ids plus one "rest of the vocabulary" bucket, of mass r = 1 − Σ p(ids) for the teacher
 *   and 1 − Σ q(ids) for the student (both at T = 1). Both sides are softened the same way, the tail as one
 *   pseudo-token: softmax([log p(ids), log r] / T) and softmax([log q(ids), log(1 − Σ q(ids))] / T). A student
 *   equal to its teacher has zero loss and zero gradient at every T; no probability mass is invented or dropped.
 * - 'renormalize': both distributions restricted to the top-k ids and renormalized there (tail ignored).
 */
import type { GraphBuilder, Tensor } from '../graph/index.js';

export type LossKind = 'kl' | 'rkl' | 'jsd' | 'ce';
export const LOSS_KINDS: readonly LossKind[] = ['kl', 'rkl', 'jsd', 'ce'];

export interface LossOptions {
  loss: LossKind;
  /** Softening temperature of KD losses (default 2). */
  temperature: number;
  /** total = alpha·KD + (1−alpha)·CE (ignored for loss 'ce'). */
  alpha: number;
  /** JSD mixing weight β in (0, 1). */
  jsdBeta: number;
  sparseTail: 'bucket' | 'renormalize';
}

export const DEFAULT_LOSS: LossOptions = { loss: 'kl', temperature: 2, alpha: 0.5, jsdBeta: 0.5, sparseTail: 'bucket' };

export type TeacherTensors =
  | { kind: 'dense'; logits: Tensor /* [batch, seq, vocab] */ }
  | { kind: 'sparse'; ids: Tensor /* i64 [batch, seq, k] */; logprobs: Tensor /* [batch, seq, k] */ };

/** Floor for log-probabilities: keeps exp() = 0 terms finite (0·(−1e30 − x) = 0, whereas 0·(−∞) = NaN). */
const LOG_FLOOR = -1e30;
const TINY = 1e-30;

/** Σ p·(lp − lq) over the last axis → [...] (p = exp(lp) unless given). */
function kl(g: GraphBuilder, lp: Tensor, lq: Tensor, p = g.exp(lp)): Tensor {
  return g.reduceSum(g.mul(p, g.sub(lp, lq)), [-1], false);
}

/** The divergence `kind` between teacher log-probs lp and student log-probs lq along the last axis. */
export function divergence(g: GraphBuilder, kind: Exclude<LossKind, 'ce'>, lp: Tensor, lq: Tensor, beta: number): Tensor {
  if (kind === 'kl') return kl(g, lp, lq);
  if (kind === 'rkl') return kl(g, lq, lp);
  if (!(beta > 0 && beta < 1)) throw new Error(`jsd needs 0 < beta < 1, got ${beta}`);
  const m = g.add(g.mul(g.exp(lp), beta), g.mul(g.exp(lq), 1 - beta));
  const lm = g.log(g.max(m, TINY));
  return g.add(g.mul(kl(g, lp, lm), beta), g.mul(kl(g, lq, lm), 1 - beta));
}

export interface TokenLosses {
  /** 1 where the label is a real target, else 0 (f32 [batch, seq]). */
  valid: Tensor;
  validMask: Tensor;
  /** −log q(label), 0 at ignored positions. */
  ce: Tensor;
  /** KD divergence × T², 0 at ignored positions; null without a teacher. */
  kd: Tensor | null;
  /** Pieces the closed-form gradient reuses: log q, log q_T, and for a dense teacher p_T. */
  logq: Tensor;
  logqT: Tensor;
  safeLabels: Tensor;
  teacherProbs: Tensor | null;
}

/** Per-token losses of student `logits` [batch, seq, vocab] against `labels` (i64, -100 = ignore) and a teacher. */
export function tokenLosses(g: GraphBuilder, logits: Tensor, labels: Tensor, teacher: TeacherTensors | null, opts: LossOptions): TokenLosses {
  return g.scope('loss', () => {
    const validMask = g.not(g.equal(labels, -100));
    const valid = g.cast(validMask, 'f32');
    const masked = (x: Tensor) => g.where(validMask, x, 0);
    const safeLabels = g.unsqueeze(g.where(validMask, labels, 0, 'i64'), [2]);
    const logq = g.logSoftmax(logits, -1);
    const ce = masked(g.neg(g.squeeze(g.op('GatherElements', [logq, safeLabels], { axis: 2 }), [2])));
    if (!teacher || opts.loss === 'ce') return { valid, validMask, ce, kd: null, logq, logqT: logq, safeLabels, teacherProbs: null };

    const T = opts.temperature;
    if (!(T > 0)) throw new Error(`temperature must be > 0, got ${T}`);
    const logqT = T === 1 ? logq : g.logSoftmax(g.mul(logits, 1 / T), -1);
    let lp: Tensor, lq: Tensor;
    // Teacher values at ignored positions are replaced before use: the backward pass multiplies them by zero
    // gradients, and 0·NaN would still be NaN.
    const valid3 = g.unsqueeze(validMask, [2]);
    if (teacher.kind === 'dense') {
      const kept = g.where(valid3, teacher.logits, 0); // first, so every teacher pass follows the labels (chunk order)
      lp = g.logSoftmax(g.max(T === 1 ? kept : g.mul(kept, 1 / T), LOG_FLOOR), -1);
      lq = logqT;
    } else {
      const ids = g.where(valid3, g.cast(teacher.ids, 'i64'), 0, 'i64');
      const lpk = g.max(g.where(valid3, teacher.logprobs, 0), LOG_FLOOR);
      if (opts.sparseTail === 'renormalize') {
        lp = g.logSoftmax(g.mul(lpk, 1 / T), -1);
        lq = g.logSoftmax(g.op('GatherElements', [logqT, ids], { axis: 2 }), -1); // student log q_T at the teacher's ids
      } else {
        // k ids + tail bucket at T = 1 for both, then softened alike.
        const buckets = (lk: Tensor) => {
          const tail = g.max(g.sub(1, g.reduceSum(g.exp(lk), [-1])), TINY); // [batch, seq, 1]
          return g.logSoftmax(g.mul(g.concat([lk, g.log(tail)], -1), 1 / T), -1);
        };
        lp = buckets(lpk);
        lq = buckets(g.op('GatherElements', [logq, ids], { axis: 2 }));
      }
    }
    const teacherProbs = teacher.kind === 'dense' && opts.loss === 'kl' ? g.exp(lp) : null;
    const div = teacherProbs ? kl(g, lp, lq, teacherProbs) : divergence(g, opts.loss, lp, lq, opts.jsdBeta);
    const kd = masked(g.mul(div, T * T));
    return { valid, validMask, ce, kd, logq, logqT, safeLabels, teacherProbs };
  });
}

/** Σ over tokens of alpha·kd + (1−alpha)·ce (CE only without a teacher or for loss 'ce'). */
export function combinedTokenLoss(g: GraphBuilder, l: TokenLosses, opts: LossOptions): Tensor {
  if (!l.kd) return l.ce;
  if (opts.alpha === 1) return l.kd;
  if (opts.alpha === 0) return l.ce;
  return g.add(g.mul(l.kd, opts.alpha), g.mul(l.ce, 1 - opts.alpha));
}

/**
 * Closed-form d(Σ_t w_t·(alpha·kd_t + (1−alpha)·ce_t))/d logits for CE and dense forward KL, where the chain rule
 * through the loss graph would cost ~2× the [tokens × vocab] passes:
 *   d ce/dz = softmax(z) − onehot(label),   d (T²·KL(p_T ‖ q_T))/dz = T·(softmax(z/T) − p_T).
 * `weight` [batch, seq] is 0 at ignored positions. Returns null for losses that go through autodiff (rkl, jsd, sparse).
 */
export function closedFormLogitGrad(g: GraphBuilder, l: TokenLosses, opts: LossOptions, weight: Tensor): Tensor | null {
  const ceOnly = !l.kd || opts.alpha === 0;
  if (!ceOnly && !l.teacherProbs) return null;
  return g.scope('loss_grad', () => {
    const w = g.unsqueeze(weight, [2]);
    const ceCoef = ceOnly ? w : g.mul(w, 1 - opts.alpha);
    const minusOne = g.op('ExpandLike', [g.constant(-1), l.safeLabels]);
    const dce = g.op('ScatterElements', [g.exp(l.logq), l.safeLabels, minusOne], { axis: 2, reduction: 'add' }); // softmax − onehot
    if (ceOnly) return g.mul(dce, ceCoef);
    const kdCoef = g.mul(w, opts.alpha * opts.temperature);
    const dkd = g.sub(g.exp(l.logqT), l.teacherProbs!);
    return opts.alpha === 1 ? g.mul(dkd, kdCoef) : g.add(g.mul(dkd, kdCoef), g.mul(dce, ceCoef));
  });
}
