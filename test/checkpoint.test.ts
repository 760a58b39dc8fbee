import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CheckpointError, describeCheckpoint, openCheckpoint, permuteHFToMeta, permuteMetaToHF, writeLlamaGGUF, type Checkpoint,
} from '../src/models/checkpoint.js';
import { Llama2cFile } from '../src/formats/llama2c.js';
import { GGUFFile } from '../src/formats/gguf.js';
import { castFloat, f32ToBf16Bytes, toFloat32 } from '../src/formats/dtype.js';
import { writeHFFolder } from '../src/formats/hf.js';
import type { HostTensor } from '../src/formats/tensor.js';
import { maxAbsDiff, referenceLogits } from './llama-reference.js';

const STORIES = '../shared/models/stories260K/stories260K.bin';
const TINY_GGUF = '../shared/fixtures/llama-2-tiny-random.gguf';
const FIX = 'test/fixtures';
const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-ckpt-'));

function weightsF32(c: Checkpoint): Map<string, HostTensor> {
  return new Map(c.tensorNames().map((n) => [n, castFloat(c.getTensor(n), 'f32')]));
}
function refJson(dir: string) {
  return JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8'));
}
function logitsFile(dir: string, name: string): Float32Array {
  const b = readFileSync(join(dir, name));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

test('stories260K.bin opens with the right config, tokenizer beside it, f32 tensors', () => {
  const c = openCheckpoint(STORIES);
  assert.equal(c.format, 'llama2c');
  assert.deepEqual(c.config, {
    modelType: 'llama', vocabSize: 512, hiddenSize: 64, intermediateSize: 172, numHiddenLayers: 5, numAttentionHeads: 8,
    numKeyValueHeads: 4, headDim: 8, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 512, slidingWindow: null,
    tieWordEmbeddings: true, bosTokenId: 1, eosTokenId: 2, padTokenId: null, torchDtype: 'float32',
  });
  assert.equal(c.tokenizerPath, join('../shared/models/stories260K', 'tok512.bin'));
  assert.equal(c.tensorNames().length, 47);
  assert.ok(!c.tensorNames().includes('lm_head.weight'));
  assert.deepEqual(c.tensorInfo('model.layers.0.self_attn.k_proj.weight'), { dtype: 'f32', shape: [32, 64], byteSize: 32 * 64 * 4 });
  const d = describeCheckpoint(c);
  assert.equal(d.parameterCount, 260032);
  assert.equal(d.storedBytes, 260032 * 4);
  assert.throws(() => c.getTensor('layers.0.attention.wq.weight'), /no tensor "layers\.0\.attention\.wq\.weight"/);
  c.close();
});

test('stories260K via openCheckpoint (HF order) reproduces llama2.c model.py logits (PyTorch, Meta-order RoPE)', () => {
  const dir = join(FIX, 'stories260K-ref');
  const ref = refJson(dir);
  const c = openCheckpoint(STORIES);
  const logits = referenceLogits(c.config, weightsF32(c), ref.input_ids).flat();
  c.close();
  assert.ok(maxAbsDiff(logits, logitsFile(dir, ref.logits.file)) < 1e-4);
});

test('RoPE permutation: HF rotate-half on permuted q/k gives the same attention scores as Meta interleaved on the originals', () => {
  const heads = 2, hd = 8, dim = 5, theta = 10000;
  const w = Float32Array.from({ length: heads * hd * dim }, (_, i) => Math.sin(i * 1.7));
  const t: HostTensor = { dtype: 'f32', shape: [heads * hd, dim], data: new Uint8Array(w.buffer) };
  const hf = toFloat32(permuteMetaToHF(t, heads));
  const x = [0.3, -1, 0.5, 2, -0.7];
  const proj = (m: Float32Array) => Array.from({ length: heads * hd }, (_, r) => x.reduce((a, v, j) => a + v * m[r * dim + j], 0));
  const rot = (v: number[], pos: number, pair: (i: number) => [number, number]) => {
    const out = [...v];
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const [a, b] = pair(i).map((k) => h * hd + k);
        const ang = pos * theta ** (-(2 * i) / hd);
        out[a] = v[a] * Math.cos(ang) - v[b] * Math.sin(ang);
        out[b] = v[a] * Math.sin(ang) + v[b] * Math.cos(ang);
      }
    }
    return out;
  };
  const meta = (v: number[], p: number) => rot(v, p, (i) => [2 * i, 2 * i + 1]);
  const half = (v: number[], p: number) => rot(v, p, (i) => [i, i + hd / 2]);
  const dot = (a: number[], b: number[], h: number) => a.slice(h * hd, (h + 1) * hd).reduce((s, v, i) => s + v * b[h * hd + i], 0);
  for (const [pq, pk] of [[3, 1], [7, 7], [12, 2]]) {
    for (let h = 0; h < heads; h++) {
      const sMeta = dot(meta(proj(w), pq), meta(proj(w), pk), h);
      const sHF = dot(half(proj(hf), pq), half(proj(hf), pk), h);
      assert.ok(Math.abs(sMeta - sHF) < 1e-9, `${sMeta} vs ${sHF}`);
    }
  }
  assert.deepEqual(permuteHFToMeta(permuteMetaToHF(t, heads), heads).data, t.data);
});

