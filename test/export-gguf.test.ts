/**
 * `slimlm export --format gguf`: llama.cpp (node-llama-cpp 3.21.1) loads slimlm's stories260K GGUFs, tokenizes like slimlm
 * from the embedded tokenizer.ggml.* vocabulary, and generates greedily the same tokens as slimlm running the same file.
 * Quantized files: llama.cpp also quantizes activations (Q8) inside its dot products, so free-running greedy text may
 * part at near-ties; there slimlm is teacher-forced on llama.cpp's continuation, and every token llama.cpp chose must be
 * slimlm's top-1 or within a hair of it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getLlama, LlamaLogLevel, type Llama } from 'node-llama-cpp';
import { AutoModelForCausalLM } from '../src/api.js';
import { GGUFFile } from '../src/formats/gguf.js';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { exportGGUF, ggufExportPlan, type GGUFExportType } from '../src/models/export.js';
import { loadTokenizer, type SentencePieceBPETokenizer } from '../src/tokenizers/index.js';

const MODEL = '../shared/models/stories260K/stories260K.bin';
const TOKENIZER = '../shared/models/stories260K/tok512.bin';
const PROMPTS = ['Once upon a time', 'Tom and Sue went to the'];
const NEW_TOKENS = 48;

let dir: string;
let llama: Llama;
let tok: SentencePieceBPETokenizer;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'slimlm-export-'));
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  tok = await loadTokenizer(TOKENIZER);
});
after(async () => {
  await llama?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

function exportAs(type: GGUFExportType): string {
  const out = join(dir, `stories260K-${type}.gguf`);
  const ckpt = openCheckpoint(MODEL);
  try { exportGGUF(ckpt, out, { type, tokenizer: tok }); } finally { ckpt.close(); }
  return out;
}

/** llama.cpp's prompt tokens and greedy continuation. */
async function llamaCppGreedy(file: string, prompt: string, n: number): Promise<{ prompt: number[]; tokens: number[] }> {
  const model = await llama.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: 256, threads: 1 });
  try {
    const ids = [model.tokens.bos!, ...model.tokenize(prompt, false)].map(Number);
    const tokens: number[] = [];
    for await (const t of ctx.getSequence().evaluate(ids as never, { temperature: 0 })) {
      tokens.push(Number(t));
      if (tokens.length >= n) break;
    }
    return { prompt: ids, tokens };
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
}

test('GGUF tokenizer metadata: SPM vocabulary, scores, types and special ids', () => {
  const f = GGUFFile.open(exportAs('f32'));
  try {
    assert.equal(f.value('tokenizer.ggml.model'), 'llama');
    assert.deepEqual(f.value('tokenizer.ggml.tokens'), tok.vocabulary.map((p) => p.piece));
    assert.deepEqual(Array.from(f.value('tokenizer.ggml.scores') as Float32Array), tok.vocabulary.map((p) => Math.fround(p.score)));
    const types = Array.from(f.value('tokenizer.ggml.token_type') as Int32Array);
    assert.deepEqual(types.slice(0, 3), [2, 3, 3]); // <unk>, <s>, </s>
    assert.equal(types.filter((t) => t === 6).length, 256); // <0x00>..<0xFF> byte fallback pieces
    assert.equal(f.value('tokenizer.ggml.bos_token_id'), 1);
    assert.equal(f.value('tokenizer.ggml.eos_token_id'), 2);
    assert.equal(f.value('tokenizer.ggml.unknown_token_id'), 0);
    assert.equal(f.value('tokenizer.ggml.add_bos_token'), true);
    assert.equal(f.value('general.file_type'), 0);
  } finally {
    f.close();
  }
});

for (const type of ['f32', 'f16'] as const) {
  test(`${type} GGUF: node-llama-cpp tokenizes and generates greedily exactly as slimlm`, async () => {
    const file = exportAs(type);
    const model = await AutoModelForCausalLM.fromPretrained(file, { threads: 1 });
    try {
      for (const prompt of PROMPTS) {
        const ref = await llamaCppGreedy(file, prompt, NEW_TOKENS);
        assert.deepEqual(tok.encode(prompt), ref.prompt, `prompt tokens of ${JSON.stringify(prompt)}`);
        const ours = await model.generate(ref.prompt, { maxNewTokens: NEW_TOKENS, doSample: false, eosTokenIds: [] });
        assert.deepEqual(ours.tokens, ref.tokens, `greedy continuation of ${JSON.stringify(prompt)}`);
      }
    } finally {
      await model.dispose();
    }
  });
}

