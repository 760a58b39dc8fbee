/**
 * The BPE merge loop shared by the SentencePiece and Hugging Face paths.
 *
 * SentencePiece (https://github.com/google/sentencepiece/blob/master/src/bpe_model.cc) repeatedly merges the
 * adjacent pair whose concatenation is the highest-scoring piece; HF tokenizers
 * (https://github.com/huggingface/tokenizers/blob/main/tokenizers/src/models/bpe/word.rs) merges the pair with
 * the lowest merge rank. Both break ties to the leftmost pair, so one loop serves both: callers supply a table of
 * (left id, right id) → (merged id, priority). A heap over a doubly linked list of symbols keeps it O(n log n);
 * stale heap entries are skipped when popped.
 */

export class MergeTable {
  /** Per left id: right id → merge index (small integer keys keep Map lookups fast for any vocabulary size). */
  private readonly byLeft: (Map<number, number> | undefined)[];
  private readonly results: number[] = [];
  private readonly priorities: number[] = [];
  constructor(vocabSize: number) { this.byLeft = new Array(vocabSize); }

  /** Registers left+right → merged with `priority` (higher merges first); the first registration of a pair wins. */
  add(left: number, right: number, merged: number, priority: number): void {
    const map = (this.byLeft[left] ??= new Map());
    if (map.has(right)) return;
    map.set(right, this.results.length);
    this.results.push(merged);
    this.priorities.push(priority);
  }
  find(left: number, right: number): number { return this.byLeft[left]?.get(right) ?? -1; }
  result(m: number): number { return this.results[m]!; }
  priority(m: number): number { return this.priorities[m]!; }
}

/** Max-heap of candidate merges (priority, then leftmost), stored as parallel arrays to avoid per-entry objects. */
class CandidateHeap {
  size = 0;
  private prio = new Float64Array(64);
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private merge = new Int32Array(64);

  private before(i: number, j: number): boolean {
    return this.prio[i]! > this.prio[j]! || (this.prio[i] === this.prio[j] && this.left[i]! < this.left[j]!);
  }
  private swap(i: number, j: number): void {
    const p = this.prio[i]!; this.prio[i] = this.prio[j]!; this.prio[j] = p;
    const l = this.left[i]!; this.left[i] = this.left[j]!; this.left[j] = l;
    const r = this.right[i]!; this.right[i] = this.right[j]!; this.right[j] = r;
    const m = this.merge[i]!; this.merge[i] = this.merge[j]!; this.merge[j] = m;
  }
  push(prio: number, left: number, right: number, merge: number): void {
    if (this.size === this.prio.length) {
      const grow = <T extends Float64Array | Int32Array>(a: T): T => { const b = new (a.constructor as new (n: number) => T)(a.length * 2); b.set(a); return b; };
      this.prio = grow(this.prio); this.left = grow(this.left); this.right = grow(this.right); this.merge = grow(this.merge);
    }
    let i = this.size++;
    this.prio[i] = prio; this.left[i] = left; this.right[i] = right; this.merge[i] = merge;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }
  /** Removes the top entry, leaving it readable at index `this.size` until the next push. */
  pop(): number {
    const last = --this.size;
    this.swap(0, last);
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= last) break;
      if (child + 1 < last && this.before(child + 1, child)) child++;
      if (!this.before(child, i)) break;
      this.swap(i, child);
      i = child;
    }
    return last;
  }
  leftAt(i: number): number { return this.left[i]!; }
  rightAt(i: number): number { return this.right[i]!; }
  mergeAt(i: number): number { return this.merge[i]!; }
}

/**
 * Merges the initial symbols (`ids`, -1 for a symbol outside the vocabulary, which never merges) as far as `table`
 * allows. `frozen[i]` marks symbols that never merge (SentencePiece user-defined pieces). `onMerge` sees every merge.
 * Returns the indices of the surviving symbols and their final ids (in place in `ids`).
 */
export function bpeMerge(ids: Int32Array, table: MergeTable, frozen?: Uint8Array, onMerge?: (merged: number, left: number, right: number) => void): number[] {
  const n = ids.length;
  const next = new Int32Array(n), prev = new Int32Array(n);
  for (let i = 0; i < n; i++) { prev[i] = i - 1; next[i] = i + 1 < n ? i + 1 : -1; }
  const heap = new CandidateHeap();
  const consider = (left: number, right: number): void => {
    if (left < 0 || right < 0 || (frozen && (frozen[left] || frozen[right]))) return;
    const a = ids[left]!, b = ids[right]!;
    if (a < 0 || b < 0) return;
    const m = table.find(a, b);
    if (m >= 0) heap.push(table.priority(m), left, right, m);
  };
  for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
  while (heap.size > 0) {
    const top = heap.pop();
    const left = heap.leftAt(top), right = heap.rightAt(top), m = heap.mergeAt(top);
    // A symbol's id changes whenever it grows, so matching ids mean the pair is still current.
    if (next[left] !== right || table.find(ids[left]!, ids[right]!) !== m) continue;
    const merged = table.result(m);
    onMerge?.(merged, ids[left]!, ids[right]!);
    ids[left] = merged;
    ids[right] = -2;
    const after = next[right]!;
    next[left] = after;
    if (after >= 0) prev[after] = left;
    next[right] = -1;
    consider(prev[left]!, left);
    consider(left, after);
  }
  const alive: number[] = [];
  for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]!) alive.push(i);
  return alive;
}
