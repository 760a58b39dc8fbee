/** The `slimlm` command line: one binary, subcommands. Results go to stdout, diagnostics to stderr. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AutoModelForCausalLM, AutoTokenizer, DEFAULT_MODEL } from '../api.js';
import { openCheckpoint } from '../models/checkpoint.js';
import { configFromHF, parameterCount, type LlamaConfig } from '../models/config.js';
import { buildLlamaGraph, graphParameterCount } from '../models/llamaGraph.js';
import { numel } from '../formats/tensor.js';

type Options = NonNullable<ParseArgsConfig['options']>;

class UsageError extends Error {}

interface Command {
  summary: string;
  usage: string;
  options: Options;
  run(values: Record<string, string | boolean | undefined>, positionals: string[]): Promise<void>;
}

const threadsOption = { threads: { type: 'string' } } as const;

function num(values: Record<string, unknown>, key: string, fallback?: number): number | undefined {
  const v = values[key];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${key} expects a number, got ${JSON.stringify(v)}`);
  return n;
}

function int(values: Record<string, unknown>, key: string, fallback?: number): number | undefined {
  const n = num(values, key, fallback);
  if (n !== undefined && !Number.isInteger(n)) throw new UsageError(`--${key} expects an integer, got ${n}`);
  return n;
}

function threads(values: Record<string, unknown>): number | undefined {
  const t = int(values, 'threads');
  if (t !== undefined && t < 1) throw new UsageError('--threads must be at least 1');
  return t;
}

const commands: Record<string, Command> = {
  generate: {
    summary: 'generate a continuation of a prompt',
    usage: `slimlm generate [--model PATH] [--tokenizer PATH] [--prompt TEXT] [--max-new-tokens N] [--temperature T]
                [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]... [--threads N]
  Prints only the generated continuation on stdout; timings on stderr.
  Defaults: the shipped stories260K model, empty prompt (starts from BOS), 256 new tokens,
  temperature 0.8, top-k 40, top-p 0.95 (temperature 0 = greedy).`,
    options: {
      model: { type: 'string' }, tokenizer: { type: 'string' }, prompt: { type: 'string' },
      'max-new-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
      'top-p': { type: 'string' }, 'repetition-penalty': { type: 'string' }, seed: { type: 'string' },
      stop: { type: 'string', multiple: true }, quiet: { type: 'boolean' }, ...threadsOption,
    },
    async run(v) {
      const modelPath = (v.model as string | undefined) ?? DEFAULT_MODEL;
      const model = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: threads(v) });
      try {
        const tokenizer = await AutoTokenizer.fromPretrained((v.tokenizer as string | undefined) ?? modelPath);
        if (tokenizer.vocabSize !== model.config.vocabSize) {
          throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) does not match the model's (${model.config.vocabSize})`);
        }
        const promptIds = tokenizer.encode((v.prompt as string | undefined) ?? '');
        const temperature = num(v, 'temperature', 0.8)!;
        const result = await model.generate(promptIds, {
          maxNewTokens: int(v, 'max-new-tokens', 256),
          temperature,
          doSample: temperature > 0,
          topK: int(v, 'top-k', 40),
          topP: num(v, 'top-p', 0.95),
          repetitionPenalty: num(v, 'repetition-penalty', 1),
          seed: int(v, 'seed'),
          stopStrings: (v.stop as unknown as string[] | undefined) ?? [],
          tokenizer,
        }, { onText: (text: string) => { process.stdout.write(text); } });
        process.stdout.write('\n');
        if (!v.quiet) {
          const t = result.timings;
          process.stderr.write(`[${result.tokens.length} tokens, prompt ${promptIds.length} tokens in ${t.prefillMs.toFixed(0)} ms, ` +
            `${t.tokensPerSecond.toFixed(1)} tok/s, finish: ${result.finishReason}]\n`);
        }
      } finally {
        await model.dispose();
      }
    },
  },
  tokenize: {
    summary: 'print the token ids of a text as JSON',
    usage: `slimlm tokenize [--tokenizer PATH] --text TEXT [--no-bos]
  PATH: tokenizer.json, tokenizer.model, a llama2.c tok*.bin, or a folder/model holding one. Prints ids (with BOS) as a JSON array.`,
    options: { tokenizer: { type: 'string' }, model: { type: 'string' }, text: { type: 'string' }, 'no-bos': { type: 'boolean' } },
    async run(v) {
      if (typeof v.text !== 'string') throw new UsageError('--text is required');
      const tokenizer = await AutoTokenizer.fromPretrained((v.tokenizer ?? v.model ?? DEFAULT_MODEL) as string);
      process.stdout.write(JSON.stringify(tokenizer.encode(v.text, { addBos: !v['no-bos'] })) + '\n');
    },
  },
  inspect: {
    summary: 'print architecture, parameter count, dtypes and size of a model',
    usage: `slimlm inspect PATH [--json]
  PATH: a Hugging Face folder, a .safetensors file, a llama2.c .bin or a .gguf; or a config.json alone
  (the graph is built without weights and its parameters counted).`,
    options: { json: { type: 'boolean' } },
    async run(v, positionals) {
      const target = positionals[0];
      if (!target) throw new UsageError('a model PATH is required');
      if (target.endsWith('.json')) return inspectConfig(target, v.json === true);
      const ckpt = await openCheckpoint(target);
      try {
        const dtypes: Record<string, number> = {};
        let stored = 0;
        for (const name of ckpt.tensorNames()) {
          const info = ckpt.tensorInfo(name);
          const n = numel(info.shape);
          dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + n;
          stored += n;
        }
        const c = ckpt.config;
        const report = {
          path: path.resolve(target),
          format: ckpt.format,
          architecture: c.modelType === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM',
          config: c,
          parameters: parameterCount(c),
          storedParameters: stored,
          dtypes,
          sizeBytes: sizeOnDisk(target),
          tokenizer: ckpt.tokenizerPath,
        };
        if (v.json) { process.stdout.write(JSON.stringify(report, null, 2) + '\n'); return; }
        const lines = [
          ...describeConfig(report.path, report.format, c, report.parameters),
          `dtypes        ${Object.entries(dtypes).map(([d, n]) => `${d}: ${humanCount(n)}`).join(', ')}`,
          `size          ${humanBytes(report.sizeBytes)}`,
          `tokenizer     ${report.tokenizer ?? '(none found)'}`,
        ];
        process.stdout.write(lines.join('\n') + '\n');
      } finally {
        ckpt.close();
      }
    },
  },
};

/** A config.json alone: the graph is built without weights, its parameters counted from the graph. */
function inspectConfig(file: string, asJson: boolean): void {
  const config = configFromHF(JSON.parse(fs.readFileSync(file, 'utf8')), file);
  const graph = buildLlamaGraph(config);
  const report = { path: path.resolve(file), format: 'config', config, parameters: graphParameterCount(graph), graphNodes: graph.nodes.length };
  if (asJson) { process.stdout.write(JSON.stringify(report, null, 2) + '\n'); return; }
  process.stdout.write(describeConfig(report.path, 'config.json (no weights)', config, report.parameters).join('\n') + '\n');
}

