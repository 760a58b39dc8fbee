/**
 * From files to `TokenBatch`es: read → filter empty → split train/validation (by example, before packing, so no document
 * straddles the split) → tokenize (truncate, or pack into fixed-length rows with BOS/EOS between documents) → filter
 * too-short rows → deterministic per-epoch shuffle → right-padded batches with next-token labels (-100 = no loss).
 * Packing follows HF's run_clm `group_texts`: documents are concatenated and cut into max_length rows; attention is not
 * reset at document boundaries (EOS/BOS mark them).
 */
import { createHash } from 'node:crypto';
import type { Tokenizer } from '../tokenizers/index.js';
import type { DataSource, TokenBatch } from '../distill/types.js';
import { ChatRenderer } from './chat.js';
import { DataError, readExamples, type Example, type ReadOptions } from './readers.js';
import { permutation } from './rng.js';

export interface TokenizeOptions {
  /** Tokens per row (default 128). */
  maxLength?: number;
  /** Concatenate documents and cut them into rows of exactly maxLength tokens (the last row may be shorter). Default false. */
  packing?: boolean;
  /** Rows longer than maxLength without packing: keep the start ('right', default), keep the end ('left'), or drop the row. */
  truncation?: 'right' | 'left' | 'drop';
  /** Pad each batch to its longest row (default) or always to maxLength (fixed shapes). */
  padding?: 'longest' | 'max_length';
  /** Plain-text examples: prepend BOS (default: as the tokenizer config says) / append EOS (default true). Chats follow their template. */
  addBos?: boolean;
  addEos?: boolean;
  /** Rows with fewer tokens are dropped (default 2: one input and one target). */
  minTokens?: number;
  /** Only assistant turns are loss targets. Default: true for prompt/response rows (e.g. CSV Q/A), false for `messages` chats. */
  maskPrompt?: boolean;
  /** Jinja chat template overriding the tokenizer's (and the default Mistral format). */
  chatTemplate?: string;
  /** Padding id (default: tokenizer pad, else EOS, else 0); padded positions are masked, so its value never matters. */
  padId?: number;
}

export interface DataOptions extends ReadOptions, TokenizeOptions {
  /** Shuffle and split seed (default 0). */
  seed?: number;
  /** Reshuffle rows every epoch (default true). */
  shuffle?: boolean;
  /** Validation share: a fraction in (0, 1) or a number of examples >= 1. Default 0 (none). */
  validation?: number;
  /** Drop a final batch smaller than batchSize (default false). */
  dropLast?: boolean;
}

/** One row: token ids and, per token, whether it is a loss target (predicted from the tokens before it). */
export interface TokenRow { ids: Int32Array; targets: Uint8Array }

export interface DataStats {
  files: { path: string; rowsRead: number; empty: number }[];
  rowsRead: number;
  /** Dropped: empty text or message. */
  empty: number;
  /** Dropped: fewer than minTokens tokens, or longer than maxLength with truncation 'drop'. */
  tooShort: number;
  tooLong: number;
  /** Dropped: no loss target left (e.g. the answer was truncated away). */
  noTargets: number;
  /** Rows cut to maxLength. */
  truncated: number;
  examples: { train: number; validation: number };
  rows: { train: number; validation: number };
  tokens: { train: number; validation: number };
  targetTokens: { train: number; validation: number };
}

export interface LoadedData {
  train: TokenDataset;
  validation: TokenDataset | null;
  stats: DataStats;
  /** sha256 over the token ids of every row (train, then validation): identifies the tokenized data (teacher cache check). */
  fingerprint: string;
}

/** Rows as a `DataSource` of the training engine: deterministic order per (seed, epoch), resumable at any batch. */
export class TokenDataset implements DataSource {
  readonly tokens: number;
  readonly maxRowLength: number;

