/** LlamaModel vs the PyTorch reference fixtures (test/fixtures/README.md): logits within 1e-4, identical greedy ids. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HostTensor } from '../src/formats/tensor.js';
import { locateHFFiles, readHFConfig } from '../src/formats/hf.js';
import { openSafetensors } from '../src/formats/safetensors.js';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { createLlamaModel } from '../src/models/llama.js';

interface Reference {
  batch: { input_ids: number[][]; attention_mask: number[][]; logits: { file: string; shape: number[] } };
  single: { input_ids: number[]; logits: { file: string; shape: number[] } };
  greedy: { prompt_ids: number[]; max_new_tokens: number; new_ids: number[] };
  tolerance: { max_abs_diff: number };
}

function loadFixture(dir: string) {
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as Reference;
  const floats = (file: string) => { const b = readFileSync(join(dir, file)); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4); };
  const reader = openSafetensors(locateHFFiles(dir).weights!);
  const weights = new Map<string, HostTensor>(reader.names().map((n) => [n, reader.read(n)]));
  reader.close();
  return { ref, config: readHFConfig(dir), weights, single: floats(ref.single.logits.file), batch: floats(ref.batch.logits.file) };
}

const argmax = (a: Float32Array) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);

for (const name of ['mistral-tiny', 'mistral-tiny-bf16', 'llama-tiny']) {
  test(`${name}: logits and greedy decoding match the PyTorch reference`, async () => {
    const { ref, config, weights, single, batch } = loadFixture(join('test/fixtures', name));
    const tol = ref.tolerance.max_abs_diff;
    const model = await createLlamaModel(config, weights, { threads: 1 });
    try {
      const V = config.vocabSize;
      const one = await model.forward({ inputIds: [ref.single.input_ids], allLogits: true });
      let worst = 0;
      one.logits.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - single[i])); });
      assert.ok(worst < tol, `single: max |diff| ${worst}`);

      const [B, S] = ref.batch.logits.shape;
      const padded = await model.forward({ inputIds: ref.batch.input_ids, attentionMask: ref.batch.attention_mask, allLogits: true });
      worst = 0;
      for (let b = 0; b < B; b++) {
        for (let s = 0; s < S; s++) {
          if (!ref.batch.attention_mask[b][s]) continue;
          for (let v = 0; v < V; v++) { const i = (b * S + s) * V + v; worst = Math.max(worst, Math.abs(padded.logits[i] - batch[i])); }
        }
      }
      assert.ok(worst < tol, `batch: max |diff| ${worst}`);

      let step = await model.forward({ inputIds: [ref.greedy.prompt_ids] });
      const ids: number[] = [];
      for (let i = 0; i < ref.greedy.max_new_tokens; i++) {
        ids.push(argmax(step.logits));
        if (i + 1 < ref.greedy.max_new_tokens) step = await model.forward({ inputIds: [[ids[i]]], cache: step.cache });
      }
      assert.deepEqual(ids, ref.greedy.new_ids);
    } finally {
      await model.dispose();
    }
  });
}

test('stories260K (real llama2.c checkpoint, via openCheckpoint): logits and 60 greedy tokens match the reference', async () => {
  const dir = 'test/fixtures/stories260K-ref';
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as {
    source: string; input_ids: number[]; logits: { file: string }; tolerance: { max_abs_diff: number };
    greedy: { prompt_ids: number[]; max_new_tokens: number; new_ids: number[] };
  };
  const b = readFileSync(join(dir, ref.logits.file));
  const want = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  const ckpt = openCheckpoint(ref.source);
  const weights = new Map(ckpt.tensorNames().map((n) => [n, ckpt.getTensor(n)]));
  ckpt.close();
  const model = await createLlamaModel(ckpt.config, weights, { threads: 1 });
  try {
    const got = await model.forward({ inputIds: [ref.input_ids], allLogits: true });
    let worst = 0;
    got.logits.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - want[i])); });
    assert.ok(worst < ref.tolerance.max_abs_diff, `max |diff| ${worst}`);
    let step = await model.forward({ inputIds: [ref.greedy.prompt_ids] });
    const ids: number[] = [];
    for (let i = 0; i < ref.greedy.max_new_tokens; i++) {
      ids.push(argmax(step.logits));
      step = await model.forward({ inputIds: [[ids[i]]], cache: step.cache });
    }
    assert.deepEqual(ids, ref.greedy.new_ids);
  } finally {
    await model.dispose();
  }
});
