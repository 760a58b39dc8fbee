/**
 * What quantize/export/eval/inspect write and refuse, run as users run them (built dist/): outputs that would overwrite
 * the input, flags checked before anything is written, quantized folders usable on their own (tokenizer included,
 * whatever form the source's tokenizer had), and vocabulary mismatches caught.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const shared = path.join(root, '../shared');
const stories = path.join(shared, 'models/stories260K/stories260K.bin');
const tinyGGUF = path.join(shared, 'fixtures/llama-2-tiny-random.gguf');
const data = path.join(shared, 'datasets/tinystories_val_slice.txt');

function slimlm(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/slimlm.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const ok = (r: ReturnType<typeof slimlm>, what: string) => assert.equal(r.code, 0, `${what}: ${r.stderr}`);
const digest = (p: string): string => {
  const files = fs.statSync(p).isDirectory() ? fs.readdirSync(p).sort().map((f) => path.join(p, f)) : [p];
  const h = createHash('sha256');
  for (const f of files) h.update(f).update(fs.readFileSync(f));
  return h.digest('hex');
};
const tmpdir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-out-'));

test('quantize and export refuse to write over their input, and leave it untouched', () => {
  const tmp = tmpdir();
  const hf = path.join(tmp, 'hf');
  ok(slimlm('export', '--model', stories, '--out', hf, '--format', 'hf', '--type', 'f32'), 'export hf');
  const gguf = path.join(tmp, 'model.gguf');
  ok(slimlm('export', '--model', stories, '--out', gguf, '--type', 'f32'), 'export gguf');
  const before = [digest(hf), digest(gguf)];
  const cases: string[][] = [
    ['quantize', '--model', hf, '--out', hf, '--type', 'int4'],
    ['quantize', '--model', path.join(hf, 'model.safetensors'), '--out', hf, '--type', 'int8'],
    ['quantize', '--model', hf, '--out', path.join(hf, 'model.safetensors'), '--type', 'int4'],
    ['quantize', '--model', gguf, '--out', gguf, '--type', 'q8_0'],
    ['quantize', '--model', gguf, '--out', path.join(tmp, '.', 'model.gguf'), '--type', 'q4_0'],
    ['export', '--model', gguf, '--out', gguf, '--type', 'q8_0'],
    ['export', '--model', hf, '--out', hf, '--format', 'hf'],
  ];
  for (const args of cases) {
    const r = slimlm(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /would overwrite the input model/);
  }
  assert.deepEqual([digest(hf), digest(gguf)], before);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('bad quantize flags are usage errors raised before anything is written', () => {
  const tmp = tmpdir();
  const out = path.join(tmp, 'out');
  const cases: Array<[string[], RegExp]> = [
    [['--type', 'int4', '--block-size', '0'], /block size must be 16, 32, 64, 128, 256/],
    [['--type', 'int4', '--block-size', '48'], /block size must be/],
    [['--type', 'nf4', '--block-size', '512'], /block size must be/],
    [['--type', 'int4', '--block-size=-32'], /block size must be/],
    [['--type', 'int4', '--lm-head', 'int2'], /int8, float or same/],
    [['--type', 'q4_0'], /must end in \.gguf/],
    [['--type', 'q4_0', '--block-size', '64', '--out', out + '.gguf'], /--block-size applies to/],
    [['--type', 'nf4', '--double-quant', '--no-double-quant'], /contradict/],
    [['--type', 'int4', '--keep', '(unclosed'], /--keep/],
  ];
  for (const [flags, message] of cases) {
    const args = ['quantize', '--model', stories, '--out', out, ...flags];
    const r = slimlm(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.deepEqual(fs.readdirSync(tmp), [], `${flags.join(' ')} wrote something`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('quantized folders carry their tokenizer whatever its source form, and generate/eval/inspect use them as they are', () => {
  const tmp = tmpdir();
  const hf = path.join(tmp, 'hf');
  ok(slimlm('export', '--model', stories, '--out', hf, '--format', 'hf'), 'export hf');
  // Exported files are writable even though ../shared is read-only: a second export over the first works.
  ok(slimlm('export', '--model', stories, '--out', hf, '--format', 'hf'), 'export hf again');
  for (const f of fs.readdirSync(hf)) assert.ok(fs.statSync(path.join(hf, f)).mode & 0o200, `${f} is writable`);
  const hfConfig = JSON.parse(fs.readFileSync(path.join(hf, 'config.json'), 'utf8'));
  assert.equal(hfConfig.torch_dtype, 'float16', 'torch_dtype names the stored dtype');
  const float = slimlm('generate', '--model', stories, '--temperature', '0', '--max-new-tokens', '24');
  ok(float, 'generate float');
  for (const [source, name] of [[hf, 'from-hf'], [stories, 'from-bin'], [tinyGGUF, 'from-gguf']] as const) {
    const out = path.join(tmp, name);
    ok(slimlm('quantize', '--model', source, '--out', out, '--type', 'int8'), `quantize ${name}`);
    const gen = slimlm('generate', '--model', out, '--temperature', '0', '--max-new-tokens', '24');
    ok(gen, `generate ${name}`);
    if (source !== tinyGGUF) assert.equal(gen.stdout, float.stdout, `${name}: int8 keeps the greedy text`);
    const info = slimlm('inspect', out);
    ok(info, `inspect ${name}`);
    assert.match(info.stdout, /int8, blocks of 32 \(MatMulNBits\)/);
    assert.match(info.stdout, /tokenizer +\S+/);
    assert.doesNotMatch(info.stdout, /\(none found\)/);
  }
  // The GGUF's own vocabulary, written as tokenizer.model, tokenizes as the GGUF does.
  const text = 'Hello  world, 안녕하세요! tabs\tand\nnewlines 🤖';
  const viaGGUF = slimlm('tokenize', '--tokenizer', tinyGGUF, '--text', text);
  ok(viaGGUF, 'tokenize gguf');
  assert.equal(slimlm('tokenize', '--tokenizer', path.join(tmp, 'from-gguf'), '--text', text).stdout, viaGGUF.stdout);
  // GGUF → GGUF keeps the embedded tokenizer.
  const requant = path.join(tmp, 'requant.gguf');
  ok(slimlm('quantize', '--model', tinyGGUF, '--out', requant, '--type', 'q8_0'), 'quantize gguf to gguf');
  assert.equal(slimlm('tokenize', '--tokenizer', requant, '--text', text).stdout, viaGGUF.stdout);
  // Quantizing or exporting a quantized folder, or quantizing it again on the fly, is refused with a clear reason.
  for (const args of [['quantize', '--model', path.join(tmp, 'from-bin'), '--out', path.join(tmp, 'again'), '--type', 'int4'],
    ['export', '--model', path.join(tmp, 'from-bin'), '--out', path.join(tmp, 'again.gguf')]]) {
    const r = slimlm(...args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /quantized/);
  }
  const fly = slimlm('eval', '--model', path.join(tmp, 'from-bin'), '--data', data, '--type', 'nf4', '--chunks', '1');
  assert.notEqual(fly.code, 0);
  assert.match(fly.stderr, /already quantized/);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('eval and export check vocabularies, windows and output folders before working', () => {
  const tmp = tmpdir();
  const cases: Array<[string[], RegExp]> = [
    [['eval', '--model', stories, '--data', data, '--reference', tinyGGUF, '--chunks', '1'], /vocabulary \(32000\) differs from the model's \(512\)/],
    [['eval', '--model', stories, '--data', data, '--ctx', '600'], /longer than the model's context \(512\)/],
    [['eval', '--model', stories, '--data', data, '--chunks', '0'], /--chunks must be at least 1/],
    [['eval', '--model', stories, '--data', data, '--json', path.join(tmp, 'missing/r.json')], /not writable/],
    [['eval', '--model', stories, '--data', data, '--block-size', '64'], /go with --type/],
    [['compare', stories, '--data', data, '--plot', path.join(tmp, 'missing/p.svg')], /not writable/],
    [['export', '--model', stories, '--out', path.join(tmp, 'o'), '--format', 'hf', '--tokenizer', path.join(shared, 'tokenizers/mistral-7b-v0.1/tokenizer.json')], /32000 tokens but the model's vocabulary is 512/],
    [['export', '--model', stories, '--out', path.join(tmp, 'o'), '--format', 'onnx', '--type', 'f16'], /f32 .* or q4/],
  ];
  for (const [args, message] of cases) {
    const r = slimlm(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace for user errors');
  }
  // transformers.js needs tokenizer.json: a model without one is refused before any file is written.
  const onnx = slimlm('export', '--model', stories, '--out', path.join(tmp, 'onnx'), '--format', 'onnx');
  assert.notEqual(onnx.code, 0);
  assert.match(onnx.stderr, /needs tokenizer\.json/);
  assert.deepEqual(fs.readdirSync(tmp), []);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('eval --type reports the size `slimlm quantize` would store (float layers in the source dtype), equal to the written folder', () => {
  const tmp = tmpdir();
  const hf = path.join(tmp, 'hf16'), q = path.join(tmp, 'q');
  ok(slimlm('export', '--model', stories, '--out', hf, '--format', 'hf', '--type', 'f16'), 'export f16');
  ok(slimlm('quantize', '--model', hf, '--out', q, '--type', 'int4'), 'quantize');
  const size = (...args: string[]) => {
    const r = slimlm('eval', '--data', data, '--chunks', '1', '--threads', '1', ...args);
    ok(r, args.join(' '));
    return /size\s+(.*)/.exec(r.stdout)![1];
  };
  assert.equal(size('--model', hf, '--type', 'int4'), size('--model', q));
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('half-written or foreign files are named as such: a quantized model under a plain config.json, a damaged eval report', () => {
  const tmp = tmpdir();
  const q = path.join(tmp, 'q'), hf = path.join(tmp, 'hf');
  ok(slimlm('quantize', '--model', stories, '--out', q, '--type', 'int4'), 'quantize');
  ok(slimlm('export', '--model', stories, '--out', hf, '--format', 'hf'), 'export');
  fs.copyFileSync(path.join(hf, 'config.json'), path.join(q, 'config.json')); // as a kill between two renames would leave it
  const mixed = slimlm('generate', '--model', q, '--max-new-tokens', '4');
  assert.notEqual(mixed.code, 0);
  assert.match(mixed.stderr, /holds quantized weights .* config.json has no quantization_config; the folder was left half-written/);
  for (const [content, message] of [['{}', /not an eval report/], ['{"model": "x", "perplex', /not a readable eval report/]] as const) {
    const report = path.join(tmp, 'report.json');
    fs.writeFileSync(report, content);
    const r = slimlm('compare', report, '--plot', path.join(tmp, 'p.svg'));
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});