  constructor(readonly rows: TokenRow[], private readonly opts: { seed: number; shuffle: boolean; padId: number; maxLength: number; padding: 'longest' | 'max_length'; dropLast: boolean }) {
    this.tokens = rows.reduce((n, r) => n + r.ids.length, 0);
    this.maxRowLength = rows.reduce((m, r) => Math.max(m, r.ids.length), 0);
  }

  get size(): number { return this.rows.length; }

  numBatches(batchSize: number): number {
    checkBatchSize(batchSize);
    return this.opts.dropLast ? Math.floor(this.rows.length / batchSize) : Math.ceil(this.rows.length / batchSize);
  }

  /** Row order of an epoch: a seeded permutation (or file order without shuffle). */
  order(epoch: number): Uint32Array {
    if (!this.opts.shuffle) return Uint32Array.from(this.rows.keys());
    return permutation(this.rows.length, this.opts.seed, epoch + 1);
  }

  *batches(epoch: number, batchSize: number, startBatch = 0): Iterable<TokenBatch> {
    const n = this.numBatches(batchSize);
    if (!Number.isInteger(startBatch) || startBatch < 0 || startBatch > n) throw new DataError(`startBatch ${startBatch} is outside 0..${n}`);
    const order = this.order(epoch);
    for (let b = startBatch; b < n; b++) yield this.batchOf(Array.from(order.subarray(b * batchSize, (b + 1) * batchSize)));
  }

  /** Rows in file order, `batchSize` at a time, from row `startRow` (the teacher cache walks the data this way). */
  *sequentialBatches(batchSize: number, startRow = 0): Iterable<{ firstRow: number; batch: TokenBatch }> {
    checkBatchSize(batchSize);
    for (let r = startRow; r < this.rows.length; r += batchSize) {
      const idx = Array.from({ length: Math.min(batchSize, this.rows.length - r) }, (_, i) => r + i);
      yield { firstRow: r, batch: this.batchOf(idx) };
    }
  }

  batchOf(rowIndices: number[]): TokenBatch {
    return makeBatch(rowIndices.map((i) => this.rows[i]), this.opts.padding === 'max_length' ? this.opts.maxLength : 0, this.opts.padId);
  }
}

function checkBatchSize(batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new DataError(`batch size must be a positive integer, got ${batchSize}`);
}

/** Right-padded batch; labels[t] = ids[t+1] where token t+1 is a target, else -100. `seq` 0 = the longest row. */
export function makeBatch(rows: TokenRow[], seq: number, padId: number): TokenBatch {
  const batch = rows.length;
  const width = seq || rows.reduce((m, r) => Math.max(m, r.ids.length), 1);
  const inputIds = new Int32Array(batch * width).fill(padId);
  const attentionMask = new Uint8Array(batch * width);
  const labels = new Int32Array(batch * width).fill(-100);
  rows.forEach((r, b) => {
    if (r.ids.length > width) throw new DataError(`row of ${r.ids.length} tokens does not fit a batch of width ${width}`);
    const o = b * width;
    inputIds.set(r.ids, o);
    attentionMask.fill(1, o, o + r.ids.length);
    for (let t = 0; t + 1 < r.ids.length; t++) if (r.targets[t + 1]) labels[o + t] = r.ids[t + 1];
  });
  return { inputIds, attentionMask, batch, seq: width, labels };
}

/** sha256 of the row contents (ids only, length-prefixed): the teacher cache's per-row key and the dataset fingerprint input. */
export function rowKey(ids: Int32Array): Buffer {
  const h = createHash('sha256');
  h.update(new Uint8Array(Uint32Array.of(ids.length).buffer));
  h.update(new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength));
  return h.digest().subarray(0, 16);
}

/**
 * The rows as a multiset: sha256 over the sorted row keys. Order-free, so any split or shuffle of the same tokenized rows
 * (another --seed or --validation) has the same fingerprint; other rows, or other tokenization, do not.
 */
