import { resolve } from 'node:path';
import { AutoTokenizer } from '../../api.js';
import { describeStats, loadData } from '../../data/index.js';
import { buildTeacherCache, openTeacher, vocabularyHash } from '../../distill/teachers/index.js';
import { humanBytes, humanCount, int, str, threads, threadsOption, UsageError, type Command } from '../common.js';
import { dataCliOptions, dataFiles, dataOptionsFromValues, dataUsage, teacherAccess, teacherCliOptions, teacherUsage } from '../dataOptions.js';
import { progressBar } from '../progress.js';

export const teacherCache: Command = {
  summary: "write a teacher's top-k log-probabilities for a dataset to a sharded, resumable cache",
  usage: `slimlm teacher-cache --teacher MODEL|URL --data FILE... --out DIR [--top-k 64] [options]
  MODEL: HF folder, .safetensors, llama2.c .bin or .gguf (node-llama-cpp; --gguf-engine slimlm to run it in slimlm);
  URL: an OpenAI-compatible server with prompt logprobs (see teacher access below; --model NAME = --teacher-model).
  --tokenizer PATH     the tokenizer for the data (default: the one beside MODEL; required with a URL)
  --batch-size B       rows per teacher call (default 8)      --logprobs f16|f32 (default f16)
  --shard-rows N       rows per shard (default ≈64 MiB)        --threads N
  A killed run continues from its last complete shard when run again with the same options.
${teacherUsage}
${dataUsage}`,
  options: {
    teacher: { type: 'string' }, out: { type: 'string' }, 'top-k': { type: 'string' }, tokenizer: { type: 'string' },
    'batch-size': { type: 'string' }, logprobs: { type: 'string' }, 'shard-rows': { type: 'string' },
    model: { type: 'string' }, ...teacherCliOptions, ...threadsOption, ...dataCliOptions,
  },
  positionals: true,
  async run(v, positionals) {
    const teacherSpec = str(v, 'teacher');
    const out = str(v, 'out');
    if (!teacherSpec) throw new UsageError('--teacher is required');
    if (!out) throw new UsageError('--out DIR is required');
    const files = dataFiles(v, positionals);
    const k = int(v, 'top-k', 64)!;
    const batchSize = int(v, 'batch-size', 8)!;
    if (k < 1) throw new UsageError('--top-k must be at least 1');
    if (batchSize < 1) throw new UsageError('--batch-size must be at least 1');
    const shardRows = int(v, 'shard-rows');
    if (shardRows !== undefined && shardRows < 1) throw new UsageError('--shard-rows must be at least 1');
    const logprobType = str(v, 'logprobs') ?? 'f16';
    if (logprobType !== 'f16' && logprobType !== 'f32') throw new UsageError('--logprobs must be f16 or f32');
    const access = teacherAccess(v);
    const isUrl = /^https?:\/\//.test(teacherSpec);
    const tokenizerPath = str(v, 'tokenizer') ?? (isUrl ? undefined : teacherSpec);
    if (!tokenizerPath) throw new UsageError('--tokenizer is required with a remote teacher');

    const tokenizer = await AutoTokenizer.fromPretrained(tokenizerPath);
    const dataOptions = dataOptionsFromValues(v);
    const data = await loadData(files, tokenizer, dataOptions);
    process.stderr.write(`data: ${describeStats(data.stats)}\n`);
    const rows = [...data.train.rows, ...(data.validation?.rows ?? [])];

    // A local teacher is recorded by absolute path: `distill --teacher CACHE` finds its config and tokenizer from anywhere.
    const teacher = await openTeacher(isUrl ? teacherSpec : resolve(teacherSpec), {
      topK: k, threads: threads(v), tokenizer, ...access,
    });
    try {
      process.stderr.write(`teacher: ${teacher.description}, vocabulary ${teacher.vocabSize}\n`);
      const bar = progressBar('teacher-cache', rows.length, 'rows');
      let last = 0;
      const result = await buildTeacherCache({
        teacher, rows, fingerprint: data.fingerprint, out, k, batchSize, logprobType,
        padId: tokenizer.padId ?? tokenizer.eosId ?? 0, tokenizerHash: vocabularyHash(tokenizer),
        shardRows, dataOptions: { files, ...dataOptions, chatTemplate: dataOptions.chatTemplate ? '(file)' : undefined },
        onProgress(done, _total, positions) { bar.tick(done - last, `${humanCount(positions)} tokens`); last = done; },
      });
      bar.done();
      const m = result.manifest;
      const bytes = m.shards.reduce((n, s) => n + s.bytes, 0);
      if (result.resumedFromRow > 0) process.stderr.write(`resumed at row ${result.resumedFromRow}\n`);
      process.stdout.write(`${out}: ${m.data.rows} rows, ${m.data.positions} positions, top-${m.k} ${m.logprobType}, ${m.shards.length} shard(s), ${humanBytes(bytes)}; fingerprint ${m.data.fingerprint}\n`);
    } finally {
      await teacher.close();
    }
  },
};