test('stories260K → GGUF (Meta-order q/k) equals the llama2.c bytes; GGUF reopens to the same HF tensors and logits', () => {
  const dir = tmp();
  const c = openCheckpoint(STORIES);
  const path = join(dir, 'stories260K.gguf');
  writeLlamaGGUF(path, c.config, (n) => c.getTensor(n), { type: 'F32', name: 'stories260K' });
  const g = GGUFFile.open(path);
  const l2c = Llama2cFile.open(STORIES);
  for (let i = 0; i < 5; i++) {
    // Both files hold Meta order: HF permutation at load composed with the writer's inverse is the identity.
    assert.deepEqual(g.readRaw(`blk.${i}.attn_q.weight`), l2c.read(`layers.${i}.attention.wq.weight`).data);
    assert.deepEqual(g.readRaw(`blk.${i}.attn_k.weight`), l2c.read(`layers.${i}.attention.wk.weight`).data);
    assert.deepEqual(g.readRaw(`blk.${i}.ffn_gate.weight`), l2c.read(`layers.${i}.feed_forward.w1.weight`).data);
  }
  assert.equal(g.number('llama.block_count'), 5);
  assert.equal(g.number('llama.attention.head_count_kv'), 4);
  g.close();
  l2c.close();
  const back = openCheckpoint(path);
  assert.equal(back.tokenizerPath, path);
  assert.deepEqual({ ...back.config, torchDtype: undefined }, { ...c.config, torchDtype: undefined });
  for (const n of c.tensorNames()) assert.deepEqual(back.getTensor(n), c.getTensor(n), n);
  // Q8_0 export: dequantized weights still give close logits (w2 rows of 172 fall back to F16).
  const q = join(dir, 'q8.gguf');
  writeLlamaGGUF(q, c.config, (n) => c.getTensor(n), { type: 'Q8_0' });
  const cq = openCheckpoint(q);
  assert.equal(cq.tensorInfo('model.layers.0.self_attn.q_proj.weight').dtype, 'Q8_0');
  assert.equal(cq.tensorInfo('model.layers.0.mlp.down_proj.weight').dtype, 'f16');
  const ids = [1, 403, 407, 261, 378, 432];
  const exact = referenceLogits(c.config, weightsF32(c), ids), quant = referenceLogits(cq.config, weightsF32(cq), ids);
  const diff = maxAbsDiff(exact.flat(), quant.flat());
  const argmax = (v: number[]) => v.indexOf(Math.max(...v));
  assert.ok(diff > 0 && diff < 0.5, `Q8_0 logit drift ${diff}`);
  assert.deepEqual(quant.map(argmax), exact.map(argmax));
  [c, back, cq].forEach((x) => x.close());
  rmSync(dir, { recursive: true });
});

