/**
 * The student: its config (from a JSON file, a flag string like "hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408", or
 * by default about 1/10 of the teacher's parameters), with vocabulary, BOS/EOS/PAD and the architecture details
 * (RoPE, norm eps, sliding window) copied from the teacher and checked; and its initial weights: fresh (HF Llama init:
 * N(0, 0.02) for matrices and embeddings, ones for norms) or copied from the teacher where shapes match.
 */
import { existsSync, readFileSync } from 'node:fs';
import { configFromHF, expectedTensors, parameterCount, type LlamaConfig } from '../models/config.js';

export class StudentError extends Error {
  override name = 'StudentError';
}

export interface StudentShape {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  intermediateSize: number;
  headDim?: number;
  tieWordEmbeddings?: boolean;
}

const FLAG_KEYS: Record<string, keyof StudentShape> = {
  hidden: 'hiddenSize', layers: 'numHiddenLayers', heads: 'numAttentionHeads', 'kv-heads': 'numKeyValueHeads',
  ffn: 'intermediateSize', 'head-dim': 'headDim', tied: 'tieWordEmbeddings',
};

/**
 * A student spec: a path to a JSON config (HF config.json keys), or "hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408".
 * Returns the fields given; missing ones are derived from the teacher by `studentConfig`.
 */
