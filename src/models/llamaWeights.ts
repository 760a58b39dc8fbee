import { DTYPE_BYTES, numel, type HostTensor } from '../formats/tensor.js';
import { writeAsF32, type InitializerData } from '../graph/index.js';
import { expectedTensors, type LlamaConfig } from './config.js';

export class WeightError extends Error {
  override name = 'WeightError';
}

/** Names some checkpoints carry that hold nothing we need (RoPE tables are recomputed from rope_theta). */
const IGNORABLE = /(^|\.)rotary_emb\.inv_freq$/;

const list = (names: string[], max = 5) => names.slice(0, max).join(', ') + (names.length > max ? `, … (${names.length} total)` : '');

/** What validation needs to know of a tensor without reading it. */
export interface TensorMeta { dtype: string; shape: readonly number[]; byteLength?: number }

/**
 * Check that the tensors hold exactly what `config` needs, with HF shapes and a float dtype; every problem is reported
 * at once. A tied model may also carry `lm_head.weight` (some exports do); it is ignored.
 */
export function validateLlamaTensors(config: LlamaConfig, tensors: ReadonlyMap<string, TensorMeta>): void {
  const expected = expectedTensors(config);
  const problems: string[] = [];
  const missing = [...expected.keys()].filter((n) => !tensors.has(n));
  if (missing.length) problems.push(`missing tensors: ${list(missing)}`);
  const unexpected = [...tensors.keys()].filter(
    (n) => !expected.has(n) && !IGNORABLE.test(n) && !(n === 'lm_head.weight' && config.tieWordEmbeddings));
  if (unexpected.length) problems.push(`unexpected tensors (not a Llama/Mistral layout for this config?): ${list(unexpected)}`);
  for (const [name, shape] of expected) {
    const t = tensors.get(name);
    if (!t) continue;
    if (t.dtype !== 'f32' && t.dtype !== 'f16' && t.dtype !== 'bf16') {
      problems.push(`${name}: dtype ${t.dtype} is not supported (need f32, f16 or bf16)`);
    } else if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      problems.push(`${name}: shape [${t.shape}] but the config needs [${shape}]`);
    } else if (t.byteLength !== undefined && t.byteLength !== numel(shape) * DTYPE_BYTES[t.dtype]) {
      problems.push(`${name}: ${t.byteLength} bytes, but ${t.dtype}[${shape}] needs ${numel(shape) * DTYPE_BYTES[t.dtype]}`);
    }
  }
  if (problems.length) throw new WeightError(`invalid weights for ${config.modelType} config: ${problems.join('; ')}`);
}

export function validateLlamaWeights(config: LlamaConfig, weights: ReadonlyMap<string, HostTensor>): void {
  validateLlamaTensors(config, new Map([...weights].map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape, byteLength: t.data.byteLength }])));
}

/** The tensor as f32 initializer bytes: f32 is used as is; f16/bf16 are converted while the model is serialized. */
export function f32InitializerData(t: HostTensor): InitializerData {
  if (t.dtype === 'f32') return t.data;
  if (t.dtype !== 'f16' && t.dtype !== 'bf16') throw new WeightError(`cannot convert ${t.dtype} to f32`);
  const dtype = t.dtype;
  return { byteLength: numel(t.shape) * 4, write: (dst) => writeAsF32(dtype, t.data, dst) };
}
