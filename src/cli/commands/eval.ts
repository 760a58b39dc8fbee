import { readFileSync } from 'node:fs';
import { writeBytesAtomic } from '../../formats/atomic.js';
import { loadModel, type LoadedModel } from '../../models/quantizedModel.js';
import { evaluatePerplexity, type EvalResult } from '../../eval/perplexity.js';
import { checkRecipe, LINEAR_QUANT_TYPES, type LinearQuantType, type QuantRecipe } from '../../quantize/recipe.js';
import { loadTokenizer } from '../../tokenizers/index.js';
import { progressBar } from '../progress.js';
import { checkWritable, humanBytes, int, str, threads, threadsOption, UsageError, type Command } from '../common.js';
import { peakRssBytes } from '../../runtime/index.js';

export interface EvalReport extends EvalResult {
  model: string;
  type: string;
  sizeBytes: number;
  peakRssBytes: number;
  ctx: number;
}

/**
 * What eval and compare check and read before evaluating `m` (named `label` in messages): the window fits its context,
 * the reference shares its vocabulary, and the data's tokens, BOS first (llama.cpp's common_tokenize(…, add_special)).
 */
export async function evalTokens(m: LoadedModel, ref: LoadedModel | null, ctx: number, dataFile: string, tokenizer: string | undefined, label: string): Promise<{ ids: number[]; bosId: number | null }> {
  if (ctx > m.config.maxPositionEmbeddings) throw new UsageError(`--ctx ${ctx} is longer than ${label}'s context (${m.config.maxPositionEmbeddings})`);
  if (ref && ref.config.vocabSize !== m.config.vocabSize) {
    throw new UsageError(`the reference's vocabulary (${ref.config.vocabSize}) differs from ${label}'s (${m.config.vocabSize}): KL and top-1 need the same tokens`);
  }
  const tokPath = tokenizer ?? m.tokenizerPath;
  if (!tokPath) throw new UsageError(`no tokenizer found next to ${label}; pass --tokenizer`);
  const tok = await loadTokenizer(tokPath);
  return { ids: tok.encode(readFileSync(dataFile, 'utf8')), bosId: tok.bosId };
}

export const evalCommand: Command = {
  summary: 'perplexity (llama.cpp windows), and KL / top-1 agreement against a reference model',
  usage: `slimlm eval --model PATH --data FILE [--reference PATH] [--ctx N] [--chunks N] [--type TYPE] [--block-size N]
              [--lm-head int8|float|same] [--tokenizer PATH] [--json FILE] [--threads N]
  Windows: non-overlapping chunks of --ctx tokens (default 128), BOS over each chunk's first token, only the second
  half of each chunk scored — llama.cpp's perplexity tool with --ppl-stride 0. --type quantizes the model's Linear
  layers on the fly (${LINEAR_QUANT_TYPES.join(', ')}) with slimlm quantize's recipe (--block-size, --lm-head). Reports size on disk, peak RSS and tokens/s (prompt processing).`,
  options: {
    model: { type: 'string' }, data: { type: 'string' }, reference: { type: 'string' }, ctx: { type: 'string' }, chunks: { type: 'string' },
    type: { type: 'string' }, 'block-size': { type: 'string' }, 'lm-head': { type: 'string' }, tokenizer: { type: 'string' }, json: { type: 'string' }, ...threadsOption,
  },
  async run(v) {
    const modelPath = str(v, 'model'), data = str(v, 'data');
    if (!modelPath || !data) throw new UsageError('--model and --data are required');
    const type = str(v, 'type');
    if (type && !LINEAR_QUANT_TYPES.includes(type as LinearQuantType)) throw new UsageError(`--type must be one of ${LINEAR_QUANT_TYPES.join(', ')}`);
    const ctx = int(v, 'ctx', 128)!;
    const chunks = int(v, 'chunks');
    if (ctx < 4) throw new UsageError('--ctx must be at least 4');
    if (chunks !== undefined && chunks < 1) throw new UsageError('--chunks must be at least 1');
    const json = str(v, 'json');
    if (json) checkWritable(json, 'json');
    const lmHead = str(v, 'lm-head');
    if (!type && (lmHead || v['block-size'] !== undefined)) throw new UsageError('--block-size and --lm-head go with --type');
    const recipe: QuantRecipe | undefined = type ? { type: type as LinearQuantType, blockSize: int(v, 'block-size'), lmHead: lmHead as QuantRecipe['lmHead'] } : undefined;
    if (recipe) { try { checkRecipe(recipe); } catch (e) { throw new UsageError((e as Error).message); } }
    const ref = str(v, 'reference') ? await loadModel(str(v, 'reference')!, { threads: threads(v) }) : null;
    let m: Awaited<ReturnType<typeof loadModel>>;
    try {
      m = await loadModel(modelPath, { threads: threads(v), quantize: recipe });
    } catch (e) {
      await ref?.model.dispose();
      throw e;
    }
    try {
      const { ids, bosId } = await evalTokens(m, ref, ctx, data, str(v, 'tokenizer'), 'the model');
      const bar = progressBar('eval', Math.min(Math.floor(ids.length / ctx), chunks ?? Infinity), 'chunks');
      const r = await evaluatePerplexity(m.model, ids, { ctx, bosId, maxChunks: chunks, onChunk: () => bar.tick() }, ref?.model);
      bar.done();
      const report: EvalReport = { model: modelPath, type: type ?? m.format, sizeBytes: m.storedBytes, peakRssBytes: peakRssBytes(), ctx, ...r };
      const lines = [
        `model        ${modelPath}${type ? ` (quantized on the fly: ${type})` : ''}`,
        `windows      ${r.chunks} × ${ctx} tokens, ${r.scoredTokens} scored`,
        `perplexity   ${r.perplexity.toFixed(4)}`,
        ...(ref ? [`reference    ${r.referencePerplexity!.toFixed(4)} (Δ ${(r.perplexity - r.referencePerplexity!).toFixed(4)})`,
          `mean KL      ${r.meanKL!.toExponential(3)}`, `top-1 agree  ${(100 * r.top1Agreement!).toFixed(2)} %`] : []),
        `size         ${humanBytes(m.storedBytes)}`,
        `peak RSS     ${humanBytes(report.peakRssBytes)}`,
        `speed        ${r.tokensPerSecond.toFixed(0)} tok/s (prompt processing, ${ctx}-token windows)`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
      if (json) writeBytesAtomic(json, JSON.stringify(report, null, 2) + '\n');
    } finally {
      await m.model.dispose();
      await ref?.model.dispose();
    }
  },
};
