import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { AutoTokenizer } from '../../api.js';
import { loadData, type LoadedData } from '../../data/index.js';
import { toFloat32 } from '../../formats/dtype.js';
import { openCheckpoint, type Checkpoint } from '../../models/checkpoint.js';
import { configFromHF, parameterCount, type LlamaConfig } from '../../models/config.js';
import { LOSS_KINDS, type LossKind, type LossOptions } from '../../distill/losses.js';
import { DEFAULT_ADAMW, warmupSteps } from '../../distill/optimizer.js';
import { initFromTeacher, initStudentWeights, parseStudentSpec, studentConfig } from '../../distill/student.js';
import { isTeacherCache, openTeacher, readManifest } from '../../distill/teachers/index.js';
import { runTraining, type TrainerOptions } from '../../distill/trainer.js';
import type { Teacher } from '../../distill/types.js';
import { tokenizerFiles, type Tokenizer } from '../../tokenizers/index.js';
import { checkOutputPath, humanCount, int, num, str, threads, threadsOption, UsageError, type Command, type Options, type Values } from '../common.js';
import { dataCliOptions, dataFiles, dataOptionsFromValues, dataUsage, teacherAccess, teacherCliOptions, teacherUsage } from '../dataOptions.js';

/** Options shared by `distill` and `train`. */
export const trainerOptions: Options = {
  ...dataCliOptions, out: { type: 'string' }, tokenizer: { type: 'string' }, student: { type: 'string' },
  lr: { type: 'string' }, 'weight-decay': { type: 'string' }, epochs: { type: 'string' }, steps: { type: 'string' },
  'batch-size': { type: 'string' }, 'grad-accum': { type: 'string' },
  warmup: { type: 'string' }, schedule: { type: 'string' }, 'max-grad-norm': { type: 'string' },
  'eval-every': { type: 'string' }, 'eval-batches': { type: 'string' }, 'save-every': { type: 'string' }, resume: { type: 'boolean' },
  ...threadsOption,
};

export const trainerUsage = `training:
  --out DIR             student folder: config.json, model.safetensors, tokenizer files, loss.csv, loss.svg, checkpoint.safetensors
  --tokenizer PATH      distill: default the teacher's; train: the one beside --from, or required with --student
  --lr 5e-5 --weight-decay 0.01 --epochs 3 --batch-size 32 (--steps N overrides --epochs)
  --grad-accum N        micro-batches per optimizer step (effective batch = batch-size × N); default 1
  --warmup N|FRAC       warmup steps, or a fraction of all steps, rounded up (default 0); --schedule cosine|linear|constant (cosine)
  --max-grad-norm 1     global-norm clipping (0 = off)
  --eval-every N        validation every N steps (always at the end); --eval-batches N caps its batches
  --save-every N        checkpoint every N steps (always at the end); --resume continues the run in --out exactly
  AdamW as torch.optim.AdamW; weight decay on matrices and embeddings, not norms (as transformers' Trainer). With
  --grad-accum the loss is the mean over every target token of the effective batch (Trainer's num_items_in_batch).
  loss.csv, one row per optimizer step: step, epoch (0-based), loss (the objective α·KD + (1−α)·CE), kd (T²·KL at
  --temperature), ce, lr, grad_norm (before clipping), tokens (input tokens), skipped, val_ppl, val_kl (KL to the
  teacher at T = 1 on the validation rows); loss.svg plots the objective, the train CE and the validation CE.
  --threads N
${dataUsage}`;

export function lossFlag(v: Values): LossKind {
  const loss = (str(v, 'loss') ?? 'kl') as LossKind;
  if (!LOSS_KINDS.includes(loss)) throw new UsageError(`--loss must be one of ${LOSS_KINDS.join(', ')}, got ${loss}`);
  return loss;
}

function positive(v: Values, key: string, fallback?: number): number | undefined {
  const n = int(v, key, fallback);
  if (n !== undefined && n < 1) throw new UsageError(`--${key} must be at least 1`);
  return n;
}

export async function loadTrainingData(v: Values, tokenizer: Tokenizer): Promise<LoadedData> {
  const data = await loadData(dataFiles(v), tokenizer, dataOptionsFromValues(v));
  const s = data.stats;
  process.stderr.write(`data: ${s.rows.train} training rows (${humanCount(s.tokens.train)} tokens), ${s.rows.validation} validation rows` +
    `${s.empty + s.tooShort + s.noTargets ? `; dropped ${s.empty} empty, ${s.tooShort} too short, ${s.noTargets} without targets` : ''}\n`);
  return data;
}