test('llama-2-tiny-random.gguf: config from llama.* metadata, every tensor readable in HF layout', () => {
  const c = openCheckpoint(TINY_GGUF);
  assert.equal(c.format, 'gguf');
  assert.equal(c.config.vocabSize, 32000);
  assert.equal(c.config.hiddenSize, 8);
  assert.equal(c.config.numHiddenLayers, 1);
  assert.equal(c.config.rmsNormEps, 1e-5);
  assert.equal(c.config.tieWordEmbeddings, false);
  assert.equal(c.tensorInfo('model.embed_tokens.weight').dtype, 'f16');
  assert.deepEqual(c.tensorInfo('model.layers.0.mlp.down_proj.weight').shape, [8, 32]);
  for (const n of c.tensorNames()) assert.ok(toFloat32(c.getTensor(n)).every(Number.isFinite));
  // q: Meta rows in the file; HF rows here.
  const g = GGUFFile.open(TINY_GGUF);
  const q = g.read('blk.0.attn_q.weight');
  assert.deepEqual(c.getTensor('model.layers.0.self_attn.q_proj.weight'), permuteMetaToHF(q, 2));
  g.close();
  c.close();
});

test('HF fixtures written by PyTorch: mistral-tiny (f32), mistral-tiny-bf16 (sharded), llama-tiny (tied)', () => {
  const f32 = openCheckpoint(join(FIX, 'mistral-tiny'));
  assert.equal(f32.config.slidingWindow, 7);
  assert.equal(f32.config.modelType, 'mistral');
  const bf = openCheckpoint(join(FIX, 'mistral-tiny-bf16'));
  assert.equal(bf.config.ropeTheta, 1e6);
  assert.equal(bf.tensorNames().length, 30);
  for (const n of f32.tensorNames()) {
    const a = bf.getTensor(n);
    assert.equal(a.dtype, 'bf16');
    assert.deepEqual(Buffer.from(a.data), Buffer.from(f32ToBf16Bytes(toFloat32(f32.getTensor(n)))), n);
  }
  assert.deepEqual(describeCheckpoint(bf).dtypes, { bf16: { tensors: 30, parameters: 164288, bytes: 328576 } });
  for (const name of ['mistral-tiny', 'llama-tiny']) {
    const dir = join(FIX, name);
    const c = openCheckpoint(dir);
    const ref = refJson(dir);
    const logits = referenceLogits(c.config, weightsF32(c), ref.single.input_ids.slice(0, 10)).flat();
    const want = logitsFile(dir, ref.single.logits.file).subarray(0, 10 * c.config.vocabSize);
    assert.ok(maxAbsDiff(logits, want) < 1e-4, name);
    c.close();
  }
  const tied = openCheckpoint(join(FIX, 'llama-tiny', 'model.safetensors'));
  assert.equal(tied.config.tieWordEmbeddings, true);
  assert.ok(!tied.tensorNames().includes('lm_head.weight'));
  f32.close();
  bf.close();
  tied.close();
});

test('HF folder → GGUF (F32) → HF: bit-exact for mistral-tiny; HF write → reopen keeps bf16', () => {
  const dir = tmp();
  const src = openCheckpoint(join(FIX, 'mistral-tiny'));
  writeLlamaGGUF(join(dir, 'm.gguf'), src.config, (n) => src.getTensor(n), { type: 'F32' });
  const g = openCheckpoint(join(dir, 'm.gguf'));
  assert.equal(g.config.slidingWindow, 7);
  for (const n of src.tensorNames()) assert.deepEqual(g.getTensor(n), src.getTensor(n), n);
  const bf = openCheckpoint(join(FIX, 'mistral-tiny-bf16'));
  const out = join(dir, 'hf');
  writeHFFolder(out, bf.config, bf.tensorNames().map((name) => ({ name, ...bf.tensorInfo(name), dtype: 'bf16' as const, data: () => bf.getTensor(name).data })), { maxShardBytes: 100_000 });
  const re = openCheckpoint(out);
  assert.deepEqual(re.config, bf.config);
  for (const n of bf.tensorNames()) assert.deepEqual(re.getTensor(n), bf.getTensor(n));
  [src, g, bf, re].forEach((c) => c.close());
  rmSync(dir, { recursive: true });
});

