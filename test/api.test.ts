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

test('transformers.js spellings: from_pretrained, snake_case generation options (unknown ones refused), skip_special_tokens, batches and chats', async () => {
  const tokenizer = await AutoTokenizer.from_pretrained(DEFAULT_MODEL);
  const ids = tokenizer.encode('Hi', { add_special_tokens: false });
  assert.equal(ids[0] === tokenizer.bosId, false);
  assert.equal(tokenizer.decode([tokenizer.bosId!, ...ids, tokenizer.eosId!], { skip_special_tokens: true }), 'Hi');
  const model = await AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL, { threads: 1 });
  try {
    const prompt = storiesRef.greedy.prompt_ids as number[];
    assert.equal((await model.generate(prompt, { max_new_tokens: 3 })).tokens.length, 3);
    assert.equal((await model.generate(prompt, { max_length: prompt.length + 5 })).tokens.length, 5);
    await assert.rejects(model.generate(prompt, { max_tokens: 3 } as never), /unknown generation option "max_tokens"/);
  } finally {
    await model.dispose();
  }
  const generator = await pipeline('text-generation');
  try {
    const stopped = await generator('Once upon a time,', { max_new_tokens: 40, stop_strings: ['Lily'], return_full_text: false });
    assert.ok(!String(stopped[0].generated_text).includes('Lily') && String(stopped[0].generated_text).length > 0);
    // A list of prompts is a batch: one result list per prompt, each as if run alone.
    const batch = await generator(['Once upon a time,', 'Tom'], { max_new_tokens: 6 });
    assert.equal(batch.length, 2);
    assert.deepEqual(batch[0], await generator('Once upon a time,', { max_new_tokens: 6 }));
    // A chat: the reply comes back appended to the messages, as transformers.js returns it.
    const messages = [{ role: 'user', content: 'Tell me a story.' }];
    const [chat] = await generator(messages, { max_new_tokens: 8 });
    const turns = chat.generated_text as { role: string; content: string }[];
    assert.deepEqual(turns.slice(0, 1), messages);
    assert.equal(turns[1].role, 'assistant');
    await assert.rejects(generator(42 as never), /must be a string or an array of \{role, content\} messages/);
  } finally {
    await generator.dispose();
  }
  await assert.rejects(pipeline('text-generation', path.join(root, '../shared/fixtures/llama-2-tiny-random.gguf'), { tokenizer: DEFAULT_MODEL }),
    /tokenizer vocabulary \(512\) does not match the model's \(32000\)/);
});
