/** The transformers.js-shaped library API on real files. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, AutoTokenizer, pipeline, DEFAULT_MODEL } from '../src/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const storiesRef = JSON.parse(fs.readFileSync(path.join(root, 'test/fixtures/stories260K-ref/reference.json'), 'utf8'));

test('the default model is the shipped stories260K', () => {
  assert.ok(fs.existsSync(DEFAULT_MODEL), DEFAULT_MODEL);
});

test("pipeline('text-generation') is greedy by default and matches the PyTorch reference continuation", async () => {
  const generator = await pipeline('text-generation');
  try {
    const [out] = await generator('', { max_new_tokens: 60 });
    assert.equal(out.generated_text, storiesRef.greedy.text.trim());
    const [cont] = await generator('Once upon a time,', { max_new_tokens: 8, return_full_text: false });
    assert.ok(cont.generated_text.startsWith(' there was a little girl'), JSON.stringify(cont.generated_text));
  } finally {
    await generator.dispose();
  }
});

test('AutoModelForCausalLM.generate returns the same ids as the PyTorch greedy reference and streams text', async () => {
  const tokenizer = await AutoTokenizer.fromPretrained(DEFAULT_MODEL);
  const model = await AutoModelForCausalLM.fromPretrained(DEFAULT_MODEL, { threads: 1 });
  try {
    let streamed = '';
    const result = await model.generate(storiesRef.greedy.prompt_ids, { maxNewTokens: storiesRef.greedy.max_new_tokens, tokenizer },
      { onText: (t) => { streamed += t; } });
    assert.deepEqual(result.tokens, storiesRef.greedy.new_ids);
    assert.equal(streamed, tokenizer.decode(result.tokens));
    assert.equal(result.finishReason, 'length');
  } finally {
    await model.dispose();
  }
});

test('fromPretrained on a Hugging Face folder (PyTorch-written fixture) runs', async () => {
  const dir = path.join(root, 'test/fixtures/mistral-tiny');
  const ref = JSON.parse(fs.readFileSync(path.join(dir, 'reference.json'), 'utf8'));
  const model = await AutoModelForCausalLM.fromPretrained(dir);
  try {
    assert.equal(model.config.modelType, 'mistral');
    const result = await model.generate(ref.greedy.prompt_ids, { maxNewTokens: ref.greedy.max_new_tokens, eosTokenIds: [] });
    assert.deepEqual(result.tokens, ref.greedy.new_ids);
  } finally {
    await model.dispose();
  }
});
