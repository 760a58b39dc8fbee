/**
 * Quantized inference on stories260K: every scheme runs through ORT (MatMulNBits, DynamicQuantizeMatMul, MatMulBnb4),
 * stays close to the float model (mean KL on real text), and a checkpoint written by `slimlm quantize` loads back into
 * exactly the model quantized on the fly. The NF4 folder carries transformers' quantization_config and bnb's tensors.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { openQuantizedCheckpoint, recipeProvider, writeQuantizedCheckpoint } from '../src/models/quantizedCheckpoint.js';
import { quantizedWeightSource } from '../src/models/quantized.js';
import { buildLlamaGraph } from '../src/models/llamaGraph.js';
import { createLlamaModel } from '../src/models/llama.js';
import { loadModel } from '../src/models/quantizedModel.js';
import { evaluatePerplexity, klDivergence, logSoftmax } from '../src/eval/perplexity.js';
import { recipeLayout, type LinearQuantType } from '../src/quantize/recipe.js';
import { loadTokenizer } from '../src/tokenizers/index.js';
import type { CausalLM } from '../src/models/types.js';

const MODEL = '../shared/models/stories260K/stories260K.bin';
const dir = mkdtempSync(join(tmpdir(), 'slimlm-quant-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const tokP = loadTokenizer('../shared/models/stories260K/tok512.bin');
async function sampleIds(): Promise<number[]> {
  const text = readFileSync('../shared/datasets/tinystories_val_slice.txt', 'utf8').slice(0, 4000);
  return (await tokP).encode(text).slice(0, 192);
}

async function logits(model: CausalLM, ids: number[]): Promise<Float32Array> {
  return (await model.forward({ inputIds: [ids], allLogits: true })).logits;
}

function meanKL(ref: Float32Array, q: Float32Array, V: number): number {
  let kl = 0;
  const rows = ref.length / V;
  for (let r = 0; r < rows; r++) kl += klDivergence(logSoftmax(ref.subarray(r * V, (r + 1) * V)), logSoftmax(q.subarray(r * V, (r + 1) * V)));
  return kl / rows;
}

// Mean KL bounds on 192 tokens of TinyStories (measured: int8 ≈ 1e-3, int4 ≈ 3e-2, nf4 ≈ 1e-1 on this 260K-parameter model).
const CASES: [LinearQuantType, number][] = [['int8', 0.01], ['int8-row', 0.01], ['int4', 0.15], ['int4-asym', 0.15], ['nf4', 0.3], ['fp4', 0.6]];

test('quantized stories260K: written checkpoint == on-the-fly quantization, close to float (KL), every ORT kernel', async () => {
  const ids = await sampleIds();
  const float = await loadModel(MODEL, { threads: 1 });
  const ref = await logits(float.model, ids);
  const V = float.config.vocabSize;
  await float.model.dispose();
  for (const [type, bound] of CASES) {
    const out = join(dir, type);
    const ckpt = openCheckpoint(MODEL);
    writeQuantizedCheckpoint(ckpt, out, { type });
    ckpt.close();
    const fromDisk = await loadModel(out, { threads: 1 });
    const onTheFly = await loadModel(MODEL, { threads: 1, quantize: { type } });
    const a = await logits(fromDisk.model, ids), b = await logits(onTheFly.model, ids);
    assert.deepEqual(Array.from(a), Array.from(b), `${type}: checkpoint vs on-the-fly`);
    const kl = meanKL(ref, a, V);
    assert.ok(kl < bound, `${type}: mean KL ${kl} >= ${bound}`);
    assert.ok(fromDisk.storedBytes < float.storedBytes, `${type}: ${fromDisk.storedBytes} bytes stored`);
    await fromDisk.model.dispose();
    await onTheFly.model.dispose();
  }
});

test('MatMulNBits weights split into row slices (what keeps a big LM head out of the loading peak) give identical logits', async () => {
  const ids = await sampleIds();
  for (const type of ['int4-asym', 'int8']) {
    const whole = await loadModel(join(dir, type), { threads: 1 });
    const sliced = await loadModel(join(dir, type), { threads: 1, maxSliceBytes: 4096 });
    assert.deepEqual(Array.from(await logits(sliced.model, ids)), Array.from(await logits(whole.model, ids)), type);
    await whole.model.dispose();
    await sliced.model.dispose();
  }
});

test('NF4 through MatMulBnb4 (exact) and through 8-bit MatMulNBits blocks (fast route) agree closely', async () => {
  const ids = await sampleIds();
  const exact = await loadModel(join(dir, 'nf4'), { threads: 1, nf4Route: 'bnb4' });
  const fast = await loadModel(join(dir, 'nf4'), { threads: 1, nf4Route: 'int8' });
  const kl = meanKL(await logits(exact.model, ids), await logits(fast.model, ids), exact.config.vocabSize);
  assert.ok(kl < 2e-3, `KL(bnb4 ‖ int8 route) = ${kl}`);
  await exact.model.dispose();
  await fast.model.dispose();
});

test('NF4 folder: transformers quantization_config, bnb tensors for every decoder Linear, float head and norms', () => {
  const cfg = JSON.parse(readFileSync(join(dir, 'nf4', 'config.json'), 'utf8'));
  assert.equal(cfg.quantization_config.quant_method, 'bitsandbytes');
  assert.equal(cfg.quantization_config.bnb_4bit_quant_type, 'nf4');
  assert.equal(cfg.quantization_config.bnb_4bit_use_double_quant, true);
  const q = openQuantizedCheckpoint(join(dir, 'nf4'));
  const kinds = Object.entries(q.layouts).map(([n, l]) => `${n.replace(/layers\.\d+/, 'layers.N')}:${l.kind}`);
  assert.ok(kinds.includes('model.layers.N.mlp.down_proj.weight:bnb4'));
  assert.ok(kinds.includes('model.embed_tokens.weight:float')); // tied head stays float, as transformers does
  const state = q.provider.linear('model.layers.0.self_attn.q_proj.weight', [64, 64]);
  assert.equal(state.kind, 'bnb4');
  q.close();
});

test('perplexity windows follow llama.cpp: BOS over each chunk start, second half scored', async () => {
  const V = 8, ctx = 8;
  const seen: number[][] = [];
  // A model that is certain the next token is (current + 1) mod V.
  const fake: CausalLM = {
    config: {} as never,
    async forward({ inputIds }) {
      seen.push([...inputIds[0]]);
      const logits = new Float32Array(ctx * V).fill(-30);
      inputIds[0].forEach((t, i) => { logits[i * V + ((t + 1) % V)] = 30; });
      return { logits, dims: [1, ctx, V], cache: null as never };
    },
    selectCacheRows: () => { throw new Error('unused'); },
    dispose: async () => {},
  } as CausalLM;
  const tokens = Array.from({ length: 20 }, (_, i) => i % V);
  const r = await evaluatePerplexity(fake, tokens, { ctx, bosId: 7 }, fake);
  assert.equal(r.chunks, 2); // 20 tokens → 2 whole windows of 8, the rest dropped
  assert.equal(r.scoredTokens, 2 * (ctx - ctx / 2 - 1));
  assert.deepEqual(seen[0], [7, 1, 2, 3, 4, 5, 6, 7]);
  assert.ok(Math.abs(r.perplexity - 1) < 1e-6);
  assert.equal(r.top1Agreement, 1);
  assert.ok(r.meanKL! < 1e-9);
});

test('GGUF Q4_0/Q8_0 blocks run natively in MatMulNBits and match the dequantized-f32 model', async () => {
  const { exportGGUF } = await import('../src/models/export.js');
  const { AutoModelForCausalLM } = await import('../src/api.js');
  const { ggufProvider } = await import('../src/models/quantizedGGUF.js');
  const ids = (await sampleIds()).slice(0, 64);
  for (const type of ['q4_0', 'q8_0'] as const) {
    const file = join(dir, `s-${type}.gguf`);
    const ckpt = openCheckpoint(MODEL);
    exportGGUF(ckpt, file, { type });
    ckpt.close();
    const g = ggufProvider(file);
    assert.equal(g.provider.layout('model.layers.0.self_attn.q_proj.weight', []).kind, 'nbits');
    g.close();
    const native = await loadModel(file, { threads: 1, accuracyLevel: 0 });
    const dequant = await AutoModelForCausalLM.fromPretrained(file, { threads: 1 });
    const a = await logits(native.model, ids), b = await logits(dequant.model, ids);
    assert.ok(a.every((v, i) => Math.abs(v - b[i]) < 1e-4), type);
    await native.model.dispose();
    await dequant.dispose();
  }
});

test('a bf16 embedding table stays bf16 in the inference graph (Gather, then an exact cast) and gives the f32 table\'s logits', async () => {
  const ckpt = openCheckpoint('test/fixtures/mistral-tiny-bf16');
  try {
    const recipe = { type: 'int8' as const };
    const bf16 = recipeProvider(ckpt, recipe);
    const { storedDtype: _, ...f32 } = bf16; // without the stored dtype the table is written as f32, as before
    const graph = buildLlamaGraph(ckpt.config, quantizedWeightSource(bf16), { fused: true });
    assert.equal(graph.initializers.find((t) => (t.source as { name: string }).name === 'model.embed_tokens.weight')?.dtype, 'bf16');
    const ids = [1, 5, 9, 200, 17, 3, 44, 80];
    const out: Float32Array[] = [];
    for (const p of [bf16, f32]) {
      const model = await createLlamaModel(ckpt.config, quantizedWeightSource(p), { threads: 1 });
      out.push(await logits(model, ids));
      await model.dispose();
    }
    assert.deepEqual(Array.from(out[0]), Array.from(out[1]));
  } finally {
    ckpt.close();
  }
});

test('an untied embedding of a quantized folder is read as rows from the file (inputs_embeds): the Gather graph\'s logits', async () => {
  const ckpt = openCheckpoint('test/fixtures/mistral-tiny-bf16');
  const out = join(dir, 'mistral-tiny-int8');
  try { writeQuantizedCheckpoint(ckpt, out, { type: 'int8' }); } finally { ckpt.close(); }
  const q = openQuantizedCheckpoint(out);
  try {
    const source = quantizedWeightSource(q.provider);
    const rows = source.embeddingRows!('model.embed_tokens.weight', [q.config.vocabSize, q.config.hiddenSize]);
    assert.ok(rows, 'the folder offers row lookups');
    const table = q.provider.tensor('model.embed_tokens.weight');
    const want = Array.from(new Uint16Array(table.data.slice().buffer).subarray(7 * q.config.hiddenSize, 8 * q.config.hiddenSize), (h) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]);
    assert.deepEqual(Array.from(rows!.lookup([7])), want);
    rows!.close();
    const { tensorFile: _, ...gatherOnly } = q.provider;
    const ids = [1, 5, 9, 200, 17, 3, 44, 80];
    const viaRows = await createLlamaModel(q.config, quantizedWeightSource(q.provider), { threads: 1 });
    const viaGather = await createLlamaModel(q.config, quantizedWeightSource(gatherOnly), { threads: 1 });
    assert.deepEqual(Array.from(await logits(viaRows, ids)), Array.from(await logits(viaGather, ids)));
    await viaRows.dispose();
    await viaGather.dispose();
  } finally {
    q.close();
  }
});

test('recipe: the int8 LM head takes the recipe\'s block size, blocks of 32 where its rows are not whole blocks', () => {
  const int4 = (blockSize?: number) => ({ type: 'int4' as const, blockSize });
  assert.deepEqual(recipeLayout(int4(), 'lm_head.weight', 2048), { kind: 'nbits', bits: 8, blockSize: 32, symmetric: true });
  assert.deepEqual(recipeLayout(int4(256), 'lm_head.weight', 4096), { kind: 'nbits', bits: 8, blockSize: 256, symmetric: true });
  assert.deepEqual(recipeLayout(int4(256), 'lm_head.weight', 288), { kind: 'nbits', bits: 8, blockSize: 32, symmetric: true });
  assert.deepEqual(recipeLayout(int4(256), 'model.layers.0.mlp.up_proj.weight', 288), { kind: 'float' });
  assert.deepEqual(recipeLayout({ ...int4(256), lmHead: 'same' }, 'lm_head.weight', 4096), { kind: 'nbits', bits: 4, blockSize: 256, symmetric: true });
});

test('nf4 folders name exactly their float Linear modules in llm_int8_skip_modules (what transformers + bitsandbytes reads); no 8-bit head in them', () => {
  const skipList = (recipe: Parameters<typeof writeQuantizedCheckpoint>[2]) => {
    const out = join(dir, `skip-${JSON.stringify(recipe).replace(/\W+/g, '_')}`);
    const ckpt = openCheckpoint(MODEL);
    try { writeQuantizedCheckpoint(ckpt, out, recipe); } finally { ckpt.close(); }
    return JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).quantization_config.llm_int8_skip_modules as string[];
  };
  assert.deepEqual(skipList({ type: 'nf4' }), ['lm_head']); // the head stays float by default, as transformers does
  assert.deepEqual(skipList({ type: 'nf4', lmHead: 'same' }), []);
  assert.deepEqual(skipList({ type: 'fp4', lmHead: 'same', keep: /down_proj/ }), [0, 1, 2, 3, 4].map((i) => `model.layers.${i}.mlp.down_proj`));
  const ckpt = openCheckpoint(MODEL);
  try {
    assert.throws(() => writeQuantizedCheckpoint(ckpt, join(dir, 'nf4-int8-head'), { type: 'nf4', lmHead: 'int8' }), /no 8-bit head/);
  } finally { ckpt.close(); }
});
