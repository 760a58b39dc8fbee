import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Sampler,
  StopStringBuffer,
  TokenHistory,
  Xoshiro128ss,
  applyMinP,
  applyRepetitionPenalty,
  applyTemperature,
  applyTopK,
  applyTopP,
  argmax,
  sampleFromLogits,
  softmax,
  type SamplingParams,
} from '../src/generate/index.js';

const f32 = (xs: number[]) => Float32Array.from(xs);
const logOf = (ps: number[]) => f32(ps.map(Math.log));
const kept = (x: Float32Array) => [...x].flatMap((v, i) => (v > -Infinity ? [i] : []));

test('repetition penalty: divides positive, multiplies negative, once per distinct token (HF/CTRL)', () => {
  const x = f32([2, -1, 0.5, -3, 1]);
  applyRepetitionPenalty(x, [0, 1, 1, 3, 99], 2);
  assert.deepEqual([...x], [1, -2, 0.5, -6, 1]);
  const y = f32([2, -1, 0.5]);
  applyRepetitionPenalty(y, new TokenHistory([2, 2, 0]), 0.5); // < 1 encourages repeats
  assert.deepEqual([...y], [4, -1, 1]);
});

test('temperature scales logits by 1/T', () => {
  const x = f32([2, -1, 0]);
  applyTemperature(x, 0.5);
  assert.deepEqual([...x], [4, -2, 0]);
});

test('top-k keeps the k largest, and ties with the k-th (HF)', () => {
  const x = f32([1, 3, 2, 3, 0]);
  applyTopK(x, 2);
  assert.deepEqual(kept(x), [1, 3]);
  const y = f32([1, 3, 2, 3, 0]);
  applyTopK(y, 3);
  assert.deepEqual(kept(y), [1, 2, 3]);
  const z = f32([1, 2, 2, 2, 0]);
  applyTopK(z, 2);
  assert.deepEqual(kept(z), [1, 2, 3]);
  const w = f32([1, -Infinity, 2]);
  applyTopK(w, 5); // k >= vocab: no-op
  assert.deepEqual(kept(w), [0, 2]);
  const big = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i * 7.1));
  const ref = [...big].map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 40).map((p) => p[1]).sort((a, b) => a - b);
  applyTopK(big, 40);
  assert.deepEqual(kept(big), ref);
});

test('top-p keeps the smallest most-probable set reaching p (HF nucleus)', () => {
  const probs = [0.1, 0.4, 0.2, 0.3];
  // Descending 0.4 (id 1), 0.3 (id 3), 0.2 (id 2), 0.1 (id 0); the token crossing p is kept.
  const cases: [number, number[]][] = [[0.3, [1]], [0.6, [1, 3]], [0.75, [1, 2, 3]], [0.95, [0, 1, 2, 3]], [1, [0, 1, 2, 3]], [1e-9, [1]]];
  for (const [p, expected] of cases) {
    const x = logOf(probs);
    applyTopP(x, p);
    assert.deepEqual(kept(x), expected, `topP ${p}`);
  }
  const uniform = f32([0, 0, 0, 0]); // exact boundary: 2 × 0.25 reaches 0.5, so the rest go (HF removes cumsum <= 1 - p)
  applyTopP(uniform, 0.5);
  assert.deepEqual(kept(uniform), [0, 1]);
  const afterTopK = f32([0, 5, -Infinity, 4.9, -Infinity]);
  applyTopP(afterTopK, 0.5);
  assert.deepEqual(kept(afterTopK), [1]); // e^5 / (1 + e^5 + e^4.9) = 0.52 >= 0.5; removed tokens don't count
});

/** HF TopPLogitsWarper transcribed literally: ascending sort, cumulative softmax, drop cumsum <= 1 - p, keep the top one. */
function hfTopP(logits: Float32Array, p: number): number[] {
  const idx = [...logits.keys()].sort((a, b) => logits[a] - logits[b] || b - a);
  const max = Math.max(...logits);
  const e = idx.map((i) => Math.exp(logits[i] - max));
  const z = e.reduce((a, b) => a + b);
  let cum = 0;
  const keep: number[] = [];
  idx.forEach((i, j) => {
    cum += e[j] / z;
    if (cum > 1 - p || j === idx.length - 1) keep.push(i);
  });
  return keep.sort((a, b) => a - b);
}