export function parseStudentSpec(spec: string): { shape: Partial<StudentShape>; json: Record<string, unknown> | null } {
  if (!spec.includes('=') && /\.json$/i.test(spec.trim()) && !existsSync(spec)) throw new StudentError(`student config ${spec}: no such file`);
  const inline = /^\s*[{[]/.test(spec);
  if (inline || existsSync(spec)) {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(inline ? spec : readFileSync(spec, 'utf8'));
    } catch (e) {
      throw new StudentError(`student config ${spec}: ${(e as Error).message}`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new StudentError(`student config ${spec}: expected a JSON object like a config.json`);
    const n = (k: string) => {
      const v = json[k];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new StudentError(`student config: ${k} must be a positive integer, got ${JSON.stringify(v)}`);
      return v;
    };
    if (json.tie_word_embeddings !== undefined && typeof json.tie_word_embeddings !== 'boolean') {
      throw new StudentError(`student config: tie_word_embeddings must be true or false, got ${JSON.stringify(json.tie_word_embeddings)}`);
    }
    const shape: Partial<StudentShape> = {
      hiddenSize: n('hidden_size'), numHiddenLayers: n('num_hidden_layers'), numAttentionHeads: n('num_attention_heads'),
      numKeyValueHeads: n('num_key_value_heads'), intermediateSize: n('intermediate_size'), headDim: n('head_dim'),
      tieWordEmbeddings: typeof json.tie_word_embeddings === 'boolean' ? json.tie_word_embeddings : undefined,
    };
    return { shape, json };
  }
  const shape: Partial<StudentShape> = {};
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const [k, v] = part.split('=').map((s) => s.trim());
    const key = FLAG_KEYS[k];
    if (!key) throw new StudentError(`student spec: unknown key '${k}' (known: ${Object.keys(FLAG_KEYS).join(', ')})`);
    if (!v) throw new StudentError(`student spec: ${k} needs a value (${k}=N)`);
    if (key === 'tieWordEmbeddings') {
      if (!['true', 'false', '1', '0'].includes(v)) throw new StudentError(`student spec: ${k}=${v} must be true or false`);
      shape.tieWordEmbeddings = v === 'true' || v === '1';
      continue;
    }
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new StudentError(`student spec: ${k}=${v} is not a positive integer`);
    (shape as Record<string, number>)[key] = n;
  }
  return { shape, json: null };
}

/** About `fraction` of the teacher's parameters: the teacher's head size and proportions, fewer/narrower layers. */
export function defaultStudentShape(teacher: LlamaConfig, fraction = 0.1): StudentShape {
  const target = parameterCount(teacher) * fraction;
  const D = teacher.headDim;
  const ffnRatio = teacher.intermediateSize / teacher.hiddenSize;
  let best: { shape: StudentShape; score: number } | null = null;
  for (let layers = 1; layers <= teacher.numHiddenLayers; layers++) {
    for (let heads = 1; heads <= teacher.numAttentionHeads; heads++) {
      const kv = kvFor(heads, teacher);
      const hidden = heads * D;
      const shape: StudentShape = {
        hiddenSize: hidden, numHiddenLayers: layers, numAttentionHeads: heads, numKeyValueHeads: kv,
        intermediateSize: Math.max(8, Math.round((hidden * ffnRatio) / 8) * 8), headDim: D, tieWordEmbeddings: teacher.tieWordEmbeddings,
      };
      // Closest in log-size; among near ties prefer the depth ratio of the teacher (depth/width ≈ teacher's).
      const params = parameterCount(applyShape(teacher, shape));
      const aspect = Math.abs(Math.log((layers / hidden) / (teacher.numHiddenLayers / teacher.hiddenSize)));
      const score = Math.abs(Math.log(params / target)) + 0.05 * aspect;
      if (!best || score < best.score) best = { shape, score };
    }
  }
  return best!.shape;
}

/** KV heads keeping the teacher's query/KV ratio, rounded down to a divisor of `heads`. */
function kvFor(heads: number, teacher: LlamaConfig): number {
  let kv = Math.max(1, Math.round((heads * teacher.numKeyValueHeads) / teacher.numAttentionHeads));
  while (heads % kv) kv--;
  return kv;
}

function applyShape(teacher: LlamaConfig, s: StudentShape): LlamaConfig {
  return {
    ...teacher,
    hiddenSize: s.hiddenSize,
    numHiddenLayers: s.numHiddenLayers,
    numAttentionHeads: s.numAttentionHeads,
    numKeyValueHeads: s.numKeyValueHeads,
    intermediateSize: s.intermediateSize,
    headDim: s.headDim ?? s.hiddenSize / s.numAttentionHeads,
    tieWordEmbeddings: s.tieWordEmbeddings ?? teacher.tieWordEmbeddings,
    torchDtype: 'float32',
  };
}

/**
 * The student config: architecture details, vocabulary and special tokens from the teacher; sizes from `spec` (or the
 * default ≈1/10). A JSON spec that states a different vocabulary or special token ids is an error.
 */
export function studentConfig(teacher: LlamaConfig, spec?: string): LlamaConfig {
  const parsed = spec ? parseStudentSpec(spec) : null;
  const base = defaultStudentShape(teacher);
  const given = parsed?.shape ?? {};
  const heads = given.numAttentionHeads ?? (given.hiddenSize ? Math.max(1, Math.round(given.hiddenSize / teacher.headDim)) : base.numAttentionHeads);
  const hidden = given.hiddenSize ?? heads * (given.headDim ?? teacher.headDim);
  const shape: StudentShape = {
    hiddenSize: hidden,
    numHiddenLayers: given.numHiddenLayers ?? base.numHiddenLayers,
    numAttentionHeads: heads,
    numKeyValueHeads: given.numKeyValueHeads ?? (heads === base.numAttentionHeads ? base.numKeyValueHeads : kvFor(heads, teacher)),
    intermediateSize: given.intermediateSize ?? (hidden === base.hiddenSize ? base.intermediateSize : Math.max(8, Math.round((hidden * teacher.intermediateSize / teacher.hiddenSize) / 8) * 8)),
    headDim: given.headDim ?? hidden / heads,
    tieWordEmbeddings: given.tieWordEmbeddings ?? teacher.tieWordEmbeddings,
  };
  if (!Number.isInteger(shape.headDim) || shape.headDim! % 2) throw new StudentError(`student hidden size ${hidden} / ${heads} heads gives head_dim ${shape.headDim}; it must be an even integer`);
  if (shape.numAttentionHeads % shape.numKeyValueHeads) throw new StudentError(`student heads (${shape.numAttentionHeads}) must be a multiple of kv-heads (${shape.numKeyValueHeads})`);
  const json = parsed?.json;
  if (json) {
    const mismatch: string[] = [];
    const check = (key: string, want: unknown) => {
      if (json[key] !== undefined && json[key] !== null && JSON.stringify(json[key]) !== JSON.stringify(want)) mismatch.push(`${key} ${JSON.stringify(json[key])} (teacher: ${JSON.stringify(want)})`);
    };
    check('vocab_size', teacher.vocabSize);
    check('bos_token_id', teacher.bosTokenId);
    check('eos_token_id', teacher.eosTokenId);
    check('pad_token_id', teacher.padTokenId);
    if (mismatch.length) throw new StudentError(`student config disagrees with the teacher: ${mismatch.join(', ')}; a student must share the teacher's tokenizer`);
    if (json.model_type !== undefined) configFromHF({ ...json, vocab_size: teacher.vocabSize, hidden_size: hidden, intermediate_size: shape.intermediateSize, num_hidden_layers: shape.numHiddenLayers, num_attention_heads: heads });
  }
  return applyShape(teacher, shape);
}

/** Checks a student against a teacher it will learn from: the same vocabulary and special tokens. */
export function checkCompatible(student: LlamaConfig, teacher: { vocabSize: number; bosTokenId?: number | null; eosTokenId?: number | number[] | null }): void {
  if (student.vocabSize !== teacher.vocabSize) throw new StudentError(`vocabulary mismatch: student ${student.vocabSize}, teacher ${teacher.vocabSize}`);
  if (teacher.bosTokenId !== undefined && teacher.bosTokenId !== null && student.bosTokenId !== teacher.bosTokenId) {
    throw new StudentError(`BOS id mismatch: student ${student.bosTokenId}, teacher ${teacher.bosTokenId}`);
  }
}

/** Seeded N(0, 1) samples (mulberry32 + Box–Muller): the same weights for the same seed on every machine. */
export function gaussian(seed: number): () => number {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) { const v = spare; spare = null; return v; }
    const r = Math.sqrt(-2 * Math.log(uniform())), a = 2 * Math.PI * uniform();
    spare = r * Math.sin(a);
    return r * Math.cos(a);
  };
}

