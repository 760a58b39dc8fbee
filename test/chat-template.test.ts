/** Chat templates rendered with @huggingface/jinja against Mistral-7B-Instruct-v0.1's real template and llama.cpp's expected output. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chatFormat, ChatTemplateError, createChatFormat, type ChatMessage } from '../src/chat/index.js';
import { loadTokenizer, parseTokenizerConfig } from '../src/tokenizers/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const mistralDir = path.join(root, '../shared/tokenizers/mistral-7b-v0.1');
const instructConfig = path.join(root, 'test/fixtures/chat/mistral-7b-instruct-v0.1.tokenizer_config.json');
const storiesTok = path.join(root, '../shared/models/stories260K/tok512.bin');

// The conversation of llama.cpp's tests/test-chat-template.cpp.
const conversation: ChatMessage[] = [
  { role: 'system', content: 'You are a helpful assistant' },
  { role: 'user', content: 'Hello' },
  { role: 'assistant', content: 'Hi there' },
  { role: 'user', content: 'Who are you' },
  { role: 'assistant', content: '   I am an assistant   ' },
  { role: 'user', content: 'Another question' },
];
// llama.cpp's expected output for this template (rendered there with bos_token ""; the real tokenizer's is "<s>").
const llamaCppExpected = ' [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an assistant   </s> [INST] Another question [/INST]';

test('the real Mistral-7B-Instruct-v0.1 template renders as llama.cpp expects, and tokenizes with specials as ids', async () => {
  const tok = await loadTokenizer(mistralDir);
  const template = parseTokenizerConfig(JSON.parse(fs.readFileSync(instructConfig, 'utf8')), instructConfig).chatTemplate!;
  const fmt = createChatFormat(tok, template, 'model');
  assert.equal(fmt.render(conversation), '<s>' + llamaCppExpected);
  // The same from the tokenizer_config.json path, as `--template FILE` does.
  assert.equal(chatFormat(tok, instructConfig).render(conversation), '<s>' + llamaCppExpected);

  const ids = fmt.encode([{ role: 'user', content: 'Hello' }, { role: 'assistant', content: 'Hi' }, { role: 'user', content: '안녕하세요?' }]);
  const INST = [733, 16289, 28793]; // "▁[", "INST", "]" in Mistral's vocabulary
  const END_INST = [733, 28748, 16289, 28793]; // "▁[", "/", "INST", "]"
  assert.deepEqual(ids.slice(0, 4), [1, ...INST], 'one BOS (from the template, none added by encode) then [INST]');
  assert.deepEqual(ids.slice(-4), END_INST);
  assert.equal(ids.filter((id) => id === 1).length, 1);
  assert.equal(ids.filter((id) => id === 2).length, 1, '</s> after the assistant turn is the EOS id, not text');
  assert.equal(tok.decode(ids, { skipSpecialTokens: false }), '<s> [INST] Hello [/INST] Hi</s> [INST] 안녕하세요? [/INST]');
});

test('models without a template get the documented Mistral default; mistral and chatml are selectable by name', async () => {
  const tok = await loadTokenizer(storiesTok);
  assert.equal((tok as { chatTemplate: string | null }).chatTemplate, null);
  const auto = chatFormat(tok);
  assert.equal(auto.name, 'mistral');
  const msgs: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }];
  assert.equal(auto.render(msgs), '<s> [INST] Be brief.\n\nHi [/INST]');
  assert.deepEqual(auto.encode(msgs).slice(0, 1), [tok.bosId!]);
  assert.deepEqual(auto.stopStrings, []);

  const chatml = chatFormat(tok, 'chatml');
  assert.equal(chatml.render(msgs), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
  assert.equal(chatml.render(msgs, { addGenerationPrompt: false }), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  assert.deepEqual(chatml.stopStrings, ['<|im_end|>']);

  // A template file.
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-tpl-')), 'plain.jinja');
  fs.writeFileSync(file, '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}');
  assert.equal(chatFormat(tok, file).render(msgs), 'system: Be brief.\nuser: Hi\nassistant:');
});

test('template errors are ChatTemplateErrors with the template\'s own message', async () => {
  const tok = await loadTokenizer(storiesTok);
  const fmt = chatFormat(tok, 'mistral');
  assert.throws(() => fmt.render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]), (e: Error) => e instanceof ChatTemplateError && /must alternate/.test(e.message));
  assert.throws(() => fmt.render([{ role: 'user', content: 'a' }, { role: 'tool', content: 'x' }]), /Only user and assistant roles/);
  assert.throws(() => chatFormat(tok, 'model'), /no chat_template/);
  assert.throws(() => chatFormat(tok, 'nope'), /unknown chat template "nope"/);
  assert.throws(() => createChatFormat(tok, '{% for %}'), ChatTemplateError);
});
