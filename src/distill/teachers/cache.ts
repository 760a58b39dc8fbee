/**
 * Teacher cache: the teacher's top-k for a whole dataset, computed once (`slimlm teacher-cache`) and read back in training,
 * so a teacher too big to sit beside the student runs alone. Layout of DIR:
 *
 *   manifest.json        format, version, teacher, k, vocabSize, id/logprob dtypes, tokenizer vocabulary hash, data
 *                        fingerprint (sha256 of all rows' token ids), shard list with sha256 each, complete flag.
 *   shard-00000.bin …    little-endian: 32-byte header (magic "SLTC", version, rows, positions, k, id bytes, logprob bytes, 0),
 *                        u32 length per row, 16-byte row key per row (sha256 of the row's ids, truncated), then
 *                        ids [positions, k] (u16 if the vocabulary fits, else i32), then log-probs [positions, k] (f16 or f32).
 *
 * Each shard is written atomically (temp file, fsync, rename) before the manifest that lists it, so a killed run resumes after
 * the last listed shard. Rows are found by content (their key), so training may shuffle, re-batch and split freely as long
 * as the tokenized rows are the same; a different dataset fails the fingerprint check instead of training on wrong targets.
 */
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { writeBytesAtomic } from '../../formats/atomic.js';
import { f16BytesToF32, f32ToF16Bytes } from '../../formats/dtype.js';
import { makeBatch, rowKey, type TokenRow } from '../../data/index.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../types.js';
import { batchRows, denseToTopK, PAD_LOGPROB } from './common.js';

export const CACHE_FORMAT = 'slimlm-teacher-cache';
export const CACHE_VERSION = 1;
const MAGIC = 0x43544c53; // "SLTC" little-endian
const HEADER_BYTES = 32;
const KEY_BYTES = 16;

export interface CacheShard { file: string; firstRow: number; rows: number; positions: number; bytes: number; sha256: string }

export interface CacheManifest {
  format: typeof CACHE_FORMAT;
  version: number;
  teacher: string;
  k: number;
  vocabSize: number;
  idType: 'u16' | 'i32';
  logprobType: 'f16' | 'f32';
  /** sha256 of the vocabulary pieces of the tokenizer the data was tokenized with (null when unknown). */
  tokenizerHash: string | null;
  data: { fingerprint: string; rows: number; positions: number; options?: Record<string, unknown> };
  shards: CacheShard[];
  complete: boolean;
}

export class TeacherCacheError extends Error {
  override name = 'TeacherCacheError';
}

export interface BuildCacheOptions {
  teacher: Teacher;
  /** Rows in a fixed order (e.g. train then validation rows of `loadData`), and their fingerprint. */
  rows: TokenRow[];
  fingerprint: string;
  out: string;
  k: number;
  batchSize?: number;
  padId?: number;
  logprobType?: 'f16' | 'f32';
  tokenizerHash?: string | null;
  /** Rows per shard (default: about 64 MiB of top-k per shard). */
  shardRows?: number;
  /** Data options recorded in the manifest, to explain a later fingerprint mismatch. */
  dataOptions?: Record<string, unknown>;
  /** Called after each teacher batch with the rows done so far (including resumed ones). */
  onProgress?(rowsDone: number, rowsTotal: number, positionsDone: number): void;
}

export interface BuildCacheResult { manifest: CacheManifest; resumedFromRow: number; shardsWritten: number }

const manifestPath = (dir: string) => join(dir, 'manifest.json');

