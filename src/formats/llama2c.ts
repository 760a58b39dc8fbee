/**
 * llama2.c checkpoints (https://github.com/karpathy/llama2.c): `run.c` legacy format (version 0) and `export.py`'s
 * version 1 (fp32) / version 2 (int8 Q8_0 groups, read by `runq.c`), both starting with the magic "ak42".
 *
 * v0: int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (negative = separate classifier), seq_len; then f32
 *     token_embedding_table, rms_att_weight, wq, wk, wv, wo, rms_ffn_weight, w1, w2, w3, rms_final_weight,
 *     freq_cis_real, freq_cis_imag (seq_len*head_size/2 each; unused), wcls (only if unshared). Per-layer arrays are stacked.
 * v1/v2: 256-byte header (magic, version, the 7 ints, u8 shared_classifier, v2: i32 group_size); v1 f32 weights ordered
 *     norms first; v2 norms in f32 then each matrix as int8 values followed by f32 per-group scales.
 * Weights are `[out, in]` (PyTorch Linear layout); q/k rows are in Meta's interleaved RoPE order. Names here are Meta's
 * (`layers.{i}.attention.wq.weight`, ...); mapping to Hugging Face names and the RoPE permutation live in src/models/checkpoint.ts.
 */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { writeFileAtomic } from './atomic.js';
import { preadExact } from './safetensors.js';
import type { HostTensor } from './tensor.js';

export class Llama2cError extends Error {}

const MAGIC = 0x616b3432; // "ak42"

export interface Llama2cHeader {
  version: 0 | 1 | 2;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
  /** v2 only: int8 quantization group size. */
  groupSize?: number;
}

interface Region {
  shape: number[];
  offset: number;
  /** 'f32' = plain floats; 'q8' = int8 values then f32 scales per group. */
  kind: 'f32' | 'q8';
}

/** Meta-style tensor names and row-major shapes stored in a llama2.c checkpoint, in v0 file order. */
export function llama2cTensorShapes(h: Llama2cHeader): Map<string, number[]> {
  const headSize = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headSize;
  const m = new Map<string, number[]>();
  m.set('tok_embeddings.weight', [h.vocabSize, h.dim]);
  for (let i = 0; i < h.nLayers; i++) {
    const p = `layers.${i}.`;
    m.set(p + 'attention_norm.weight', [h.dim]);
    m.set(p + 'attention.wq.weight', [h.dim, h.dim]);
    m.set(p + 'attention.wk.weight', [kvDim, h.dim]);
    m.set(p + 'attention.wv.weight', [kvDim, h.dim]);
    m.set(p + 'attention.wo.weight', [h.dim, h.dim]);
    m.set(p + 'ffn_norm.weight', [h.dim]);
    m.set(p + 'feed_forward.w1.weight', [h.hiddenDim, h.dim]);
    m.set(p + 'feed_forward.w2.weight', [h.dim, h.hiddenDim]);
    m.set(p + 'feed_forward.w3.weight', [h.hiddenDim, h.dim]);
  }
  m.set('norm.weight', [h.dim]);
  if (!h.sharedClassifier) m.set('output.weight', [h.vocabSize, h.dim]);
  return m;
}

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);
const STACKED_V0 = ['attention_norm', 'attention.wq', 'attention.wk', 'attention.wv', 'attention.wo', 'ffn_norm', 'feed_forward.w1', 'feed_forward.w2', 'feed_forward.w3'];

