// Child process of the SIGKILL/resume test: a tiny distillation run that prints "step N loss L" per step and the final loss.
import { runTraining } from '../src/distill/trainer.js';
import { initStudentWeights } from '../src/distill/student.js';
import { DEFAULT_LOSS } from '../src/distill/losses.js';
import { DEFAULT_ADAMW } from '../src/distill/optimizer.js';
import { BigramTeacher, dataset, markovRows, TINY } from './train-helpers.js';

const [outDir, resume, delay] = process.argv.slice(2);
const result = await runTraining({
  outDir, config: TINY, weights: initStudentWeights(TINY, 3), train: dataset(markovRows(40, TINY.vocabSize, 11)),
  teacher: new BigramTeacher(TINY.vocabSize, 7, { delayMs: Number(delay) }), loss: DEFAULT_LOSS, adamw: DEFAULT_ADAMW,
  lr: 3e-3, warmup: 2, epochs: 2, batchSize: 4, gradAccum: 2, saveEvery: 3, resume: resume === 'resume', seed: 5, threads: 1,
  log: () => {}, onStep: (r) => process.stdout.write(`step ${r.step} loss ${r.loss}\n`),
});
process.stdout.write(`final ${result.finalLoss}\n`);
