import { AutoTokenizer } from '../../api.js';
import { toFloat32 } from '../../formats/dtype.js';
import { openCheckpoint } from '../../models/checkpoint.js';
import { configFromHF, expectedTensors, parameterCount, type LlamaConfig } from '../../models/config.js';
import { initStudentWeights, parseStudentSpec, studentConfig } from '../../distill/student.js';
import { runTraining } from '../../distill/trainer.js';
import { tokenizerFiles } from '../../tokenizers/index.js';
import { checkOutputPath, humanCount, int, str, UsageError, type Command } from '../common.js';
import { checkMaxLength, commonTrainerOptions, loadTrainingData, trainerOptions, trainerUsage } from './distill.js';
import { resolve } from 'node:path';

export const train: Command = {
  summary: 'train a model with cross-entropy only (baselines, teachers); same trainer as distill',
  usage: `slimlm train (--from MODEL | --student CONFIG --tokenizer PATH) --data FILE... --out DIR [options]
  --from MODEL          continue training an existing model (its config, weights and tokenizer)
  --student CONFIG      a fresh model: JSON config file, or "hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408" with
                        vocabulary and BOS/EOS/PAD from --tokenizer
${trainerUsage}`,
  options: { ...trainerOptions, from: { type: 'string' } },
  async run(v) {
    const out = str(v, 'out');
    if (!out) throw new UsageError('--out is required');
    const from = str(v, 'from');
    const seed = int(v, 'seed', 0)!;
    if (from && str(v, 'student')) throw new UsageError('--from continues a model as it is; --student applies only to a new one');
    if (from) checkOutputPath(from, out);
    const trainer = commonTrainerOptions(v, out); // every flag checked before the data loads
    let config: LlamaConfig, weights: Map<string, Float32Array>, tokenizerPath: string | null;
    if (from) {
      const ck = openCheckpoint(from);
      try {
        config = ck.config;
        weights = new Map([...expectedTensors(config).keys()].map((n) => [n, toFloat32(ck.getTensor(n))]));
        tokenizerPath = str(v, 'tokenizer') ?? ck.tokenizerPath;
      } finally { ck.close(); }
    } else {
      const spec = str(v, 'student');
      tokenizerPath = str(v, 'tokenizer') ?? null;
      if (!spec || !tokenizerPath) throw new UsageError('give --from MODEL, or --student CONFIG with --tokenizer PATH');
      const tok = await AutoTokenizer.fromPretrained(tokenizerPath);
      const json = parseStudentSpec(spec).json;
      // A flag string borrows everything but the sizes from a minimal Llama config of the tokenizer's vocabulary.
      const base = json?.vocab_size ? configFromHF({ model_type: 'llama', ...json }, spec) : configFromHF({
        model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 512, intermediate_size: 1408, num_hidden_layers: 4, num_attention_heads: 8,
        num_key_value_heads: 8, rms_norm_eps: 1e-5, bos_token_id: tok.bosId, eos_token_id: tok.eosId, pad_token_id: tok.padId,
      });
      config = json?.vocab_size ? base : studentConfig(base, spec);
      weights = initStudentWeights(config, seed);
    }
    if (!tokenizerPath) throw new UsageError('no tokenizer found; pass --tokenizer');
    const tokenizer = await AutoTokenizer.fromPretrained(tokenizerPath);
    if (tokenizer.vocabSize !== config.vocabSize) throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) != model vocabulary (${config.vocabSize})`);
    checkMaxLength(v, config);
    const data = await loadTrainingData(v, tokenizer);
    process.stderr.write(`model: hidden ${config.hiddenSize}, ${config.numHiddenLayers} layers, ${humanCount(parameterCount(config))} parameters\n`);
    await runTraining({
      ...trainer, config, weights, train: data.train, validation: data.validation,
      runIdentity: { data: data.fingerprint, from: from ? resolve(from) : null },
      loss: { loss: 'ce', temperature: 1, alpha: 0, jsdBeta: 0.5, sparseTail: 'bucket' }, extraFiles: tokenizerPath ? tokenizerFiles(tokenizerPath) : {},
    });
  },
};
