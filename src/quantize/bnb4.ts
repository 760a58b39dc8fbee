/**
 * bitsandbytes 4-bit quantization (NF4 / FP4), with optional double quantization of the block scales, and its Hugging Face
 * safetensors layout. Algorithm: bitsandbytes `functional.quantize_4bit` + the default backend kernels
 * (https://github.com/bitsandbytes-foundation/bitsandbytes, `bitsandbytes/functional.py`, `bitsandbytes/backends/default/ops.py`):
 *  - blocks of `blocksize` (64) values; absmax = max |x| (fp32); scaled = clamp(x · (1/absmax), -1, 1) in fp32;
 *    index = argmin |scaled − code| (first index on ties); two indices per byte, the first in the high nibble.
 *  - double quantization: offset = mean(absmax); (absmax − offset) quantized blockwise to 8 bits in blocks of 256 with the
 *    signed dynamic map (`create_dynamic_map`), its own fp32 absmax per block ("nested_absmax").
 *  - dequantization: absmax = dynamic[q8] · nested_absmax + offset; w = code[q4] · absmax.
 * HF layout (QuantState.as_dict(packed=True)): `W` uint8 [(n+1)/2, 1], `W.absmax` (uint8 if nested, else f32), `W.quant_map` f32[16],
 * `W.nested_absmax` f32, `W.nested_quant_map` f32[256], `W.quant_state.bitsandbytes__nf4` = UTF-8 JSON bytes
 * {quant_type, blocksize, dtype, shape, nested_blocksize, nested_dtype, nested_offset}.
 */
import type { HostTensor } from '../formats/tensor.js';

export type Bnb4Type = 'nf4' | 'fp4';

/** NF4: quantiles of N(0, 1) normalized to [-1, 1] (bitsandbytes `get_4bit_type('nf4')`, QLoRA). */
export const NF4_CODE = Float32Array.of(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

/** FP4 (1 sign, 2 exponent, 1 mantissa bits, bias 2) in bit-pattern order, divided by its max 12 (`get_4bit_type('fp4')`). */
export const FP4_CODE = Float32Array.from([0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3], (v) => v / 12);

export const codeBook = (t: Bnb4Type): Float32Array => (t === 'nf4' ? NF4_CODE : FP4_CODE);

/**
 * bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`): for each
 * exponent 10^(i-6), i = 0..6, the midpoints of linspace(0.1, 1, 2^i + 1), ±, plus 0 and 1, sorted. The linspace here is
 * computed in f64 and rounded; torch's SIMD linspace can differ by 1 ulp in some entries, which is harmless: files carry
 * the map they were made with (`nested_quant_map`) and dequantization always uses the stored map.
 */
export function dynamicMap(): Float32Array {
  const f = Math.fround;
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const n = 2 ** i + 1;
    const b = Array.from({ length: n }, (_, k) => f(0.1 + ((1 - 0.1) * k) / (n - 1)));
    const scale = f(10 ** (i - 6));
    const means = b.slice(0, -1).map((v, k) => f(f(v + b[k + 1]) / 2));
    data.push(...means.map((m) => f(scale * m)), ...means.map((m) => f(-scale * m)));
  }
  data.push(0, 1);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** Nearest-code search with argmin semantics (ties → lowest index), in O(log n) via a sorted copy of the code. */
class NearestCode {
  private readonly sorted: Float32Array;
  private readonly index: Uint8Array;
  constructor(private readonly code: Float32Array) {
    const order = [...code.keys()].sort((a, b) => code[a] - code[b] || a - b);
    this.sorted = Float32Array.from(order, (i) => code[i]);
    this.index = Uint8Array.from(order);
  }
  find(s: number): number {
    const { sorted, index, code } = this;
    let lo = 0, hi = sorted.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (sorted[mid] < s) lo = mid + 1; else hi = mid; }
    // Candidates around the insertion point (two on each side cover duplicate values such as FP4's ±0).
    let best = -1, bestDiff = Infinity;
    for (let k = Math.max(0, lo - 2); k < Math.min(sorted.length, lo + 2); k++) {
      const i = index[k];
      const diff = Math.abs(Math.fround(s - code[i]));
      if (diff < bestDiff || (diff === bestDiff && i < best)) { best = i; bestDiff = diff; }
    }
    return best;
  }
}

/** Blockwise absmax quantization to the nearest entry of `code` (bitsandbytes `quantize_blockwise` / `quantize_4bit` kernels). */
export function quantizeBlockwise(x: Float32Array, code: Float32Array, blocksize: number): { indices: Uint8Array; absmax: Float32Array } {
  const f = Math.fround;
  const nearest = new NearestCode(code);
  const blocks = Math.ceil(x.length / blocksize);
  const absmax = new Float32Array(blocks);
  const indices = new Uint8Array(x.length);
  const zeroIndex = code.indexOf(0);
  for (let b = 0; b < blocks; b++) {
    const start = b * blocksize, end = Math.min(x.length, start + blocksize);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(x[i]));
    absmax[b] = m;
    // An all-zero block: torch gets NaN from 0·(1/0) and argmin picks index 0; any index dequantizes to 0, we take code 0.
    if (m === 0) { indices.fill(zeroIndex, start, end); continue; }
    const inv = f(1 / m);
    for (let i = start; i < end; i++) indices[i] = nearest.find(Math.min(1, Math.max(-1, f(x[i] * inv))));
  }
  return { indices, absmax };
}

