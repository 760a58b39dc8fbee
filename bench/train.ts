/**
 * Training-step benchmark: slimlm (one ONNX graph: forward + KD/CE loss + backward + AdamW, run by onnxruntime) against
 * PyTorch 1.13 (bench/train_torch.py, OpenBLAS) on the same student, batch, loss and optimizer. Each engine runs in its own
 * process so peak RSS is its own. Teacher logits are random and precomputed on both sides (the student step is measured).
 * slimlm runs with TRAINING_MALLOC_TUNABLES (as `slimlm train|distill` do); PyTorch twice, with glibc's defaults and
 * with those settings, and the ratios are stated against PyTorch's fastest and leanest run.
 *
 *   node --import tsx bench/train.ts [--batch 8] [--seq 128] [--steps 8] [--threads 2] [--config "hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408"] [--vocab 32000]
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { LlamaConfig } from '../src/models/config.js';
import { parameterCount } from '../src/models/config.js';
import { parseStudentSpec } from '../src/distill/student.js';
import { TRAINING_MALLOC_TUNABLES } from '../src/runtime/memory.js';

const { values } = parseArgs({ options: {
  batch: { type: 'string', default: '8' }, seq: { type: 'string', default: '128' }, steps: { type: 'string', default: '8' },
  warmup: { type: 'string', default: '3' }, threads: { type: 'string', default: '2' }, vocab: { type: 'string', default: '32000' },
  config: { type: 'string', default: 'hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408' }, only: { type: 'string' },
  child: { type: 'boolean' },
} });
const shape = parseStudentSpec(values.config!).shape;
const args = {
  hidden: shape.hiddenSize!, layers: shape.numHiddenLayers!, heads: shape.numAttentionHeads!, kvHeads: shape.numKeyValueHeads!, ffn: shape.intermediateSize!,
  vocab: Number(values.vocab), batch: Number(values.batch), seq: Number(values.seq), steps: Number(values.steps), warmup: Number(values.warmup),
  threads: Number(values.threads), temperature: 2, alpha: 0.5,
};

async function slimlmChild(): Promise<void> {
  const { StepRunner } = await import('../src/distill/stepRunner.js');
  const { initStudentWeights } = await import('../src/distill/student.js');
  const { DEFAULT_LOSS } = await import('../src/distill/losses.js');
  const { DEFAULT_ADAMW } = await import('../src/distill/optimizer.js');
  const config: LlamaConfig = {
    modelType: 'llama', vocabSize: args.vocab, hiddenSize: args.hidden, intermediateSize: args.ffn, numHiddenLayers: args.layers,
    numAttentionHeads: args.heads, numKeyValueHeads: args.kvHeads, headDim: args.hidden / args.heads, rmsNormEps: 1e-5, ropeTheta: 10000,
    maxPositionEmbeddings: 2048, slidingWindow: null, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: 0,
  };
  const runner = await StepRunner.create(config, { params: initStudentWeights(config, 0) }, {
    loss: { ...DEFAULT_LOSS, temperature: args.temperature, alpha: args.alpha }, adamw: DEFAULT_ADAMW, teacher: 'dense', gradAccum: 1, threads: args.threads, adoptState: true,
  });
  const n = args.batch * args.seq;
  const inputIds = Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % (args.vocab - 3)));
  const labels = Int32Array.from({ length: n }, (_, i) => ((i + 1) % args.seq === 0 ? -100 : inputIds[i + 1]));
  const logits = Float32Array.from({ length: n * args.vocab }, (_, i) => 3 * Math.sin(i * 12.9898));
  const batch = { inputIds, attentionMask: new Uint8Array(n).fill(1), labels, batch: args.batch, seq: args.seq };
  const times: number[] = [];
  let loss = 0;
  for (let s = 1; s <= args.steps; s++) {
    const t0 = performance.now();
    loss = (await runner.step([{ batch, teacher: { kind: 'dense', logits } }], 5e-5, s)).loss;
    times.push((performance.now() - t0) / 1000);
  }
  const warm = times.slice(args.warmup).sort((a, b) => a - b);
  const med = warm[Math.floor(warm.length / 2)];
  const hwm = Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
  process.stdout.write(JSON.stringify({ engine: 'slimlm (onnxruntime-node 1.30)', median_step_s: med, tokens_per_s: n / med, peak_rss_mb: hwm, loss, params: parameterCount(config) }) + '\n');
  await runner.dispose();
}

function run(cmd: string, argv: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env, maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

if (values.child) await slimlmChild();
else {
  const self = fileURLToPath(import.meta.url);
  const passArgs = process.argv.slice(2);
  const results = [];
  // The slimlm child runs with the malloc settings `slimlm train|distill` give themselves (bin/slimlm.js). PyTorch runs
  // with glibc's defaults (its lowest peak RSS) and with the same malloc settings (its best speed: it pays the same
  // page faults), so each ratio can be stated against PyTorch at its best.
  if (values.only !== 'torch') results.push({ ...run(process.execPath, ['--import', 'tsx', self, ...passArgs, '--child'], { ...process.env, GLIBC_TUNABLES: TRAINING_MALLOC_TUNABLES }), malloc: 'tuned' });
  if (values.only !== 'slimlm') {
    const torch = (tuned: boolean) => ({ ...run('/usr/bin/python3', [fileURLToPath(new URL('./train_torch.py', import.meta.url)), JSON.stringify(args)],
      { ...process.env, OPENBLAS_CORETYPE: 'SkylakeX', ...(tuned ? { GLIBC_TUNABLES: TRAINING_MALLOC_TUNABLES } : {}) }), malloc: tuned ? 'tuned' : 'glibc default' });
    results.push(torch(false), torch(true));
  }
  console.log(`student ${values.config}, vocab ${args.vocab} (${(results[0].params / 1e6).toFixed(1)}M params); batch ${args.batch} × seq ${args.seq}; KD(T=2)+CE α=0.5, AdamW, clip 1; ${args.threads} threads; median of steps ${args.warmup + 1}..${args.steps}\n`);
  console.log('| engine | malloc | step (s) | tokens/s | peak RSS (MB) | loss |');
  console.log('|---|---|---|---|---|---|');
  for (const r of results) console.log(`| ${r.engine} | ${r.malloc} | ${r.median_step_s.toFixed(3)} | ${r.tokens_per_s.toFixed(0)} | ${r.peak_rss_mb.toFixed(0)} | ${r.loss.toFixed(4)} |`);
  if (results.length === 3) {
    const [s, ...t] = results;
    const fastest = t.reduce((a, b) => (a.tokens_per_s > b.tokens_per_s ? a : b)), leanest = t.reduce((a, b) => (a.peak_rss_mb < b.peak_rss_mb ? a : b));
    console.log(`\nslimlm / PyTorch at its fastest (${fastest.malloc} malloc): ${(s.tokens_per_s / fastest.tokens_per_s).toFixed(2)}× tokens/s, ${(s.peak_rss_mb / fastest.peak_rss_mb).toFixed(2)}× peak RSS`);
    console.log(`slimlm / PyTorch at its leanest (${leanest.malloc} malloc): ${(s.tokens_per_s / leanest.tokens_per_s).toFixed(2)}× tokens/s, ${(s.peak_rss_mb / leanest.peak_rss_mb).toFixed(2)}× peak RSS`);
  }
}
