import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatFormat } from '../src/chat/index.js';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import {
  ChatRenderer, CsvError, DataError, csvObjects, loadData, makeBatch, parseCsv, permutation, readExamples, ShuffleRng,
  splitExamples, tokenizeExamples, type Example,
} from '../src/data/index.js';
import { loadTokenizer } from '../src/tokenizers/index.js';

const SHARED = '../shared';
const CHATBOT = `${SHARED}/datasets/ChatbotData.csv`;
const STORIES = `${SHARED}/datasets/tinystories_val_slice.txt`;
const MISTRAL = `${SHARED}/tokenizers/mistral-7b-v0.1`;
const TOK512 = `${SHARED}/models/stories260K/tok512.model`;
const ref = JSON.parse(readFileSync('test/fixtures/data/reference.json', 'utf8'));
const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-data-'));
const mistral = await loadTokenizer(MISTRAL);
const tok512 = await loadTokenizer(TOK512);

test('CSV parsing matches Python csv on RFC 4180 edge cases', () => {
  for (const c of ref.csv as { text: string; rows: string[][] }[]) {
    // Python's csv yields [] for a blank line; we skip blank lines (as pandas and HF datasets do).
    assert.deepEqual(parseCsv(c.text), c.rows.filter((r) => r.length > 0), JSON.stringify(c.text));
  }
});

test('CSV errors name the line and the problem', () => {
  assert.throws(() => parseCsv('a,b\n"open,1\n'), (e: Error) => e instanceof CsvError && /line 2: unterminated/.test(e.message));
  assert.deepEqual(parseCsv('a,b\nx"y,1\n'), [['a', 'b'], ['x"y', '1']]); // as Python's csv reads it
  assert.deepEqual(parseCsv('q\tn\nHe said "hi" there\t1\n', 'tsv', '\t'), [['q', 'n'], ['He said "hi" there', '1']]);
  assert.throws(() => parseCsv('a\n"x"y\n'), /unexpected "y" after a closing quote/);
  assert.throws(() => csvObjects('a,b\n1,2,3\n'), /row 1 after the header has 3 fields, the header has 2/);
});

test('ChatbotData.csv: 11,823 rows, identical to Python csv, Q/A rows become chats', async () => {
  const { columns, rows } = csvObjects(readFileSync(CHATBOT, 'utf8'));
  assert.deepEqual(columns, ref.chatbot.header);
  assert.equal(rows.length, 11823);
  assert.equal(rows.length, ref.chatbot.rows);
  const h = createHash('sha256');
  for (const r of rows) h.update(`${r.Q}\x1f${r.A}\x1f${r.label}\x1e`);
  assert.equal(h.digest('hex'), ref.chatbot.sha256);

  const read = await readExamples(CHATBOT);
  assert.equal(read.rowsRead, 11823);
  assert.equal(read.empty, 0);
  assert.deepEqual(read.examples[0], {
    kind: 'chat', promptCompletion: true,
    messages: [{ role: 'user', content: ref.chatbot.first[0] }, { role: 'assistant', content: ref.chatbot.first[1] }],
  });
});

test('chat templates render like jinja2 under apply_chat_template settings', () => {
  for (const t of ref.templates) {
    const r = new ChatRenderer(mistral, t.template);
    assert.equal(r.render(t.messages, t.add_generation_prompt), t.expected, `${t.name}: ${JSON.stringify(t.messages)}`);
  }
  // Without a template of its own (Mistral-7B-v0.1 has none), the Mistral instruct format the chat CLI and server use.
  const d = ref.templates.find((t: { name: string }) => t.name === 'default');
  assert.equal(new ChatRenderer(mistral).render(d.messages), chatFormat(mistral, 'mistral').render(d.messages));
  assert.match(new ChatRenderer(mistral).render(d.messages), /^<s> \[INST\] /);
});