export function readManifest(dir: string): CacheManifest {
  const p = manifestPath(dir);
  if (!existsSync(p)) throw new TeacherCacheError(`${dir} is not a teacher cache (no manifest.json); create one with slimlm teacher-cache`);
  let m: CacheManifest;
  try {
    m = JSON.parse(readFileSync(p, 'utf8')) as CacheManifest;
  } catch (e) {
    throw new TeacherCacheError(`${p}: unreadable manifest (${(e as Error).message})`);
  }
  if (m.format !== CACHE_FORMAT) throw new TeacherCacheError(`${p}: not a slimlm teacher cache (format ${JSON.stringify(m.format)})`);
  if (m.version !== CACHE_VERSION) throw new TeacherCacheError(`${p}: cache version ${m.version} is not supported (this slimlm reads version ${CACHE_VERSION})`);
  return m;
}

export function isTeacherCache(dir: string): boolean {
  return existsSync(manifestPath(dir));
}

function sha256File(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 << 20);
    for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

function shardValid(dir: string, s: CacheShard): boolean {
  const p = join(dir, s.file);
  return existsSync(p) && sha256File(p) === s.sha256;
}

/** Run the teacher over `rows` and write (or finish) the cache in `out`. */
export async function buildTeacherCache(o: BuildCacheOptions): Promise<BuildCacheResult> {
  const { teacher, rows, out, k } = o;
  if (!Number.isInteger(k) || k < 1 || k > teacher.vocabSize) throw new TeacherCacheError(`top-k must be an integer in 1..${teacher.vocabSize}, got ${k}`);
  const batchSize = o.batchSize ?? 8;
  const idType = teacher.vocabSize <= 65536 ? 'u16' : 'i32';
  const logprobType = o.logprobType ?? 'f16';
  const positionsTotal = rows.reduce((n, r) => n + r.ids.length, 0);
  const bytesPerPosition = k * ((idType === 'u16' ? 2 : 4) + (logprobType === 'f16' ? 2 : 4));
  const avgRow = Math.max(1, positionsTotal / Math.max(1, rows.length));
  const shardRows = Math.max(1, o.shardRows ?? Math.ceil((64 << 20) / (avgRow * bytesPerPosition)));
  mkdirSync(out, { recursive: true });

  const fresh: CacheManifest = {
    format: CACHE_FORMAT, version: CACHE_VERSION, teacher: teacher.description, k, vocabSize: teacher.vocabSize, idType, logprobType,
    tokenizerHash: o.tokenizerHash ?? null,
    data: { fingerprint: o.fingerprint, rows: rows.length, positions: positionsTotal, ...(o.dataOptions ? { options: o.dataOptions } : {}) },
    shards: [], complete: false,
  };
  let manifest = fresh;
  if (isTeacherCache(out)) {
    const old = readManifest(out);
    const same = (['teacher', 'k', 'vocabSize', 'idType', 'logprobType', 'tokenizerHash'] as const).every((f) => old[f] === fresh[f])
      && old.data.fingerprint === fresh.data.fingerprint;
    if (!same) {
      throw new TeacherCacheError(`${out} already holds a cache for other settings (teacher ${old.teacher}, k ${old.k}, ${old.logprobType}, data ${old.data.fingerprint.slice(0, 12)}…); ` +
        `choose another --out, or delete it to rebuild`);
    }
    // Keep the shards that are intact and contiguous from row 0; anything after a damaged shard is recomputed.
    const kept: CacheShard[] = [];
    for (const s of old.shards) {
      if (s.firstRow !== kept.reduce((n, x) => n + x.rows, 0) || !shardValid(out, s)) break;
      kept.push(s);
    }
    manifest = { ...old, shards: kept, complete: false };
    // Temp files of a killed write (see formats/atomic.ts) are garbage.
    for (const f of readdirSync(out)) if (/^\.(shard-\d+\.bin|manifest\.json)\.\d+\.[0-9a-f]+\.tmp$/.test(f)) rmSync(join(out, f), { force: true });
  }
  const resumedFromRow = manifest.shards.reduce((n, s) => n + s.rows, 0);
  let positionsDone = manifest.shards.reduce((n, s) => n + s.positions, 0);
  let shardsWritten = 0;
  o.onProgress?.(resumedFromRow, rows.length, positionsDone);

  for (let first = resumedFromRow; first < rows.length; first += shardRows) {
    const shardRowsHere = rows.slice(first, first + shardRows);
    const positions = shardRowsHere.reduce((n, r) => n + r.ids.length, 0);
    const ids = idType === 'u16' ? new Uint16Array(positions * k) : new Int32Array(positions * k);
    const logprobs = new Float32Array(positions * k);
    let at = 0;
    for (let b0 = 0; b0 < shardRowsHere.length; b0 += batchSize) {
      const group = shardRowsHere.slice(b0, b0 + batchSize);
      const batch = makeBatch(group, 0, o.padId ?? 0);
      const sparse = toTopK(await teacher.run(batch), batch, teacher.vocabSize, k);
      group.forEach((r, b) => {
        for (let t = 0; t < r.ids.length; t++) {
          const src = (b * batch.seq + t) * sparse.k;
          for (let j = 0; j < k; j++) { ids[at * k + j] = sparse.ids[src + j]; logprobs[at * k + j] = sparse.logprobs[src + j]; }
          at++;
        }
      });
      positionsDone += group.reduce((n, r) => n + r.ids.length, 0);
      o.onProgress?.(first + b0 + group.length, rows.length, positionsDone);
    }
    const file = `shard-${String(manifest.shards.length).padStart(5, '0')}.bin`;
    const bytes = encodeShard(shardRowsHere, k, ids, logprobs, logprobType);
    writeBytesAtomic(join(out, file), bytes);
    manifest.shards.push({ file, firstRow: first, rows: shardRowsHere.length, positions, bytes: bytes.byteLength, sha256: createHash('sha256').update(bytes).digest('hex') });
    manifest.complete = first + shardRowsHere.length >= rows.length;
    writeBytesAtomic(manifestPath(out), JSON.stringify(manifest, null, 1) + '\n');
    shardsWritten++;
  }
  if (!manifest.complete) {
    manifest.complete = true; // everything was already there: only the flag was missing
    writeBytesAtomic(manifestPath(out), JSON.stringify(manifest, null, 1) + '\n');
  }
  // Shards past the list (from a run with other shard sizes) are stale.
  for (let i = manifest.shards.length; existsSync(join(out, `shard-${String(i).padStart(5, '0')}.bin`)); i++) rmSync(join(out, `shard-${String(i).padStart(5, '0')}.bin`));
  return { manifest, resumedFromRow, shardsWritten };
}

