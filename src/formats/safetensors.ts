/**
 * safetensors: https://github.com/huggingface/safetensors (format section of README.md; Rust `safetensors::tensor` validation).
 * Layout: u64 LE header length N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`,
 * then the data buffer; offsets are relative to the buffer, tensors are contiguous, non-overlapping and cover it exactly.
 * Sharded checkpoints: `model.safetensors.index.json` = `{metadata: {total_size}, weight_map: {tensor: shard file}}` (transformers).
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeBytesAtomic, writeFileAtomic } from './atomic.js';
import { DTYPE_BYTES, numel, type DType, type HostTensor } from './tensor.js';

export class SafetensorsError extends Error {}

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'f32', F16: 'f16', BF16: 'bf16', I64: 'i64', I32: 'i32', I16: 'i16', I8: 'i8', U8: 'u8', BOOL: 'bool',
};
const DTYPE_TO_ST = Object.fromEntries(Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k])) as Record<DType, string>;
/** Same bound as the Rust implementation: a larger header is a corrupt (or hostile) file. */
const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsTensorInfo {
  dtype: DType;
  shape: number[];
  /** Absolute byte offset in the file and byte length. */
  offset: number;
  byteLength: number;
}

/** What both the single-file and the sharded reader offer. */
export interface SafetensorsReader {
  readonly path: string;
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  info(name: string): SafetensorsTensorInfo;
  /** Positional read of one tensor into a fresh buffer. */
  read(name: string): HostTensor;
  /** The file holding `name` (its offset is info(name).offset). */
  fileOf(name: string): string;
  close(): void;
}