/** Trainer options common to both commands, from the flags. */
export function commonTrainerOptions(v: Values, out: string): Omit<TrainerOptions, 'config' | 'weights' | 'train' | 'loss'> {
  const schedule = (str(v, 'schedule') ?? 'cosine') as TrainerOptions['schedule'];
  if (!['cosine', 'linear', 'constant'].includes(schedule!)) throw new UsageError(`--schedule must be cosine, linear or constant, got ${schedule}`);
  const atLeastZero = (key: string, fallback: number) => {
    const x = num(v, key, fallback)!;
    if (x < 0) throw new UsageError(`--${key} must be at least 0, got ${x}`);
    return x;
  };
  return {
    outDir: out,
    adamw: { ...DEFAULT_ADAMW, weightDecay: atLeastZero('weight-decay', 0.01), maxGradNorm: atLeastZero('max-grad-norm', 1) },
    lr: atLeastZero('lr', 5e-5), schedule, warmup: warmupFlag(v),
    epochs: positive(v, 'epochs', 3)!, maxSteps: positive(v, 'steps'), batchSize: positive(v, 'batch-size', 32)!,
    gradAccum: positive(v, 'grad-accum', 1), evalEvery: positive(v, 'eval-every'), evalBatches: positive(v, 'eval-batches'),
    saveEvery: positive(v, 'save-every'), resume: v.resume === true, seed: int(v, 'seed', 0)!, threads: threads(v),
  };
}

/** --warmup, checked by the trainer's own rule before anything loads. */
function warmupFlag(v: Values): number {
  const w = num(v, 'warmup', 0)!;
  try { warmupSteps(w, 1); } catch (e) { throw new UsageError(`--${(e as Error).message}`); }
  return w;
}

/** Refuses a --max-length the model cannot attend over (RoPE tables end at its context). */
export function checkMaxLength(v: Values, config: LlamaConfig): void {
  const maxLength = int(v, 'max-length', 128)!;
  if (maxLength > config.maxPositionEmbeddings) throw new UsageError(`--max-length ${maxLength} is longer than the model's context (${config.maxPositionEmbeddings})`);
}