function describeConfig(where: string, format: string, c: LlamaConfig, parameters: number): string[] {
  return [
    `path          ${where}`,
    `format        ${format}`,
    `architecture  ${c.modelType === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM'} (${c.modelType})`,
    `layers        ${c.numHiddenLayers}`,
    `hidden        ${c.hiddenSize} (FFN ${c.intermediateSize})`,
    `heads         ${c.numAttentionHeads} query / ${c.numKeyValueHeads} key-value, head dim ${c.headDim}`,
    `vocab         ${c.vocabSize}`,
    `context       ${c.maxPositionEmbeddings}${c.slidingWindow ? `, sliding window ${c.slidingWindow}` : ''}`,
    `rope theta    ${c.ropeTheta}, rms eps ${c.rmsNormEps}`,
    `lm head       ${c.tieWordEmbeddings ? 'tied to embeddings' : 'untied'}`,
    `parameters    ${parameters.toLocaleString('en-US')} (${humanCount(parameters)})`,
  ];
}

function sizeOnDisk(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const f of fs.readdirSync(p)) {
    if (/\.(safetensors|bin|gguf)$/.test(f)) total += fs.statSync(path.join(p, f)).size;
  }
  return total;
}

export function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

function help(): string {
  const width = Math.max(...Object.keys(commands).map((k) => k.length));
  return [
    'slimlm — distill, quantize and run language models on CPU',
    '',
    'usage: slimlm <command> [options]    (slimlm <command> --help for details)',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    `cores here: ${os.availableParallelism()}`,
  ].join('\n');
}

/** Runs the CLI; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name ? 0 : 1;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`slimlm: unknown command ${JSON.stringify(name)}\n\n${help()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${cmd.usage}\n`);
    return 0;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    await cmd.run(values as Record<string, string | boolean | undefined>, positionals);
    return 0;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const isUsage = err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    process.stderr.write(`slimlm ${name}: ${message}\n`);
    if (isUsage) process.stderr.write(`\n${cmd.usage}\n`);
    if (process.env.SLIMLM_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return isUsage ? 2 : 1;
  }
}
