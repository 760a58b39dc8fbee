/**
 * A 7B model on an 8 GB laptop: a random-weight checkpoint in the real Mistral-7B-v0.1 layout (the shipped config.json and
 * model.safetensors.index.json: same tensor names, shapes, bf16, same two shards, ~14.5 GB) is written streaming, quantized
 * by `slimlm quantize` (peak RSS of that child measured), generated from by slimlm (peak RSS, prompt and decode tok/s), and
 * exported to GGUF Q4_0 by `slimlm export` for node-llama-cpp to run on the same weights with a small context.
 * Everything goes under --dir and is deleted at the end unless --keep.
 *
 *   node --import tsx bench/mistral7b.ts [--dir bench/out/mistral7b] [--type int4] [--block-size 256] [--lm-head int8|float|same]
 *        [--threads 2] [--prompt 16] [--tokens 16] [--skip-llama-cpp] [--keep]
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeSafetensors, type TensorEntry } from '../src/formats/safetensors.js';
import { readHFConfig } from '../src/formats/hf.js';
import { expectedTensors } from '../src/models/config.js';
import { loadModel } from '../src/models/quantizedModel.js';
import { generate } from '../src/generate/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const real = path.join(root, '../shared/tokenizers/mistral-7b-v0.1');

/**
 * Random bf16 values straight from random bits, two per xorshift step: sign and 7 mantissa bits random, exponent
 * 118..121 (|w| ≈ 0.002–0.03, the scale of a trained 7B's Linear weights). Seeded per tensor, so every tensor differs.
 */
function randomBf16(n: number, seed: number): Uint8Array {
  const out = new Uint32Array(n / 2);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out[i] = (x & 0x807f807f) | ((((x >>> 7) & 0x00030003) + 0x00760076) << 7);
  }
  return new Uint8Array(out.buffer);
}

