/**
 * Quantized Linear layers for the decoder graph, through buildLlamaGraph's WeightSource `linear` hook:
 *  - int4 / int8 blockwise → com.microsoft MatMulNBits (accuracy_level 4: activations quantized to int8 per block and
 *    int8 dot products; without it the 8-bit kernel dequantizes to fp32 first and is far slower);
 *  - int8 per row → com.microsoft DynamicQuantizeMatMul (B int8 [K, N], one scale per output row);
 *  - NF4 / FP4 (bitsandbytes) → MatMulBnb4 (exact), or the fast route: each NF4 block re-coded as an 8-bit MatMulNBits
 *    block with the same scale (q8 = round(127 · code[q4]), scale = absmax / 127; error ≤ absmax/254 per weight,
 *    ~16× below NF4's own step) — see docs/QUANTIZATION.md for the measured trade-off;
 *  - float (embeddings, norms, and any Linear the recipe keeps) → f32 initializers (f16/bf16 converted while written).
 * Weights are produced lazily while the graph is serialized: quantizing from a float checkpoint keeps about one tensor
 * in memory at a time, and pre-quantized checkpoints are copied from their (memory-mapped) files.
 */
import { numel, type HostTensor } from '../formats/tensor.js';
import { writeAsF32, type GraphBuilder, type Tensor } from '../graph/index.js';
import '../graph/contrib.js';
import { blockScales, type Bnb4Tensor } from '../quantize/bnb4.js';
import { nbitsBlocks, type Int8RowWeight, type NBitsWeight } from '../quantize/nbits.js';
import type { WeightSource } from './llamaGraph.js';
import { fileEmbeddingRows } from './embeddingRows.js';

export type QuantizedLinear =
  | { kind: 'nbits'; w: NBitsWeight }
  | { kind: 'int8-row'; w: Int8RowWeight }
  | { kind: 'bnb4'; w: Bnb4Tensor }
  | { kind: 'float'; w: HostTensor };

/** What the graph needs to know before the weight's bytes exist. */
export type LinearLayout =
  | { kind: 'nbits'; bits: 4 | 8; blockSize: number; symmetric: boolean }
  | { kind: 'int8-row' }
  | { kind: 'bnb4'; quantType: 'nf4' | 'fp4'; blocksize: number }
  | { kind: 'float' };

export interface QuantizedWeightProvider {
  /** Non-Linear tensors (embeddings, norms) and float Linear weights, HF layout, f32/f16/bf16. */
  tensor(name: string): HostTensor;
  /** The layout of Linear `name` [N, K]; called while the graph is built. */
  layout(name: string, shape: readonly number[]): LinearLayout;
  /** The Linear's data in that layout; called while the graph is serialized (may quantize on the spot). */
  linear(name: string, shape: readonly number[]): QuantizedLinear;
  /** How a non-Linear tensor is stored ('f32', 'f16', 'bf16', …), when the provider knows without reading it. */
  storedDtype?(name: string): string | undefined;
  /** Where a float tensor's bytes are in a file (HF layout), for providers reading plain files (row lookups). */
  tensorFile?(name: string): { path: string; offset: number; dtype: string; shape: readonly number[] } | undefined;
}

export interface QuantizedSourceOptions {
  /** MatMulNBits accuracy_level (0 = fp32 compute, 4 = int8 activations). Default 4. */
  accuracyLevel?: number;
  /** NF4/FP4 execution: 'int8' (re-coded into 8-bit MatMulNBits blocks, fast) or 'bnb4' (MatMulBnb4, exact, slow). Default 'int8'. */
  nf4Route?: 'int8' | 'bnb4';
  /** MatMulNBits weights over this many bytes run as row slices (default 64 MiB; see MAX_PREPACK_BYTES). */
  maxSliceBytes?: number;
}

