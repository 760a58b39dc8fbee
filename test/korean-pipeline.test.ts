/**
 * The Korean chatbot pipeline (examples/korean-chatbot) end to end in CI size, then the student's interop exports
 * checked by the engines users would load them with: PyTorch (HF folder), llama.cpp (GGUF), transformers.js (ONNX).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama } from 'node-llama-cpp';
import { AutoModelForCausalLM as TjsModel, env as tjsEnv } from '@huggingface/transformers';
import { AutoModelForCausalLM, AutoTokenizer } from '../src/api.js';
import { chatFormat } from '../src/chat/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'slimlm-korean-'));
const student = path.join(out, 'student-kd');
let pipelineSeconds = 0;

function slimlm(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/slimlm.js'), ...args], { encoding: 'utf8', cwd: root, timeout: 120_000 });
  assert.equal(r.status, 0, `slimlm ${args.join(' ')}: ${r.stderr}`);
  return r;
}

before(() => {
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'examples/korean-chatbot/run.ts'), '--preset', 'ci', '--out', out],
    { encoding: 'utf8', cwd: root, timeout: 300_000 });
  pipelineSeconds = (Date.now() - started) / 1000;
  assert.equal(r.status, 0, r.stderr.slice(-3000));
});
after(() => fs.rmSync(out, { recursive: true, force: true }));

/** A Korean question in the chat format the student was trained on. */
async function promptIds(): Promise<number[]> {
  const tokenizer = await AutoTokenizer.fromPretrained(student);
  return chatFormat(tokenizer, 'mistral').encode([{ role: 'user', content: '요즘 너무 피곤해' }], { addGenerationPrompt: true });
}

async function slimlmGreedy(model: string, ids: number[], n: number): Promise<number[]> {
  const lm = await AutoModelForCausalLM.fromPretrained(model, { threads: 2 });
  try {
    return (await lm.generate(ids, { maxNewTokens: n, eosTokenIds: [] })).tokens;
  } finally {
    await lm.dispose();
  }
}

test('pipeline (CI preset): teacher → KD and CE students → int4/NF4 → held-out eval → report, in under 5 minutes', () => {
  assert.ok(pipelineSeconds < 300, `took ${pipelineSeconds} s`);
  const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  for (const name of ['teacher', 'student (KD)', 'student (KD) int4', 'student (KD) NF4', 'student (CE only)']) {
    assert.match(report, new RegExp(`^\\| ${name.replace(/[()]/g, '\\$&')} \\|`, 'm'), name);
  }
  for (const cmd of ['slimlm train', 'slimlm distill', 'slimlm quantize']) assert.ok(report.includes(cmd), cmd);
  for (const svg of ['training-loss.svg', 'validation-ppl.svg', 'quality-vs-size.svg']) {
    assert.match(fs.readFileSync(path.join(out, svg), 'utf8'), /^<svg /);
  }
  const json = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
  const byDir = Object.fromEntries(json.rows.map((row: { dir: string }) => [row.dir, row]));
  assert.equal(byDir.teacher.quality.meanKL, 0);
  assert.equal(byDir.teacher.quality.top1Agreement, 1);
  assert.ok(byDir['student-kd'].params < byDir.teacher.params / 5);
  for (const row of json.rows) {
    assert.ok(Number.isFinite(row.quality.perplexity) && row.quality.perplexity > 1, `${row.dir} perplexity`);
    assert.ok(row.speed.replyMs > 0 && row.speed.ttftMs > 0 && row.speed.ttftMs <= row.speed.replyMs, `${row.dir} timings`);
  }
});

test('the student HF folder loads in PyTorch with the same logits (1e-4)', async (t) => {
  const torch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' });
  if (torch.status !== 0) return t.skip('Debian python3-torch is not installed (.ci/run installs it)');
  const ids = await promptIds();
  const r = spawnSync('/usr/bin/python3', [path.join(root, 'scripts/pytorch_logits.py'), student, ids.join(',')], { encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr);
  const ref = JSON.parse(r.stdout) as { shape: number[]; logits: number[] };
  const lm = await AutoModelForCausalLM.fromPretrained(student);
  try {
    const { logits } = await lm.model.forward({ inputIds: [ids], allLogits: true });
    assert.equal(logits.length, ref.logits.length);
    let worst = 0;
    for (let i = 0; i < logits.length; i++) worst = Math.max(worst, Math.abs(logits[i] - ref.logits[i]));
    assert.ok(worst < 1e-4, `max |Δlogit| ${worst}`);
  } finally {
    await lm.dispose();
  }
});

test('the student exported to GGUF generates the same greedy tokens in llama.cpp (node-llama-cpp)', async () => {
  const gguf = path.join(out, 'student.gguf');
  slimlm('export', '--model', student, '--out', gguf, '--type', 'f32');
  const ids = await promptIds();
  const expected = await slimlmGreedy(student, ids, 16);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  const model = await llama.loadModel({ modelPath: gguf });
  const context = await model.createContext({ contextSize: 256 });
  try {
    const sequence = context.getSequence();
    const got: number[] = [];
    for await (const token of sequence.evaluate(ids as never, { temperature: 0 })) {
      got.push(token as unknown as number);
      if (got.length === expected.length) break;
    }
    assert.deepEqual(got, expected);
  } finally {
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
});

test('the student exported as an ONNX folder loads in transformers.js and generates slimlm\'s greedy tokens (fp32 and q4)', async () => {
  const dir = path.join(out, 'student-onnx');
  slimlm('export', '--model', student, '--format', 'onnx', '--out', dir);
  const ids = await promptIds();
  tjsEnv.allowRemoteModels = false;
  tjsEnv.localModelPath = out + '/';
  for (const [dtype, reference] of [['fp32', student], ['q4', path.join(out, 'student-kd-int4')]] as const) {
    const expected = await slimlmGreedy(reference, ids, 12);
    const model = await TjsModel.from_pretrained('student-onnx', { dtype, device: 'cpu' });
    const { Tensor } = await import('@huggingface/transformers');
    const input = new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);
    const mask = new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
    const generated = await model.generate({ input_ids: input, attention_mask: mask, max_new_tokens: 12, min_new_tokens: 12, do_sample: false } as never) as { data: BigInt64Array };
    await model.dispose();
    const got = Array.from(generated.data, Number).slice(ids.length);
    assert.deepEqual(got, expected, dtype);
  }
});