function isLocalModel(spec: string): boolean {
  if (/^https?:\/\//.test(spec) || !existsSync(spec)) return false;
  return !statSync(spec).isDirectory() || existsSync(`${spec}/config.json`);
}

export const distill: Command = {
  summary: 'distill a teacher into a smaller student (KD + CE)',
  usage: `slimlm distill --teacher PATH|CACHE|URL --student CONFIG --data FILE... --out DIR [options]
  --teacher PATH|CACHE|URL  a model slimlm loads (HF folder, .safetensors, llama2.c .bin, .gguf via node-llama-cpp),
                        a teacher cache (slimlm teacher-cache), or an OpenAI-compatible server returning prompt logprobs
  --student CONFIG      JSON config file, or "hidden=512,layers=4,heads=8,kv-heads=4,ffn=1408"; default ≈1/10 of the
                        teacher's parameters. Vocabulary and BOS/EOS/PAD come from the teacher (cache/URL teachers: a JSON
                        config with model_type and vocab_size is required).
  --init fresh|teacher  fresh (HF init, default) or copy the teacher's tensors where shapes match
  --loss kl|rkl|jsd|ce  (default kl) --temperature 2 --alpha 0.5 (alpha·KD + (1−alpha)·CE) --jsd-beta 0.5
  --top-k K             sparse top-k teacher distributions (GGUF/remote teachers default to 64; tail handled as one bucket)
${teacherUsage}
${trainerUsage}`,
  options: {
    ...trainerOptions, teacher: { type: 'string' }, init: { type: 'string' }, loss: { type: 'string' }, temperature: { type: 'string' },
    alpha: { type: 'string' }, 'jsd-beta': { type: 'string' }, 'top-k': { type: 'string' }, ...teacherCliOptions,
  },
  async run(v) {
    const teacherSpec = str(v, 'teacher');
    const out = str(v, 'out');
    if (!teacherSpec) throw new UsageError('--teacher is required');
    if (!out) throw new UsageError('--out is required');
    const loss: LossOptions = {
      loss: lossFlag(v), temperature: num(v, 'temperature', 2)!, alpha: num(v, 'alpha', 0.5)!, jsdBeta: num(v, 'jsd-beta', 0.5)!, sparseTail: 'bucket',
    };
    if (!(loss.temperature > 0)) throw new UsageError('--temperature must be > 0');
    if (!(loss.alpha >= 0 && loss.alpha <= 1)) throw new UsageError('--alpha must be in [0, 1]');
    if (!(loss.jsdBeta > 0 && loss.jsdBeta < 1)) throw new UsageError('--jsd-beta must be in (0, 1)');
    const trainer = commonTrainerOptions(v, out); // every flag checked before the teacher and data load
    const access = teacherAccess(v);
    const remote = /^https?:\/\//.test(teacherSpec);
    if (!remote && !existsSync(teacherSpec)) throw new UsageError(`--teacher ${teacherSpec}: no such file or folder`);
    if (!remote) checkOutputPath(teacherSpec, out);
    const local = isLocalModel(teacherSpec);
    let teacherCkpt: Checkpoint | null = null;
    let teacher: Teacher | null = null;
    try {
      // A cache remembers its teacher: when that model is still here, its config and tokenizer serve as for a local teacher.
      const cachedFrom = !local && isTeacherCache(teacherSpec) ? readManifest(teacherSpec).teacher.replace(/ \(.*\)$/, '') : null; // 'PATH (in-process, …)'
      teacherCkpt = local ? openCheckpoint(teacherSpec) : cachedFrom && isLocalModel(cachedFrom) ? openCheckpoint(cachedFrom) : null;
      const tokenizerPath = str(v, 'tokenizer') ?? teacherCkpt?.tokenizerPath ?? null;
      if (!tokenizerPath) throw new UsageError('no tokenizer found next to the teacher; pass --tokenizer');
      const tokenizer = await AutoTokenizer.fromPretrained(tokenizerPath);
      const spec = str(v, 'student');
      let config: LlamaConfig;
      if (teacherCkpt) config = studentConfig(teacherCkpt.config, spec);
      else {
        const json = spec ? parseStudentSpec(spec).json : null;
        if (!json) throw new UsageError('a cache or remote teacher needs --student as a full JSON config (with vocab_size and model_type)');
        config = configFromHF(json, spec);
      }
      if (config.vocabSize !== tokenizer.vocabSize) throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) != student vocabulary (${config.vocabSize})`);
      checkMaxLength(v, teacherCkpt?.config ?? config);
      const topK = int(v, 'top-k');
      if (topK !== undefined && topK < 1) throw new UsageError('--top-k must be at least 1');
      if (topK !== undefined && !local && isTeacherCache(teacherSpec)) {
        throw new UsageError(`--top-k does not apply to a teacher cache: it holds the top-${readManifest(teacherSpec).k} it was built with`);
      }
      const data = await loadTrainingData(v, tokenizer);
      teacher = await openTeacher(teacherSpec, { topK, threads: threads(v), tokenizer, expectFingerprint: data.fingerprint, ...access });
      const seed = int(v, 'seed', 0)!;
      const weights = initStudentWeights(config, seed);
      const init = str(v, 'init') ?? 'fresh';
      if (init === 'teacher') {
        if (!teacherCkpt) throw new UsageError('--init teacher needs the teacher model on this machine');
        const copied = initFromTeacher(config, weights, teacherCkpt.config, (n) => toFloat32(teacherCkpt!.getTensor(n)));
        process.stderr.write(`init: ${copied.length} tensors copied from the teacher\n`);
      } else if (init !== 'fresh') throw new UsageError(`--init must be fresh or teacher, got ${init}`);
      const teacherParams = teacherCkpt ? ` (teacher ${humanCount(parameterCount(teacherCkpt.config))})` : '';
      process.stderr.write(`student: hidden ${config.hiddenSize}, ${config.numHiddenLayers} layers, ${config.numAttentionHeads}/${config.numKeyValueHeads} heads, ` +
        `ffn ${config.intermediateSize}: ${humanCount(parameterCount(config))} parameters${teacherParams}; teacher ${teacher.description}\n`);
      await runTraining({
        ...trainer, config, weights, train: data.train, validation: data.validation, teacher,
        runIdentity: { data: data.fingerprint, teacher: remote ? teacherSpec : resolve(teacherSpec), topK: topK ?? null, init },
        teacherKind: topK !== undefined || !local || /\.gguf$/i.test(teacherSpec) ? 'sparse' : 'dense', loss,
        extraFiles: tokenizerPath ? tokenizerFiles(tokenizerPath) : {},
      });
    } finally {
      await teacher?.close();
      teacherCkpt?.close();
    }
  },
};