function writeRandomMistral(dir: string): void {
  const config = readHFConfig(path.join(real, 'config.json'));
  const shapes = expectedTensors(config);
  const index = JSON.parse(readFileSync(path.join(real, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string>; metadata: { total_size: number } };
  const shards = new Map<string, string[]>();
  for (const [name, file] of Object.entries(index.weight_map)) {
    if (!shapes.has(name)) throw new Error(`${name} is in the index but not in the Mistral layout`);
    shards.set(file, [...(shards.get(file) ?? []), name]);
  }
  mkdirSync(dir, { recursive: true });
  let total = 0, seed = 1;
  const t0 = Date.now();
  for (const [file, names] of shards) {
    const entries: TensorEntry[] = names.sort().map((name) => {
      const shape = shapes.get(name)!, n = shape.reduce((a, b) => a * b, 1), s = seed++;
      total += 2 * n;
      return { name, dtype: 'bf16', shape, data: () => (name.endsWith('norm.weight') ? new Uint8Array(new Uint16Array(n).fill(0x3f80).buffer) : randomBf16(n, s)) };
    });
    writeSafetensors(path.join(dir, file), entries);
    process.stderr.write(`  wrote ${file} (${(statSync(path.join(dir, file)).size / 1e9).toFixed(2)} GB, ${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
  }
  if (total !== index.metadata.total_size) throw new Error(`wrote ${total} bytes of tensors, the real index says ${index.metadata.total_size}`);
  for (const f of ['config.json', 'model.safetensors.index.json', 'tokenizer.model', 'tokenizer.json', 'tokenizer_config.json']) {
    if (existsSync(path.join(real, f))) copyFileSync(path.join(real, f), path.join(dir, f));
  }
}

/** Runs a child under /usr/bin/time -v; returns its stdout, stderr and peak RSS (bytes). */
function timed(args: string[]): { stdout: string; stderr: string; peakRss: number; seconds: number } {
  const t0 = Date.now();
  const p = spawnSync('/usr/bin/time', ['-v', process.execPath, ...args], { encoding: 'utf8', cwd: root, maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'pipe'] });
  if (p.status !== 0) throw new Error(`${args.join(' ')} failed:\n${p.stderr.slice(-4000)}`);
  const kb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(p.stderr)?.[1]);
  return { stdout: p.stdout, stderr: p.stderr, peakRss: kb * 1024, seconds: (Date.now() - t0) / 1000 };
}

const promptIds = (n: number) => [1, ...Array.from({ length: n - 1 }, (_, i) => 3 + ((i * 7919) % 31000))];

async function runSlimlm(dir: string, threads: number, prompt: number, tokens: number) {
  const t0 = performance.now();
  const m = await loadModel(dir, { threads });
  const loadS = (performance.now() - t0) / 1000;
  const r = await generate(m.model, promptIds(prompt), { maxNewTokens: tokens, eosTokenIds: [] });
  await m.model.dispose();
  return { loadS, promptTokS: prompt / (r.timings.prefillMs / 1000), decodeTokS: r.timings.tokensPerSecond };
}

const { values } = parseArgs({ options: {
  dir: { type: 'string', default: path.join(root, 'bench/out/mistral7b') }, type: { type: 'string', default: 'int4' },
  'block-size': { type: 'string', default: '256' }, 'lm-head': { type: 'string' }, threads: { type: 'string', default: '2' }, prompt: { type: 'string', default: '16' },
  tokens: { type: 'string', default: '16' }, keep: { type: 'boolean', default: false }, 'skip-llama-cpp': { type: 'boolean', default: false },
  one: { type: 'string' },
} });
const threads = Number(values.threads), prompt = Number(values.prompt), tokens = Number(values.tokens);
const dir = path.resolve(values.dir!);
const lmHead = values['lm-head'] ? ['--lm-head', values['lm-head']] : [];
const recipe = [`--type ${values.type} --block-size ${values['block-size']}`, ...lmHead].join(' ');
const bf16Dir = path.join(dir, 'bf16'), qDir = path.join(dir, `${values.type}-b${values['block-size']}${lmHead.length ? `-head-${lmHead[1]}` : ''}`), gguf = path.join(dir, 'q4_0.gguf');
const cli = [path.join(root, 'bin/slimlm.js')];
const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB (${(b / 2 ** 30).toFixed(2)} GiB)`;

if (values.one) {
  process.stdout.write(JSON.stringify(await runSlimlm(values.one, threads, prompt, tokens)) + '\n');
} else {
  const lines: string[] = [];
  const say = (s: string) => { lines.push(s); process.stderr.write(s + '\n'); };
  try {
    if (!existsSync(path.join(bf16Dir, 'model.safetensors.index.json'))) {
      process.stderr.write(`writing the random bf16 Mistral-7B checkpoint to ${bf16Dir}\n`);
      writeRandomMistral(bf16Dir);
    }
    if (!existsSync(path.join(qDir, 'config.json'))) {
      const q = timed([...cli, 'quantize', '--model', bf16Dir, '--out', qDir, '--type', values.type!, '--block-size', values['block-size']!, ...lmHead]);
      say(`slimlm quantize ${recipe}: ${q.seconds.toFixed(0)} s, peak RSS ${gb(q.peakRss)}`);
    }
    const qBytes = statSync(path.join(qDir, 'model.safetensors')).size;
    const s = timed(['--import', 'tsx', fileURLToPath(import.meta.url), '--one', qDir, '--threads', String(threads), '--prompt', String(prompt), '--tokens', String(tokens)]);
    const sr = JSON.parse(s.stdout.trim().split('\n').pop()!);
    say(`slimlm generate (${recipe}, ${gb(qBytes)} on disk, ${threads} threads): load ${sr.loadS.toFixed(0)} s, prompt ${sr.promptTokS.toFixed(2)} tok/s, decode ${sr.decodeTokS.toFixed(2)} tok/s, peak RSS ${gb(s.peakRss)}`);
    if (!values['skip-llama-cpp']) {
      if (!existsSync(gguf)) {
        const e = timed([...cli, 'export', '--model', bf16Dir, '--out', gguf, '--type', 'q4_0']);
        say(`slimlm export --type q4_0: ${e.seconds.toFixed(0)} s, peak RSS ${gb(e.peakRss)}, ${gb(statSync(gguf).size)}`);
      }
      const l = timed(['--import', 'tsx', path.join(root, 'bench/quant_decode.ts'), '--one', `llama.cpp:${threads}`, '--file', gguf, '--prompt', String(prompt), '--tokens', String(tokens)]);
      const lr = JSON.parse(l.stdout.trim().split('\n').pop()!);
      say(`llama.cpp Q4_0 (${threads} threads): prompt ${lr.promptTokS.toFixed(2)} tok/s, decode ${lr.decodeTokS.toFixed(2)} tok/s, peak RSS ${gb(l.peakRss)}`);
      say(`slimlm ÷ llama.cpp decode: ${(sr.decodeTokS / lr.decodeTokS).toFixed(2)}×`);
    }
  } finally {
    writeFileSync(path.join(root, 'bench/out/mistral7b-result.txt'), lines.join('\n') + '\n');
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}