/** A teacher's output as top-k (converting dense logits, or keeping the first k of a larger sorted top-k). */
function toTopK(out: TeacherOutput, batch: TokenBatch, vocab: number, k: number): { k: number; ids: Int32Array; logprobs: Float32Array } {
  if (out.kind === 'dense') return denseToTopK(out.logits, batch, vocab, k);
  if (out.k < k) throw new TeacherCacheError(`the teacher returned its top ${out.k}, fewer than the ${k} asked for`);
  return out;
}

function encodeShard(rows: TokenRow[], k: number, ids: Uint16Array | Int32Array, logprobs: Float32Array, lpType: 'f16' | 'f32'): Uint8Array {
  const positions = logprobs.length / k;
  // Clamp before f16 conversion so the floor stays finite (f16 max is 65504).
  const lpBytes = lpType === 'f16' ? f32ToF16Bytes(logprobs.map((v) => Math.max(v, -65504))) : new Uint8Array(logprobs.buffer);
  const idBytes = new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength);
  const head = new DataView(new ArrayBuffer(HEADER_BYTES + rows.length * (4 + KEY_BYTES)));
  [MAGIC, CACHE_VERSION, rows.length, positions, k, ids.BYTES_PER_ELEMENT, lpType === 'f16' ? 2 : 4, 0].forEach((v, i) => head.setUint32(i * 4, v, true));
  rows.forEach((r, i) => head.setUint32(HEADER_BYTES + i * 4, r.ids.length, true));
  const headBytes = new Uint8Array(head.buffer);
  rows.forEach((r, i) => headBytes.set(rowKey(r.ids), HEADER_BYTES + rows.length * 4 + i * KEY_BYTES));
  const all = new Uint8Array(headBytes.length + idBytes.length + lpBytes.length);
  all.set(headBytes, 0);
  all.set(idBytes, headBytes.length);
  all.set(lpBytes, headBytes.length + idBytes.length);
  return all;
}