const u8 = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Re-code bnb 4-bit blocks as 8-bit MatMulNBits blocks of the same size (rows of K must be whole blocks). */
export function bnb4ToNBits8(q: Bnb4Tensor): NBitsWeight {
  const [N, K] = q.shape;
  if (K % q.blocksize !== 0) throw new RangeError(`bnb4 → int8: row length ${K} is not a multiple of the block size ${q.blocksize}`);
  const levels = Uint8Array.from(q.code, (c) => Math.round(c * 127) + 128);
  const scales = blockScales(q).map((s) => Math.fround(s / 127));
  const B = new Uint8Array(N * K);
  for (let i = 0; i < N * K; i++) { const byte = q.packed[i >> 1]; B[i] = levels[i & 1 ? byte & 15 : byte >> 4]; }
  return { bits: 8, blockSize: q.blocksize, N, K, B, scales, zeroPoints: null };
}

/**
 * ORT maps a weight's raw bytes while it pre-packs it, on top of every weight packed before; the LM head is packed last,
 * so a big one (Mistral-7B's 8-bit head: 131 MB) adds its whole size to the peak of loading. Larger MatMulNBits weights
 * run as row slices joined by Concat (same logits: output columns are independent).
 */
const MAX_PREPACK_BYTES = 64 * 2 ** 20;

/** Rows [r0, r1) of row-major pieces stacked in order, each holding whole rows of `rowBytes`. */
function sliceRows(pieces: Uint8Array[], rowBytes: number, r0: number, r1: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let start = 0;
  for (const p of pieces) {
    const end = start + p.byteLength / rowBytes, a = Math.max(r0, start), b = Math.min(r1, end);
    if (a < b) out.push(p.subarray((a - start) * rowBytes, (b - start) * rowBytes));
    start = end;
  }
  return out;
}