/** Read exactly `length` bytes at `position` (chunked: one readSync call is limited to 2 GiB). */
export function preadExact(fd: number, position: number, length: number, what: string): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, Math.min(length - done, 1 << 30), position + done);
    if (n === 0) throw new SafetensorsError(`${what}: unexpected end of file (wanted ${length} bytes at offset ${position})`);
    done += n;
  }
  return out;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export class SafetensorsFile implements SafetensorsReader {
  readonly metadata: Record<string, string>;
  private readonly tensors = new Map<string, SafetensorsTensorInfo>();
  private fd: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
    try {
      this.metadata = this.parseHeader();
    } catch (e) {
      closeSync(fd);
      this.fd = null;
      throw e;
    }
  }

  static open(path: string): SafetensorsFile {
    return new SafetensorsFile(path, openSync(path, 'r'));
  }

  private fail(msg: string): never {
    throw new SafetensorsError(`${this.path}: ${msg}`);
  }

  private parseHeader(): Record<string, string> {
    const fd = this.fd!;
    const fileSize = fstatSync(fd).size;
    if (fileSize < 8) this.fail(`file is ${fileSize} bytes, too short for a safetensors header`);
    const lenBytes = preadExact(fd, 0, 8, this.path);
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(fileSize - 8)) this.fail(`header length ${headerLen} runs past the end of the file (${fileSize} bytes); truncated or not safetensors`);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) this.fail(`header length ${headerLen} exceeds ${MAX_HEADER_BYTES} bytes`);
    const n = Number(headerLen);
    const text = new TextDecoder('utf-8', { fatal: false }).decode(preadExact(fd, 8, n, this.path));
    let header: unknown;
    try {
      header = JSON.parse(text);
    } catch (e) {
      this.fail(`header is not valid JSON (${(e as Error).message})`);
    }
    if (!header || typeof header !== 'object' || Array.isArray(header)) this.fail('header is not a JSON object');
    const dataStart = 8 + n;
    const dataLen = fileSize - dataStart;
    let metadata: Record<string, string> = {};
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (!raw || typeof raw !== 'object' || Array.isArray(raw) || Object.values(raw).some((v) => typeof v !== 'string')) {
          this.fail('__metadata__ must be an object of string values');
        }
        metadata = raw as Record<string, string>;
        continue;
      }
      const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (!t || typeof t !== 'object') this.fail(`tensor "${name}": entry is not an object`);
      const dtype = typeof t.dtype === 'string' ? ST_TO_DTYPE[t.dtype] : undefined;
      if (!dtype) this.fail(`tensor "${name}": unsupported dtype ${JSON.stringify(t.dtype)} (supported: ${Object.keys(ST_TO_DTYPE).join(', ')})`);
      if (!Array.isArray(t.shape) || !t.shape.every(isNonNegInt)) this.fail(`tensor "${name}": shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
      const off = t.data_offsets;
      if (!Array.isArray(off) || off.length !== 2 || !isNonNegInt(off[0]) || !isNonNegInt(off[1]) || off[1] < off[0]) {
        this.fail(`tensor "${name}": bad data_offsets ${JSON.stringify(off)}`);
      }
      const [begin, end] = off as [number, number];
      const shape = t.shape as number[];
      const want = numel(shape) * DTYPE_BYTES[dtype];
      if (end - begin !== want) this.fail(`tensor "${name}": ${t.dtype} shape [${shape}] needs ${want} bytes but data_offsets span ${end - begin}`);
      if (end > dataLen) this.fail(`tensor "${name}": data_offsets [${begin}, ${end}] run past the data buffer (${dataLen} bytes); file truncated?`);
      spans.push({ name, begin, end });
      this.tensors.set(name, { dtype, shape, offset: dataStart + begin, byteLength: end - begin });
    }
    // Like the Rust reader: sorted by offset, tensors must tile the buffer exactly (no overlap, no hole, no trailing bytes).
    spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
    let pos = 0;
    for (const s of spans) {
      if (s.begin < pos) this.fail(`tensor "${s.name}": data_offsets [${s.begin}, ${s.end}] overlap the previous tensor (ends at ${pos})`);
      if (s.begin > pos) this.fail(`tensor "${s.name}": gap of ${s.begin - pos} bytes before its data (offsets must be contiguous)`);
      pos = s.end;
    }
    if (pos !== dataLen) this.fail(`tensors cover ${pos} bytes but the data buffer has ${dataLen}`);
    return metadata;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  info(name: string): SafetensorsTensorInfo {
    const t = this.tensors.get(name);
    if (!t) this.fail(`no tensor "${name}"`);
    return t;
  }
  fileOf(name: string): string {
    this.info(name);
    return this.path;
  }
  read(name: string): HostTensor {
    const t = this.info(name);
    if (this.fd === null) this.fail(`reading tensor "${name}" after close()`);
    return { dtype: t.dtype, shape: [...t.shape], data: preadExact(this.fd, t.offset, t.byteLength, `${this.path}: tensor "${name}"`) };
  }
  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Reader over `model.safetensors.index.json`; shards are opened on first use and validated then. */
export class ShardedSafetensors implements SafetensorsReader {
  readonly metadata: Record<string, string> = {};
  readonly weightMap: Map<string, string>;
  private readonly shards = new Map<string, SafetensorsFile>();

  private constructor(readonly path: string, weightMap: Map<string, string>) {
    this.weightMap = weightMap;
  }

  static open(indexPath: string): ShardedSafetensors {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(indexPath, 'utf8'));
    } catch (e) {
      throw new SafetensorsError(`${indexPath}: cannot read shard index (${(e as Error).message})`);
    }
    const wm = (json as { weight_map?: unknown })?.weight_map;
    if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new SafetensorsError(`${indexPath}: missing "weight_map" object`);
    const map = new Map<string, string>();
    const dir = dirname(indexPath);
    for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) {
        throw new SafetensorsError(`${indexPath}: tensor "${name}" maps to invalid shard ${JSON.stringify(file)}`);
      }
      map.set(name, file);
    }
    const missing = [...new Set(map.values())].filter((f) => !existsSync(join(dir, f)));
    if (missing.length) throw new SafetensorsError(`${indexPath}: missing shard file(s): ${missing.map((f) => join(dir, f)).join(', ')}`);
    return new ShardedSafetensors(indexPath, map);
  }

  private shardFor(name: string): SafetensorsFile {
    const file = this.weightMap.get(name);
    if (!file) throw new SafetensorsError(`${this.path}: no tensor "${name}" in weight_map`);
    let shard = this.shards.get(file);
    if (!shard) {
      shard = SafetensorsFile.open(join(dirname(this.path), file));
      this.shards.set(file, shard);
    }
    if (!shard.has(name)) throw new SafetensorsError(`${shard.path}: tensor "${name}" listed in ${basename(this.path)} is not in this shard`);
    return shard;
  }

  names(): string[] {
    return [...this.weightMap.keys()];
  }
  has(name: string): boolean {
    return this.weightMap.has(name);
  }
  info(name: string): SafetensorsTensorInfo {
    return this.shardFor(name).info(name);
  }
  read(name: string): HostTensor {
    return this.shardFor(name).read(name);
  }
  fileOf(name: string): string {
    return this.shardFor(name).path;
  }
  /** Shard file names in index order. */
  shardFiles(): string[] {
    return [...new Set(this.weightMap.values())];
  }
  close(): void {
    for (const s of this.shards.values()) s.close();
    this.shards.clear();
  }
}

/** Open a `.safetensors` file or a `*.safetensors.index.json` shard index. */
export function openSafetensors(path: string): SafetensorsReader {
  return path.endsWith('.json') ? ShardedSafetensors.open(path) : SafetensorsFile.open(path);
}

/** A tensor to write; `data` may be a thunk so tensors are produced (e.g. converted) one at a time while streaming. */
export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  data: Uint8Array | (() => Uint8Array);
}

export type TensorInput = Iterable<TensorEntry> | Map<string, HostTensor>;

export function toEntries(tensors: TensorInput): TensorEntry[] {
  if (tensors instanceof Map) return [...tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, data: t.data }));
  return [...tensors];
}

function buildHeader(entries: TensorEntry[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let pos = 0;
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.name)) throw new SafetensorsError(`duplicate tensor name "${e.name}"`);
    seen.add(e.name);
    if (!DTYPE_TO_ST[e.dtype]) throw new SafetensorsError(`tensor "${e.name}": unsupported dtype ${e.dtype}`);
    const size = numel(e.shape) * DTYPE_BYTES[e.dtype];
    header[e.name] = { dtype: DTYPE_TO_ST[e.dtype], shape: e.shape, data_offsets: [pos, pos + size] };
    pos += size;
  }
  // Pad the JSON with spaces so the data buffer starts 8-byte aligned, as the reference writer does.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const body = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + body.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(body.length), true);
  out.set(body, 8);
  return out;
}

/**
 * Write a safetensors file atomically, streaming tensor data one tensor at a time.
 * `__metadata__` always carries `format: "pt"` (transformers refuses files without it).
 */
export function writeSafetensors(path: string, tensors: TensorInput, metadata: Record<string, string> = {}): void {
  const entries = toEntries(tensors);
  const header = buildHeader(entries, { format: 'pt', ...metadata });
  writeFileAtomic(path, (sink) => {
    sink.write(header);
    for (const e of entries) {
      const data = typeof e.data === 'function' ? e.data() : e.data;
      const want = numel(e.shape) * DTYPE_BYTES[e.dtype];
      if (data.byteLength !== want) throw new SafetensorsError(`${path}: tensor "${e.name}": ${e.dtype} [${e.shape}] needs ${want} bytes, got ${data.byteLength}`);
      sink.write(data);
    }
  });
}

export const SAFETENSORS_INDEX = 'model.safetensors.index.json';

/**
 * Write `model-0000i-of-0000n.safetensors` shards of at most `maxShardBytes` each (a larger single tensor gets a shard of
 * its own) plus `model.safetensors.index.json`, like transformers' `save_pretrained(max_shard_size=...)`. Returns the shard names.
 */
export function writeShardedSafetensors(dir: string, tensors: TensorInput, maxShardBytes: number, metadata: Record<string, string> = {}): string[] {
  const entries = toEntries(tensors);
  const groups: TensorEntry[][] = [];
  let cur: TensorEntry[] = [];
  let curBytes = 0;
  let total = 0;
  for (const e of entries) {
    const size = numel(e.shape) * DTYPE_BYTES[e.dtype];
    if (cur.length && curBytes + size > maxShardBytes) {
      groups.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(e);
    curBytes += size;
    total += size;
  }
  if (cur.length || !groups.length) groups.push(cur);
  const pad = (i: number) => String(i).padStart(5, '0');
  const names = groups.map((_, i) => `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`);
  const weightMap: Record<string, string> = {};
  groups.forEach((g, i) => {
    writeSafetensors(join(dir, names[i]), g, metadata);
    for (const e of g) weightMap[e.name] = names[i];
  });
  // The index goes last: readers never see an index pointing at shards that do not exist yet.
  writeBytesAtomic(join(dir, SAFETENSORS_INDEX), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  return names;
}