interface RowLocation { shard: number; position: number; length: number }

interface OpenShard { meta: CacheShard; fd: number; idsAt: number; lpAt: number; idBytes: number; lpBytes: number; verified: boolean }

export interface CacheTeacherOptions {
  /** Fingerprint of the data the trainer will use (`loadData(...).fingerprint`); a different one is refused. */
  expectFingerprint?: string;
  /** Hash of the student's tokenizer vocabulary (`vocabularyHash(tokenizer)`); a different one is refused. */
  expectTokenizerHash?: string;
  /** Check each shard's sha256 before first use (default true). */
  verify?: boolean;
}

/** Reads a teacher cache back as a Teacher returning sparse top-k. */
export class CacheTeacher implements Teacher {
  readonly vocabSize: number;
  readonly description: string;
  readonly k: number;
  private readonly index = new Map<string, RowLocation>();
  private readonly shards: OpenShard[] = [];

  private constructor(readonly dir: string, readonly manifest: CacheManifest, private readonly verify: boolean) {
    this.vocabSize = manifest.vocabSize;
    this.k = manifest.k;
    this.description = `teacher cache ${dir} (top-${manifest.k} of ${manifest.teacher})`;
  }

  static open(dir: string, opts: CacheTeacherOptions = {}): CacheTeacher {
    const m = readManifest(dir);
    const done = m.shards.reduce((n, s) => n + s.rows, 0);
    if (!m.complete) throw new TeacherCacheError(`teacher cache ${dir} is incomplete (${done} of ${m.data.rows} rows); run slimlm teacher-cache again with the same options to finish it`);
    if (opts.expectFingerprint && opts.expectFingerprint !== m.data.fingerprint) {
      throw new TeacherCacheError(`teacher cache ${dir} was built from other data (fingerprint ${m.data.fingerprint.slice(0, 12)}…, this data ${opts.expectFingerprint.slice(0, 12)}…): ` +
        `the files, tokenizer or data options (max length, packing, validation split, seed) differ${m.data.options ? ` — the cache used ${JSON.stringify(m.data.options)}` : ''}; rebuild it with slimlm teacher-cache`);
    }
    if (opts.expectTokenizerHash && m.tokenizerHash && opts.expectTokenizerHash !== m.tokenizerHash) {
      throw new TeacherCacheError(`vocabulary mismatch: teacher cache ${dir} was built with another tokenizer than the student's`);
    }
    const t = new CacheTeacher(dir, m, opts.verify ?? true);
    try {
      t.loadIndex();
    } catch (e) {
      t.closeFiles();
      throw e;
    }
    return t;
  }

