import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { openCheckpoint } from '../../models/checkpoint.js';
import { exportGGUF, GGUF_EXPORT_TYPES, type GGUFExportType } from '../../models/export.js';
import { writeQuantizedCheckpoint } from '../../models/quantizedCheckpoint.js';
import { LINEAR_QUANT_TYPES, type LinearQuantType, type QuantRecipe } from '../../quantize/recipe.js';
import { loadTokenizer } from '../../tokenizers/index.js';
import { progressBar } from '../progress.js';
import { humanBytes, int, str, UsageError, type Command } from '../common.js';
import { peakRssBytes } from '../../runtime/index.js';

const TYPES = ['nf4', 'fp4', 'int8', 'int8-row', 'int4', 'int4-asym', 'q8_0', 'q4_0', 'q4_k_m'];

/** Copies the model's tokenizer (and tokenizer_config.json) into the output folder; a llama2.c tok*.bin brings its .model twin. */
function copyTokenizer(tokenizerPath: string | null, dir: string): void {
  if (!tokenizerPath || tokenizerPath.endsWith('.gguf')) return;
  const twin = tokenizerPath.replace(/\.bin$/, '.model');
  const src = tokenizerPath.endsWith('.bin') && existsSync(twin) ? twin : tokenizerPath;
  copyFileSync(src, join(dir, src.endsWith('.model') ? 'tokenizer.model' : basename(src)));
  const cfg = join(dirname(tokenizerPath), 'tokenizer_config.json');
  if (existsSync(cfg)) copyFileSync(cfg, join(dir, 'tokenizer_config.json'));
}

export const quantize: Command = {
  summary: 'quantize a model (NF4/FP4, int8, int4, or GGUF Q8_0/Q4_0/Q4_K_M), streaming tensor by tensor',
  usage: `slimlm quantize --model PATH --out PATH --type ${TYPES.join('|')} [--double-quant|--no-double-quant]
                [--block-size N] [--keep REGEX] [--lm-head int8|float|same]
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
    const t0 = Date.now();
    const ckpt = openCheckpoint(model);
    try {
      const bar = progressBar('quantize', ckpt.tensorNames().length, 'tensors');
      if (GGUF_EXPORT_TYPES.includes(type as GGUFExportType)) {
        const tokPath = ckpt.tokenizerPath;
        const tokenizer = tokPath && !tokPath.endsWith('.gguf') ? await loadTokenizer(tokPath) : null;
        exportGGUF(ckpt, out, { type: type as GGUFExportType, tokenizer, onTensor: (n, t) => bar.tick(1, `${n} ${t}`) });
      } else {
        const lmHead = str(v, 'lm-head');
        if (lmHead && !['int8', 'float', 'same'].includes(lmHead)) throw new UsageError('--lm-head must be int8, float or same');
        const recipe: QuantRecipe = {
          type: type as LinearQuantType,
          blockSize: int(v, 'block-size'),
          doubleQuant: v['no-double-quant'] ? false : v['double-quant'] ? true : undefined,
          keep: str(v, 'keep') ? new RegExp(str(v, 'keep')!) : undefined,
          lmHead: lmHead as QuantRecipe['lmHead'],
        };
        if (!LINEAR_QUANT_TYPES.includes(recipe.type)) throw new UsageError(`unsupported type ${type}`);
        mkdirSync(out, { recursive: true });
        writeQuantizedCheckpoint(ckpt, out, recipe, (name) => bar.tick(1, name));
        copyTokenizer(ckpt.tokenizerPath, out);
      }
      bar.done();
      const size = statSync(out).isDirectory() ? ['model.safetensors'].map((f) => join(out, f)).filter(existsSync).reduce((s, f) => s + statSync(f).size, 0) : statSync(out).size;
      process.stderr.write(`wrote ${out}${size ? ` (${humanBytes(size)})` : ''} in ${((Date.now() - t0) / 1000).toFixed(1)} s; peak RSS ${humanBytes(peakRssBytes())}\n`);
    } finally {
      ckpt.close();
    }
  },
};
