/**
 * The low-spec Korean chatbot, end to end, with the report of what each step cost:
 *   teacher (slimlm train) → teacher cache-free KD student (slimlm distill) and a CE-only student of the same size
 *   (slimlm train) → quantized student (slimlm quantize int4, nf4) → held-out evaluation → report.md + SVG plots.
 *
 *   node --import tsx examples/korean-chatbot/run.ts [--preset full|ci] [--out DIR] [--threads N] [--fresh]
 *
 * Every step is a real `slimlm` command (printed, and recorded in the report); a step whose output exists is reused
 * unless --fresh. Data: ../shared/datasets/ChatbotData.csv (Q/A rows through the Mistral chat template, loss on answers),
 * tokenizer: ../shared/tokenizers/mistral-7b-v0.1. The held-out split is the 5 % validation split (seed 0) of the
 * same rows, never trained on. Then: `slimlm chat --model OUT/student-kd-int4` or `slimlm serve --model …`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, AutoTokenizer } from '../../src/api.js';
import { chatFormat } from '../../src/chat/index.js';
import { loadData } from '../../src/data/index.js';
import { evaluateHeldOut, type HeldOutResult } from '../../src/eval/heldout.js';
import { weightFilesBytes } from '../../src/formats/hf.js';
import { parameterCount } from '../../src/models/config.js';
import { svgChart, type Series } from '../../src/report/plot.js';
import { peakRssBytes } from '../../src/runtime/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const shared = path.resolve(root, '../shared');
const DATA = path.join(shared, 'datasets/ChatbotData.csv');
const TOKENIZER = path.join(shared, 'tokenizers/mistral-7b-v0.1');
const QUESTIONS = ['요즘 너무 피곤해', '오늘 저녁 뭐 먹지?', '친구랑 싸웠어', '주말에 뭐 하면 좋을까?', '시험 망쳤어'];

interface Preset {
  teacher: string; student: string; teacherSteps: number; studentSteps: number; batch: number; maxLength: number;
  teacherLr: number; studentLr: number; evalEvery: number; evalBatches: number; heldOutBatches?: number;
}
const PRESETS: Record<string, Preset> = {
  // Sized for this 2-core machine: the teacher trains in under an hour, the students (≈1/10) in minutes.
  full: { teacher: 'hidden=256,layers=6,heads=4,kv-heads=2,ffn=768', student: 'hidden=64,layers=2,heads=2,kv-heads=1,ffn=192,tied=1',
    teacherSteps: 700, studentSteps: 500, batch: 32, maxLength: 64, teacherLr: 1e-3, studentLr: 3e-3, evalEvery: 150, evalBatches: 10 },
  // The same pipeline in CI size (minutes): every step runs, the numbers mean little.
  ci: { teacher: 'hidden=64,layers=2,heads=2,kv-heads=1,ffn=128', student: 'hidden=16,layers=1,heads=1,kv-heads=1,ffn=32,tied=1',
    teacherSteps: 6, studentSteps: 6, batch: 8, maxLength: 48, teacherLr: 3e-3, studentLr: 3e-3, evalEvery: 3, evalBatches: 2, heldOutBatches: 3 },
};

const { values } = parseArgs({ options: {
  preset: { type: 'string', default: 'full' }, out: { type: 'string' }, threads: { type: 'string', default: '2' }, fresh: { type: 'boolean' },
  measure: { type: 'string' },
} });

/** Child mode: load one model, answer the Korean questions with 64-token replies, print timings and peak RSS as JSON. */
async function measure(modelPath: string, threads: number): Promise<void> {
  const t0 = performance.now();
  const model = await AutoModelForCausalLM.fromPretrained(modelPath, { threads });
  const tokenizer = await AutoTokenizer.fromPretrained(TOKENIZER);
  const loadMs = performance.now() - t0;
  const format = chatFormat(tokenizer, 'mistral');
  const runs: { ttftMs: number; totalMs: number; tokens: number; text: string }[] = [];
  for (const [i, q] of [QUESTIONS[0], ...QUESTIONS].entries()) { // the first question twice: warm-up, not counted
    const prompt = format.encode([{ role: 'user', content: q }], { addGenerationPrompt: true });
    const start = performance.now();
    let first = -1;
    const r = await model.generate(prompt, { maxNewTokens: 64, eosTokenIds: [] }, { onToken: () => { if (first < 0) first = performance.now(); } });
    const end = performance.now();
    if (i > 0) runs.push({ ttftMs: first - start, totalMs: end - start, tokens: r.tokens.length, text: tokenizer.decode(r.tokens, { skipSpecialTokens: true }) });
  }
  await model.dispose();
  const mean = (f: (r: (typeof runs)[number]) => number) => runs.reduce((s, r) => s + f(r), 0) / runs.length;
  process.stdout.write(JSON.stringify({
    loadMs, ttftMs: mean((r) => r.ttftMs), replyMs: mean((r) => r.totalMs), tokensPerSecond: mean((r) => r.tokens / (r.totalMs / 1000)),
    peakRssMiB: peakRssBytes() / 2 ** 20, sample: { question: QUESTIONS[0], answer: runs[0].text },
  }) + '\n');
}