/** HF LlamaPreTrainedModel._init_weights: N(0, initializerRange) for Linear/Embedding, ones for RMSNorm. */
export function initStudentWeights(config: LlamaConfig, seed: number, initializerRange = 0.02): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const normal = gaussian(seed);
  for (const [name, shape] of expectedTensors(config)) {
    const t = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (shape.length === 1) t.fill(1);
    else for (let i = 0; i < t.length; i++) t[i] = normal() * initializerRange;
    out.set(name, t);
  }
  return out;
}

/**
 * Copy teacher tensors into the student where shapes match: student layer i takes teacher layer
 * round(i·(Lt−1)/(Ls−1)) (first and last kept, the rest evenly spread, as DistilBERT's every-other-layer init).
 * Returns the names copied.
 */
export function initFromTeacher(student: LlamaConfig, weights: Map<string, Float32Array>, teacher: LlamaConfig, getTeacherTensor: (name: string) => Float32Array): string[] {
  const teacherShapes = expectedTensors(teacher);
  const copied: string[] = [];
  const Ls = student.numHiddenLayers, Lt = teacher.numHiddenLayers;
  for (const [name, shape] of expectedTensors(student)) {
    let source = name;
    const m = /^model\.layers\.(\d+)\.(.*)$/.exec(name);
    if (m) source = `model.layers.${Ls === 1 ? 0 : Math.round((Number(m[1]) * (Lt - 1)) / (Ls - 1))}.${m[2]}`;
    if (name === 'lm_head.weight' && teacher.tieWordEmbeddings) source = 'model.embed_tokens.weight';
    const tshape = teacherShapes.get(source);
    if (!tshape || tshape.length !== shape.length || tshape.some((d, i) => d !== shape[i])) continue;
    weights.set(name, Float32Array.from(getTeacherTensor(source)));
    copied.push(name);
  }
  return copied;
}
