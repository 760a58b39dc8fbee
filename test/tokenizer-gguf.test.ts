/** The vocabulary inside a GGUF file, checked against llama.cpp's own tokenizer (node-llama-cpp) on the same file. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama } from 'node-llama-cpp';
import os from 'node:os';
import { loadTokenizer, writeTokenizerFiles } from '../src/tokenizers/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const gguf = path.join(root, '../shared/fixtures/llama-2-tiny-random.gguf');

function sampleTexts(): string[] {
  const handwritten = ['Hello world', '안녕하세요,  반가워요!', '  lead\tand\n\ntrail  ', '🙂 123 4567', 'a', ' ', '\n', '👩‍👩‍👧 family',
    '日本語のテキストと中文', 'emoji 🤖🤖 run', 'x'.repeat(50), 'The year 1999 — “quoted” text…', '탭\t뒤에 공백   여러 개', '\ufeffBOM first', 'mid\ufeffBOM'];
  const chatbot = fs.readFileSync(path.join(root, '../shared/datasets/ChatbotData.csv'), 'utf8').split('\n').slice(1, 120);
  const wiki = fs.readFileSync(path.join(root, '../shared/datasets/wiki.test.raw'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 60);
  return [...handwritten, ...chatbot, ...wiki];
}

test('GGUF vocabulary encodes exactly as llama.cpp does on the same file, also once written out as tokenizer.model', async () => {
  const tokenizer = await loadTokenizer(gguf);
  assert.equal(tokenizer.vocabSize, 32000);
  assert.equal(tokenizer.bosId, 1);
  // The vocabulary as a Hugging Face folder's files (what quantize/export write for a GGUF source).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-gguf-tok-'));
  const main = writeTokenizerFiles(gguf, dir);
  assert.equal(path.basename(main), 'tokenizer.model');
  const written = await loadTokenizer(dir);
  assert.equal(written.format, 'sentencepiece');
  assert.deepEqual([written.vocabSize, written.bosId, written.eosId, written.unkId, written.addBosDefault, written.addEosDefault],
    [tokenizer.vocabSize, tokenizer.bosId, tokenizer.eosId, tokenizer.unkId, tokenizer.addBosDefault, tokenizer.addEosDefault]);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  const model = await llama.loadModel({ modelPath: gguf });
  try {
    let checked = 0;
    for (const text of sampleTexts()) {
      const expected = Array.from(model.tokenize(text));
      assert.deepEqual(tokenizer.encode(text, { addBos: false }), expected, JSON.stringify(text));
      assert.deepEqual(written.encode(text, { addBos: false }), expected, `tokenizer.model: ${JSON.stringify(text)}`);
      assert.equal(written.decode(expected), tokenizer.decode(expected));
      checked++;
    }
    assert.ok(checked > 150);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await model.dispose();
    await llama.dispose();
  }
});

test('GGUF vocabulary: BOS by default, decode inverts encode', async () => {
  const tokenizer = await loadTokenizer(gguf);
  const text = '안녕하세요 world 🙂';
  const ids = tokenizer.encode(text);
  assert.equal(ids[0], 1);
  assert.equal(tokenizer.decode(ids, { skipSpecialTokens: true }), text);
});
