/**
 * Serving benchmark: `slimlm serve` in a child process, driven over HTTP (streaming chat completions, greedy).
 *  1. The same N requests one after another, then all at once: aggregate completion tokens/s of each and their ratio
 *     (continuous batching), and that every concurrent output equals its sequential one.
 *  2. The same without HTTP: BatchScheduler in this process (isolates batching from HTTP/SSE costs on 2 shared cores).
 *  3. Q requests fired at once at a server with few slots: the server's peak RSS (VmHWM) against its idle RSS.
 *
 *   node --import tsx bench/serve.ts [--model PATH] [--n 32] [--max-tokens 128] [--parallel 32] [--queue 200] [--threads 2]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { AutoModelForCausalLM, AutoTokenizer } from '../src/api.js';
import { chatFormat } from '../src/chat/index.js';
import { resolveGenerationOptions } from '../src/generate/index.js';
import { BatchScheduler } from '../src/serve/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(root, '../shared/models/stories260K/stories260K.bin') },
    n: { type: 'string', default: '32' }, 'max-tokens': { type: 'string', default: '128' }, parallel: { type: 'string', default: '32' },
    queue: { type: 'string', default: '200' }, 'queue-parallel': { type: 'string', default: '4' }, threads: { type: 'string', default: '2' },
  },
});
const N = Number(a.n);
const MAX_TOKENS = Number(a['max-tokens']);
const QUEUE = Number(a.queue);

interface Server { url: string; child: ChildProcess; pid: number }

async function startServe(parallel: number, maxQueue: number): Promise<Server> {
  const entry = 'import("./src/cli/main.ts").then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })';
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry, '--', 'serve', '--model', a.model!, '--port', '0',
    '--parallel', String(parallel), '--max-queue', String(maxQueue), '--threads', a.threads!], { cwd: root, stdio: ['ignore', 'inherit', 'pipe'] });
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /on (http:\/\/\S+) /.exec(err);
      if (m) resolve(m[1]);
    });
    child.on('exit', (code) => reject(new Error(`serve exited (${code}): ${err}`)));
  });
  return { url, child, pid: child.pid! };
}

async function stop(s: Server): Promise<void> {
  const exited = new Promise((r) => s.child.on('exit', r));
  s.child.kill('SIGTERM');
  await exited;
}

function rssMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const topics = ['a cat', 'a dog', 'the sea', 'a red ball', 'a big tree', 'the moon', 'a little bird', 'a toy car'];
const names = ['Tim', 'Lily', 'Ben', 'Sue'];
const messages = (i: number) => [{ role: 'user', content: `Tell me a story about ${topics[i % topics.length]} and ${names[i % names.length]}${'!'.repeat(1 + (i % 3))}` }];

/** One streaming chat completion; returns its text, completion tokens and time to first token. */
async function chat(url: string, i: number, maxTokens = MAX_TOKENS): Promise<{ text: string; tokens: number; ttftMs: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: modelId, messages: messages(i), temperature: 0, max_tokens: maxTokens, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  let text = '';
  let tokens = 0;
  let ttftMs = -1;
  let buf = '';
  const decoder = new TextDecoder();
  for await (const chunk of res.body!) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(6, end);
      buf = buf.slice(end + 2);
      if (data === '[DONE]') continue;
      const j = JSON.parse(data);
      if (j.usage) tokens = j.usage.completion_tokens;
      const delta = j.choices[0]?.delta?.content;
      if (delta) {
        if (ttftMs < 0) ttftMs = performance.now() - t0;
        text += delta;
      }
    }
  }
  return { text, tokens, ttftMs };
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
let modelId = '';

