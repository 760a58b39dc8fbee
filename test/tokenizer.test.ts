// Tokenizers against SentencePiece and HF tokenizers references (test/fixtures/tokenizer/*.json, made by
// scripts/make_tokenizer_fixture.py) on the real Mistral-7B and llama2.c tok512 vocabularies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadTokenizer, type Tokenizer } from '../src/tokenizers/index.js';

const SHARED = new URL('../../shared/', import.meta.url).pathname;
const MISTRAL = SHARED + 'tokenizers/mistral-7b-v0.1/';
const STORIES = SHARED + 'models/stories260K/';
const FIXTURES = new URL('./fixtures/tokenizer/', import.meta.url).pathname;

interface Entry {
  text: string; ids: number[]; pieces: string[]; decoded: string; special_ids?: number[];
  hf_ids?: number[]; hf_special_ids?: number[]; hf_decoded?: string;
}
const fixture = (name: string): Entry[] => JSON.parse(readFileSync(FIXTURES + name, 'utf8')).entries;

/** Asserts `actual(e)` equals `expected(e)` for every entry, reporting the first mismatches; returns the count matched. */
function expectAll<T>(label: string, entries: Entry[], actual: (e: Entry) => T, expected: (e: Entry) => T | undefined): number {
  let checked = 0;
  const bad: string[] = [];
  for (const e of entries) {
    const want = expected(e);
    if (want === undefined) continue;
    checked++;
    const got = actual(e);
    try { assert.deepEqual(got, want); } catch { bad.push(`${JSON.stringify(e.text.slice(0, 80))}: got ${JSON.stringify(got)} want ${JSON.stringify(want)}`); }
  }
  assert.ok(checked > 0, `${label}: nothing to check`);
  assert.equal(bad.length, 0, `${label}: ${bad.length}/${checked} differ:\n${bad.slice(0, 5).join('\n')}`);
  console.log(`# ${label}: ${checked}/${checked} match`);
  return checked;
}

function checkSentencePiece(label: string, tok: Tokenizer, entries: Entry[]): void {
  expectAll(`${label} encode`, entries, (e) => tok.encode(e.text, { addBos: false }), (e) => e.ids);
  expectAll(`${label} encode parseSpecial`, entries, (e) => tok.encode(e.text, { addBos: false, parseSpecial: true }), (e) => e.special_ids ?? e.ids);
  expectAll(`${label} pieces`, entries, (e) => tok.encode(e.text, { addBos: false }).map((i) => tok.idToToken(i)), (e) => e.pieces);
  expectAll(`${label} decode`, entries, (e) => tok.decode(e.ids), (e) => e.decoded);
  expectAll(`${label} stream decode`, entries, (e) => streamed(tok, e.ids), (e) => e.decoded);
}

function streamed(tok: Tokenizer, ids: number[], skipSpecialTokens = false): string {
  const s = tok.createStreamDecoder({ skipSpecialTokens });
  let out = '';
  for (const id of ids) {
    const part = s.push(id);
    assert.ok(!/[\uD800-\uDBFF]$/.test(part), 'stream emitted half a surrogate pair');
    out += part;
  }
  return out + s.flush();
}

const mistral = fixture('mistral.json');
const tok512 = fixture('tok512.json');

test('Mistral tokenizer.model matches SentencePiece', async () => {
  checkSentencePiece('mistral tokenizer.model', await loadTokenizer(MISTRAL + 'tokenizer.model'), mistral);
});

test('Mistral tokenizer.json matches HF tokenizers, and SentencePiece on text not starting with a space', async () => {
  const tok = await loadTokenizer(MISTRAL + 'tokenizer.json');
  expectAll('mistral tokenizer.json encode', mistral, (e) => tok.encode(e.text, { addBos: false }), (e) => e.hf_ids);
  expectAll('mistral tokenizer.json encode parseSpecial', mistral, (e) => tok.encode(e.text, { addBos: false, parseSpecial: true }), (e) => e.hf_special_ids);
  expectAll('mistral tokenizer.json decode', mistral, (e) => tok.decode(e.hf_ids!), (e) => e.hf_decoded);
  // HF's Metaspace skips the prefix when the text already starts with a space; otherwise both agree.
  expectAll('mistral tokenizer.json vs SentencePiece', mistral, (e) => tok.encode(e.text, { addBos: false }),
    (e) => (/^[ \u2581]/.test(e.text) ? undefined : e.ids));
});

test('tok512.model and llama2.c tok512.bin match SentencePiece', async () => {
  checkSentencePiece('tok512.model', await loadTokenizer(STORIES + 'tok512.model'), tok512);
  checkSentencePiece('tok512.bin', await loadTokenizer(STORIES + 'tok512.bin'), tok512);
});