test('checkpoint errors name the file and the tensor: missing, wrong shape, unexpected, no config', () => {
  const dir = tmp();
  const src = openCheckpoint(join(FIX, 'llama-tiny'));
  const all = new Map(src.tensorNames().map((n) => [n, src.getTensor(n)]));
  const write = (name: string, m: Map<string, HostTensor>) => {
    writeHFFolder(join(dir, name), src.config, m);
    return join(dir, name);
  };
  const missing = new Map(all);
  missing.delete('model.layers.1.mlp.up_proj.weight');
  assert.throws(() => openCheckpoint(write('missing', missing)), (e: Error) => e instanceof CheckpointError && /model\.safetensors: missing tensor\(s\) "model\.layers\.1\.mlp\.up_proj\.weight"/.test(e.message));
  const wrong = new Map(all);
  wrong.set('model.norm.weight', { dtype: 'f32', shape: [47], data: new Uint8Array(47 * 4) });
  assert.throws(() => openCheckpoint(write('wrong', wrong)), /tensor "model\.norm\.weight" has shape \[47\] but the config implies \[48\]/);
  const extra = new Map(all);
  extra.set('model.layers.0.self_attn.q_proj.bias', { dtype: 'f32', shape: [48], data: new Uint8Array(48 * 4) });
  assert.throws(() => openCheckpoint(write('extra', extra)), /unexpected tensor "model\.layers\.0\.self_attn\.q_proj\.bias"/);
  const lone = join(dir, 'lone');
  write('lone', all);
  rmSync(join(lone, 'config.json'));
  assert.throws(() => openCheckpoint(lone), /lone: folder has no config\.json/);
  assert.throws(() => openCheckpoint(join(lone, 'model.safetensors')), /no config\.json beside the weights/);
  assert.throws(() => openCheckpoint(join(dir, 'nope.gguf')), /no such file/);
  copyFileSync(STORIES, join(dir, 'weird.pt'));
  assert.throws(() => openCheckpoint(join(dir, 'weird.pt')), /unknown checkpoint type/);
  // GGUF whose block_count disagrees with its tensors.
  const g = join(dir, 'bad.gguf');
  writeLlamaGGUF(g, src.config, (n) => src.getTensor(n), { type: 'F32', metadata: { 'llama.block_count': 3 } });
  assert.throws(() => openCheckpoint(g), /bad\.gguf: (missing tensor|llama\.block_count)/);
  writeFileSync(join(dir, 'trunc.bin'), readFileSync(STORIES).subarray(0, 1000));
  assert.throws(() => openCheckpoint(join(dir, 'trunc.bin')), /trunc\.bin: size mismatch/);
  src.close();
  rmSync(dir, { recursive: true });
});

test('config.json: transformers 5 rope_parameters read, RoPE scaling and other activations refused rather than run wrong', async () => {
  const { configFromHF } = await import('../src/models/config.js');
  const base = { model_type: 'llama', vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2 };
  assert.equal(configFromHF(base).ropeTheta, 10000);
  assert.equal(configFromHF({ ...base, rope_theta: 500000 }).ropeTheta, 500000);
  assert.equal(configFromHF({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 100 } }).ropeTheta, 100);
  assert.equal(configFromHF({ ...base, rope_scaling: { rope_type: 'default' } }).ropeTheta, 10000);
  assert.equal(configFromHF({ ...base, hidden_act: 'silu' }).modelType, 'llama');
  assert.throws(() => configFromHF({ ...base, rope_parameters: { rope_type: 'linear', factor: 4, rope_theta: 10000 } }), /rope_parameters .* is not supported/);
  assert.throws(() => configFromHF({ ...base, rope_scaling: { type: 'dynamic', factor: 2 } }), /rope_scaling .* is not supported/);
  assert.throws(() => configFromHF({ ...base, hidden_act: 'relu' }), /hidden_act "relu" is not supported/);
});
