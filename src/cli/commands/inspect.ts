import fs from 'node:fs';
import path from 'node:path';
import { openCheckpoint, tokenizerBeside } from '../../models/checkpoint.js';
import { isQuantizedCheckpoint, openQuantizedCheckpoint } from '../../models/quantizedCheckpoint.js';
import type { LinearLayout } from '../../models/quantized.js';
import { configFromHF, parameterCount, type LlamaConfig } from '../../models/config.js';
import { buildLlamaGraph, graphParameterCount } from '../../models/llamaGraph.js';
import { weightFilesBytes } from '../../formats/hf.js';
import { numel } from '../../formats/tensor.js';
import { humanBytes, humanCount, UsageError, type Command } from '../common.js';

export const inspect: Command = {
    summary: 'print architecture, parameter count, dtypes and size of a model',
    usage: `slimlm inspect PATH [--json]
  PATH: a Hugging Face folder, a .safetensors file, a llama2.c .bin or a .gguf; or a config.json alone
  (the graph is built without weights and its parameters counted).`,
    options: { json: { type: 'boolean' } },
    positionals: true,
    async run(v, positionals) {
      const target = positionals[0];
      if (!target) throw new UsageError('a model PATH is required');
      if (target.endsWith('.json') && !target.endsWith('.index.json')) return inspectConfig(target, v.json === true); // a shard index is a model
      if (isQuantizedCheckpoint(target)) return inspectQuantized(target, v.json === true);
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
          sizeBytes: weightFilesBytes(target),
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
  };

/** How a Linear layer is stored, in words. */
function describeLayout(l: LinearLayout): string {
  switch (l.kind) {
    case 'nbits': return `int${l.bits}${l.symmetric ? '' : ' asymmetric'}, blocks of ${l.blockSize} (MatMulNBits)`;
    case 'int8-row': return 'int8, one scale per row';
    case 'bnb4': return `${l.quantType}, blocks of ${l.blocksize} (bitsandbytes)`;
    case 'float': return 'float';
  }
}

/** A quantized folder (slimlm quantize, or bitsandbytes 4-bit): its config and how each Linear layer is stored. */
function inspectQuantized(target: string, asJson: boolean): void {
  const q = openQuantizedCheckpoint(target);
  try {
    const c = q.config;
    const counts: Record<string, number> = {};
    for (const l of Object.values(q.layouts)) counts[describeLayout(l)] = (counts[describeLayout(l)] ?? 0) + 1;
    const report = {
      path: path.resolve(target), format: 'quantized safetensors', config: c, parameters: parameterCount(c),
      linearLayers: counts, layouts: q.layouts, sizeBytes: weightFilesBytes(target), tokenizer: tokenizerBeside(target, c.vocabSize),
    };
    if (asJson) { process.stdout.write(JSON.stringify(report, null, 2) + '\n'); return; }
    const lines = [
      ...describeConfig(report.path, report.format, c, report.parameters),
      `linear        ${Object.entries(counts).map(([what, n]) => `${n} × ${what}`).join('; ')}`,
      `size          ${humanBytes(report.sizeBytes)}`,
      `tokenizer     ${report.tokenizer ?? '(none found)'}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    q.close();
  }
}

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