test('nmt_nfkc model with user-defined and control symbols matches SentencePiece', async () => {
  checkSentencePiece('nfkc-bpe.model', await loadTokenizer(FIXTURES + 'nfkc-bpe.model'), fixture('nfkc.json'));
});

test('special tokens, BOS/EOS defaults and config', async () => {
  const tok = await loadTokenizer(MISTRAL);  // folder: picks tokenizer.json, reads tokenizer_config.json
  assert.equal(tok.vocabSize, 32000);
  assert.deepEqual([tok.bosId, tok.eosId, tok.unkId, tok.padId], [1, 2, 0, null]);
  assert.deepEqual(tok.encode('Hello'), [1, 22557]);
  assert.deepEqual(tok.encode('Hello', { addBos: false, addEos: true }), [22557, 2]);
  assert.deepEqual(tok.encode('<s>Hi', { addBos: false, parseSpecial: true }).slice(0, 1), [1]);
  assert.notEqual(tok.encode('<s>Hi', { addBos: false })[0], 1);
  assert.ok(tok.isSpecial(1) && tok.isSpecial(2) && tok.isSpecial(0) && !tok.isSpecial(22557));
  assert.equal(tok.tokenToId('▁Hello'), 22557);
  assert.equal(tok.idToToken(22557), '▁Hello');
  assert.equal(tok.idToToken(32000), undefined);
  assert.equal(tok.decode([1, 22557, 2]), '<s> Hello</s>');
  assert.equal(tok.decode([1, 22557, 2], { skipSpecialTokens: true }), 'Hello');
  assert.throws(() => tok.decode([32000]), /outside the vocabulary/);
  const model = await loadTokenizer(MISTRAL + 'tokenizer.model');
  assert.equal((model as { chatTemplate: string | null }).chatTemplate, null);
  assert.equal(model.decode([1, 22557], { skipSpecialTokens: true }), 'Hello');
});

test('tokenizer_config.json: chat template, added tokens past the vocabulary, BOS/EOS switches', async () => {
  const { mkdtempSync, writeFileSync, copyFileSync } = await import('node:fs');
  for (const file of ['tokenizer.json', 'tokenizer.model']) {
    const dir = mkdtempSync('/tmp/slimlm-tokcfg-');
    copyFileSync(MISTRAL + file, `${dir}/${file}`);
    const config = JSON.parse(readFileSync(MISTRAL + 'tokenizer_config.json', 'utf8'));
    config.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}";
    config.add_eos_token = true;
    config.added_tokens_decoder['32000'] = { content: '<|im_start|>', special: true };
    config.added_tokens_decoder['32001'] = { content: '<|im_end|>', special: true };
    writeFileSync(`${dir}/tokenizer_config.json`, JSON.stringify(config));
    const tok = await loadTokenizer(dir);
    assert.equal((tok as { chatTemplate: string | null }).chatTemplate, config.chat_template, file);
    assert.equal(tok.vocabSize, 32002);
    const ids = tok.encode('<|im_start|>Hello<|im_end|>', { parseSpecial: true });
    assert.deepEqual([ids[0], ids[1], ids.at(-2), ids.at(-1)], [1, 32000, 32001, 2], file);
    assert.ok(tok.isSpecial(32000));
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'Hello');
    assert.ok(!tok.encode('<|im_start|>', { addBos: false, addEos: false }).includes(32000));
  }
});

test('stream decoder never emits a partial UTF-8 character', async () => {
  const tok = await loadTokenizer(STORIES + 'tok512.bin');
  const ids = tok.encode('한 글자씩 😀!', { addBos: true });
  const s = tok.createStreamDecoder({ skipSpecialTokens: true });
  const parts = ids.map((id) => s.push(id));
  parts.push(s.flush());
  // "한" is three byte tokens: nothing is printed until the third arrives.
  const han = ids.findIndex((id) => tok.idToToken(id) === '<0xED>');
  assert.deepEqual(parts.slice(han, han + 3), ['', '', '한']);
  assert.equal(parts.join(''), tok.decode(ids, { skipSpecialTokens: true }));
  assert.equal(parts.join(''), '한 글자씩 😀!');
  // A cut-off sequence is flushed as one U+FFFD per byte, like SentencePiece.
  const cut = tok.createStreamDecoder();
  assert.equal(cut.push(tok.tokenToId('<0xED>')!) + cut.push(tok.tokenToId('<0x95>')!), '');
  assert.equal(cut.flush(), '\uFFFD\uFFFD');
  assert.equal(tok.decode([tok.tokenToId('<0xED>')!, tok.tokenToId('▁a')!]), '\uFFFD a');
});

