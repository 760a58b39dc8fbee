/**
 * 4-bit decode speed, slimlm vs llama.cpp (node-llama-cpp 3.21.1) on the same weights, in one run:
 * a TinyLlama-1.1B-shaped model (hidden 2048, 22 layers, 32 heads / 4 kv heads, FFN 5632, vocab 32000) with seeded
 * random weights and the Mistral tokenizer, written by this script as a Q4_0 GGUF (every Linear Q4_0, output Q8_0, embedding Q4_0).
 * slimlm runs the same Q4_0/Q8_0 blocks in MatMulNBits (accuracy_level 4) without requantizing (src/models/quantizedGGUF.ts).
 * Prompt processing and decode are timed separately, at 1 and 2 threads, each engine in its own child process;
 * the memory-bandwidth bound (ORT's row sums over a 512 MiB buffer, same threads) gives tokens/s ≤ bandwidth / bytes per token,
 * where bytes per token are the Linear weights (LM head included) in the format each engine executes: llama.cpp's Q4_0/Q8_0
 * blocks (fp16 scales), MatMulNBits' pre-packed blocks (data + f32 scale + f32 block sum); norms and the embedding row are left out.
 * slimlm runs twice: its default graph (ORT's fused kernels: RMSNorm, RoPE, joined q/k/v and gate/up GEMVs) and the
 * plain one (`--fused false`, the graph before those). The engines take turns for --rounds rounds (the cores are shared
 * with other jobs, so load drifts); each row reports the best round.
 *
 * A last row per thread count gives MatMulNBits' own rate on the model's GEMV shapes, alone (the ceiling of any graph built on it).
 *
 * --int4-blocks 128,256 adds slimlm's own int4 format at those block sizes, re-quantized at load from the same (Q4_0-dequantized)
 * weights: 4.25 / 4.125 bits per weight (fp32 scales), against Q4_0's 4.5; coarser scales cost quality (docs/QUANTIZATION.md).
 *
 *   node --import tsx bench/quant_decode.ts [--prompt 64] [--tokens 64] [--threads 1,2] [--rounds 3] [--int4-blocks 64,128] [--file bench/out/tinyllama-q4_0.gguf]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { GraphBuilder, toOnnxBytes } from '../src/graph/index.js';
import { GGUFFile } from '../src/formats/gguf.js';
import { hfToGGUFName, writeLlamaGGUF } from '../src/models/checkpoint.js';
import { expectedTensors, type LlamaConfig } from '../src/models/config.js';
import { linearNames } from '../src/models/quantizedCheckpoint.js';
import { loadModel } from '../src/models/quantizedModel.js';
import { LLAMA_FTYPES, llamaCppTensorType, quantizeGGML } from '../src/quantize/ggml.js';
import { feeds, Session } from '../src/runtime/index.js';
import { generate } from '../src/generate/index.js';
import { ggufTokenizerMetadata } from '../src/models/export.js';
import { loadTokenizer } from '../src/tokenizers/index.js';
import { peakRssBytes } from '../src/runtime/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const TINYLLAMA: LlamaConfig = {
  modelType: 'llama', vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, numHiddenLayers: 22, numAttentionHeads: 32,
  numKeyValueHeads: 4, headDim: 64, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 2048, slidingWindow: null,
  tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: null,
};

/** The seeded random model as a GGUF: Q4_0 (Q8_0 output), or llama-quantize's Q4_K_M recipe from the same f32 weights. */
async function writeModel(file: string, ftype: 'q4_0' | 'q4_k_m'): Promise<void> {
  const tokenizer = await loadTokenizer(path.join(root, '../shared/tokenizers/mistral-7b-v0.1/tokenizer.model'));
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.04;
  const started = Date.now();
  const shapes = expectedTensors(TINYLLAMA);
  writeLlamaGGUF(file, TINYLLAMA, (name) => {
    const dims = shapes.get(name)!;
    const v = new Float32Array(dims.reduce((a, b) => a * b, 1));
    if (name.endsWith('norm.weight')) v.fill(1); else for (let i = 0; i < v.length; i++) v[i] = rand();
    return { dtype: 'f32', shape: dims, data: new Uint8Array(v.buffer) };
  }, {
    type: ftype === 'q4_0' ? (name) => (name === 'lm_head.weight' ? 'Q8_0' : 'Q4_0')
      : (name, shape) => llamaCppTensorType('q4_k_m', hfToGGUFName(name)!, shape, TINYLLAMA.numHiddenLayers, false),
    fileType: LLAMA_FTYPES[ftype].id, encode: quantizeGGML, name: 'tinyllama-shaped-random', metadata: ggufTokenizerMetadata(tokenizer),
  });
  process.stderr.write(`wrote ${file} (${(statSync(file).size / 2 ** 20).toFixed(0)} MiB) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
}

/** Bytes of a GGUF's 2-D tensors other than the token embedding (one row of it is read per token). */
function ggufLinearBytes(path: string): number {
  const g = GGUFFile.open(path);
  try {
    return g.tensors.filter((t) => t.name !== 'token_embd.weight' && t.shape.length === 2).reduce((n, t) => n + t.byteSize, 0);
  } finally { g.close(); }
}

async function bandwidth(threads: number): Promise<number> {
  // Row sums of [8192, n/8192]: ORT splits rows over its threads (a 1-D sum runs on one thread, half the 2-thread bandwidth).
  const n = 128 * 1024 * 1024, rows = 8192;
  const g = new GraphBuilder('bandwidth');
  g.output('sum', g.reduceSum(g.reshape(g.input('x', 'f32', [n]), [rows, n / rows]), [1], false));
  const session = await Session.create(toOnnxBytes(g.graph), { threads });
  const feed = { x: feeds.f32(new Float32Array(n).fill(1), [n]) };
  let best = Infinity;
  for (let i = 0; i < 6; i++) { const t0 = performance.now(); await session.run(feed); best = Math.min(best, performance.now() - t0); }
  await session.dispose();
  return (n * 4) / (best / 1000) / 1e9;
}

/**
 * MatMulNBits alone on the model's two largest GEMV shapes (gate+up [11264, 2048] and down [2048, 5632]), int4 in blocks
 * of `block`, accuracy_level 4, over ≈ 256 MiB of weights (no cache reuse): GB/s of the same bytes the bound counts.
 * The kernel's own ceiling, next to the bandwidth, in the same run.
 */
async function gemvRate(threads: number, block: number): Promise<number> {
  const g = new GraphBuilder('gemv');
  const x = g.input('x', 'f32', [1, 1, 11264]);
  let bytes = 0;
  for (let l = 0; bytes < 256 * 2 ** 20; l++) {
    const [N, K] = l % 2 ? [2048, 5632] : [11264, 2048];
    const blocks = K / block, packed = new Uint8Array(N * blocks * block / 2);
    for (let i = 0; i < packed.length; i++) packed[i] = (Math.imul(i + l * 7919, 2654435761) >>> 24);
    const a = g.slice(x, [0], [K], [-1]);
    g.output(`y${l}`, g.op('MatMulNBits', [a, g.initializer(`w${l}`, 'u8', [N, blocks, block / 2], packed),
      g.initializer(`s${l}`, 'f32', [N * blocks], new Uint8Array(new Float32Array(N * blocks).fill(0.01).buffer))],
    { K, N, bits: 4, block_size: block, accuracy_level: 4 }));
    bytes += N * K / 2 + (8 * N * K) / block;
  }
  const session = await Session.create(toOnnxBytes(g.graph), { threads });
  const feed = { x: feeds.f32(Float32Array.from({ length: 11264 }, (_, i) => Math.sin(i)), [1, 1, 11264]) };
  let best = Infinity;
  for (let i = 0; i < 8; i++) { const t0 = performance.now(); await session.run(feed); best = Math.min(best, performance.now() - t0); }
  await session.dispose();
  return bytes / (best / 1000) / 1e9;
}

const promptIds = (n: number) => [1, ...Array.from({ length: n - 1 }, (_, i) => 3 + ((i * 7919) % 31000))];

/** `blockSize`: re-quantize the GGUF's (dequantized) weights to slimlm's own int4 blocks of that size (recipe defaults otherwise). */
async function runSlimlm(file: string, threads: number, prompt: number, tokens: number, fused = true, blockSize?: number) {
  const m = await loadModel(file, { threads, accuracyLevel: 4, fused, ...(blockSize ? { quantize: { type: 'int4' as const, blockSize } } : {}) });
  await generate(m.model, promptIds(prompt), { maxNewTokens: 4, eosTokenIds: [] }); // warm-up
  const r = await generate(m.model, promptIds(prompt), { maxNewTokens: tokens, eosTokenIds: [] });
  await m.model.dispose();
  return { promptTokS: prompt / (r.timings.prefillMs / 1000), decodeTokS: r.timings.tokensPerSecond, peakRssMiB: peakRssBytes() / 2 ** 20 };
}

async function runLlamaCpp(file: string, threads: number, prompt: number, tokens: number) {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: prompt + tokens + 8, threads, batchSize: prompt });
  const run = async (n: number) => {
    const seq = ctx.getSequence();
    const t0 = performance.now();
    let tFirst = 0, count = 0;
    for await (const _ of seq.evaluate(promptIds(prompt) as never, { temperature: 0 })) {
      if (count === 0) tFirst = performance.now();
      if (++count >= n) break;
    }
    const t1 = performance.now();
    seq.dispose();
    return { promptMs: tFirst - t0, decodeMs: t1 - tFirst, decoded: count - 1 };
  };
  await run(4); // warm-up
  const r = await run(tokens);
  await ctx.dispose(); await model.dispose(); await llama.dispose();
  return { promptTokS: prompt / (r.promptMs / 1000), decodeTokS: r.decoded / (r.decodeMs / 1000), peakRssMiB: peakRssBytes() / 2 ** 20 };
}

const { values } = parseArgs({ options: {
  prompt: { type: 'string', default: '64' }, tokens: { type: 'string', default: '64' }, threads: { type: 'string', default: '1,2' },
  file: { type: 'string', default: path.join(root, 'bench/out/tinyllama-q4_0.gguf') }, one: { type: 'string' },
  'kquant-file': { type: 'string', default: path.join(root, 'bench/out/tinyllama-q4_k_m.gguf') },
  rounds: { type: 'string', default: '3' }, 'int4-blocks': { type: 'string', default: '' },
} });
const int4Blocks = values['int4-blocks']!.split(',').filter(Boolean).map(Number);
const prompt = Number(values.prompt), tokens = Number(values.tokens), file = values.file!, kFile = values['kquant-file']!;

if (values.one) {
  const [engine, t] = values.one.split(':');
  const r = engine === 'slimlm' ? await runSlimlm(file, Number(t), prompt, tokens)
    : engine === 'slimlm-plain' ? await runSlimlm(file, Number(t), prompt, tokens, false)
    : engine.startsWith('slimlm-int4-b') ? await runSlimlm(file, Number(t), prompt, tokens, true, Number(engine.slice('slimlm-int4-b'.length)))
    : engine === 'llama.cpp' ? await runLlamaCpp(file, Number(t), prompt, tokens)
    : engine === 'llama.cpp-q4_k_m' ? await runLlamaCpp(kFile, Number(t), prompt, tokens)
    : engine.startsWith('gemv-b') ? { gemvGBs: await gemvRate(Number(t), Number(engine.slice('gemv-b'.length))) }
    : { bandwidthGBs: await bandwidth(Number(t)) };
  process.stdout.write(JSON.stringify(r) + '\n');
} else {
  for (const [f, ftype] of [[file, 'q4_0'], [kFile, 'q4_k_m']] as const) {
    if (!existsSync(f)) { mkdirSync(path.dirname(f), { recursive: true }); await writeModel(f, ftype); }
  }
  // Bytes per decoded token: each Linear [N, K] read once in its executed format.
  const linears = linearNames(TINYLLAMA).map((n) => ({ head: n === 'lm_head.weight', shape: expectedTensors(TINYLLAMA).get(n)! }));
  const perToken = (bytes: (head: boolean, N: number, K: number) => number) => linears.reduce((sum, l) => sum + bytes(l.head, l.shape[0], l.shape[1]), 0);
  const ggml = perToken((head, N, K) => (N * K * (head ? 34 : 18)) / 32); // Q8_0 head, Q4_0 elsewhere
  const kQuant = ggufLinearBytes(kFile);
  // ORT pre-packs MatMulNBits blocks for its int8-compute kernel with an f32 scale and an f32 block sum each.
  // The LM head is 8-bit: Q8_0's blocks of 32 for the GGUF rows, the recipe's block size for slimlm's own int4 rows.
  const nbits = (block: number, headBlock: number) => perToken((head, N, K) => (head ? N * K + (8 * N * K) / headBlock : N * K / 2 + (8 * N * K) / block));
  const rows: string[] = ['| threads | engine | prompt tok/s | decode tok/s | decode vs llama.cpp Q4_0 / Q4_K_M | weights per token → bound tok/s | % of bound | peak RSS MiB |', '|---|---|---|---|---|---|---|---|'];
  for (const t of values.threads!.split(',').map(Number)) {
    const child = (what: string) => {
      const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--one', `${what}:${t}`, '--file', file, '--kquant-file', kFile, '--prompt', String(prompt), '--tokens', String(tokens)], { encoding: 'utf8', cwd: root });
      if (p.status !== 0) throw new Error(`${what}: ${p.stderr}`);
      return JSON.parse(p.stdout.trim().split('\n').pop()!);
    };
    type Run = { promptTokS: number; decodeTokS: number; peakRssMiB: number };
    const best: Record<string, Run> = {};
    let bw = 0, gemv = 0;
    const gemvBlock = Math.max(32, ...int4Blocks);
    for (let round = 0; round < Number(values.rounds); round++) {
      bw = Math.max(bw, child('bandwidth').bandwidthGBs as number);
      gemv = Math.max(gemv, child(`gemv-b${gemvBlock}`).gemvGBs as number);
      for (const engine of ['llama.cpp', 'llama.cpp-q4_k_m', 'slimlm-plain', 'slimlm', ...int4Blocks.map((b) => `slimlm-int4-b${b}`)]) {
        const r = child(engine) as Run;
        const b = best[engine];
        best[engine] = b ? { promptTokS: Math.max(b.promptTokS, r.promptTokS), decodeTokS: Math.max(b.decodeTokS, r.decodeTokS), peakRssMiB: Math.max(b.peakRssMiB, r.peakRssMiB) } : r;
        process.stderr.write(`  threads ${t} round ${round + 1}: ${engine} prompt ${r.promptTokS.toFixed(1)} decode ${r.decodeTokS.toFixed(2)} tok/s\n`);
      }
    }
    const lc = best['llama.cpp'], lk = best['llama.cpp-q4_k_m'];
    const named: [string, Run, number][] = [['llama.cpp Q4_0', lc, ggml], ['llama.cpp Q4_K_M (same f32 weights)', lk, kQuant],
      ['slimlm, plain graph, same Q4_0 blocks', best['slimlm-plain'], nbits(32, 32)],
      ['slimlm, fused graph, same Q4_0 blocks', best.slimlm, nbits(32, 32)],
      ...int4Blocks.map((b): [string, Run, number] => [`slimlm int4 blocks of ${b} (re-quantized from the same weights)`, best[`slimlm-int4-b${b}`], nbits(b, b)])];
    for (const [name, r, bytes] of named) {
      const bound = (bw * 1e9) / bytes;
      rows.push(`| ${t} | ${name} | ${r.promptTokS.toFixed(1)} | ${r.decodeTokS.toFixed(2)} | ${(r.decodeTokS / lc.decodeTokS).toFixed(2)}× / ${(r.decodeTokS / lk.decodeTokS).toFixed(2)}× | ${(bytes / 2 ** 20).toFixed(0)} MiB → ${bound.toFixed(1)} | ${(100 * r.decodeTokS / bound).toFixed(0)} % | ${r.peakRssMiB.toFixed(0)} |`);
    }
    rows.push(`| ${t} | bandwidth: ${bw.toFixed(1)} GB/s (ORT, ${t} thread${t > 1 ? 's' : ''}) | | | | | | |`);
    rows.push(`| ${t} | MatMulNBits alone, int4 blocks of ${gemvBlock}: ${gemv.toFixed(1)} GB/s | | | | | ${(100 * gemv / bw).toFixed(0)} % | |`);
  }
  process.stdout.write(rows.join('\n') + '\n');
}