  private loadIndex(): void {
    this.manifest.shards.forEach((meta, s) => {
      const path = join(this.dir, meta.file);
      if (!existsSync(path)) throw new TeacherCacheError(`teacher cache ${this.dir}: ${meta.file} is missing`);
      const fd = openSync(path, 'r');
      const head = Buffer.alloc(HEADER_BYTES);
      const shard: OpenShard = { meta, fd, idsAt: 0, lpAt: 0, idBytes: 0, lpBytes: 0, verified: !this.verify };
      this.shards.push(shard);
      if (readSync(fd, head, 0, HEADER_BYTES, 0) !== HEADER_BYTES || head.readUInt32LE(0) !== MAGIC) throw new TeacherCacheError(`teacher cache ${this.dir}: ${meta.file} is not a cache shard`);
      const [rows, positions, k, idBytes, lpBytes] = [2, 3, 4, 5, 6].map((i) => head.readUInt32LE(i * 4));
      if (rows !== meta.rows || positions !== meta.positions || k !== this.k) throw new TeacherCacheError(`teacher cache ${this.dir}: ${meta.file} does not match the manifest (corrupt or from another run)`);
      const table = Buffer.alloc(rows * (4 + KEY_BYTES));
      if (readSync(fd, table, 0, table.length, HEADER_BYTES) !== table.length) throw new TeacherCacheError(`teacher cache ${this.dir}: ${meta.file} is truncated`);
      shard.idsAt = HEADER_BYTES + table.length;
      shard.lpAt = shard.idsAt + positions * k * idBytes;
      shard.idBytes = idBytes;
      shard.lpBytes = lpBytes;
      if (shard.lpAt + positions * k * lpBytes !== meta.bytes || fstatSync(fd).size !== meta.bytes) throw new TeacherCacheError(`teacher cache ${this.dir}: ${meta.file} has the wrong size (truncated or corrupt); rebuild the cache`);
      let position = 0;
      for (let r = 0; r < rows; r++) {
        const length = table.readUInt32LE(r * 4);
        const key = table.subarray(rows * 4 + r * KEY_BYTES, rows * 4 + (r + 1) * KEY_BYTES).toString('hex');
        this.index.set(key, { shard: s, position, length });
        position += length;
      }
    });
  }

  private ensureVerified(s: OpenShard): void {
    if (s.verified) return;
    if (sha256File(join(this.dir, s.meta.file)) !== s.meta.sha256) throw new TeacherCacheError(`teacher cache ${this.dir}: ${s.meta.file} fails its checksum (corrupt); rebuild the cache`);
    s.verified = true;
  }

  async run(batch: TokenBatch): Promise<TeacherOutput> {
    const k = this.k;
    const ids = new Int32Array(batch.batch * batch.seq * k);
    const logprobs = new Float32Array(batch.batch * batch.seq * k).fill(PAD_LOGPROB);
    batchRows(batch).forEach((row, b) => {
      if (row.ids.length === 0) return;
      const loc = this.index.get(rowKey(Int32Array.from(row.ids)).toString('hex'));
      if (!loc) {
        throw new TeacherCacheError(`a batch row of ${row.ids.length} tokens is not in teacher cache ${this.dir}: the training data or its options differ from the ones the cache was built with; rebuild it with slimlm teacher-cache`);
      }
      const s = this.shards[loc.shard];
      this.ensureVerified(s);
      const n = loc.length * k;
      const idBuf = Buffer.alloc(n * s.idBytes);
      const lpBuf = Buffer.alloc(n * s.lpBytes);
      readSync(s.fd, idBuf, 0, idBuf.length, s.idsAt + loc.position * k * s.idBytes);
      readSync(s.fd, lpBuf, 0, lpBuf.length, s.lpAt + loc.position * k * s.lpBytes);
      const rowIds = s.idBytes === 2 ? new Uint16Array(idBuf.buffer, idBuf.byteOffset, n) : new Int32Array(idBuf.buffer, idBuf.byteOffset, n);
      const rowLp = s.lpBytes === 2 ? f16BytesToF32(lpBuf) : new Float32Array(lpBuf.buffer, lpBuf.byteOffset, n);
      row.positions.forEach((t, i) => {
        const dst = (b * batch.seq + t) * k;
        for (let j = 0; j < k; j++) { ids[dst + j] = rowIds[i * k + j]; logprobs[dst + j] = rowLp[i * k + j]; }
      });
    });
    return { kind: 'sparse', k, ids, logprobs };
  }

  private closeFiles(): void {
    for (const s of this.shards.splice(0)) closeSync(s.fd);
  }

  async close(): Promise<void> {
    this.closeFiles();
  }
}