test('top-p on large vocabularies matches a literal HF transcription', () => {
  let seed = 1;
  const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (const [vocab, spread, p] of [[5000, 12, 0.9], [5000, 12, 0.5], [5000, 0.5, 0.9], [3000, 30, 0.95], [3000, 2, 0.2]]) {
    const x = Float32Array.from({ length: vocab }, () => (rand() - 0.5) * spread);
    const expected = hfTopP(x, p);
    applyTopP(x, p);
    assert.deepEqual(kept(x), expected, `vocab ${vocab} spread ${spread} p ${p}`);
  }
  // Much of the mass in a long tail of individually tiny tokens (the path that sorts every token).
  const tail = Float32Array.from({ length: 5000 }, (_, i) => (i === 7 ? 0 : -9.5 + rand() * 0.1));
  const expected = hfTopP(tail, 0.9);
  applyTopP(tail, 0.9);
  assert.ok(expected.length > 100 && expected.includes(7));
  assert.deepEqual(kept(tail), expected);
});

test('min-p removes tokens below minP × top probability', () => {
  const x = logOf([0.5, 0.3, 0.15, 0.05]);
  applyMinP(x, 0.2); // threshold 0.1
  assert.deepEqual(kept(x), [0, 1, 2]);
  const y = logOf([0.5, 0.3, 0.15, 0.05]);
  applyMinP(y, 0.7); // threshold 0.35
  assert.deepEqual(kept(y), [0]);
});

test('argmax takes the lowest index on ties and ignores NaN; softmax', () => {
  assert.equal(argmax(f32([1, 3, 3, 2])), 1);
  assert.equal(argmax(f32([NaN, -1, NaN])), 1);
  assert.equal(argmax(f32([-Infinity, -Infinity])), 0);
  assert.throws(() => argmax(f32([NaN, NaN])), /NaN/);
  const p = softmax(f32([0, Math.log(3), -Infinity]));
  assert.ok(Math.abs(p[0] - 0.25) < 1e-7 && Math.abs(p[1] - 0.75) < 1e-7 && p[2] === 0);
  assert.throws(() => sampleFromLogits(f32([NaN, 1]), Xoshiro128ss.fromSeed(1)), /NaN/);
});

