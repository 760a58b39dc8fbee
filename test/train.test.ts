// Trainer: learning, HF output that slimlm loads, exact resume after SIGKILL, corrupt checkpoints, NaN guard,
// gradient accumulation, losses on padding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTraining } from '../src/distill/trainer.js';
import { initStudentWeights } from '../src/distill/student.js';
import { DEFAULT_LOSS } from '../src/distill/losses.js';
import { DEFAULT_ADAMW } from '../src/distill/optimizer.js';
import { CheckpointCorruptError, loadTrainingCheckpoint, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE } from '../src/distill/checkpoint.js';
import { createTrainBackend } from '../src/distill/worker.js';
import { StepRunner, type MicroBatch } from '../src/distill/stepRunner.js';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { LlamaModel } from '../src/models/llama.js';
import { makeBatch } from '../src/data/index.js';
import { BigramTeacher, dataset, markovRows, TINY } from './train-helpers.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-train-'));

test('distillation lowers the loss; the student folder loads with openCheckpoint and runs', async () => {
  const out = tmp();
  try {
    const rows = markovRows(48, TINY.vocabSize, 1);
    const result = await runTraining({
      outDir: out, config: TINY, weights: initStudentWeights(TINY, 1), train: dataset(rows.slice(0, 40)), validation: dataset(rows.slice(40)),
      teacher: new BigramTeacher(TINY.vocabSize), loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW, lr: 1e-2, warmup: 2, epochs: 3,
      batchSize: 8, evalEvery: 5, seed: 0, threads: 1, log: () => {},
      extraFiles: { 'tokenizer_config.json': '{"bos_token": "<s>"}' },
    });
    const losses = result.history.map((h) => h.loss);
    assert.equal(result.steps, 15);
    assert.ok(losses[losses.length - 1] < 0.85 * losses[0], `loss ${losses[0]} → ${losses[losses.length - 1]}`);
    const firstEval = result.history.find((h) => h.valKl !== undefined)!;
    assert.equal(firstEval.step, 5);
    assert.ok(result.validation && result.validation.kl! < firstEval.valKl! && result.validation.ppl < firstEval.valPpl!,
      `validation KL ${firstEval.valKl} → ${result.validation?.kl}, ppl ${firstEval.valPpl} → ${result.validation?.ppl}`);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer_config.json', 'loss.csv', 'loss.svg', CHECKPOINT_FILE]) assert.ok(existsSync(join(out, f)), f);
    assert.equal(readFileSync(join(out, 'loss.csv'), 'utf8').trim().split('\n').length, 16);
    assert.match(readFileSync(join(out, 'loss.svg'), 'utf8'), /<svg/);

    const ck = openCheckpoint(out);
    const weights = new Map(ck.tensorNames().map((n) => [n, ck.getTensor(n)]));
    assert.equal(ck.config.hiddenSize, TINY.hiddenSize);
    const model = await LlamaModel.create(ck.config, weights, { threads: 1 });
    const { logits } = await model.forward({ inputIds: [[1, 10, 20]] });
    assert.ok(logits.every(Number.isFinite));
    await model.dispose();
    ck.close();
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

function runChild(outDir: string, mode: string, delay: number, killAfterStep?: number): Promise<{ lines: string[]; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/train-child.ts', outDir, mode, String(delay)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    let buf = '', killed = false;
    child.stdout.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines.push(l);
        const m = /^step (\d+)/.exec(l);
        if (killAfterStep !== undefined && m && Number(m[1]) >= killAfterStep && !killed) { killed = true; child.kill('SIGKILL'); }
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => (code === 0 || signal === 'SIGKILL' ? resolve({ lines, killed }) : reject(new Error(`child exited ${code}`))));
  });
}

