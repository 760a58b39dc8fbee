/**
 * Deterministic shuffling: the sampler's xoshiro128** generator (src/generate/rng.ts) seeded through SplitMix32 from
 * (seed, stream) so every epoch gets an independent permutation. 32-bit integer arithmetic only, so the same seed gives
 * the same order on every platform and Node version.
 */
import { Xoshiro128ss } from '../generate/rng.js';

export class ShuffleRng {
  private gen: Xoshiro128ss;

  constructor(seed: number, stream = 0) {
    if (!Number.isSafeInteger(seed) || !Number.isSafeInteger(stream)) throw new Error(`seed and stream must be safe integers, got ${seed}, ${stream}`);
    // SplitMix32 over the low and high words of both inputs fills the state (never all zero in practice; guarded below).
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9) ^ Math.imul(stream >>> 0, 0x85ebca6b)
      ^ Math.imul(Math.floor(stream / 2 ** 32) >>> 0, 0xc2b2ae35);
    const state: [number, number, number, number] = [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      state[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if ((state[0] | state[1] | state[2] | state[3]) === 0) state[0] = 1;
    this.gen = Xoshiro128ss.fromState(state);
  }

  /** Raw state, for the reference-vector test. */
  static fromState(state: readonly [number, number, number, number]): ShuffleRng {
    const r = new ShuffleRng(0);
    r.gen = Xoshiro128ss.fromState(state);
    return r;
  }

  nextU32(): number {
    return this.gen.nextUint32();
  }

  /** Uniform integer in [0, n) without modulo bias (Lemire-style rejection on the 32-bit product). */
  below(n: number): number {
    if (!(n >= 1 && n <= 2 ** 32)) throw new Error(`below(${n}): n must be in [1, 2^32]`);
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const r = this.nextU32();
      if (r < limit) return r % n;
    }
  }
}

/** Fisher–Yates permutation of 0..n-1, the same for the same (seed, stream). */
export function permutation(n: number, seed: number, stream = 0): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = new ShuffleRng(seed, stream);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}