export interface Bnb4Tensor {
  quantType: Bnb4Type;
  blocksize: number;
  /** Row-major shape of the original weight ([out, in] for a Linear). */
  shape: number[];
  /** Original dtype name as torch spells it ('float32' | 'float16' | 'bfloat16'). */
  dtype: string;
  /** Packed indices, two per byte (first element in the high nibble). */
  packed: Uint8Array;
  /** f32 absmax per block, or 8-bit codes of (absmax − offset) when double quantized. */
  absmax: Float32Array | Uint8Array;
  code: Float32Array;
  nested?: { absmax: Float32Array; code: Float32Array; blocksize: number; offset: number };
}

export interface Bnb4Options {
  quantType?: Bnb4Type;
  blocksize?: number;
  doubleQuant?: boolean;
  /** Dtype recorded in the quant state (what the weight is dequantized to). */
  dtype?: string;
}

export function quantizeBnb4(x: Float32Array, shape: number[], opts: Bnb4Options = {}): Bnb4Tensor {
  const quantType = opts.quantType ?? 'nf4', blocksize = opts.blocksize ?? 64;
  if (![32, 64, 128, 256, 512, 1024, 2048, 4096].includes(blocksize)) throw new RangeError(`bnb 4-bit blocksize ${blocksize} is not one of 32..4096 (powers of 2)`);
  const code = codeBook(quantType);
  const { indices, absmax } = quantizeBlockwise(x, code, blocksize);
  const packed = new Uint8Array(Math.ceil(x.length / 2));
  for (let i = 0; i < x.length; i += 2) packed[i >> 1] = (indices[i] << 4) | (i + 1 < x.length ? indices[i + 1] : 0);
  const base = { quantType, blocksize, shape: [...shape], dtype: opts.dtype ?? 'float32', packed, code };
  if (!opts.doubleQuant) return { ...base, absmax };
  let sum = 0;
  for (const v of absmax) sum += v;
  const offset = Math.fround(sum / absmax.length);
  const centered = Float32Array.from(absmax, (v) => Math.fround(v - offset));
  const map = dynamicMap();
  const q = quantizeBlockwise(centered, map, 256);
  return { ...base, absmax: q.indices, nested: { absmax: q.absmax, code: map, blocksize: 256, offset } };
}

/** The fp32 scale of every block (double quantization undone). */
export function blockScales(q: Bnb4Tensor): Float32Array {
  if (!q.nested) return q.absmax as Float32Array;
  const f = Math.fround;
  const { absmax: nAbs, code, blocksize, offset } = q.nested;
  return Float32Array.from(q.absmax as Uint8Array, (c, i) => f(f(code[c] * nAbs[Math.floor(i / blocksize)]) + offset));
}

export function dequantizeBnb4(q: Bnb4Tensor): Float32Array {
  const n = q.shape.reduce((a, b) => a * b, 1);
  const scales = blockScales(q);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const byte = q.packed[i >> 1];
    out[i] = Math.fround(q.code[i & 1 ? byte & 15 : byte >> 4] * scales[Math.floor(i / q.blocksize)]);
  }
  return out;
}

/** Storage bits per weight: 4 + absmax (32 or 8 bits per block) + nested absmax (32 per 256 blocks) + offset, code books amortized. */
export function bnb4BitsPerWeight(q: Bnb4Tensor): number {
  const n = q.shape.reduce((a, b) => a * b, 1);
  const bytes = q.packed.byteLength + q.absmax.byteLength + q.code.byteLength + (q.nested ? q.nested.absmax.byteLength + q.nested.code.byteLength + 4 : 0);
  return (bytes * 8) / n;
}

/** Python json.dumps formatting (", " and ": " separators; floats as repr) so the packed state matches bitsandbytes' bytes. */
function pyJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`;
  if (v && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(', ')}}`;
  if (typeof v === 'number' && !Number.isInteger(v)) {
    const s = String(v);
    // Python repr switches to exponent form below 1e-4 ("1e-05"), JS only below 1e-6.
    if (Math.abs(v) < 1e-4 && v !== 0) return v.toExponential().replace(/e([+-])(\d)$/, 'e$10$2');
    return s;
  }
  return JSON.stringify(v);
}

const u8 = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** Bytes of the packed quant state JSON, padded with spaces (valid JSON whitespace) when it is shorter. */
export const BNB4_STATE_BYTES = 224;