export class Llama2cFile {
  readonly header: Llama2cHeader;
  readonly fileSize: number;
  private readonly regions = new Map<string, Region>();
  private fd: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
    this.fileSize = fstatSync(fd).size;
    if (this.fileSize < 28) this.fail(`file is ${this.fileSize} bytes, too short for a llama2.c header`);
    const head = new DataView(preadExact(fd, 0, Math.min(256, this.fileSize), path).buffer);
    let expected: number;
    if (head.getUint32(0, true) === MAGIC) {
      const version = head.getInt32(4, true);
      if (version !== 1 && version !== 2) this.fail(`llama2.c export version ${version} is not supported (supported: legacy 0, 1, 2)`);
      if (this.fileSize < 256) this.fail(`file is ${this.fileSize} bytes, too short for a version ${version} header`);
      const ints = Array.from({ length: 7 }, (_, i) => head.getInt32(8 + 4 * i, true));
      this.header = this.makeHeader(version, ints, head.getUint8(36) === 1, version === 2 ? head.getInt32(37, true) : undefined);
      expected = version === 1 ? this.layoutV1() : this.layoutV2();
    } else {
      const ints = Array.from({ length: 7 }, (_, i) => head.getInt32(4 * i, true));
      this.header = this.makeHeader(0, ints.map((v, i) => (i === 5 ? Math.abs(v) : v)), ints[5] > 0);
      expected = this.layoutV0();
    }
    if (expected !== this.fileSize) {
      const h = this.header;
      this.fail(
        `size mismatch: header (v${h.version}: dim ${h.dim}, hidden ${h.hiddenDim}, layers ${h.nLayers}, heads ${h.nHeads}/${h.nKvHeads}, vocab ${h.vocabSize}, ` +
          `seq ${h.seqLen}, ${h.sharedClassifier ? 'shared' : 'separate'} classifier) implies ${expected} bytes but the file has ${this.fileSize}` +
          (this.fileSize < expected ? ' (truncated?)' : ' (trailing data or wrong header)'),
      );
    }
  }

  static open(path: string): Llama2cFile {
    const fd = openSync(path, 'r');
    try {
      return new Llama2cFile(path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private fail(msg: string): never {
    throw new Llama2cError(`${this.path}: ${msg}`);
  }

  private makeHeader(version: 0 | 1 | 2, ints: number[], shared: boolean, groupSize?: number): Llama2cHeader {
    const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen] = ints;
    const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'];
    ints.forEach((v, i) => {
      if (!(v > 0) || v > 1 << 24) this.fail(`implausible header value ${names[i]} = ${v}; not a llama2.c checkpoint?`);
    });
    if (dim % nHeads !== 0 || (dim / nHeads) % 2 !== 0) this.fail(`dim ${dim} is not a multiple of 2*n_heads (${nHeads})`);
    if (nHeads % nKvHeads !== 0) this.fail(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
    if (groupSize !== undefined && !(groupSize > 0)) this.fail(`invalid group_size ${groupSize}`);
    return { version, dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, sharedClassifier: shared, groupSize };
  }

  private layoutV0(): number {
    const h = this.header;
    const shapes = llama2cTensorShapes(h);
    let pos = 28;
    const put = (name: string, kind: Region['kind'] = 'f32') => {
      const shape = shapes.get(name)!;
      this.regions.set(name, { shape, offset: pos, kind });
      pos += prod(shape) * 4;
    };
    put('tok_embeddings.weight');
    for (const s of STACKED_V0) for (let i = 0; i < h.nLayers; i++) put(`layers.${i}.${s}.weight`);
    put('norm.weight');
    pos += 2 * h.seqLen * (h.dim / h.nHeads / 2) * 4; // freq_cis_real, freq_cis_imag
    if (!h.sharedClassifier) put('output.weight');
    return pos;
  }

  private layoutV1(): number {
    const h = this.header;
    const shapes = llama2cTensorShapes(h);
    let pos = 256;
    const put = (name: string) => {
      const shape = shapes.get(name)!;
      this.regions.set(name, { shape, offset: pos, kind: 'f32' });
      pos += prod(shape) * 4;
    };
    for (const s of ['attention_norm', 'ffn_norm']) for (let i = 0; i < h.nLayers; i++) put(`layers.${i}.${s}.weight`);
    put('norm.weight');
    put('tok_embeddings.weight');
    for (const s of STACKED_V0) if (!s.endsWith('norm')) for (let i = 0; i < h.nLayers; i++) put(`layers.${i}.${s}.weight`);
    if (!h.sharedClassifier) put('output.weight');
    return pos;
  }

  private layoutV2(): number {
    const h = this.header;
    const gs = h.groupSize!;
    const shapes = llama2cTensorShapes(h);
    let pos = 256;
    for (const s of ['attention_norm', 'ffn_norm']) {
      for (let i = 0; i < h.nLayers; i++) {
        this.regions.set(`layers.${i}.${s}.weight`, { shape: [h.dim], offset: pos, kind: 'f32' });
        pos += h.dim * 4;
      }
    }
    this.regions.set('norm.weight', { shape: [h.dim], offset: pos, kind: 'f32' });
    pos += h.dim * 4;
    const q = (name: string) => {
      const shape = shapes.get(name)!;
      const n = prod(shape);
      if (n % gs !== 0) this.fail(`tensor "${name}" (${n} values) is not a multiple of group_size ${gs}`);
      this.regions.set(name, { shape, offset: pos, kind: 'q8' });
      pos += n + (n / gs) * 4;
    };
    q('tok_embeddings.weight');
    for (const s of STACKED_V0) if (!s.endsWith('norm')) for (let i = 0; i < h.nLayers; i++) q(`layers.${i}.${s}.weight`);
    if (!h.sharedClassifier) q('output.weight');
    return pos;
  }

  /** Meta-style names in file order. */
  names(): string[] {
    return [...this.regions.keys()];
  }
  has(name: string): boolean {
    return this.regions.has(name);
  }
  shape(name: string): number[] {
    const r = this.regions.get(name);
    if (!r) this.fail(`no tensor "${name}"`);
    return [...r.shape];
  }
  /** Stored element type: 'f32', or 'q8' (v2: int8 groups + f32 scales, read back as f32). */
  storedType(name: string): 'f32' | 'q8' {
    const r = this.regions.get(name);
    if (!r) this.fail(`no tensor "${name}"`);
    return r.kind;
  }

  /** One tensor as f32 (v2 int8 groups are dequantized: value = q * scale, as runq.c does). */
  read(name: string): HostTensor {
    const r = this.regions.get(name);
    if (!r) this.fail(`no tensor "${name}"`);
    if (this.fd === null) this.fail(`reading tensor "${name}" after close()`);
    const n = prod(r.shape);
    const what = `${this.path}: tensor "${name}"`;
    if (r.kind === 'f32') return { dtype: 'f32', shape: [...r.shape], data: preadExact(this.fd, r.offset, n * 4, what) };
    const gs = this.header.groupSize!;
    const bytes = preadExact(this.fd, r.offset, n + (n / gs) * 4, what);
    const q = new Int8Array(bytes.buffer, 0, n);
    const scales = new Float32Array(bytes.slice(n).buffer);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = q[i] * scales[Math.floor(i / gs)];
    return { dtype: 'f32', shape: [...r.shape], data: new Uint8Array(out.buffer) };
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/**
 * Write a legacy (version 0) llama2.c checkpoint atomically, readable by `run.c`. `get(name)` returns f32 values for each
 * Meta-style name of `llama2cTensorShapes(header)` (q/k in Meta order). freq_cis tables are written as llama2.c's exporter does.
 */
export function writeLlama2c(path: string, header: Omit<Llama2cHeader, 'version' | 'groupSize'>, get: (name: string) => Float32Array, ropeTheta = 10000): void {
  const h: Llama2cHeader = { ...header, version: 0 };
  const shapes = llama2cTensorShapes(h);
  const order = ['tok_embeddings.weight', ...STACKED_V0.flatMap((s) => Array.from({ length: h.nLayers }, (_, i) => `layers.${i}.${s}.weight`)), 'norm.weight'];
  writeFileAtomic(path, (sink) => {
    sink.write(new Uint8Array(Int32Array.from([h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.sharedClassifier ? h.vocabSize : -h.vocabSize, h.seqLen]).buffer));
    const put = (name: string) => {
      const v = get(name);
      if (v.length !== prod(shapes.get(name)!)) throw new Llama2cError(`${path}: tensor "${name}" has ${v.length} values, expected shape [${shapes.get(name)}]`);
      sink.write(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    };
    order.forEach(put);
    const half = h.dim / h.nHeads / 2;
    const re = new Float32Array(h.seqLen * half), im = new Float32Array(h.seqLen * half);
    for (let t = 0; t < h.seqLen; t++) {
      for (let i = 0; i < half; i++) {
        const f = Math.fround(1 / Math.fround(ropeTheta ** Math.fround((2 * i) / (2 * half))));
        re[t * half + i] = Math.cos(t * f);
        im[t * half + i] = Math.sin(t * f);
      }
    }
    sink.write(new Uint8Array(re.buffer));
    sink.write(new Uint8Array(im.buffer));
    if (!h.sharedClassifier) put('output.weight');
  });
}