test('corrupt and truncated files fail with the file named', async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const dir = mkdtempSync('/tmp/slimlm-tok-');
  const model = readFileSync(MISTRAL + 'tokenizer.model');
  writeFileSync(dir + '/cut.model', model.subarray(0, 1000));
  await assert.rejects(loadTokenizer(dir + '/cut.model'), (e: Error) => e.message.includes('cut.model') && /not a valid SentencePiece model/.test(e.message));
  const bin = readFileSync(STORIES + 'tok512.bin');
  writeFileSync(dir + '/tok-cut.bin', bin.subarray(0, bin.length - 3));
  await assert.rejects(loadTokenizer(dir + '/tok-cut.bin'), /tok-cut\.bin: truncated/);
  writeFileSync(dir + '/tokenizer.json', '{"model": {"type": "BPE", "vocab": ');
  await assert.rejects(loadTokenizer(dir), /tokenizer\.json: invalid JSON/);
  await assert.rejects(loadTokenizer(dir + '/missing.model'), /missing\.model: no such/);
});

test('encodes ChatbotData.csv and wiki.test.raw quickly (heap BPE, no quadratic rescans)', async () => {
  const tok = await loadTokenizer(MISTRAL + 'tokenizer.model');
  const chat = readFileSync(SHARED + 'datasets/ChatbotData.csv', 'utf8').split('\n');
  let t = performance.now();
  let n = 0;
  for (const line of chat) n += tok.encode(line).length;
  const chatMs = performance.now() - t;
  const wiki = readFileSync(SHARED + 'datasets/wiki.test.raw', 'utf8');
  t = performance.now();
  const wikiIds = tok.encode(wiki, { addBos: false });
  const wikiMs = performance.now() - t;
  console.log(`# ChatbotData ${chat.length} rows → ${n} tokens in ${chatMs.toFixed(0)} ms; wiki.test.raw as one string → ${wikiIds.length} tokens in ${wikiMs.toFixed(0)} ms`);
  assert.equal(tok.decode(wikiIds), wiki);
  // Generous bounds for 2 noisy cores; real timings belong in bench/.
  assert.ok(chatMs < 10_000 && wikiMs < 20_000);
});

test('a SentencePiece model written by serializeSentencePieceModel reads back field for field and still matches SentencePiece', async () => {
  const { parseSentencePieceModel, serializeSentencePieceModel, sentencePieceTokenizer } = await import('../src/tokenizers/index.js');
  for (const [file, entries] of [[MISTRAL + 'tokenizer.model', mistral], [STORIES + 'tok512.model', tok512], [FIXTURES + 'nfkc-bpe.model', fixture('nfkc.json')]] as const) {
    const original = parseSentencePieceModel(new Uint8Array(readFileSync(file)), file);
    const bytes = serializeSentencePieceModel(original);
    assert.deepEqual(parseSentencePieceModel(bytes, 'written'), original, file);
    checkSentencePiece(`${file} written back`, sentencePieceTokenizer(bytes, 'written'), entries);
  }
});

test('a piece that is U+FEFF survives loading (TextDecoder would drop a leading BOM): .model, .json and SentencePiece agree', async () => {
  const model = await loadTokenizer(MISTRAL + 'tokenizer.model');
  const json = await loadTokenizer(MISTRAL + 'tokenizer.json');
  assert.equal(model.idToToken(31759), '\ufeff');
  assert.equal(model.tokenToId(''), undefined);
  // SentencePiece 0.1.97 (python3-sentencepiece) on the same tokenizer.model: [28705, 31759, 28760, 4341].
  assert.deepEqual(model.encode('\ufeffBOM', { addBos: false }), [28705, 31759, 28760, 4341]);
  assert.deepEqual(json.encode('\ufeffBOM', { addBos: false }), [28705, 31759, 28760, 4341]);
  assert.equal(model.decode([28705, 31759, 28760, 4341]), '\ufeffBOM');
});

test('tokenizerFiles: what carries a tokenizer into a model folder, from a folder, a file, a llama2.c .bin or a GGUF', async () => {
  const { tokenizerFiles } = await import('../src/tokenizers/index.js');
  const names = (p: string) => Object.keys(tokenizerFiles(p)).sort();
  const companions = ['generation_config.json', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer.model', 'tokenizer_config.json'];
  assert.deepEqual(names(MISTRAL), companions);
  assert.deepEqual(names(MISTRAL + 'tokenizer.model'), companions);
  assert.deepEqual(names(STORIES + 'tok512.bin'), ['tok512.bin', 'tokenizer.model']);
  assert.ok(Buffer.from(tokenizerFiles(STORIES + 'tok512.bin')['tokenizer.model']).equals(readFileSync(STORIES + 'tok512.model')));
  assert.deepEqual(names(SHARED + 'fixtures/llama-2-tiny-random.gguf'), ['tokenizer.model', 'tokenizer_config.json']);
});
