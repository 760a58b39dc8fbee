import { readFileSync } from 'node:fs';
import { writeBytesAtomic } from '../../formats/atomic.js';
import { basename } from 'node:path';
import { evaluatePerplexity } from '../../eval/perplexity.js';
import { loadModel, type LoadedModel } from '../../models/quantizedModel.js';
import { LINEAR_QUANT_TYPES, type LinearQuantType } from '../../quantize/recipe.js';
import { svgChart } from '../../report/plot.js';
import { checkWritable, int, str, threads, threadsOption, UsageError, type Command } from '../common.js';
import { evalTokens, type EvalReport } from './eval.js';
import { peakRssBytes } from '../../runtime/index.js';

/** An eval --json report, checked enough to be plotted. */
function readReport(file: string): EvalReport {
  let r: EvalReport;
  try { r = JSON.parse(readFileSync(file, 'utf8')) as EvalReport; } catch (e) { throw new UsageError(`${file}: not a readable eval report (${(e as Error).message})`); }
  if (!r || typeof r !== 'object' || typeof r.model !== 'string' || typeof r.perplexity !== 'number' || typeof r.sizeBytes !== 'number') {
    throw new UsageError(`${file}: not an eval report (slimlm eval --json writes one)`);
  }
  return r;
}

/**
 * Models are given as paths (evaluated here on --data against --reference, one at a time), as `PATH@TYPE` (quantized on
 * the fly), or as JSON reports written by `slimlm eval --json`.
 */
export const compare: Command = {
  summary: 'evaluate several models (or eval reports) side by side: one table and an SVG plot (size vs perplexity)',
  usage: `slimlm compare A B C … [--data FILE] [--reference PATH] [--ctx N] [--chunks N] [--tokenizer PATH] [--plot OUT.svg] [--threads N]
  The plot goes to --plot, by default compare.svg in the current folder.
  Each item: a model path, PATH@TYPE (Linear layers quantized on the fly: ${LINEAR_QUANT_TYPES.join(', ')}), or an eval JSON report.`,
  options: { data: { type: 'string' }, reference: { type: 'string' }, ctx: { type: 'string' }, chunks: { type: 'string' },
    tokenizer: { type: 'string' }, plot: { type: 'string' }, ...threadsOption },
  positionals: true,
  async run(v, items) {
    if (items.length === 0) throw new UsageError('give at least one model or report');
    const ctx = int(v, 'ctx', 128)!;
    const chunks = int(v, 'chunks');
    if (chunks !== undefined && chunks < 1) throw new UsageError('--chunks must be at least 1');
    const plot = str(v, 'plot') ?? 'compare.svg';
    checkWritable(plot, 'plot');
    const reports: EvalReport[] = [];
    let ref: LoadedModel | null = null;
    try {
      for (const item of items) {
        if (item.endsWith('.json')) { reports.push(readReport(item)); continue; }
        const data = str(v, 'data');
        if (!data) throw new UsageError(`--data is needed to evaluate ${item}`);
        const [path, type] = item.split('@');
        if (type && !LINEAR_QUANT_TYPES.includes(type as LinearQuantType)) throw new UsageError(`${item}: unknown type ${type}`);
        if (!ref && str(v, 'reference')) ref = await loadModel(str(v, 'reference')!, { threads: threads(v) });
        const m = await loadModel(path, { threads: threads(v), quantize: type ? { type: type as LinearQuantType } : undefined });
        try {
          const { ids, bosId } = await evalTokens(m, ref, ctx, data, str(v, 'tokenizer'), item);
          const r = await evaluatePerplexity(m.model, ids, { ctx, bosId, maxChunks: chunks }, ref?.model);
          reports.push({ model: item, type: type ?? m.format, sizeBytes: m.storedBytes, peakRssBytes: peakRssBytes(), ctx, ...r });
        } finally {
          await m.model.dispose();
        }
      }
    } finally {
      await ref?.model.dispose();
    }
    // An eval report of an on-the-fly quantization keeps its type in the label (PATH@TYPE), as the item would be written.
    const label = (r: EvalReport) => (!r.model.includes('@') && LINEAR_QUANT_TYPES.includes(r.type as LinearQuantType) ? `${r.model}@${r.type}` : r.model);
    const rows = [
      '| model | size MiB | perplexity | Δ ppl | mean KL | top-1 | tok/s |',
      '|---|---|---|---|---|---|---|',
      ...reports.map((r) => `| ${label(r)} | ${(r.sizeBytes / 2 ** 20).toFixed(2)} | ${r.perplexity.toFixed(4)} | ` +
        `${r.referencePerplexity !== undefined ? (r.perplexity - r.referencePerplexity).toFixed(4) : ''} | ${r.meanKL !== undefined ? r.meanKL.toExponential(2) : ''} | ` +
        `${r.top1Agreement !== undefined ? (100 * r.top1Agreement).toFixed(1) + ' %' : ''} | ${r.tokensPerSecond.toFixed(0)} |`),
    ];
    process.stdout.write(rows.join('\n') + '\n');
    writeBytesAtomic(plot, svgChart([{ name: 'models', points: reports.map((r) => [r.sizeBytes / 2 ** 20, r.perplexity] as const) }], {
      title: 'Perplexity vs size', xLabel: 'size on disk (MiB)', yLabel: 'perplexity', kind: 'scatter',
      pointLabels: [reports.map((r) => basename(label(r)))],
    }));
    process.stderr.write(`plot: ${plot}\n`);
  },
};