/**
 * The tensors bitsandbytes/transformers save for the 4-bit weight `name` (e.g. `model.layers.0.mlp.up_proj.weight`).
 * `padState` pads the quant-state JSON to BNB4_STATE_BYTES so streaming writers know every size up front.
 */
export function bnb4ToHF(name: string, q: Bnb4Tensor, padState = false): [string, HostTensor][] {
  const state: Record<string, unknown> = { quant_type: q.quantType, blocksize: q.blocksize, dtype: q.dtype, shape: q.shape };
  const out: [string, HostTensor][] = [
    [name, { dtype: 'u8', shape: [q.packed.length, 1], data: q.packed }],
    [`${name}.absmax`, q.nested ? { dtype: 'u8', shape: [q.absmax.length], data: q.absmax as Uint8Array } : { dtype: 'f32', shape: [q.absmax.length], data: u8(q.absmax as Float32Array) }],
    [`${name}.quant_map`, { dtype: 'f32', shape: [16], data: u8(q.code) }],
  ];
  if (q.nested) {
    out.push([`${name}.nested_absmax`, { dtype: 'f32', shape: [q.nested.absmax.length], data: u8(q.nested.absmax) }]);
    out.push([`${name}.nested_quant_map`, { dtype: 'f32', shape: [q.nested.code.length], data: u8(q.nested.code) }]);
    Object.assign(state, { nested_blocksize: q.nested.blocksize, nested_dtype: 'float32', nested_offset: q.nested.offset });
  }
  let text = pyJson(state);
  if (padState) {
    if (text.length > BNB4_STATE_BYTES) throw new RangeError(`${name}: quant state ${text} exceeds ${BNB4_STATE_BYTES} bytes`);
    text = text.padEnd(BNB4_STATE_BYTES, ' ');
  }
  const json = new TextEncoder().encode(text);
  out.push([`${name}.quant_state.bitsandbytes__${q.quantType}`, { dtype: 'u8', shape: [json.length], data: json }]);
  return out;
}

export class Bnb4FormatError extends Error {}

/** Read a bnb 4-bit weight back from its HF tensors; `get` returns undefined for absent names. */
export function bnb4FromHF(name: string, get: (n: string) => HostTensor | undefined): Bnb4Tensor {
  const need = (n: string): HostTensor => {
    const t = get(n);
    if (!t) throw new Bnb4FormatError(`${name}: bitsandbytes 4-bit weight lacks "${n}"`);
    return t;
  };
  const f32 = (t: HostTensor, what: string): Float32Array => {
    if (t.dtype !== 'f32') throw new Bnb4FormatError(`${name}: ${what} must be float32, got ${t.dtype}`);
    return new Float32Array(t.data.slice().buffer);
  };
  const stateKey = ['nf4', 'fp4'].map((t) => `${name}.quant_state.bitsandbytes__${t}`).find((k) => get(k));
  if (!stateKey) throw new Bnb4FormatError(`${name}: no quant_state.bitsandbytes__nf4/fp4 entry`);
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(new TextDecoder().decode(need(stateKey).data)) as Record<string, unknown>;
  } catch (e) {
    throw new Bnb4FormatError(`${name}: quant_state is not valid JSON (${(e as Error).message})`);
  }
  const quantType = state.quant_type as Bnb4Type;
  const shape = state.shape as number[];
  const blocksize = state.blocksize as number;
  if ((quantType !== 'nf4' && quantType !== 'fp4') || !Array.isArray(shape) || !Number.isInteger(blocksize)) {
    throw new Bnb4FormatError(`${name}: quant_state ${JSON.stringify(state)} lacks quant_type/shape/blocksize`);
  }
  const n = shape.reduce((a, b) => a * b, 1);
  const packed = need(name).data;
  if (packed.length !== Math.ceil(n / 2)) throw new Bnb4FormatError(`${name}: ${packed.length} packed bytes for shape [${shape}] (need ${Math.ceil(n / 2)})`);
  const absT = need(`${name}.absmax`);
  const nestedAbs = get(`${name}.nested_absmax`);
  const blocks = Math.ceil(n / blocksize);
  const q: Bnb4Tensor = {
    quantType, blocksize, shape, dtype: String(state.dtype ?? 'float32'), packed,
    absmax: nestedAbs ? absT.data : f32(absT, 'absmax'),
    code: f32(need(`${name}.quant_map`), 'quant_map'),
  };
  if (q.absmax.length !== blocks) throw new Bnb4FormatError(`${name}: ${q.absmax.length} absmax values for ${blocks} blocks`);
  if (nestedAbs) {
    q.nested = {
      absmax: f32(nestedAbs, 'nested_absmax'),
      code: f32(need(`${name}.nested_quant_map`), 'nested_quant_map'),
      blocksize: Number(state.nested_blocksize ?? 256),
      offset: Number(state.nested_offset),
    };
    if (!Number.isFinite(q.nested.offset)) throw new Bnb4FormatError(`${name}: quant_state has no numeric nested_offset`);
  }
  return q;
}
