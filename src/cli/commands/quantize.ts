import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '../../models/checkpoint.js';
import { exportGGUF, GGUF_EXPORT_TYPES, type GGUFExportType } from '../../models/export.js';
import { isQuantizedCheckpoint, linearNames, writeQuantizedCheckpoint } from '../../models/quantizedCheckpoint.js';
import { expectedTensors } from '../../models/config.js';
import { BLOCK_SIZES, checkFolderRecipe, fallsBackToFloat, recipeBlockSize, type LinearQuantType, type QuantRecipe } from '../../quantize/recipe.js';
import { loadTokenizer, writeTokenizerFiles } from '../../tokenizers/index.js';
import { progressBar } from '../progress.js';
import { checkOutputPath, humanBytes, int, str, UsageError, type Command } from '../common.js';
import { peakRssBytes } from '../../runtime/index.js';

const TYPES = ['nf4', 'fp4', 'int8', 'int8-row', 'int4', 'int4-asym', 'q8_0', 'q4_0', 'q4_k_m'];

export const quantize: Command = {
  summary: 'quantize a model (NF4/FP4, int8, int4, or GGUF Q8_0/Q4_0/Q4_K_M), streaming tensor by tensor',
  usage: `slimlm quantize --model PATH --out PATH --type ${TYPES.join('|')} [--double-quant|--no-double-quant]
                [--block-size 16|32|64|128|256] [--keep REGEX] [--lm-head int8|float|same]
  nf4/fp4:    bitsandbytes layout + transformers quantization_config (blocks of 64; double quantization on by default)
  int8/int4:  ONNX Runtime MatMulNBits blocks (default 32; int4 symmetric, int4-asym with zero points); int8-row: per-row scales
  q8_0/q4_0/q4_k_m: a llama.cpp GGUF (--out FILE.gguf) with llama-quantize's recipe and the tokenizer
  Norms and the token embedding stay float; the LM head is 8-bit for int4, float for nf4/fp4 (--lm-head overrides);
  --keep keeps matching Linear weights (HF names) in float. Peak memory ≈ the largest tensor, not the model.`,
  options: {
    model: { type: 'string' }, out: { type: 'string' }, type: { type: 'string' }, 'double-quant': { type: 'boolean' },
    'no-double-quant': { type: 'boolean' }, 'block-size': { type: 'string' }, keep: { type: 'string' }, 'lm-head': { type: 'string' },
  },
  async run(v) {
    const model = str(v, 'model'), out = str(v, 'out'), type = str(v, 'type')?.toLowerCase();
    if (!model || !out || !type) throw new UsageError('--model, --out and --type are required');
    if (!TYPES.includes(type)) throw new UsageError(`--type must be one of ${TYPES.join(', ')}`);
    const gguf = GGUF_EXPORT_TYPES.includes(type as GGUFExportType);
    if (gguf && !out.endsWith('.gguf')) throw new UsageError(`--type ${type} writes a llama.cpp GGUF file: --out must end in .gguf`);
    if (!gguf && out.endsWith('.gguf')) throw new UsageError(`--type ${type} writes a Hugging Face folder, not a .gguf (GGUF types: ${GGUF_EXPORT_TYPES.filter((t) => t.startsWith('q')).join(', ')})`);
    const folderFlags = ['block-size', 'double-quant', 'no-double-quant', 'keep', 'lm-head'].filter((f) => v[f] !== undefined);
    if (gguf && folderFlags.length) throw new UsageError(`--${folderFlags[0]} applies to nf4|fp4|int8|int4 folders; GGUF types follow llama-quantize's recipe`);
    if (v['double-quant'] && v['no-double-quant']) throw new UsageError('--double-quant and --no-double-quant contradict each other');
    let recipe: QuantRecipe | null = null;
    if (!gguf) {
      let keep: RegExp | undefined;
      try { keep = str(v, 'keep') ? new RegExp(str(v, 'keep')!) : undefined; } catch (e) { throw new UsageError(`--keep: ${(e as Error).message}`); }
      recipe = {
        type: type as LinearQuantType, blockSize: int(v, 'block-size'),
        doubleQuant: v['no-double-quant'] ? false : v['double-quant'] ? true : undefined, keep, lmHead: str(v, 'lm-head') as QuantRecipe['lmHead'],
      };
      try { checkFolderRecipe(recipe); } catch (e) { throw new UsageError((e as Error).message); }
    }
    checkOutputPath(model, out);
    if (isQuantizedCheckpoint(model)) throw new UsageError(`${model} is already quantized; quantize the float model it came from`);
    const t0 = Date.now();
    const ckpt = openCheckpoint(model);
    try {
      const bar = progressBar('quantize', ckpt.tensorNames().length, 'tensors');
      if (recipe === null) {
        const tokPath = ckpt.tokenizerPath;
        const tokenizer = tokPath ? await loadTokenizer(tokPath) : null;
        exportGGUF(ckpt, out, { type: type as GGUFExportType, tokenizer, onTensor: (n, t) => bar.tick(1, `${n} ${t}`) });
      } else {
        const shapes = expectedTensors(ckpt.config);
        const stayFloat = linearNames(ckpt.config).filter((n) => n !== 'model.embed_tokens.weight' || ckpt.config.tieWordEmbeddings)
          .filter((n) => fallsBackToFloat(recipe!, n, shapes.get(n)![1]));
        // The tokenizer first: the folder's config.json, written last, then stands for a complete folder.
        mkdirSync(out, { recursive: true });
        if (ckpt.tokenizerPath) writeTokenizerFiles(ckpt.tokenizerPath, out);
        writeQuantizedCheckpoint(ckpt, out, recipe, (name) => bar.tick(1, name));
        if (stayFloat.length) {
          const rows = [...new Set(stayFloat.map((n) => shapes.get(n)![1]))];
          const fits = BLOCK_SIZES.filter((b) => b < recipeBlockSize(recipe!) && rows.every((k) => k % b === 0));
          process.stderr.write(`warning: ${stayFloat.length} Linear weight(s) stay float (e.g. ${stayFloat[0]}): rows of ${rows.join(', ')} values are not whole blocks of ` +
            `${recipeBlockSize(recipe)}; ${fits.length ? `--block-size ${fits[fits.length - 1]} would quantize them` : 'no block size ONNX Runtime runs divides them (llama-quantize keeps such rows in float too)'}\n`);
        }
      }
      bar.done();
      const size = statSync(out).isDirectory() ? ['model.safetensors'].map((f) => join(out, f)).filter(existsSync).reduce((s, f) => s + statSync(f).size, 0) : statSync(out).size;
      process.stderr.write(`wrote ${out}${size ? ` (${humanBytes(size)})` : ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s; peak RSS ${humanBytes(peakRssBytes())}\n`);
    } finally {
      ckpt.close();
    }
  },
};
