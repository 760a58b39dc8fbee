/**
 * "Distillation helps", measured: the same student (default ≈1/10 of the teacher), data, steps and seed, trained with
 * KD (forward KL, default T=2, alpha 0.5) and with CE only; validation perplexity of both and of the teacher itself.
 *
 *   node --import tsx bench/distill_helps.ts [--steps 400] [--lr 3e-3] [--batch-size 32] [--temperature 2] [--alpha 0.5]
 * Defaults: teacher ../shared/models/stories260K/stories260K.bin, data ../shared/datasets/tinystories_val_slice.txt (5 % validation).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { AutoTokenizer } from '../src/api.js';
import { loadData } from '../src/data/index.js';
import { toFloat32 } from '../src/formats/dtype.js';
import { openCheckpoint } from '../src/models/checkpoint.js';
import { expectedTensors, parameterCount } from '../src/models/config.js';
import { StepRunner } from '../src/distill/stepRunner.js';
import { DEFAULT_LOSS } from '../src/distill/losses.js';
import { DEFAULT_ADAMW } from '../src/distill/optimizer.js';

const { values: v } = parseArgs({ options: {
  teacher: { type: 'string', default: '../shared/models/stories260K/stories260K.bin' },
  data: { type: 'string', default: '../shared/datasets/tinystories_val_slice.txt' },
  steps: { type: 'string', default: '400' }, lr: { type: 'string', default: '3e-3' }, 'batch-size': { type: 'string', default: '32' },
  seed: { type: 'string', default: '0' }, threads: { type: 'string', default: '2' },
  temperature: { type: 'string', default: '2' }, alpha: { type: 'string', default: '0.5' },
} });
const main = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const common = ['--teacher', v.teacher!, '--data', v.data!, '--steps', v.steps!, '--lr', v.lr!, '--batch-size', v['batch-size']!, '--warmup', '0.05',
  '--seed', v.seed!, '--threads', v.threads!, '--validation', '0.05', '--max-length', '128'];

function train(loss: string): { dir: string; ppl: number; kl: number | null; seconds: number } {
  const dir = mkdtempSync(join(tmpdir(), `distill-${loss}-`));
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', `import(${JSON.stringify(main)}).then(async (m) => process.exit(await m.main(process.argv.slice(1))))`, 'distill', ...common, '--loss', loss, '--temperature', v.temperature!, '--alpha', v.alpha!, '--out', dir],
    { encoding: 'utf8', env: { ...process.env, SLIMLM_PROGRESS: '0' } });
  if (r.status !== 0) throw new Error(r.stderr);
  process.stderr.write(r.stderr);
  const rows = readFileSync(join(dir, 'loss.csv'), 'utf8').trim().split('\n');
  const last = rows[rows.length - 1].split(',');
  return { dir, ppl: Number(last[9]), kl: last[10] ? Number(last[10]) : null, seconds: (Date.now() - t0) / 1000 };
}

const kd = train('kl');
const ce = train('ce');

// The teacher's own validation perplexity, on the same validation rows (same split seed).
const ck = openCheckpoint(v.teacher!);
const tokenizer = await AutoTokenizer.fromPretrained(ck.tokenizerPath!);
const data = await loadData([v.data!], tokenizer, { maxLength: 128, validation: 0.05, seed: Number(v.seed) });
const params = new Map([...expectedTensors(ck.config).keys()].map((n) => [n, toFloat32(ck.getTensor(n))]));
const runner = await StepRunner.create(ck.config, { params }, { loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW, teacher: 'none', gradAccum: 1, threads: Number(v.threads) });
let ceSum = 0, tokens = 0;
for (const b of data.validation!.batches(0, Number(v['batch-size']))) { const r = await runner.evaluate({ batch: b, teacher: null }); ceSum += r.ceSum; tokens += r.tokens; }
await runner.dispose();
const student = JSON.parse(readFileSync(join(kd.dir, 'config.json'), 'utf8'));
console.log(`teacher ${v.teacher} (${parameterCount(ck.config)} params); student hidden ${student.hidden_size}, ${student.num_hidden_layers} layers ` +
  `(${parameterCount({ ...ck.config, hiddenSize: student.hidden_size, numHiddenLayers: student.num_hidden_layers, numAttentionHeads: student.num_attention_heads, numKeyValueHeads: student.num_key_value_heads, intermediateSize: student.intermediate_size, headDim: student.head_dim })} params); ` +
  `${v.steps} steps, batch ${v['batch-size']}, lr ${v.lr} cosine, seed ${v.seed}; validation ${data.stats.rows.validation} rows, ${tokens} target tokens\n`);
console.log('| model | validation perplexity | KL(teacher ‖ student) / token | train time |');
console.log('|---|---|---|---|');
console.log(`| teacher | ${Math.exp(ceSum / tokens).toFixed(3)} | – | – |`);
console.log(`| student, KD (kl, T=${v.temperature}, α=${v.alpha}) | ${kd.ppl.toFixed(3)} | ${kd.kl?.toFixed(4) ?? '–'} | ${kd.seconds.toFixed(0)} s |`);
console.log(`| student, CE only | ${ce.ppl.toFixed(3)} | – | ${ce.seconds.toFixed(0)} s |`);
ck.close();