export function dataFingerprint(rows: Iterable<TokenRow>): string {
  const keys = [...rows].map((r) => rowKey(r.ids)).sort(Buffer.compare);
  const h = createHash('sha256');
  for (const k of keys) h.update(k);
  return h.digest('hex');
}

interface Tokenized { rows: TokenRow[]; tooShort: number; tooLong: number; noTargets: number; truncated: number }

/** Tokenize examples into rows (see TokenizeOptions). */
export function tokenizeExamples(examples: Example[], tokenizer: Tokenizer, opts: TokenizeOptions = {}): Tokenized {
  const maxLength = opts.maxLength ?? 128;
  if (!Number.isInteger(maxLength) || maxLength < 2) throw new DataError(`max length must be an integer >= 2, got ${maxLength}`);
  const minTokens = opts.minTokens ?? 2;
  const truncation = opts.truncation ?? 'right';
  let renderer: ChatRenderer | null = null;
  const out: Tokenized = { rows: [], tooShort: 0, tooLong: 0, noTargets: 0, truncated: 0 };

  const encodeExample = (ex: Example): TokenRow => {
    if (ex.kind === 'text') {
      const ids = tokenizer.encode(ex.text, { addBos: opts.addBos, addEos: opts.addEos ?? true });
      return { ids: Int32Array.from(ids), targets: new Uint8Array(ids.length).fill(1) };
    }
    renderer ??= new ChatRenderer(tokenizer, opts.chatTemplate);
    const { ids, targets } = renderer.tokenize(ex.messages, opts.maskPrompt ?? ex.promptCompletion);
    return { ids: Int32Array.from(ids), targets };
  };
  const push = (row: TokenRow) => {
    if (row.ids.length < minTokens) { out.tooShort++; return; }
    // A row trains something only if some token after the first is a target.
    if (!row.targets.subarray(1).some((v) => v === 1)) { out.noTargets++; return; }
    out.rows.push(row);
  };

  if (!opts.packing) {
    for (const ex of examples) {
      let row = encodeExample(ex);
      if (row.ids.length > maxLength) {
        if (truncation === 'drop') { out.tooLong++; continue; }
        out.truncated++;
        const [a, b] = truncation === 'left' ? [row.ids.length - maxLength, row.ids.length] : [0, maxLength];
        row = { ids: row.ids.slice(a, b), targets: row.targets.slice(a, b) };
      }
      push(row);
    }
    return out;
  }

  // Packing: a stream of documents (each with its own BOS/EOS) cut into maxLength rows.
  let ids = new Int32Array(maxLength);
  let targets = new Uint8Array(maxLength);
  let fill = 0;
  for (const ex of examples) {
    const row = encodeExample(ex);
    if (row.ids.length < minTokens) { out.tooShort++; continue; }
    for (let i = 0; i < row.ids.length;) {
      const n = Math.min(maxLength - fill, row.ids.length - i);
      ids.set(row.ids.subarray(i, i + n), fill);
      targets.set(row.targets.subarray(i, i + n), fill);
      fill += n; i += n;
      if (fill === maxLength) {
        push({ ids, targets });
        ids = new Int32Array(maxLength); targets = new Uint8Array(maxLength); fill = 0;
      }
    }
  }
  if (fill > 0) push({ ids: ids.slice(0, fill), targets: targets.slice(0, fill) });
  return out;
}