test('a run killed with SIGKILL and resumed ends with the same loss trajectory', async () => {
  const a = tmp(), b = tmp();
  try {
    const full = await runChild(a, 'fresh', 0);
    const killed = await runChild(b, 'fresh', 40, 7); // checkpoints at steps 3 and 6; killed during step 8
    assert.ok(killed.killed);
    assert.ok(!existsSync(join(b, 'model.safetensors')), 'the killed run must not have finished');
    const resumed = await runChild(b, 'resume', 0);
    const final = (r: { lines: string[] }) => Number(r.lines.find((l) => l.startsWith('final'))!.split(' ')[1]);
    assert.ok(Math.abs(final(full) - final(resumed)) <= 1e-6, `final loss ${final(full)} vs resumed ${final(resumed)}`);
    const steps = (r: { lines: string[] }) => new Map(r.lines.filter((l) => l.startsWith('step')).map((l) => [l.split(' ')[1], Number(l.split(' ')[3])]));
    const fullSteps = steps(full), resumedSteps = steps(resumed);
    assert.equal(Math.min(...[...resumedSteps.keys()].map(Number)), 7, 'resumes after the step-6 checkpoint');
    for (const [s, l] of resumedSteps) assert.equal(l, fullSteps.get(s), `step ${s}`);
    // The CSV of the resumed run holds the whole trajectory, identical to the uninterrupted one.
    assert.equal(readFileSync(join(b, 'loss.csv'), 'utf8'), readFileSync(join(a, 'loss.csv'), 'utf8'));
  } finally {
    rmSync(a, { recursive: true, force: true });
    rmSync(b, { recursive: true, force: true });
  }
});

