import type { OrtTensor } from '../runtime/index.js';
import { ort } from '../runtime/index.js';
import type { KVCache } from './types.js';

/** A [rows, capacity, dim] view of a buffer whose rows are (batch, head) pairs. */
interface Rows { data: Float32Array; capacity: number }

/** Positions [from, from + count) of row `r` of `src` into row `r2` of `dst`, starting at position `at`. */
function copyPositions(src: Rows, r: number, from: number, dst: Rows, r2: number, at: number, count: number, dim: number): void {
  const start = (r * src.capacity + from) * dim;
  dst.data.set(src.data.subarray(start, start + count * dim), (r2 * dst.capacity + at) * dim);
}

/**
 * Per-layer key and value buffers [batch, kvHeads, capacity, headDim] that forward calls append to. `frontier` is how
 * many positions have been written: a cache whose length is the frontier may append in place; an older cache of the
 * same store (one that was already extended) gets a copy first, so every cache keeps its own contents.
 */
class KVStore {
  constructor(
    readonly keys: Float32Array[],
    readonly values: Float32Array[],
    readonly batch: number,
    readonly heads: number,
    readonly dim: number,
    readonly capacity: number,
    public frontier: number,
  ) {}

  /** A store of `capacity` holding the first `length` positions of this one. */
  copy(length: number, capacity: number): KVStore {
    const move = (data: Float32Array) => {
      const out = { data: new Float32Array(this.batch * this.heads * capacity * this.dim), capacity };
      for (let r = 0; r < this.batch * this.heads; r++) copyPositions({ data, capacity: this.capacity }, r, 0, out, r, 0, length, this.dim);
      return out.data;
    };
    return new KVStore(this.keys.map(move), this.values.map(move), this.batch, this.heads, this.dim, capacity, length);
  }

  tensors(which: 'keys' | 'values'): OrtTensor[] {
    return this[which].map((b) => new ort.Tensor('float32', b, [this.batch, this.heads, this.capacity, this.dim]));
  }
}

/**
 * The KV cache of a batch: per-layer buffers (fed straight to the next step as past_*, with spare capacity so a decode
 * step only appends), plus the attention mask of every cached position so callers need not carry it.
 */
export class LlamaKVCache implements KVCache {
  private constructor(
    /** The model that produced this cache; caches are not interchangeable between models. */
    readonly owner: object,
    private readonly store: KVStore,
    /** [batch][length]: 1 = real token, 0 = padding. */
    readonly mask: readonly (readonly number[])[],
  ) {}

  /** An empty cache of `batch` rows (the first forward's past). */
  static empty(owner: object, layers: number, batch: number, heads: number, dim: number): LlamaKVCache {
    const none = () => Array.from({ length: layers }, () => new Float32Array(0));
    return new LlamaKVCache(owner, new KVStore(none(), none(), batch, heads, dim, 0, 0), Array.from({ length: batch }, () => []));
  }

  get batchSize(): number { return this.mask.length; }
  get length(): number { return this.mask[0]?.length ?? 0; }