async function main() {
  // 1. Sequential vs concurrent.
  const s = await startServe(Number(a.parallel), Math.max(N, 64));
  modelId = (await (await fetch(`${s.url}/v1/models`)).json()).data[0].id;
  await chat(s.url, 0, 8); // warm-up: ORT grows its arenas
  let t = performance.now();
  const seq: Awaited<ReturnType<typeof chat>>[] = [];
  for (let i = 0; i < N; i++) seq.push(await chat(s.url, i));
  const seqMs = performance.now() - t;
  t = performance.now();
  const con = await Promise.all(Array.from({ length: N }, (_, i) => chat(s.url, i)));
  const conMs = performance.now() - t;
  await stop(s);
  const mismatches = con.filter((r, i) => r.text !== seq[i].text).length;
  const tokens = (rs: { tokens: number }[]) => rs.reduce((n, r) => n + r.tokens, 0);
  const seqRate = (tokens(seq) * 1000) / seqMs;
  const conRate = (tokens(con) * 1000) / conMs;

  // 2. In-process scheduler.
  const lm = await AutoModelForCausalLM.fromPretrained(a.model!, { threads: Number(a.threads) });
  const tokenizer = await AutoTokenizer.fromPretrained(a.model!);
  const fmt = chatFormat(tokenizer);
  const sched = new BatchScheduler(lm.model, tokenizer, { parallel: Number(a.parallel), maxQueue: N });
  const submit = (i: number) => sched.submit({ promptIds: fmt.encode(messages(i)), options: resolveGenerationOptions({ maxNewTokens: MAX_TOKENS, tokenizer }, lm.config) });
  await submit(0);
  t = performance.now();
  const inSeq: Awaited<ReturnType<typeof submit>>[] = [];
  for (let i = 0; i < N; i++) inSeq.push(await submit(i));
  const inSeqMs = performance.now() - t;
  t = performance.now();
  const inCon = await Promise.all(Array.from({ length: N }, (_, i) => submit(i)));
  const inConMs = performance.now() - t;
  await lm.dispose();
  const inMismatch = inCon.filter((r, i) => r.text !== inSeq[i].text || r.text !== seq[i].text).length;
  const count = (rs: { tokens: unknown[] }[]) => rs.reduce((n, r) => n + r.tokens.length, 0);
  const inSeqRate = (count(inSeq) * 1000) / inSeqMs;
  const inConRate = (count(inCon) * 1000) / inConMs;

  // 3. A burst of QUEUE requests against few slots.
  const q = await startServe(Number(a['queue-parallel']), QUEUE);
  await chat(q.url, 0, 8);
  const idle = rssMiB(q.pid, 'VmRSS');
  let peakQueued = 0;
  const poll = setInterval(async () => {
    const h = await (await fetch(`${q.url}/health`)).json().catch(() => null);
    if (h) peakQueued = Math.max(peakQueued, h.queue.waiting);
  }, 25);
  t = performance.now();
  const burst = await Promise.all(Array.from({ length: QUEUE }, (_, i) => chat(q.url, i, 32)));
  const burstMs = performance.now() - t;
  clearInterval(poll);
  const peak = rssMiB(q.pid, 'VmHWM');
  await stop(q);

  const model = path.basename(a.model!);
  console.log(`| model | requests | max_tokens | parallel | sequential tok/s | concurrent tok/s | ratio | concurrent = sequential | median TTFT seq / conc |`);
  console.log(`|---|---:|---:|---:|---:|---:|---:|---|---:|`);
  console.log(`| ${model} | ${N} | ${MAX_TOKENS} | ${a.parallel} | ${seqRate.toFixed(0)} | ${conRate.toFixed(0)} | ${(conRate / seqRate).toFixed(2)}× | ` +
    `${mismatches === 0 ? 'all identical' : `${mismatches} differ`} | ${median(seq.map((r) => r.ttftMs)).toFixed(0)} / ${median(con.map((r) => r.ttftMs)).toFixed(0)} ms |`);
  console.log(`| ${model}, in-process BatchScheduler (no HTTP) | ${N} | ${MAX_TOKENS} | ${a.parallel} | ${inSeqRate.toFixed(0)} | ${inConRate.toFixed(0)} | ` +
    `${(inConRate / inSeqRate).toFixed(2)}× | ${inMismatch === 0 ? 'all identical (and = HTTP)' : `${inMismatch} differ`} | |`);
  console.log('');
  console.log(`| burst | parallel | peak queued | completed | wall | server RSS idle | server peak RSS (VmHWM) |`);
  console.log(`|---:|---:|---:|---:|---:|---:|---:|`);
  console.log(`| ${QUEUE} × 32 tokens | ${a['queue-parallel']} | ${peakQueued} | ${burst.filter((r) => r.tokens > 0).length} | ${(burstMs / 1000).toFixed(1)} s | ${idle.toFixed(0)} MiB | ${peak.toFixed(0)} MiB |`);
  if (mismatches || inMismatch) process.exitCode = 1;
}

await main();
