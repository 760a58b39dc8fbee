/**
 * Latency of the Korean chatbot: time to first token and a 64-token reply to Korean questions (chat template, greedy,
 * the first question run once more as warm-up), plus tokens/s and peak RSS, each model in its own process.
 *
 *   node --import tsx bench/korean_chat.ts [MODEL_DIR...] [--threads 2]
 * Default: the int4 and fp32 students of the full example run (examples/korean-chatbot/out/full).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values, positionals } = parseArgs({ options: { threads: { type: 'string', default: '2' } }, allowPositionals: true });
const full = path.join(root, 'examples/korean-chatbot/out/full');
const models = positionals.length ? positionals : [path.join(full, 'student-kd-int4'), path.join(full, 'student-kd'), path.join(full, 'teacher')];

console.log(`threads ${values.threads}; 64-token greedy replies to 5 Korean questions, means\n`);
console.log('| model | load | first token | 64-token reply | tok/s | peak RSS |');
console.log('|---|---:|---:|---:|---:|---:|');
for (const model of models) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'examples/korean-chatbot/run.ts'), '--measure', model, '--threads', values.threads!],
    { encoding: 'utf8', cwd: root });
  if (r.status !== 0) throw new Error(`${model}: ${r.stderr}`);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.log(`| ${path.relative(root, model)} | ${m.loadMs.toFixed(0)} ms | ${m.ttftMs.toFixed(1)} ms | ${m.replyMs.toFixed(0)} ms | ${m.tokensPerSecond.toFixed(0)} | ${m.peakRssMiB.toFixed(0)} MiB |`);
}