for (const type of ['q8_0', 'q4_0', 'q4_k_m'] as const) {
  test(`${type} GGUF: llama.cpp's greedy tokens are slimlm's top-1 (or a near-tie) on the same dequantized weights`, async () => {
    const file = exportAs(type);
    const f = GGUFFile.open(file);
    const plan = ggufExportPlan({ config: openCheckpoint(MODEL).config }, { type });
    for (const t of f.tensors) assert.equal(t.type, plan.get(t.name), t.name);
    f.close();
    const model = await AutoModelForCausalLM.fromPretrained(file, { threads: 1 });
    try {
      let agree = 0, total = 0, worstGap = 0;
      for (const prompt of PROMPTS) {
        const ref = await llamaCppGreedy(file, prompt, NEW_TOKENS);
        const all = [...ref.prompt, ...ref.tokens];
        const { logits } = await model.model.forward({ inputIds: [all], allLogits: true });
        const V = model.config.vocabSize;
        ref.tokens.forEach((t, i) => {
          const row = logits.subarray((ref.prompt.length - 1 + i) * V, (ref.prompt.length + i) * V);
          const gap = Math.max(...row) - row[t];
          if (gap === 0) agree++;
          worstGap = Math.max(worstGap, gap);
          total++;
        });
      }
      assert.ok(agree / total >= 0.95, `${type}: top-1 agreement ${agree}/${total}`);
      assert.ok(worstGap < 0.1, `${type}: llama.cpp picked a token ${worstGap} logits below slimlm's best`);
    } finally {
      await model.dispose();
    }
  });
}

test('GGUF header larger than the writer\'s 64 KiB chunks (a 32000-token vocabulary) stays intact', async () => {
  const big = await loadTokenizer('../shared/tokenizers/mistral-7b-v0.1/tokenizer.model');
  const { ggufTokenizerMetadata } = await import('../src/models/export.js');
  const { writeGGUF } = await import('../src/formats/gguf.js');
  const out = join(dir, 'big-vocab.gguf');
  writeGGUF(out, { metadata: { 'general.architecture': 'llama', ...ggufTokenizerMetadata(big) }, tensors: [{ name: 'x', shape: [32], type: 'F32', data: new Float32Array(32) }] });
  const f = GGUFFile.open(out);
  assert.equal((f.value('tokenizer.ggml.tokens') as string[]).length, 32000);
  assert.equal(f.value('tokenizer.ggml.tokens') instanceof Array && (f.value('tokenizer.ggml.tokens') as string[])[1], '<s>');
  f.close();
});

test('a GGUF whose vocabulary came from tokenizer.json (merge ranks, no scores) tokenizes in llama.cpp as SentencePiece does', async () => {
  const mistral = await loadTokenizer('../shared/tokenizers/mistral-7b-v0.1/tokenizer.json');
  const out = join(dir, 'tiny-mistral-vocab.gguf');
  const ckpt = openCheckpoint('../shared/fixtures/llama-2-tiny-random.gguf');
  try { exportGGUF(ckpt, out, { type: 'f16', tokenizer: mistral }); } finally { ckpt.close(); }
  // SentencePiece's own ids for these texts (test/fixtures/tokenizer/mistral.json, scripts/make_tokenizer_fixture.py).
  const { entries } = JSON.parse((await import('node:fs')).readFileSync('test/fixtures/tokenizer/mistral.json', 'utf8')) as { entries: { text: string; ids: number[] }[] };
  const model = await llama.loadModel({ modelPath: out });
  try {
    let checked = 0;
    for (const e of entries) {
      assert.deepEqual(Array.from(model.tokenize(e.text, false)).map(Number), e.ids, JSON.stringify(e.text));
      checked++;
    }
    assert.ok(checked > 50, `${checked} texts`);
  } finally {
    await model.dispose();
  }
});