test('xoshiro128** matches the reference C implementation and SplitMix64 seeding', () => {
  // Reference outputs for state {1, 2, 3, 4} (https://prng.di.unimi.it/xoshiro128starstar.c).
  const r = Xoshiro128ss.fromState([1, 2, 3, 4]);
  assert.deepEqual(Array.from({ length: 6 }, () => r.nextUint32()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  // Seeded streams, computed with an independent Python implementation (SplitMix64 → xoshiro128**).
  const expected: [number, number[]][] = [
    [0, [3737715805, 2584255861, 2876756834, 3286328325]],
    [42, [1776835114, 4165204688, 17111135, 2317295270]],
    [-1, [477689756, 2493998634, 555695776, 607808419]],
    [2 ** 40 + 7, [731018183, 1433462173, 2492519422, 1115521196]],
  ];
  for (const [seed, out] of expected) {
    const g = Xoshiro128ss.fromSeed(seed);
    assert.deepEqual(Array.from({ length: 4 }, () => g.nextUint32()), out, `seed ${seed}`);
  }
  const g = Xoshiro128ss.fromSeed(7);
  for (let i = 0; i < 1000; i++) {
    const u = g.nextFloat();
    assert.ok(u >= 0 && u < 1);
  }
  assert.throws(() => Xoshiro128ss.fromSeed(1.5), /safe integer/);
});

const samplingParams = (over: Partial<SamplingParams>): SamplingParams => ({
  doSample: true, temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, ...over,
});

function frequencies(sampler: Sampler, logits: Float32Array, draws: number): number[] {
  const counts = new Array(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[sampler.sample(logits)]++;
  return counts;
}

/** Pearson chi-square against expected probabilities; df = categories - 1. */
function chiSquare(counts: number[], probs: number[]): number {
  const n = counts.reduce((a, b) => a + b, 0);
  return counts.reduce((acc, c, i) => acc + (probs[i] === 0 ? (c > 0 ? Infinity : 0) : (c - n * probs[i]) ** 2 / (n * probs[i])), 0);
}

test('sampling frequencies follow the processed softmax over 20k draws', () => {
  const probs = [0.5, 0.25, 0.15, 0.1];
  const logits = logOf(probs);
  const draws = 20000;
  const plain = frequencies(new Sampler(4, samplingParams({}), Xoshiro128ss.fromSeed(123)), logits, draws);
  // chi-square critical value, df = 3, p = 0.001: 16.27
  assert.ok(chiSquare(plain, probs) < 16.27, `counts ${plain}`);
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(plain[i] - draws * probs[i]) < 5 * Math.sqrt(draws * probs[i] * (1 - probs[i])));

  // T = 2 → p ∝ sqrt(p)
  const roots = probs.map(Math.sqrt);
  const z = roots.reduce((a, b) => a + b);
  const hot = frequencies(new Sampler(4, samplingParams({ temperature: 2 }), Xoshiro128ss.fromSeed(5)), logits, draws);
  assert.ok(chiSquare(hot, roots.map((r) => r / z)) < 16.27, `counts ${hot}`);

  // top-k 2 → renormalised 2/3, 1/3 over ids 0 and 1; top-p 0.8 → ids 0..2 with 0.5/0.9, 0.25/0.9, 0.15/0.9
  const k2 = frequencies(new Sampler(4, samplingParams({ topK: 2 }), Xoshiro128ss.fromSeed(6)), logits, draws);
  assert.ok(chiSquare(k2, [2 / 3, 1 / 3, 0, 0]) < 10.83, `counts ${k2}`); // df 1
  const p8 = frequencies(new Sampler(4, samplingParams({ topP: 0.8 }), Xoshiro128ss.fromSeed(8)), logits, draws);
  assert.ok(chiSquare(p8, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0]) < 13.82, `counts ${p8}`); // df 2
});

test('sampler: same seed gives the same tokens, greedy ignores the RNG, input logits untouched', () => {
  const logits = Float32Array.from({ length: 300 }, (_, i) => Math.cos(i * 1.3) * 3);
  const copy = logits.slice();
  const run = (seed: number) => {
    const s = new Sampler(300, samplingParams({ temperature: 0.8, topK: 40, topP: 0.9, minP: 0.01 }), Xoshiro128ss.fromSeed(seed));
    return Array.from({ length: 50 }, () => s.sample(logits));
  };
  assert.deepEqual(run(99), run(99));
  assert.notDeepEqual(run(99), run(100));
  assert.deepEqual(logits, copy);
  const greedy = new Sampler(300, samplingParams({ temperature: 0 }), Xoshiro128ss.fromSeed(1));
  assert.equal(greedy.sample(logits), argmax(logits));
  const penalized = new Sampler(300, samplingParams({ doSample: false, repetitionPenalty: 1e9 }), Xoshiro128ss.fromSeed(1));
  const top = argmax(logits);
  assert.notEqual(penalized.sample(logits, new TokenHistory([top])), top);
});

test('stop strings: detected across pushes, never released, false starts released', () => {
  const b = new StopStringBuffer(['</s>']);
  const out: string[] = [];
  for (const piece of ['Hel', 'lo <', '/s', '> more']) {
    const r = b.push(piece);
    out.push(r.text);
    if (r.stopped) break;
  }
  assert.deepEqual(out, ['Hel', 'lo ', '', '']);
  assert.equal(b.stopString, '</s>');
  assert.equal(b.flush(), '');

  const c = new StopStringBuffer(['</s>', 'END']);
  assert.deepEqual(c.push('a<'), { text: 'a', stopped: false });
  assert.deepEqual(c.push('b E'), { text: '<b ', stopped: false });
  assert.deepEqual(c.push('N'), { text: '', stopped: false });
  assert.equal(c.flush(), 'EN'); // generation ended another way: held text is output

  const d = new StopStringBuffer(['abc']);
  assert.deepEqual(d.push('ab'), { text: '', stopped: false });
  assert.deepEqual(d.push('ab'), { text: 'ab', stopped: false });
  assert.deepEqual(d.push('cd'), { text: '', stopped: true });

  const e = new StopStringBuffer(['xy', 'b']); // earliest occurrence wins
  assert.deepEqual(e.push('abxy'), { text: 'a', stopped: true });
  assert.equal(e.stopString, 'b');
  assert.throws(() => new StopStringBuffer(['']), /non-empty/);
});