/** A WeightSource whose Linear layers run quantized. Keeps one quantized Linear in memory at a time while serializing. */
export function quantizedWeightSource(p: QuantizedWeightProvider, opts: QuantizedSourceOptions = {}): WeightSource {
  const accuracyLevel = opts.accuracyLevel ?? 4;
  const nf4Route = opts.nf4Route ?? 'int8';
  const maxSliceBytes = opts.maxSliceBytes ?? MAX_PREPACK_BYTES;
  let memo: { name: string; q: QuantizedLinear } | null = null;
  const data = (name: string, shape: readonly number[]): QuantizedLinear => {
    if (memo?.name !== name) memo = { name, q: p.linear(name, shape) };
    let q = memo.q;
    if (q.kind === 'bnb4' && nf4Route === 'int8' && q.w.shape[1] % q.w.blocksize === 0) memo.q = q = { kind: 'nbits', w: bnb4ToNBits8(q.w) };
    return q;
  };
  let group: { key: string; parts: NBitsWeight[] } | null = null; // the parts of one fused weight, kept while it is written
  // `last`: the Linear's final initializer (they are written in creation order). Dropping the cached Linear then keeps
  // the last one written from staying alive, in JS memory, while ORT loads the session.
  const lazyParts = (g: GraphBuilder, name: string, dtype: 'u8' | 'i8' | 'f32', dims: number[], parts: () => Uint8Array[], last = false) =>
    g.initializer(name, dtype, dims, {
      byteLength: numel(dims) * (dtype === 'f32' ? 4 : 1),
      write(dst) {
        let at = 0;
        for (const p of parts()) { dst.set(p, at); at += p.byteLength; }
        if (last) memo = group = null;
      },
    });
  const lazy = (g: GraphBuilder, name: string, dtype: 'u8' | 'i8' | 'f32', dims: number[], bytes: () => Uint8Array, last = false) =>
    lazyParts(g, name, dtype, dims, () => [bytes()], last);
  const nbitsData = (name: string, shape: readonly number[]): NBitsWeight => {
    const q = data(name, shape);
    if (q.kind !== 'nbits') throw new Error(`${name}: expected MatMulNBits data, got ${q.kind}`);
    return q.w;
  };
  // Blocks run over the flattened weight; only rows made of whole blocks can be re-coded block for block.
  const effectiveLayout = (name: string, shape: readonly number[]): LinearLayout => {
    const layout = p.layout(name, shape);
    return layout.kind === 'bnb4' && nf4Route === 'int8' && shape[1] % layout.blocksize === 0
      ? { kind: 'nbits', bits: 8, blockSize: layout.blocksize, symmetric: true } : layout;
  };
  const nbitsNode = (g: GraphBuilder, x: Tensor, name: string, N: number, K: number, layout: Extract<LinearLayout, { kind: 'nbits' }>, parts: () => NBitsWeight[]) => {
    const { bits, blockSize, symmetric } = layout;
    const blocks = nbitsBlocks(K, blockSize), rowBytes = (blocks * blockSize * bits) / 8;
    const zpRow = bits === 4 ? Math.ceil(blocks / 2) : blocks;
    // Equal slices of about maxSliceBytes, in whole groups of 128 rows: MLAS walks output columns 128 at a time, so
    // every column is computed by the same code as without slicing.
    const step = Math.ceil(N / Math.ceil((N * rowBytes) / maxSliceBytes) / 128) * 128;
    const slices = Math.ceil(N / step);
    const outs = Array.from({ length: slices }, (_, i) => {
      const r0 = i * step, r1 = Math.min(N, r0 + step), n = r1 - r0, last = i === slices - 1;
      const rows = (bytesPerRow: number, pick: (w: NBitsWeight) => Uint8Array) => () => sliceRows(parts().map(pick), bytesPerRow, r0, r1);
      const prefix = slices === 1 ? name : `${name}.rows${r0}`;
      const inputs = [x,
        lazyParts(g, `${prefix}.qweight`, 'u8', [n, blocks, (blockSize * bits) / 8], rows(rowBytes, (w) => w.B)),
        lazyParts(g, `${prefix}.scales`, 'f32', [n * blocks], rows(4 * blocks, (w) => u8(w.scales)), last && symmetric)];
      if (!symmetric) inputs.push(lazyParts(g, `${prefix}.qzeros`, 'u8', [n * zpRow], rows(zpRow, (w) => w.zeroPoints!), last));
      return g.op('MatMulNBits', inputs, { K, N: n, bits, block_size: blockSize, accuracy_level: accuracyLevel });
    });
    return slices === 1 ? outs[0] : g.concat(outs, -1);
  };
  const floatInit = (g: GraphBuilder, name: string, shape: number[], get: () => HostTensor) =>
    g.initializer(name, 'f32', shape, {
      byteLength: numel(shape) * 4,
      write(dst) {
        const t = get();
        if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') throw new Error(`${name}: dtype ${t.dtype} is not a float`);
        writeAsF32(t.dtype, t.data, dst);
      },
    });
  const floats = new Map<string, Tensor>(); // a tied embedding serves the gather and the float LM head from one initializer
  const floatTensor = (g: GraphBuilder, name: string, shape: number[]) => {
    let t = floats.get(name);
    if (!t) floats.set(name, t = floatInit(g, name, shape, () => p.tensor(name)));
    return t;
  };
  return {
    tensor: floatTensor,
    // Gather touches a few rows per token, but a long generation maps more and more of the table (page-cache
    // read-around); a 16-bit table stays 16-bit, half the memory, and its rows widen to f32 exactly after the lookup.
    embedding(g: GraphBuilder, name: string, shape: number[]): Tensor {
      const dtype = p.storedDtype?.(name) ?? p.tensorFile?.(name)?.dtype;
      if (dtype !== 'bf16' && dtype !== 'f16') return floatTensor(g, name, shape);
      return g.initializer(name, dtype, shape, {
        byteLength: numel(shape) * 2,
        write(dst) {
          const t = p.tensor(name);
          if (t.dtype !== dtype) throw new Error(`${name}: stored as ${dtype}, read as ${t.dtype}`);
          dst.set(u8(t.data));
        },
      });
    },
    embeddingRows(name: string, shape: number[]) {
      const at = p.tensorFile?.(name);
      if (!at || (at.dtype !== 'f32' && at.dtype !== 'f16' && at.dtype !== 'bf16') || at.shape.join() !== shape.join()) return undefined;
      return fileEmbeddingRows({ path: at.path, offset: at.offset, dtype: at.dtype, rows: shape[0], cols: shape[1] });
    },
    linear(g: GraphBuilder, x: Tensor, name: string, shape: number[]): Tensor {
      const [N, K] = shape;
      const layout = effectiveLayout(name, shape);
      switch (layout.kind) {
        case 'float': return g.matMul(x, floatTensor(g, name, shape), { transB: true });
        case 'nbits': return nbitsNode(g, x, name, N, K, layout, () => [nbitsData(name, shape)]);
        case 'int8-row': {
          const rw = () => { const q = data(name, shape); if (q.kind !== 'int8-row') throw new Error(`${name}: expected int8 rows, got ${q.kind}`); return q.w; };
          return g.op('DynamicQuantizeMatMul', [x,
            lazy(g, `${name}.qweight`, 'i8', [K, N], () => u8(rw().BT)),
            lazy(g, `${name}.scales`, 'f32', [N], () => u8(rw().scales), true)]);
        }
        case 'bnb4': {
          const bw = () => { const q = data(name, shape); if (q.kind !== 'bnb4') throw new Error(`${name}: expected bnb4 data, got ${q.kind}`); return q.w; };
          const blocks = Math.ceil((N * K) / layout.blocksize);
          return g.op('MatMulBnb4', [x,
            lazy(g, `${name}.qweight`, 'u8', [Math.ceil((N * K) / 2)], () => bw().packed),
            lazy(g, `${name}.absmax`, 'f32', [blocks], () => u8(blockScales(bw())), true)],
          { K, N, block_size: layout.blocksize, quant_type: layout.quantType === 'nf4' ? 1 : 0 });
        }
      }
    },
    // MatMulNBits rows are independent, so weights of one layout and input size join by stacking their rows.
    fusedLinear(g, x, names, shapes) {
      const layouts = names.map((n, i) => effectiveLayout(n, shapes[i]));
      const [first] = layouts;
      if (first.kind !== 'nbits' || shapes.some((s) => s[1] !== shapes[0][1])) return undefined;
      if (layouts.some((l) => l.kind !== 'nbits' || l.bits !== first.bits || l.blockSize !== first.blockSize || l.symmetric !== first.symmetric)) return undefined;
      const key = names.join('+');
      const parts = () => {
        if (group?.key !== key) group = { key, parts: names.map((n, i) => nbitsData(n, shapes[i])) };
        return group.parts;
      };
      const N = shapes.reduce((n, s) => n + s[0], 0);
      return nbitsNode(g, x, key, N, shapes[0][1], first, parts);
    },
  };
}

/** Bytes a Linear [N, K] occupies in `layout` (what the quantized checkpoint stores for it; float counted as f32). */
export function linearLayoutBytes(layout: LinearLayout, N: number, K: number, doubleQuant = true): number {
  switch (layout.kind) {
    case 'float': return N * K * 4;
    case 'int8-row': return N * K + 4 * N;
    case 'nbits': {
      const blocks = nbitsBlocks(K, layout.blockSize);
      const zp = layout.symmetric ? 0 : layout.bits === 4 ? N * Math.ceil(blocks / 2) : N * blocks;
      return N * blocks * ((layout.blockSize * layout.bits) / 8 + 4) + zp;
    }
    case 'bnb4': {
      const n = N * K, blocks = Math.ceil(n / layout.blocksize);
      return Math.ceil(n / 2) + 64 + (doubleQuant ? blocks + 4 * Math.ceil(blocks / 256) + 1024 + 4 : 4 * blocks);
    }
  }
}