/** Read, split, tokenize and wrap `files` (see DataOptions); deterministic for the same files, tokenizer and options. */
export async function loadData(files: string[], tokenizer: Tokenizer, opts: DataOptions = {}): Promise<LoadedData> {
  if (files.length === 0) throw new DataError('no data files given');
  const seed = opts.seed ?? 0;
  const examples: Example[] = [];
  const stats: DataStats = {
    files: [], rowsRead: 0, empty: 0, tooShort: 0, tooLong: 0, noTargets: 0, truncated: 0,
    examples: { train: 0, validation: 0 }, rows: { train: 0, validation: 0 }, tokens: { train: 0, validation: 0 }, targetTokens: { train: 0, validation: 0 },
  };
  for (const path of files) {
    const r = await readExamples(path, opts);
    stats.files.push({ path, rowsRead: r.rowsRead, empty: r.empty });
    stats.rowsRead += r.rowsRead;
    stats.empty += r.empty;
    for (const ex of r.examples) examples.push(ex);
  }

  const { train, validation } = splitExamples(examples, opts.validation ?? 0, seed);
  const padId = opts.padId ?? tokenizer.padId ?? tokenizer.eosId ?? 0;
  const common = { seed, shuffle: opts.shuffle ?? true, padId, maxLength: opts.maxLength ?? 128, padding: opts.padding ?? 'longest', dropLast: opts.dropLast ?? false } as const;
  const sets: Record<'train' | 'validation', TokenDataset | null> = { train: null, validation: null };
  for (const [name, exs] of [['train', train], ['validation', validation]] as const) {
    if (name === 'validation' && exs.length === 0) continue;
    const t = tokenizeExamples(exs, tokenizer, opts);
    stats.tooShort += t.tooShort; stats.tooLong += t.tooLong; stats.noTargets += t.noTargets; stats.truncated += t.truncated;
    stats.examples[name] = exs.length;
    stats.rows[name] = t.rows.length;
    for (const r of t.rows) {
      stats.tokens[name] += r.ids.length;
      stats.targetTokens[name] += r.targets.subarray(1).reduce((a, v) => a + v, 0);
    }
    // Validation order never changes, so its perplexity is comparable between evaluations.
    sets[name] = new TokenDataset(t.rows, name === 'train' ? common : { ...common, shuffle: false });
  }
  if (!sets.train || sets.train.size === 0) throw new DataError(`no training rows left from ${files.join(', ')} (read ${stats.rowsRead}, empty ${stats.empty}, too short ${stats.tooShort}, too long ${stats.tooLong}, without targets ${stats.noTargets})`);
  const fingerprint = dataFingerprint([...sets.train.rows, ...(sets.validation?.rows ?? [])]);
  return { train: sets.train, validation: sets.validation, stats, fingerprint };
}

/** Deterministic split by example: a seeded choice of validation examples; both parts keep file order. */
export function splitExamples<T>(examples: T[], validation: number, seed: number): { train: T[]; validation: T[] } {
  if (!(validation >= 0) || (validation >= 1 && !Number.isInteger(validation))) {
    throw new DataError(`validation must be a fraction in [0, 1) or a whole number of examples, got ${validation}`);
  }
  const count = validation < 1 ? Math.round(examples.length * validation) : validation;
  if (count === 0) return { train: examples, validation: [] };
  if (count >= examples.length) throw new DataError(`validation takes ${count} of ${examples.length} examples, leaving none to train on`);
  const isVal = new Uint8Array(examples.length);
  const perm = permutation(examples.length, seed, 0);
  for (let i = 0; i < count; i++) isVal[perm[i]] = 1;
  return { train: examples.filter((_, i) => !isVal[i]), validation: examples.filter((_, i) => isVal[i]) };
}

/** One line for the CLI: rows read, filtered and tokens. */
export function describeStats(s: DataStats): string {
  const dropped = [
    s.empty && `${s.empty} empty`, s.tooShort && `${s.tooShort} too short`, s.tooLong && `${s.tooLong} too long`, s.noTargets && `${s.noTargets} without targets`,
  ].filter(Boolean).join(', ');
  const val = s.rows.validation ? `; validation ${s.rows.validation} rows, ${s.tokens.validation} tokens` : '';
  return `read ${s.rowsRead} rows from ${s.files.length} file(s)${dropped ? ` (dropped ${dropped})` : ''}${s.truncated ? `, ${s.truncated} truncated` : ''}; ` +
    `train ${s.rows.train} rows, ${s.tokens.train} tokens (${s.targetTokens.train} targets)${val}`;
}
