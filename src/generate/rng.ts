/**
 * Seeded pseudo-random numbers for reproducible sampling: xoshiro128** (https://prng.di.unimi.it/xoshiro128starstar.c)
 * seeded through SplitMix64, as its authors recommend. Pure 32-bit integer arithmetic (Math.imul, >>>), so the
 * same seed gives the same stream on every platform and Node version.
 */
export interface Rng {
  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number;
}

export class Xoshiro128ss implements Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  private constructor(state: readonly number[]) {
    [this.s0, this.s1, this.s2, this.s3] = state.map((v) => v >>> 0);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) throw new Error('xoshiro128** state must not be all zero');
  }

  /** Raw state, for reference-vector tests. */
  static fromState(state: readonly [number, number, number, number]): Xoshiro128ss {
    return new Xoshiro128ss(state);
  }

  /** Any safe integer (negative too) is a valid seed. */
  static fromSeed(seed: number): Xoshiro128ss {
    if (!Number.isSafeInteger(seed)) throw new Error(`seed must be a safe integer, got ${seed}`);
    let x = BigInt.asUintN(64, BigInt(seed));
    const words: number[] = [];
    for (let i = 0; i < 2; i++) {
      x = BigInt.asUintN(64, x + 0x9e3779b97f4a7c15n);
      let z = x;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      z ^= z >> 31n;
      words.push(Number(z & 0xffffffffn), Number(z >> 32n));
    }
    return new Xoshiro128ss(words);
  }

  /** Next uniform 32-bit unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Seeded generator when a seed is given, otherwise one seeded from Math.random. */
export function createRng(seed?: number): Rng {
  return Xoshiro128ss.fromSeed(seed ?? Math.floor(Math.random() * 2 ** 53));
}
