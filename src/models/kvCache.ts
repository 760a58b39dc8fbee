import type { OrtTensor } from '../runtime/index.js';
import { ort } from '../runtime/index.js';
import type { KVCache } from './types.js';

/**
 * Per-layer keys/values [batch, kvHeads, length, headDim] as ORT tensors (fed straight back as the next step's
 * past_*), plus the attention mask of every cached position so callers need not carry it.
 */
export class LlamaKVCache implements KVCache {
  constructor(
    /** The model that produced this cache; caches are not interchangeable between models. */
    readonly owner: object,
    readonly keys: readonly OrtTensor[],
    readonly values: readonly OrtTensor[],
    /** [batch][length]: 1 = real token, 0 = padding. */
    readonly mask: readonly (readonly number[])[],
  ) {}

  get batchSize(): number { return this.mask.length; }
  get length(): number { return this.mask[0]?.length ?? 0; }

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
    const pick = (t: OrtTensor): OrtTensor => {
      const [, heads, len, dim] = t.dims;
      const src = t.data as Float32Array;
      const keep = len - drop;
      const out = new Float32Array(rows.length * heads * keep * dim);
      rows.forEach((r, i) => {
        for (let h = 0; h < heads; h++) {
          const from = ((r * heads + h) * len + drop) * dim;
          out.set(src.subarray(from, from + keep * dim), (i * heads + h) * keep * dim);
        }
      });
      return new ort.Tensor('float32', out, [rows.length, heads, keep, dim]);
    };
    return new LlamaKVCache(this.owner, this.keys.map(pick), this.values.map(pick), mask.map((m) => m.slice(drop)));
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
    const join = (layers: (c: LlamaKVCache) => readonly OrtTensor[]) => layers(caches[0]).map((_, layer) => {
      const [, heads, , dim] = layers(caches[0])[layer].dims;
      const out = new Float32Array(batch * heads * length * dim);
      let row = 0;
      for (const c of caches) {
        const t = layers(c)[layer];
        const [b, , len] = t.dims;
        const src = t.data as Float32Array;
        for (let r = 0; r < b; r++, row++) {
          for (let h = 0; h < heads; h++) {
            const from = (r * heads + h) * len * dim;
            out.set(src.subarray(from, from + len * dim), ((row * heads + h) * length + length - len) * dim);
          }
        }
      }
      return new ort.Tensor('float32', out, [batch, heads, length, dim]);
    });
    const mask = caches.flatMap((c) => c.mask.map((m) => [...new Array<number>(length - m.length).fill(0), ...m]));
    return new LlamaKVCache(owner, join((c) => c.keys), join((c) => c.values), mask);
  }
}