test("the tokenizer's own chat_template is used, and prompt masking keeps only assistant turns", async () => {
  const dir = tmp();
  copyFileSync(join(MISTRAL, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  const zephyr = ref.templates.find((t: { name: string }) => t.name === 'zephyr');
  const config = JSON.parse(readFileSync(join(MISTRAL, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: zephyr.template }));
  const tok = await loadTokenizer(dir);
  const chat = ref.templates.find((t: { name: string; messages: unknown[]; add_generation_prompt: boolean }) => t.name === 'zephyr' && t.messages.length === 5 && !t.add_generation_prompt);
  const file = join(dir, 'chats.jsonl');
  writeFileSync(file, JSON.stringify({ messages: chat.messages }) + '\n');
  for (const maskPrompt of [true, false]) {
    const data = await loadData([file], tok, { maskPrompt, maxLength: 512 });
    const row = data.train.rows[0];
    assert.equal(tok.decode(Array.from(row.ids)), chat.expected);
    const targetText = tok.decode(Array.from(row.ids).filter((_, i) => row.targets[i]));
    if (maskPrompt) assert.equal(targetText, 'Hello!</s>\nFine.</s>\n');
    else assert.equal(row.targets.every((v) => v === 1), true);
  }
});

test('Q/A rows: labels cover exactly the answer and EOS (prompt masked by default)', async () => {
  const dir = tmp();
  const lines = readFileSync(CHATBOT, 'utf8').split('\n').slice(0, 41);
  writeFileSync(join(dir, 'qa.csv'), lines.join('\n'));
  const data = await loadData([join(dir, 'qa.csv')], mistral, { shuffle: false, maxLength: 256 });
  assert.equal(data.stats.rowsRead, 40);
  const batch = [...data.train.batches(0, 40)][0];
  const { rows } = csvObjects(lines.join('\n'));
  for (let b = 0; b < 40; b++) {
    const row = Array.from(batch.inputIds.subarray(b * batch.seq, (b + 1) * batch.seq));
    const labels = Array.from(batch.labels.subarray(b * batch.seq, (b + 1) * batch.seq)).filter((v) => v !== -100);
    assert.equal(mistral.decode(labels), ` ${rows[b].A}</s>`.trimStart());
    assert.ok(mistral.decode(row, { skipSpecialTokens: true }).startsWith(`[INST] ${rows[b].Q} [/INST] ${rows[b].A}`));
  }
  const unmasked = await loadData([join(dir, 'qa.csv')], mistral, { shuffle: false, maskPrompt: false });
  assert.ok(unmasked.stats.targetTokens.train > data.stats.targetTokens.train);
});

test('plain text: lines or blank-line-separated documents, empty rows counted', async () => {
  const dir = tmp();
  const f = join(dir, 'a.txt');
  writeFileSync(f, 'first line\r\nsecond\n\n  \nthird para\nstill third\n\n\nlast\n');
  const lines = await readExamples(f);
  assert.deepEqual(lines.examples.map((e) => e.kind === 'text' && e.text), ['first line', 'second', 'third para', 'still third', 'last']);
  assert.equal(lines.rowsRead, 9);
  assert.equal(lines.empty, 4);
  const docs = await readExamples(f, { textUnit: 'document' });
  assert.deepEqual(docs.examples.map((e) => e.kind === 'text' && e.text), ['first line\nsecond', 'third para\nstill third', 'last']);

  const stories = await readExamples(STORIES, { textUnit: 'document' });
  const independent = readFileSync(STORIES, 'utf8').split(/\n\s*\n/).filter((s) => s.trim()).length;
  assert.equal(stories.examples.length, independent);
});

test('JSONL: text, named field, messages, JSON arrays; clear errors', async () => {
  const dir = tmp();
  const f = join(dir, 'd.jsonl');
  writeFileSync(f, '{"text":"hello there","id":1}\n\n{"text":""}\n{"text":"general kenobi"}\n');
  const r = await readExamples(f);
  assert.deepEqual(r.examples, [{ kind: 'text', text: 'hello there' }, { kind: 'text', text: 'general kenobi' }]);
  assert.equal(r.empty, 1);
  writeFileSync(f, '{"body":"x"}\n{"body":"y"}\n');
  assert.deepEqual((await readExamples(f, { textField: 'body' })).examples.length, 2);
  await assert.rejects(readExamples(f), /no "text", "messages" or prompt\/response fields .* among \["body"\]/);
  await assert.rejects(readExamples(f, { textField: 'nope' }), /line 1 has no field "nope"/);
  writeFileSync(f, '{"text":"ok"}\n{"text": oops}\n');
  await assert.rejects(readExamples(f), /line 2: invalid JSON/);
  const j = join(dir, 'd.json');
  writeFileSync(j, JSON.stringify([{ prompt: 'p', completion: 'c' }]));
  assert.deepEqual((await readExamples(j)).examples[0], { kind: 'chat', promptCompletion: true, messages: [{ role: 'user', content: 'p' }, { role: 'assistant', content: 'c' }] });
  writeFileSync(f, JSON.stringify({ messages: [{ role: 'user' }] }) + '\n');
  assert.equal((await readExamples(f)).empty, 1);
});

test('Parquet: text and Q/A columns written by hyparquet-writer read back', async () => {
  const dir = tmp();
  const f = join(dir, 'd.parquet');
  const qs = ['안녕', 'How are you?', ''], as = ['반가워요.', 'Fine.', 'empty question'];
  writeFileSync(f, new Uint8Array(parquetWriteBuffer({ columnData: [{ name: 'Q', data: qs, type: 'STRING' }, { name: 'A', data: as, type: 'STRING' }, { name: 'label', data: [0, 1, 2], type: 'INT32' }] })));
  const r = await readExamples(f);
  assert.equal(r.rowsRead, 3);
  assert.equal(r.empty, 1);
  assert.deepEqual(r.examples.map((e) => e.kind === 'chat' && e.messages.map((m) => m.content)), [['안녕', '반가워요.'], ['How are you?', 'Fine.']]);
  writeFileSync(f, new Uint8Array(parquetWriteBuffer({ columnData: [{ name: 'text', data: ['a b c', 'd e'], type: 'STRING' }] })));
  assert.deepEqual((await readExamples(f)).examples, [{ kind: 'text', text: 'a b c' }, { kind: 'text', text: 'd e' }]);
  writeFileSync(f, 'not parquet at all');
  await assert.rejects(readExamples(f), (e: Error) => e instanceof DataError && /cannot read Parquet/.test(e.message));
});

test('packing: fixed-length rows that concatenate every document with BOS/EOS', async () => {
  const stories = (await readExamples(STORIES, { textUnit: 'document' })).examples.slice(0, 200);
  const packed = tokenizeExamples(stories, tok512, { packing: true, maxLength: 64 });
  const stream = stories.flatMap((e) => tok512.encode((e as { text: string }).text, { addEos: true }));
  assert.equal(stream[0], tok512.bosId);
  assert.deepEqual(packed.rows.flatMap((r) => Array.from(r.ids)), stream);
  assert.ok(packed.rows.slice(0, -1).every((r) => r.ids.length === 64));
  assert.equal(packed.rows.length, Math.ceil(stream.length / 64));
});

test('truncation right/left/drop and the minimum-length filter', () => {
  const ex: Example[] = [{ kind: 'text', text: 'Once upon a time there was a little girl named Lily.' }, { kind: 'text', text: 'a' }];
  const full = tok512.encode((ex[0] as { text: string }).text, { addEos: true });
  const right = tokenizeExamples(ex, tok512, { maxLength: 8 });
  assert.deepEqual(Array.from(right.rows[0].ids), full.slice(0, 8));
  assert.equal(right.truncated, 1);
  assert.deepEqual(Array.from(tokenizeExamples(ex, tok512, { maxLength: 8, truncation: 'left' }).rows[0].ids), full.slice(-8));
  const dropped = tokenizeExamples(ex, tok512, { maxLength: 8, truncation: 'drop' });
  assert.equal(dropped.tooLong, 1);
  const short = tokenizeExamples(ex, tok512, { maxLength: 64, minTokens: 5 });
  assert.equal(short.tooShort, 1);
  assert.equal(short.rows.length, 1);
});

test('batches: right padding, mask, next-token labels, fixed width on request', () => {
  const rows = [{ ids: Int32Array.of(1, 5, 6, 2), targets: Uint8Array.of(1, 1, 1, 1) }, { ids: Int32Array.of(1, 7, 2), targets: Uint8Array.of(1, 0, 1) }];
  const b = makeBatch(rows, 0, 0);
  assert.equal(b.seq, 4);
  assert.deepEqual(Array.from(b.inputIds), [1, 5, 6, 2, 1, 7, 2, 0]);
  assert.deepEqual(Array.from(b.attentionMask), [1, 1, 1, 1, 1, 1, 1, 0]);
  assert.deepEqual(Array.from(b.labels), [5, 6, 2, -100, -100, 2, -100, -100]);
  assert.equal(makeBatch(rows, 6, 0).seq, 6);
});

test('PRNG: xoshiro128** reference vector and permutations from an independent Python port', () => {
  const r = ShuffleRng.fromState([1, 2, 3, 4]);
  assert.deepEqual(Array.from({ length: 6 }, () => r.nextU32()), [11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
  for (const p of ref.permutations) assert.deepEqual(Array.from(permutation(p.n, p.seed, p.stream)), p.expected);
});

test('shuffle is deterministic per (seed, epoch), covers every row once, resumes at any batch', async () => {
  const opts = { textUnit: 'document', maxLength: 32, seed: 7, validation: 0.1 } as const;
  const a = await loadData([STORIES], tok512, opts);
  const b = await loadData([STORIES], tok512, opts);
  assert.equal(a.fingerprint, b.fingerprint);
  const key = (x: Int32Array) => x.join(',');
  const epoch = (d: typeof a, e: number, bs: number, start = 0) => [...d.train.batches(e, bs, start)].map((t) => key(t.inputIds));
  assert.deepEqual(epoch(a, 0, 16), epoch(b, 0, 16));
  assert.notDeepEqual(epoch(a, 0, 16), epoch(a, 1, 16));
  assert.deepEqual(epoch(a, 1, 16, 5), epoch(a, 1, 16).slice(5));
  assert.equal(a.train.numBatches(16), Math.ceil(a.train.size / 16));
  const seen = [...a.train.order(2)].sort((x, y) => x - y);
  assert.deepEqual(seen, [...a.train.rows.keys()]);
  // The fingerprint is of the rows, not of their split: another seed or validation share, same rows, same fingerprint.
  const other = await loadData([STORIES], tok512, { ...opts, seed: 8 });
  assert.notDeepEqual(other.validation!.rows.map((r) => key(r.ids)), a.validation!.rows.map((r) => key(r.ids)));
  assert.equal(other.fingerprint, a.fingerprint);
  assert.equal((await loadData([STORIES], tok512, { ...opts, validation: 0 })).fingerprint, a.fingerprint);
  assert.notEqual((await loadData([STORIES], tok512, { ...opts, maxLength: 31 })).fingerprint, a.fingerprint);
  assert.equal(a.stats.examples.validation, Math.round((a.stats.examples.train + a.stats.examples.validation) * 0.1));
  // Validation keeps file order every epoch.
  assert.deepEqual([...a.validation!.batches(0, 8)].map((t) => key(t.inputIds)), [...a.validation!.batches(3, 8)].map((t) => key(t.inputIds)));
  const dropLast = await loadData([STORIES], tok512, { ...opts, dropLast: true });
  assert.equal(dropLast.train.numBatches(16), Math.floor(a.train.size / 16));
  assert.ok([...dropLast.train.batches(0, 16)].every((t) => t.batch === 16));
});

test('split by fraction or count is disjoint, deterministic and validated', () => {
  const xs = Array.from({ length: 100 }, (_, i) => i);
  const s = splitExamples(xs, 0.2, 1);
  assert.equal(s.validation.length, 20);
  assert.deepEqual([...s.train, ...s.validation].sort((a, b) => a - b), xs);
  assert.deepEqual(splitExamples(xs, 0.2, 1), s);
  assert.equal(splitExamples(xs, 7, 1).validation.length, 7);
  assert.throws(() => splitExamples(xs, 100, 1), /leaving none to train on/);
  assert.throws(() => splitExamples(xs, 2.5, 1), /fraction in \[0, 1\) or a whole number/);
});

test('no rows left → clear error with the counts', async () => {
  const dir = tmp();
  writeFileSync(join(dir, 'e.txt'), '\n\n   \n');
  await assert.rejects(loadData([join(dir, 'e.txt')], tok512), /no training rows left .*\(read 3, empty 3/);
});
