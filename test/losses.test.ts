/** KD losses on sparse top-k teachers: a student equal to its teacher has zero loss and zero gradient at every temperature. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder, gradients, toOnnxBytes } from '../src/graph/index.js';
import { Session, feeds } from '../src/runtime/index.js';
import { DEFAULT_LOSS, tokenLosses, type LossKind } from '../src/distill/losses.js';

const S = 6, V = 40, K = 8;

/** Σ kd and d(Σ kd)/d logits for student `logits` against a sparse teacher (top-K of `teacherLogits`, log-probs at T = 1). */
async function sparseKD(loss: Exclude<LossKind, 'ce'>, T: number, logits: Float32Array, teacherLogits: Float32Array) {
  const g = new GraphBuilder('kd');
  const z = g.input('logits', 'f32', [1, S, V]);
  const l = tokenLosses(g, z, g.input('labels', 'i64', [1, S]),
    { kind: 'sparse', ids: g.input('ids', 'i64', [1, S, K]), logprobs: g.input('logprobs', 'f32', [1, S, K]) },
    { ...DEFAULT_LOSS, loss, temperature: T, alpha: 1 });
  const total = g.reduceSum(l.kd!, [0, 1], false);
  g.output('kd', total);
  g.output('dz', gradients(g, total, [z])[0]!);
  const ids: number[] = [], logprobs: number[] = [];
  for (let s = 0; s < S; s++) {
    const row = Array.from(teacherLogits.subarray(s * V, (s + 1) * V));
    const lse = Math.log(row.reduce((a, x) => a + Math.exp(x), 0));
    const top = row.map((x, i) => [x, i] as const).sort((a, b) => b[0] - a[0]).slice(0, K);
    for (const [x, i] of top) { ids.push(i); logprobs.push(x - lse); }
  }
  const session = await Session.create(toOnnxBytes(g.graph), { threads: 1 });
  try {
    const out = await session.run({
      logits: feeds.f32(logits, [1, S, V]), labels: feeds.i64(Array.from({ length: S }, (_, i) => (i === 2 ? -100 : i)), [1, S]),
      ids: feeds.i64(ids, [1, S, K]), logprobs: feeds.f32(Float32Array.from(logprobs), [1, S, K]),
    });
    return { kd: (out.kd.data as Float32Array)[0], maxGrad: Math.max(...Array.from(out.dz.data as Float32Array, Math.abs)) };
  } finally {
    await session.dispose();
  }
}

test('sparse top-k KD (tail bucket): zero loss and gradient for a student equal to its teacher, positive otherwise', async () => {
  let seed = 7;
  const rand = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 6;
  const teacher = Float32Array.from({ length: S * V }, rand);
  const other = Float32Array.from(teacher, (x) => x + rand() * 0.3);
  for (const loss of ['kl', 'rkl', 'jsd'] as const) {
    for (const T of [1, 2, 4]) {
      const same = await sparseKD(loss, T, teacher, teacher);
      assert.ok(Math.abs(same.kd) < 1e-5, `${loss} T=${T}: loss ${same.kd} for the teacher itself`);
      assert.ok(same.maxGrad < 1e-5, `${loss} T=${T}: gradient ${same.maxGrad} for the teacher itself`);
      const differs = await sparseKD(loss, T, other, teacher);
      assert.ok(differs.kd > 1e-3 && differs.maxGrad > 1e-3, `${loss} T=${T}: ${differs.kd}, ${differs.maxGrad} for another student`);
    }
  }
});
