import { loadTokenizer } from '../../tokenizers/index.js';
import { openCheckpoint } from '../../models/checkpoint.js';
import { isQuantizedCheckpoint } from '../../models/quantizedCheckpoint.js';
import { exportGGUF, exportHF, GGUF_EXPORT_TYPES, type GGUFExportType } from '../../models/export.js';
import { exportTransformersJs } from '../../models/exportOnnx.js';
import { progressBar } from '../progress.js';
import { checkOutputPath, str, UsageError, type Command } from '../common.js';

export const exportCommand: Command = {
  summary: 'write a model as a llama.cpp GGUF (with its tokenizer), a Hugging Face folder, or a transformers.js ONNX folder',
  usage: `slimlm export --model PATH --out PATH [--format gguf|hf|onnx] [--type f32|f16|q8_0|q4_0|q4_k_m|bf16|q4] [--tokenizer PATH]
  gguf: tensor types follow llama-quantize's recipe for the type (norms F32; output Q6_K for q4_0/q4_k_m; q4_k_m
        puts attn_v/ffn_down of some layers in Q6_K); the tokenizer goes into tokenizer.ggml.* metadata.
  hf:   config.json + model.safetensors (--type f32|f16|bf16) + the tokenizer files.
  onnx: the folder transformers.js loads: config.json, tokenizer files, onnx/model.onnx (fp32) and, with --type q4
        (the default for onnx), onnx/model_q4.onnx (int4 MatMulNBits).
  Default format from --out (.gguf → gguf, else hf); default type f16.`,
  options: { model: { type: 'string' }, out: { type: 'string' }, format: { type: 'string' }, type: { type: 'string' }, tokenizer: { type: 'string' } },
  async run(v) {
    const model = str(v, 'model'), out = str(v, 'out');
    if (!model || !out) throw new UsageError('--model and --out are required');
    const format = str(v, 'format') ?? (out.endsWith('.gguf') ? 'gguf' : 'hf');
    const type = (str(v, 'type') ?? (format === 'onnx' ? 'q4' : 'f16')).toLowerCase();
    if (format === 'gguf' && !GGUF_EXPORT_TYPES.includes(type as GGUFExportType)) throw new UsageError(`--type for gguf must be one of ${GGUF_EXPORT_TYPES.join(', ')}`);
    if (format === 'hf' && type !== 'f32' && type !== 'f16' && type !== 'bf16') throw new UsageError('--type for hf must be f32, f16 or bf16 (use `slimlm quantize` for 4/8-bit)');
    if (format === 'onnx' && type !== 'f32' && type !== 'q4') throw new UsageError('--type for onnx must be f32 (model.onnx only) or q4 (model.onnx and model_q4.onnx)');
    if (!['gguf', 'hf', 'onnx'].includes(format)) throw new UsageError(`--format must be gguf, hf or onnx, got ${JSON.stringify(format)}`);
    if (format === 'gguf' && !out.endsWith('.gguf')) throw new UsageError('--format gguf writes one file: --out must end in .gguf');
    if (format !== 'gguf' && out.endsWith('.gguf')) throw new UsageError(`--format ${format} writes a folder; --out must not end in .gguf`);
    checkOutputPath(model, out);
    if (isQuantizedCheckpoint(model)) throw new UsageError(`${model} is a quantized folder; export the float model it came from`);
    const ckpt = openCheckpoint(model);
    try {
      const tokPath = str(v, 'tokenizer') ?? ckpt.tokenizerPath;
      const tokenizer = tokPath ? await loadTokenizer(tokPath) : null;
      if (tokenizer && tokenizer.vocabSize !== ckpt.config.vocabSize) {
        throw new UsageError(`tokenizer ${tokPath} has ${tokenizer.vocabSize} tokens but the model's vocabulary is ${ckpt.config.vocabSize}`);
      }
      if (!tokenizer) process.stderr.write(`warning: no tokenizer found; the ${format === 'gguf' ? 'GGUF has no tokenizer.ggml.* metadata' : 'folder has no tokenizer files'} (pass --tokenizer)\n`);
      const bar = progressBar('export', ckpt.tensorNames().length, 'tensors');
      if (format === 'gguf') {
        exportGGUF(ckpt, out, { type: type as GGUFExportType, tokenizer, onTensor: (n, t) => bar.tick(1, `${n} ${t}`) });
      } else if (format === 'hf') {
        exportHF(ckpt, out, { dtype: type as 'f32' | 'f16' | 'bf16', tokenizerPath: tokPath, onTensor: (n) => bar.tick(1, n) });
      } else {
        exportTransformersJs(ckpt, out, { quantized: type === 'q4' ? { type: 'int4' } : null, tokenizer: tokPath });
      }
      bar.done();
      process.stderr.write(`wrote ${out}\n`);
    } finally {
      ckpt.close();
    }
  },
};