/** Steps, the CE part of the loss (comparable across KD and CE runs), and validation perplexities of a loss.csv. */
function readLossCsv(file: string): { step: number[]; loss: number[]; val: [number, number][] } {
  const [header, ...lines] = fs.readFileSync(file, 'utf8').trim().split('\n');
  const cols = header.split(',');
  const at = (name: string) => cols.indexOf(name);
  const out = { step: [] as number[], loss: [] as number[], val: [] as [number, number][] };
  for (const line of lines) {
    const f = line.split(',');
    out.step.push(Number(f[at('step')]));
    out.loss.push(Number(f[at('ce')] || f[at('loss')]));
    if (f[at('val_ppl')]) out.val.push([Number(f[at('step')]), Number(f[at('val_ppl')])]);
  }
  return out;
}

async function main(): Promise<void> {
  const preset = PRESETS[values.preset!];
  if (!preset) throw new Error(`unknown preset ${values.preset} (full, ci)`);
  const threads = Number(values.threads);
  if (values.measure) return measure(values.measure, threads);
  const out = path.resolve(values.out ?? path.join(root, 'examples/korean-chatbot/out', values.preset!));
  if (values.fresh) fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  const cli = path.join(root, 'bin/slimlm.js');
  // Wall time of each step as it actually ran, kept across reruns that reuse the step's output.
  const timesFile = path.join(out, 'step-times.json');
  const times: Record<string, number> = fs.existsSync(timesFile) ? JSON.parse(fs.readFileSync(timesFile, 'utf8')) : {};
  const commands: { step: string; command: string; seconds: number | null }[] = [];
  const rootDir = path.resolve(root) + path.sep;

  const slimlm = (step: string, produces: string, args: string[]) => {
    const shown = `slimlm ${args.map((a) => (/[\s,"]/.test(a) ? JSON.stringify(a) : a)).join(' ')}`.replaceAll(out + path.sep, 'OUT/')
      .replaceAll(rootDir, '').replaceAll(shared, '../shared');
    const reused = fs.existsSync(produces);
    process.stderr.write(`\n== ${step}${reused ? ' (reused)' : ''}\n$ ${shown}\n`);
    if (!reused) {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [cli, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
      if (r.status !== 0) throw new Error(`${step} failed (exit ${r.status}): ${shown}`);
      times[step] = (performance.now() - t0) / 1000;
      fs.writeFileSync(timesFile, JSON.stringify(times, null, 2));
    }
    commands.push({ step, command: shown, seconds: times[step] ?? null });
  };
  const dataFlags = ['--data', DATA, '--max-length', String(preset.maxLength), '--seed', '0', '--validation', '0.05'];
  const trainFlags = ['--batch-size', String(preset.batch), '--eval-every', String(preset.evalEvery), '--eval-batches', String(preset.evalBatches),
    '--warmup', '0.05', '--threads', String(threads)];
  const dir = (name: string) => path.join(out, name);

  slimlm('teacher (CE, slimlm train)', path.join(dir('teacher'), 'config.json'), ['train', '--student', preset.teacher, '--tokenizer', TOKENIZER,
    ...dataFlags, ...trainFlags, '--steps', String(preset.teacherSteps), '--lr', String(preset.teacherLr), '--out', dir('teacher')]);
  slimlm('student, distilled (KD+CE)', path.join(dir('student-kd'), 'config.json'), ['distill', '--teacher', dir('teacher'), '--student', preset.student,
    ...dataFlags, ...trainFlags, '--steps', String(preset.studentSteps), '--lr', String(preset.studentLr), '--loss', 'kl', '--temperature', '1',
    '--alpha', '0.5', '--out', dir('student-kd')]);
  slimlm('student, CE only (baseline, same size, data, steps, seed)', path.join(dir('student-ce'), 'config.json'), ['train', '--student', preset.student,
    '--tokenizer', TOKENIZER, ...dataFlags, ...trainFlags, '--steps', String(preset.studentSteps), '--lr', String(preset.studentLr), '--out', dir('student-ce')]);
  for (const type of ['int4', 'nf4']) {
    slimlm(`student quantized (${type})`, path.join(dir(`student-kd-${type}`), 'config.json'), ['quantize', '--model', dir('student-kd'), '--type', type,
      '--out', dir(`student-kd-${type}`)]);
  }

  // Held-out quality, every model against the teacher on the same positions.
  process.stderr.write('\n== held-out evaluation\n');
  const tokenizer = await AutoTokenizer.fromPretrained(TOKENIZER);
  const data = await loadData([DATA], tokenizer, { maxLength: preset.maxLength, seed: 0, validation: 0.05 });
  if (!data.validation) throw new Error('no validation split');
  const teacher = await AutoModelForCausalLM.fromPretrained(dir('teacher'), { threads });
  const models = [
    { name: 'teacher', dir: 'teacher' }, { name: 'student (KD)', dir: 'student-kd' }, { name: 'student (KD) int4', dir: 'student-kd-int4' },
    { name: 'student (KD) NF4', dir: 'student-kd-nf4' }, { name: 'student (CE only)', dir: 'student-ce' },
  ];
  const rows: Array<{ name: string; dir: string; params: number; bytes: number; quality: HeldOutResult; speed: Record<string, any> }> = [];
  for (const m of models) {
    const lm = m.dir === 'teacher' ? teacher : await AutoModelForCausalLM.fromPretrained(dir(m.dir), { threads });
    const quality = await evaluateHeldOut(lm.model, data.validation, { batchSize: 16, reference: teacher.model, maxBatches: preset.heldOutBatches });
    if (lm !== teacher) await lm.dispose();
    const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--measure', dir(m.dir), '--threads', String(threads)],
      { encoding: 'utf8', cwd: root });
    if (child.status !== 0) throw new Error(`measuring ${m.name} failed: ${child.stderr}`);
    const speed = JSON.parse(child.stdout.trim().split('\n').pop()!);
    rows.push({ name: m.name, dir: m.dir, params: parameterCount(lm.config), bytes: weightFilesBytes(dir(m.dir)), quality, speed });
    process.stderr.write(`${m.name}: held-out ppl ${quality.perplexity.toFixed(2)}, KL ${quality.meanKL!.toFixed(4)}, ` +
      `64-token reply ${speed.replyMs.toFixed(0)} ms (first token ${speed.ttftMs.toFixed(0)} ms)\n`);
  }
  await teacher.dispose();

  // Plots: training curves and quality vs size.
  const curves = ['teacher', 'student-kd', 'student-ce'].map((d) => ({ d, csv: readLossCsv(path.join(dir(d), 'loss.csv')) }));
  fs.writeFileSync(path.join(out, 'training-loss.svg'), svgChart(curves.map(({ d, csv }) => ({ name: d, points: csv.step.map((s, i) => [s, csv.loss[i]] as [number, number]) })),
    { title: 'Training cross-entropy on answer tokens (KD runs: the CE part of the loss)', xLabel: 'step', yLabel: 'cross-entropy' }));
  fs.writeFileSync(path.join(out, 'validation-ppl.svg'), svgChart(curves.filter((c) => c.csv.val.length).map(({ d, csv }) => ({ name: d, points: csv.val })),
    { title: 'Validation perplexity during training', xLabel: 'step', yLabel: 'perplexity', logY: true }));
  const scatter: Series[] = [{ name: 'models', points: rows.map((r) => [r.bytes / 2 ** 20, r.quality.perplexity] as [number, number]) }];
  fs.writeFileSync(path.join(out, 'quality-vs-size.svg'), svgChart(scatter, { title: 'Held-out perplexity vs size on disk', xLabel: 'MiB on disk (log)',
    yLabel: 'held-out perplexity', kind: 'scatter', logX: true, pointLabels: [rows.map((r) => r.name)] }));

  const f = (x: number, d = 2) => x.toFixed(d);
  const mib = (b: number) => `${f(b / 2 ** 20, 1)} MiB`;
  const byDir = Object.fromEntries(rows.map((r) => [r.dir, r]));
  const kd = byDir['student-kd'], ce = byDir['student-ce'], q4 = byDir['student-kd-int4'], nf4 = byDir['student-kd-nf4'], t = byDir['teacher'];
  const report = [
    `# Korean chatbot on a 2-core CPU: what each step cost`,
    '',
    `Preset \`${values.preset}\`, generated ${new Date().toISOString().slice(0, 10)} by \`node --import tsx examples/korean-chatbot/run.ts --preset ${values.preset}\`.`,
    `Data: ChatbotData.csv (${data.stats.rows.train} training rows, ${data.stats.rows.validation} held-out rows, Mistral-7B tokenizer, loss on answers only).`,
    '',
    '| model | parameters | size on disk | held-out ppl | KL to teacher | top-1 agreement | tok/s | first token | 64-token reply | peak RSS |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${(r.params / 1e6).toFixed(2)}M | ${mib(r.bytes)} | ${f(r.quality.perplexity)} | ${f(r.quality.meanKL!, 4)} | ` +
      `${f(100 * r.quality.top1Agreement!, 1)} % | ${f(r.speed.tokensPerSecond, 0)} | ${f(r.speed.ttftMs, 1)} ms | ${f(r.speed.replyMs, 0)} ms | ${f(r.speed.peakRssMiB, 0)} MiB |`),
    '',
    '## What each step cost',
    '',
    `- **Distillation vs CE only** (same student shape, data, steps, seed): held-out perplexity ${f(kd.quality.perplexity)} with KD vs ` +
      `${f(ce.quality.perplexity)} with CE only (${kd.quality.perplexity < ce.quality.perplexity ? 'KD is better' : 'KD is NOT better'}); ` +
      `top-1 agreement with the teacher ${f(100 * kd.quality.top1Agreement!, 1)} % vs ${f(100 * ce.quality.top1Agreement!, 1)} %.`,
    `- **Shrinking** ${(t.params / 1e6).toFixed(1)}M → ${(kd.params / 1e6).toFixed(2)}M parameters (${f(t.params / kd.params, 1)}× fewer) raised held-out perplexity ` +
      `from ${f(t.quality.perplexity)} to ${f(kd.quality.perplexity)}.`,
    `- **Quantization** of the KD student: int4 ${f(q4.quality.perplexity)} (Δ ${f(q4.quality.perplexity - kd.quality.perplexity, 3)}), ` +
      `NF4 ${f(nf4.quality.perplexity)} (Δ ${f(nf4.quality.perplexity - kd.quality.perplexity, 3)}); size ${mib(kd.bytes)} → ${mib(q4.bytes)} (int4), ${mib(nf4.bytes)} (NF4). ` +
      'Norms and the token embedding stay float, and with tied embeddings the embedding is most of this student, so 4-bit saves ' +
      'little here; int4 also stores an 8-bit copy of the tied LM head (faster decoding, more bytes).',
    `- **Latency** of the int4 student: first token ${f(q4.speed.ttftMs, 1)} ms, a 64-token reply in ${f(q4.speed.replyMs, 0)} ms ` +
      `(goal ≤ 200 ms and ≤ 1 s on this 2-core machine), peak RSS ${f(q4.speed.peakRssMiB, 0)} MiB.`,
    `- Sample (int4 student, greedy): **${q4.speed.sample.question}** → ${q4.speed.sample.answer.replace(/\s+/g, ' ').trim()}`,
    '',
    '![training loss](training-loss.svg) ![validation perplexity](validation-ppl.svg) ![quality vs size](quality-vs-size.svg)',
    '',
    '## Commands',
    '',
    `OUT = \`${path.relative(root, out) || out}\`.`,
    '',
    '| step | seconds | command |',
    '|---|---:|---|',
    ...commands.map((c) => `| ${c.step} | ${c.seconds === null ? '?' : f(c.seconds, 0)} | \`${c.command}\` |`),
    '',
    `Serve it: \`slimlm chat --model ${path.relative(root, dir('student-kd-int4'))} --tokenizer ${path.relative(root, TOKENIZER)}\` or \`slimlm serve --model …\`.`,
  ];
  fs.writeFileSync(path.join(out, 'report.md'), report.join('\n') + '\n');
  fs.writeFileSync(path.join(out, 'report.json'), JSON.stringify({ preset: values.preset, rows, commands }, null, 2));
  process.stderr.write(`\nreport: ${path.join(out, 'report.md')}\n`);
}

await main();