  /**
   * The past buffers for a step adding `seq` positions, with room for them (and for `reserve` positions in all, when the
   * buffers must be reallocated anyway), and `append`, which stores the step's new keys/values [batch, seq, heads·dim]
   * and returns the next cache.
   */
  prepare(seq: number, reserve = 0): { keys: OrtTensor[]; values: OrtTensor[]; append: (keys: OrtTensor[], values: OrtTensor[], mask: number[][]) => LlamaKVCache } {
    const past = this.length, need = past + seq;
    let store = this.store;
    if (store.frontier !== past || store.capacity < need) {
      // Grow by half again at least, so appending one position at a time costs amortized O(1) copies.
      const capacity = store.capacity < need ? Math.max(need, reserve, Math.ceil(store.capacity * 1.5)) : store.capacity;
      store = store.copy(past, capacity);
    }
    // Claimed now, so a second step from this cache (even a concurrent one) copies instead of overwriting.
    store.frontier = need;
    // A first step sees empty buffers: attention then spans only the new tokens, not the reserved room.
    const fed = past ? store : new KVStore(store.keys.map(() => new Float32Array(0)), store.values.map(() => new Float32Array(0)), store.batch, store.heads, store.dim, 0, 0);
    return {
      keys: fed.tensors('keys'),
      values: fed.tensors('values'),
      append: (keys, values, mask) => {
        // [batch, seq, heads·dim] rows into [batch, heads, capacity, dim] at positions past…past+seq−1.
        const { batch, heads, dim, capacity } = store;
        const write = (dst: Float32Array, t: OrtTensor) => {
          const src = t.data as Float32Array;
          for (let b = 0; b < batch; b++) {
            for (let s = 0; s < seq; s++) {
              for (let h = 0; h < heads; h++) {
                const from = ((b * seq + s) * heads + h) * dim;
                dst.set(src.subarray(from, from + dim), ((b * heads + h) * capacity + past + s) * dim);
              }
            }
          }
        };
        keys.forEach((t, i) => write(store.keys[i], t));
        values.forEach((t, i) => write(store.values[i], t));
        return new LlamaKVCache(this.owner, store, mask);
      },
    };
  }

  /**
   * Keep batch rows `rows` (in that order; repeats allowed). Columns that are padding in every kept row are
   * dropped from the front: positions count real tokens and the sliding window depends on index differences, so
   * results do not change.
   */
  selectRows(rows: readonly number[]): LlamaKVCache {
    if (!rows.length) throw new RangeError('selectCacheRows: rows is empty');
    for (const r of rows) {
      if (!Number.isInteger(r) || r < 0 || r >= this.batchSize) throw new RangeError(`selectCacheRows: row ${r} is out of range 0..${this.batchSize - 1}`);
    }
    const mask = rows.map((r) => this.mask[r]);
    let drop = 0;
    while (drop < this.length && mask.every((m) => m[drop] === 0)) drop++;
    const { heads, dim, capacity } = this.store;
    const keep = this.length - drop;
    const pick = (data: Float32Array) => {
      const out = { data: new Float32Array(rows.length * heads * keep * dim), capacity: keep };
      rows.forEach((r, i) => {
        for (let h = 0; h < heads; h++) copyPositions({ data, capacity }, r * heads + h, drop, out, i * heads + h, 0, keep, dim);
      });
      return out.data;
    };
    const store = new KVStore(this.store.keys.map(pick), this.store.values.map(pick), rows.length, heads, dim, keep, keep);
    return new LlamaKVCache(this.owner, store, mask.map((m) => m.slice(drop)));
  }

  /**
   * Stacks caches of one model along the batch axis (continuous batching: a newly prefilled request joins the running
   * batch). Shorter caches are left-padded with masked zero columns, so every row keeps its own results.
   */
  static concat(caches: readonly LlamaKVCache[]): LlamaKVCache {
    if (!caches.length) throw new RangeError('concat: no caches');
    const owner = caches[0].owner;
    if (caches.some((c) => c.owner !== owner)) throw new RangeError('concat: caches come from different models');
    const length = Math.max(...caches.map((c) => c.length));
    const batch = caches.reduce((n, c) => n + c.batchSize, 0);
    const { heads, dim } = caches[0].store;
    const join = (which: 'keys' | 'values') => caches[0].store[which].map((_, layer) => {
      const out = { data: new Float32Array(batch * heads * length * dim), capacity: length };
      let row = 0;
      for (const c of caches) {
        const src = { data: c.store[which][layer], capacity: c.store.capacity };
        for (let r = 0; r < c.batchSize; r++, row++) {
          for (let h = 0; h < heads; h++) copyPositions(src, r * heads + h, 0, out, row * heads + h, length - c.length, c.length, dim);
        }
      }
      return out.data;
    });
    const mask = caches.flatMap((c) => c.mask.map((m) => [...new Array<number>(length - m.length).fill(0), ...m]));
    return new LlamaKVCache(owner, new KVStore(join('keys'), join('values'), batch, heads, dim, length, length), mask);
  }
}