test('corrupt, truncated and foreign checkpoints are refused', async () => {
  const out = tmp();
  try {
    await runTraining({
      outDir: out, config: TINY, weights: initStudentWeights(TINY, 2), train: dataset(markovRows(8, TINY.vocabSize, 2)),
      loss: { ...DEFAULT_LOSS, loss: 'ce' }, adamw: DEFAULT_ADAMW, lr: 1e-3, epochs: 1, batchSize: 4, seed: 0, threads: 1, inWorker: false, log: () => {},
    });
    const path = join(out, CHECKPOINT_FILE);
    assert.ok(loadTrainingCheckpoint(out).state.step === 2);
    const good = readFileSync(path);
    const flipped = Buffer.from(good);
    flipped[flipped.length - 100] ^= 0x40;
    writeFileSync(path, flipped);
    assert.throws(() => loadTrainingCheckpoint(out), (e: Error) => e instanceof CheckpointCorruptError && /checksum/.test(e.message));
    writeFileSync(path, good.subarray(0, good.length - 1000));
    assert.throws(() => loadTrainingCheckpoint(out), CheckpointCorruptError);
    writeFileSync(path, good.subarray(0, 5));
    assert.throws(() => loadTrainingCheckpoint(out), CheckpointCorruptError);
    assert.throws(() => loadTrainingCheckpoint(join(out, 'model.safetensors')), /not a slimlm training checkpoint/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('--resume falls back to the previous checkpoint when the newest is damaged or missing; other runs are refused', async () => {
  const out = tmp();
  const rows = markovRows(12, TINY.vocabSize, 2);
  const run = (resume: boolean, identity: Record<string, unknown> = { data: 'a' }) => {
    const lines: string[] = [];
    return runTraining({
      outDir: out, config: TINY, weights: initStudentWeights(TINY, 2), train: dataset(rows), runIdentity: identity,
      loss: { ...DEFAULT_LOSS, loss: 'ce' }, adamw: DEFAULT_ADAMW, lr: 1e-3, epochs: 1, batchSize: 4, saveEvery: 1, resume, seed: 0, threads: 1, inWorker: false,
      log: (l) => lines.push(l),
    }).then((r) => ({ ...r, lines }));
  };
  try {
    const first = await run(false);
    assert.equal(loadTrainingCheckpoint(out).state.step, 3);
    assert.equal(loadTrainingCheckpoint(join(out, PREVIOUS_CHECKPOINT_FILE)).state.step, 2);
    // A new run into a folder holding a checkpoint would destroy it: refused.
    await assert.rejects(run(false), /checkpoint of an earlier run: pass --resume/);
    // Other data: not the same run.
    await assert.rejects(run(true, { data: 'b' }), /other settings \(data: "a" → "b"\)/);
    // The newest checkpoint damaged: resume from the previous one (step 2), ending where the first run ended.
    const path = join(out, CHECKPOINT_FILE);
    const bytes = readFileSync(path);
    bytes[bytes.length - 50] ^= 0x10;
    writeFileSync(path, bytes);
    const resumed = await run(true);
    assert.ok(resumed.lines.some((l) => /checksum mismatch.*moved it to checkpoint\.damaged\.safetensors and continuing from checkpoint\.prev\.safetensors \(step 2\)/.test(l)), resumed.lines.join('\n'));
    assert.equal(resumed.finalLoss, first.finalLoss);
    // Only the previous one left (a kill between the two names in an older layout): resumed from it too.
    rmSync(path);
    const again = await run(true);
    assert.equal(again.finalLoss, first.finalLoss);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a training worker that fails to start is stopped (the process can exit) and its error reported', async () => {
  await assert.rejects(createTrainBackend(TINY, { params: initStudentWeights(TINY, 1) },
    { loss: { ...DEFAULT_LOSS, loss: 'jsd', jsdBeta: 7 }, adamw: DEFAULT_ADAMW, teacher: 'dense', gradAccum: 1, threads: 1 }, { inWorker: true }), /beta/);
});

test('a step with a non-finite loss is skipped and reported; training continues', async () => {
  const out = tmp();
  const logs: string[] = [];
  try {
    const r = await runTraining({
      outDir: out, config: TINY, weights: initStudentWeights(TINY, 4), train: dataset(markovRows(16, TINY.vocabSize, 3)),
      teacher: new BigramTeacher(TINY.vocabSize, 7, { nanOnCall: 2 }), loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW, lr: 1e-3,
      epochs: 1, batchSize: 4, seed: 0, threads: 1, inWorker: false, log: (l) => logs.push(l),
    });
    assert.equal(r.skippedSteps, 1);
    assert.deepEqual(r.history.map((h) => h.skipped), [false, true, false, false]);
    assert.ok(logs.some((l) => /step 2: non-finite/.test(l)));
    assert.ok(Number.isFinite(r.finalLoss));
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('a non-finite step leaves parameters and moments bit-identical (the update is written over the state in place), chunked LM head too', async () => {
  for (const lmHeadChunks of [1, 3]) await nonFiniteStep(lmHeadChunks);
});

async function nonFiniteStep(lmHeadChunks: number): Promise<void> {
  const rows = markovRows(4, TINY.vocabSize, 9);
  const teacher = new BigramTeacher(TINY.vocabSize, 7, { nanOnCall: 2 });
  const init = initStudentWeights(TINY, 5);
  const runner = await StepRunner.create(TINY, { params: init }, { loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW, teacher: 'dense', gradAccum: 1, threads: 1, lmHeadChunks });
  try {
    const batch = makeBatch(rows, 12, 0);
    assert.equal((await runner.step([{ batch, teacher: await teacher.run(batch) }], 1e-2, 1)).skipped, false);
    const snap = (m: Map<string, Float32Array>) => new Map([...m].map(([k, v]) => [k, Float32Array.from(v)]));
    const before = runner.getState();
    const [p, m, v] = [snap(before.params), snap(before.m), snap(before.v)];
    assert.ok([...m.values()].some((a) => a.some((x) => x !== 0)), 'the first step moved the moments');
    const r = await runner.step([{ batch, teacher: await teacher.run(batch) }], 1e-2, 2);
    assert.equal(r.skipped, true);
    const after = runner.getState();
    for (const [want, got] of [[p, after.params], [m, after.m], [v, after.v]] as const) {
      for (const [k, a] of want) assert.deepEqual(got.get(k), a, k);
    }
    assert.ok([...init.values()].some((a, i) => a.some((x, j) => x !== [...p.values()][i][j])), 'the caller\'s initial arrays were not modified');
  } finally {
    await runner.dispose();
  }
}

test('gradient accumulation over 2 micro-batches equals one batch of both', async () => {
  const rows = markovRows(4, TINY.vocabSize, 9);
  const teacher = new BigramTeacher(TINY.vocabSize);
  const mb = async (rs: typeof rows): Promise<MicroBatch> => { const batch = makeBatch(rs, 12, 0); return { batch, teacher: await teacher.run(batch) }; };
  const opts = { loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW, teacher: 'dense' as const, threads: 1 };
  const one = await StepRunner.create(TINY, { params: initStudentWeights(TINY, 5) }, { ...opts, gradAccum: 1 });
  const two = await StepRunner.create(TINY, { params: initStudentWeights(TINY, 5) }, { ...opts, gradAccum: 2 });
  try {
    const a = await one.step([await mb(rows)], 1e-2, 1);
    const b = await two.step([await mb(rows.slice(0, 2)), await mb(rows.slice(2))], 1e-2, 1);
    assert.ok(Math.abs(a.loss - b.loss) < 1e-5 * a.loss && Math.abs(a.gradNorm - b.gradNorm) < 1e-4 * a.gradNorm);
    for (const [n, p] of one.getState().params) {
      const q = two.getState().params.get(n)!;
      p.forEach((v, i) => assert.ok(Math.abs(v - q[i]) < 1e-6, `${n}[${i}]`));
    }
  } finally {
    await one.dispose();
    await two.dispose();
  }
});

test('padding positions with non-finite teacher logits carry no loss and no NaN; sparse top-V equals dense', async () => {
  const rows = markovRows(2, TINY.vocabSize, 4);
  const batch = makeBatch(rows, 14, 0); // both rows padded
  const dense = await new BigramTeacher(TINY.vocabSize).run(batch);
  if (dense.kind !== 'dense') throw new Error('dense');
  const V = TINY.vocabSize;
  const poisoned = Float32Array.from(dense.logits);
  for (let i = 0; i < batch.batch * batch.seq; i++) if (batch.labels[i] === -100) poisoned.fill(i % 2 ? NaN : -Infinity, i * V, (i + 1) * V);
  // Sparse with k = V: every id present, tail mass 0, so the bucket KL equals the dense KL.
  const ids = new Int32Array(batch.batch * batch.seq * V), logprobs = new Float32Array(ids.length);
  for (let i = 0; i < batch.batch * batch.seq; i++) {
    const row = dense.logits.subarray(i * V, (i + 1) * V);
    const max = Math.max(...row), lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
    for (let j = 0; j < V; j++) { ids[i * V + j] = j; logprobs[i * V + j] = row[j] - lse; }
  }
  // T = 1: at higher temperatures the f32 rounding of 1 − Σp (~1e-7) becomes a visible tail bucket.
  const run = async (kind: 'dense' | 'sparse', teacher: MicroBatch['teacher']) => {
    const r = await StepRunner.create(TINY, { params: initStudentWeights(TINY, 6) }, { loss: { ...DEFAULT_LOSS, temperature: 1 }, adamw: DEFAULT_ADAMW, teacher: kind, gradAccum: 1, threads: 1 });
    try { return await r.step([{ batch, teacher }], 1e-3, 1); } finally { await r.dispose(); }
  };
  const clean = await run('dense', dense);
  const dirty = await run('dense', { kind: 'dense', logits: poisoned });
  assert.equal(dirty.skipped, false);
  assert.ok(Math.abs(clean.loss - dirty.loss) < 1e-6 && Math.abs(clean.gradNorm - dirty.gradNorm) < 1e-6);
  const sparse = await run('sparse', { kind: 'sparse', k: V, ids, logprobs });
  assert.ok(Math.abs(sparse.loss - clean.loss) < 1e-4 * clean.loss, `sparse ${sparse.loss} vs dense ${clean.loss}`);
});

test('the closed-form logits gradient (CE, dense KL) equals autodiff through the loss graph', async () => {
  const batch = makeBatch(markovRows(3, TINY.vocabSize, 8), 12, 0);
  const teacher = await new BigramTeacher(TINY.vocabSize).run(batch);
  for (const loss of [DEFAULT_LOSS, { ...DEFAULT_LOSS, alpha: 1 }, { ...DEFAULT_LOSS, loss: 'ce' as const }]) {
    const results = [];
    for (const closedFormLossGrad of [true, false]) {
      const r = await StepRunner.create(TINY, { params: initStudentWeights(TINY, 6) }, { loss, adamw: DEFAULT_ADAMW, teacher: loss.loss === 'ce' ? 'none' : 'dense', gradAccum: 1, threads: 1, closedFormLossGrad, perTensorGradNorms: true });
      try { results.push(await r.step([{ batch, teacher: loss.loss === 'ce' ? null : teacher }], 1e-2, 1)); } finally { await r.dispose(); }
    }
    const [a, b] = results;
    assert.ok(Math.abs(a.loss - b.loss) < 1e-6 * b.loss);
    for (const [n, v] of Object.entries(b.gradNorms!)) assert.ok(Math.abs(a.gradNorms![n] - v) <= 1e-5 * v, `${loss.loss} α=${loss.alpha} ‖∇${n}‖: ${a.gradNorms![n]} vs ${v}`);
  }
});

test('the LM head and loss in token chunks give the unchunked step and evaluation (dense, sparse, CE, rkl; tied and untied; small batches)', async () => {
  const V = TINY.vocabSize;
  for (const tied of [false, true]) {
    const config = { ...TINY, tieWordEmbeddings: tied };
    // 36 positions in 5 chunks; 7 in 5 (sizes 1,1,1,2,2); 3 < 5: the runner falls back to its unchunked graph
    for (const [rows, seq] of [[3, 12], [1, 7], [1, 3]] as const) {
      const batch = makeBatch(markovRows(rows, V, 8).map((r) => ({ ids: r.ids.slice(0, seq), targets: r.targets.slice(0, seq) })), seq, 0);
      const dense = await new BigramTeacher(V).run(batch);
      if (dense.kind !== 'dense') throw new Error('dense');
      const k = 3, n = batch.batch * batch.seq;
      const ids = new Int32Array(n * k), logprobs = new Float32Array(n * k);
      for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) { ids[i * k + j] = (i + 5 * j) % V; logprobs[i * k + j] = -1.5 - j; }
      const cases = [
        { loss: DEFAULT_LOSS, kind: 'dense' as const, teacher: dense },
        { loss: { ...DEFAULT_LOSS, loss: 'rkl' as const }, kind: 'dense' as const, teacher: dense },
        { loss: DEFAULT_LOSS, kind: 'sparse' as const, teacher: { kind: 'sparse' as const, k, ids, logprobs } },
        { loss: { ...DEFAULT_LOSS, loss: 'ce' as const }, kind: 'none' as const, teacher: null },
      ];
      for (const c of cases) {
        const results = [];
        for (const lmHeadChunks of [1, 5]) {
          const r = await StepRunner.create(config, { params: initStudentWeights(config, 6) }, { loss: c.loss, adamw: DEFAULT_ADAMW, teacher: c.kind, gradAccum: 1, threads: 1, perTensorGradNorms: true, lmHeadChunks });
          try {
            const ev = await r.evaluate({ batch, teacher: c.teacher });
            const s = await r.step([{ batch, teacher: c.teacher }], 1e-2, 1);
            results.push({ ev, s, params: new Map([...r.getState().params].map(([name, p]) => [name, Float32Array.from(p)])) });
          } finally { await r.dispose(); }
        }
        const [a, b] = results, what = `${c.loss.loss}/${c.kind} tied=${tied} tokens=${n}`;
        assert.ok(Math.abs(a.s.loss - b.s.loss) <= 1e-6 * Math.abs(a.s.loss), `${what}: loss ${a.s.loss} vs ${b.s.loss}`);
        assert.ok(Math.abs(a.s.ce - b.s.ce) <= 1e-6 * a.s.ce && Math.abs(a.s.kd - b.s.kd) <= 1e-6 * Math.max(1e-6, Math.abs(a.s.kd)), `${what}: ce/kd`);
        assert.ok(Math.abs(a.ev.ceSum - b.ev.ceSum) <= 1e-6 * a.ev.ceSum && Math.abs(a.ev.kdSum - b.ev.kdSum) <= 1e-6 * Math.max(1e-6, a.ev.kdSum), `${what}: evaluation`);
        for (const [name, v] of Object.entries(a.s.gradNorms!)) assert.ok(Math.abs(b.s.gradNorms![name] - v) <= 1e-5 * v, `${what} ‖∇${name}‖: ${v} vs ${b.s.gradNorms![name]}`);
        for (const [name, p] of a.params) {
          const q = b.params.get(name)!;
          // Adam's first step is ±lr per element, whatever |g|: f32-noise gradients can move an element by a hair more.
          p.forEach((x, i) => assert.ok(Math.abs(x - q[i]) <= 1e-2 * 1e-2, `${what} ${name}[${i}]: ${x} vs ${q[i]}`));
        }
      }
    }
  }
});

test('the lr schedule is transformers\' (cosine/linear with warmup; a fractional warmup rounds up); a fractional step count is refused', async () => {
  const out = tmp();
  const total = 20, peak = 1e-2;
  // transformers/optimization.py: warmup s/W, then cosine 0.5·(1+cos(π·progress)) or linear (T−s)/(T−W); step k runs at λ(k−1).
  const lambda = (kind: string, s: number, W: number) => s < W ? s / Math.max(1, W)
    : kind === 'cosine' ? Math.max(0, 0.5 * (1 + Math.cos(Math.PI * (s - W) / Math.max(1, total - W)))) : Math.max(0, (total - s) / Math.max(1, total - W));
  try {
    for (const [kind, warmup, W] of [['cosine', 0.12, 3], ['linear', 0.1, 2], ['cosine', 4, 4]] as const) {
      rmSync(out, { recursive: true, force: true });
      const r = await runTraining({
        outDir: out, config: TINY, weights: initStudentWeights(TINY, 2), train: dataset(markovRows(40, TINY.vocabSize, 3)), schedule: kind, warmup,
        loss: { ...DEFAULT_LOSS, loss: 'ce' }, adamw: DEFAULT_ADAMW, lr: peak, epochs: 1, maxSteps: total, batchSize: 2, seed: 0, threads: 1, inWorker: false, log: () => {},
      });
      for (const row of r.history) assert.ok(Math.abs(row.lr - peak * lambda(kind, row.step - 1, W)) < 1e-12, `${kind} warmup ${warmup}, step ${row.step}: ${row.lr}`);
    }
    await assert.rejects(runTraining({
      outDir: tmp(), config: TINY, weights: initStudentWeights(TINY, 2), train: dataset(markovRows(8, TINY.vocabSize, 3)), warmup: 2.5,
      loss: { ...DEFAULT_LOSS, loss: 'ce' }, adamw: DEFAULT_ADAMW, lr: peak, epochs: 1, batchSize: 2, seed: 0, threads: 1, inWorker: false, log: () => {},
    }), /whole number of steps/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
