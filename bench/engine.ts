/**
 * Decode benchmark of the fp32 engine: tokens/s, peak RSS, and the memory-bandwidth bound for the model's bytes,
 * all measured in the same run (each model in its own child process so peak RSS is per model).
 *
 *   node --import tsx bench/engine.ts [--threads 2] [--tokens 64] [--models stories260K,tiny-25M,small-110M]
 *
 * The bound: decoding one token reads every weight once, so tokens/s ≤ bandwidth / weight bytes, where bandwidth is
 * the faster of what ONNX Runtime itself achieves summing a 512 MiB buffer and multiplying a vector by a 512 MiB
 * matrix, with the same thread count.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { AutoModelForCausalLM, PreTrainedCausalLM } from '../src/api.js';
import { createLlamaModel } from '../src/models/llama.js';
import { expectedTensors, type LlamaConfig } from '../src/models/config.js';
import type { WeightSource } from '../src/models/llamaGraph.js';
import { GraphBuilder, toOnnxBytes } from '../src/graph/index.js';
import { Session, feeds, sessionFromGraph } from '../src/runtime/index.js';
import { peakRssBytes } from '../src/runtime/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));

const base = { modelType: 'llama', ropeTheta: 10000, rmsNormEps: 1e-5, slidingWindow: null, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: null } as const;
const RANDOM_MODELS: Record<string, LlamaConfig> = {
  // Shapes of llama2.c's stories15M-class and stories110M-class models with the Mistral vocabulary.
  'tiny-25M': { ...base, vocabSize: 32000, hiddenSize: 288, intermediateSize: 768, numHiddenLayers: 6, numAttentionHeads: 6, numKeyValueHeads: 6, headDim: 48, maxPositionEmbeddings: 256 },
  'small-110M': { ...base, vocabSize: 32000, hiddenSize: 768, intermediateSize: 2048, numHiddenLayers: 12, numAttentionHeads: 12, numKeyValueHeads: 12, headDim: 64, maxPositionEmbeddings: 1024 },
};

/** Seeded random weights generated while ORT's weight file is written, so the bench process never holds them. */
function randomWeights(seed = 1): WeightSource {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 0.04;
  return {
    tensor: (g, name, shape) => g.initializer(name, 'f32', shape, {
      byteLength: shape.reduce((a, b) => a * b, 1) * 4,
      write(dst) {
        const v = new Float32Array(dst.buffer, dst.byteOffset, dst.byteLength / 4);
        if (name.endsWith('norm.weight')) v.fill(1); else for (let i = 0; i < v.length; i++) v[i] = next();
      },
    }),
  };
}

/**
 * GB/s ONNX Runtime reaches streaming 512 MiB of f32, best of several runs of two probes: ReduceSum over an input
 * buffer, and a GEMV (what decoding does) with the matrix as a memory-mapped weight. The faster one is the bound.
 */
async function measureBandwidth(threads: number): Promise<number> {
  const K = 8192, N = 16384; // 512 MiB
  const best = async (session: Session, feed: Record<string, ReturnType<typeof feeds.f32>>) => {
    let ms = Infinity;
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      await session.run(feed);
      ms = Math.min(ms, performance.now() - t0);
    }
    await session.dispose();
    return (K * N * 4) / (ms / 1000) / 1e9;
  };
  const reduce = new GraphBuilder('bandwidth_reduce');
  reduce.output('sum', reduce.reduceSum(reduce.input('x', 'f32', [K * N]), [0], false));
  const viaReduce = await best(await Session.create(toOnnxBytes(reduce.graph), { threads }), { x: feeds.f32(new Float32Array(K * N).fill(1), [K * N]) });
  const gemv = new GraphBuilder('bandwidth_gemv');
  const w = gemv.initializer('w', 'f32', [K, N], { byteLength: K * N * 4, write: (dst) => new Float32Array(dst.buffer, dst.byteOffset, K * N).fill(0.5) });
  gemv.output('y', gemv.matMul(gemv.input('x', 'f32', [1, K]), w));
  const viaGemv = await best(await sessionFromGraph(gemv.graph, { threads }), { x: feeds.f32(new Float32Array(K).fill(1), [1, K]) });
  return Math.max(viaReduce, viaGemv);
}

async function runOne(name: string, threads: number, tokens: number): Promise<Record<string, number | string>> {
  const t0 = performance.now();
  let model: PreTrainedCausalLM;
  if (name === 'stories260K') {
    model = await AutoModelForCausalLM.fromPretrained(path.join(root, '../shared/models/stories260K/stories260K.bin'), { threads });
  } else {
    const config = RANDOM_MODELS[name];
    if (!config) throw new Error(`unknown model ${name}`);
    const lm = await createLlamaModel(config, randomWeights(), { threads });
    model = new PreTrainedCausalLM(lm, config, { path: 'random', format: 'random', tokenizerPath: null });
  }
  const loadMs = performance.now() - t0;
  let weightBytes = 0;
  for (const shape of expectedTensors(model.config).values()) weightBytes += shape.reduce((a, b) => a * b, 1) * 4;
  const prompt = Array.from({ length: 16 }, (_, i) => 3 + ((i * 37) % (model.config.vocabSize - 3)));
  await model.generate(prompt, { maxNewTokens: 4, eosTokenIds: [] }); // warm-up: ORT grows its arenas
  const r = await model.generate(prompt, { maxNewTokens: tokens, eosTokenIds: [] });
  await model.dispose();
  const peakRssMiB = peakRssBytes() / 2 ** 20; // before the bandwidth probe allocates its buffer
  const gbps = await measureBandwidth(threads);
  const bound = (gbps * 1e9) / weightBytes;
  return {
    model: name,
    params: weightBytes / 4,
    weightMiB: weightBytes / 2 ** 20,
    loadMs,
    prefillTokS: prompt.length / (r.timings.prefillMs / 1000),
    decodeTokS: r.timings.tokensPerSecond,
    bandwidthGBs: gbps,
    boundTokS: bound,
    ofBound: r.timings.tokensPerSecond / bound,
    peakRssMiB,
  };
}

const { values } = parseArgs({ options: { threads: { type: 'string', default: '2' }, tokens: { type: 'string', default: '64' },
  models: { type: 'string', default: 'stories260K,tiny-25M,small-110M' }, one: { type: 'string' } } });
const threads = Number(values.threads), tokens = Number(values.tokens);

if (values.one) {
  process.stdout.write(JSON.stringify(await runOne(values.one, threads, tokens)) + '\n');
} else {
  const rows = values.models!.split(',').map((name) => {
    const child = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--one', name, '--threads', String(threads), '--tokens', String(tokens)],
      { encoding: 'utf8', cwd: root, maxBuffer: 1 << 24 });
    if (child.status !== 0) throw new Error(`${name}: ${child.stderr}`);
    return JSON.parse(child.stdout.trim().split('\n').pop()!);
  });
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(`threads ${threads}, ${tokens} decoded tokens after a 16-token prompt, fp32 weights\n`);
  console.log('| model | params | weights | prefill tok/s | decode tok/s | ORT streaming bandwidth | bound tok/s | of bound | peak RSS |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.model} | ${(r.params / 1e6).toFixed(2)}M | ${f(r.weightMiB)} MiB | ${f(r.prefillTokS, 0)} | ${f(r.decodeTokS)} | ${f(r.bandwidthGBs)} GB/s | ${f(r.boundTokS)} | ${f(100 * r.ofBound, 0)}% | ${f(r.peakRssMiB, 0)} MiB |`);
  }
}
