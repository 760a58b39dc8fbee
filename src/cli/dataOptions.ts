/**
 * Data flags shared by every command that reads a dataset (`teacher-cache`, `distill`, `train`): the same flags give the
 * same rows, which is what lets `distill` find its rows in a teacher cache.
 */
import { readFileSync } from 'node:fs';
import type { DataOptions } from '../data/index.js';
import { int, num, str, UsageError, type Values } from './common.js';

export const dataCliOptions = {
  data: { type: 'string', multiple: true },
  'max-length': { type: 'string' },
  packing: { type: 'boolean' },
  truncation: { type: 'string' },
  padding: { type: 'string' },
  'text-unit': { type: 'string' },
  'text-field': { type: 'string' },
  'messages-field': { type: 'string' },
  'prompt-field': { type: 'string' },
  'response-field': { type: 'string' },
  'system-prompt': { type: 'string' },
  'mask-prompt': { type: 'boolean' },
  'no-mask-prompt': { type: 'boolean' },
  'chat-template': { type: 'string' },
  'min-tokens': { type: 'string' },
  validation: { type: 'string' },
  seed: { type: 'string' },
} as const;

export const dataUsage = `data (the same flags must be given to teacher-cache and distill):
  --data FILE           repeatable (or comma-separated): .txt/.raw (line or document), .jsonl/.json, .csv/.tsv (header row), .parquet
  --text-unit line|document   plain text: one example per line (default) or per blank-line-separated document
  --text-field F | --messages-field F | --prompt-field F --response-field F
                        which column to read (default: text, messages, or the first of Q/A, question/answer, prompt/completion, ...)
  --system-prompt S     system message for prompt/response rows
  --mask-prompt | --no-mask-prompt   loss only on assistant turns (default: on for prompt/response rows, off for messages)
  --chat-template FILE  Jinja chat template (default: the tokenizer's, else Mistral's [INST] q [/INST] a</s>)
  --max-length N        tokens per row (default 128)   --packing   concatenate documents into full rows
  --truncation right|left|drop   --padding longest|max_length   --min-tokens N (default 2)
  --validation F|N      validation share: a fraction or a number of examples (default 0.05)   --seed S (default 0)`;

export function dataFiles(v: Values, positionals: string[] = []): string[] {
  const raw = v.data;
  const list = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).filter((x): x is string => typeof x === 'string');
  const files = [...list.flatMap((s) => s.split(',')), ...positionals].map((s) => s.trim()).filter(Boolean);
  if (files.length === 0) throw new UsageError('--data FILE is required');
  return files;
}

function oneOf<T extends string>(v: Values, key: string, allowed: readonly T[]): T | undefined {
  const s = str(v, key);
  if (s === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(s)) throw new UsageError(`--${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(s)}`);
  return s as T;
}

export function dataOptionsFromValues(v: Values): DataOptions {
  if (v['mask-prompt'] && v['no-mask-prompt']) throw new UsageError('give --mask-prompt or --no-mask-prompt, not both');
  const templateFile = str(v, 'chat-template');
  const o: DataOptions = {
    maxLength: int(v, 'max-length', 128),
    packing: v.packing === true,
    truncation: oneOf(v, 'truncation', ['right', 'left', 'drop'] as const),
    padding: oneOf(v, 'padding', ['longest', 'max_length'] as const),
    textUnit: oneOf(v, 'text-unit', ['line', 'document'] as const),
    textField: str(v, 'text-field'),
    messagesField: str(v, 'messages-field'),
    promptField: str(v, 'prompt-field'),
    responseField: str(v, 'response-field'),
    systemPrompt: str(v, 'system-prompt'),
    maskPrompt: v['mask-prompt'] ? true : v['no-mask-prompt'] ? false : undefined,
    chatTemplate: templateFile === undefined ? undefined : readFileSync(templateFile, 'utf8'),
    minTokens: int(v, 'min-tokens'),
    validation: num(v, 'validation', 0.05),
    seed: int(v, 'seed', 0),
  };
  if (o.maxLength! < 2) throw new UsageError('--max-length must be at least 2');
  if (o.minTokens !== undefined && o.minTokens < 0) throw new UsageError('--min-tokens must be at least 0');
  return Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) as DataOptions;
}

/** Flags that say how to reach a teacher: shared by `teacher-cache` and `distill`. */
export const teacherCliOptions = {
  api: { type: 'string' }, 'teacher-model': { type: 'string' }, 'api-key': { type: 'string' }, timeout: { type: 'string' }, 'gguf-engine': { type: 'string' },
} as const;

export const teacherUsage = `teacher access:
  --api vllm|openai-echo|llama.cpp   remote API (default: detected)   --teacher-model NAME   the served model's name
  --api-key KEY        bearer key for the server (or SLIMLM_TEACHER_API_KEY)   --timeout SECONDS   per request (default 600)
  --gguf-engine llama.cpp|slimlm     run a .gguf teacher in node-llama-cpp (default) or in slimlm`;

/** The openTeacher options those flags give. */
export function teacherAccess(v: Values): { api?: 'vllm' | 'openai-echo' | 'llama.cpp' | 'auto'; model?: string; apiKey?: string; timeoutMs?: number; ggufEngine?: 'llama.cpp' | 'slimlm' } {
  const api = str(v, 'api');
  if (api !== undefined && !['vllm', 'openai-echo', 'llama.cpp', 'auto'].includes(api)) throw new UsageError('--api must be vllm, openai-echo or llama.cpp');
  const engine = str(v, 'gguf-engine');
  if (engine !== undefined && engine !== 'llama.cpp' && engine !== 'slimlm') throw new UsageError('--gguf-engine must be llama.cpp or slimlm');
  const timeout = num(v, 'timeout');
  if (timeout !== undefined && !(timeout > 0)) throw new UsageError('--timeout must be a positive number of seconds');
  return {
    api: api as 'vllm' | undefined, model: str(v, 'teacher-model') ?? str(v, 'model'), apiKey: str(v, 'api-key') ?? process.env.SLIMLM_TEACHER_API_KEY,
    timeoutMs: timeout === undefined ? undefined : timeout * 1000, ggufEngine: engine as 'slimlm' | undefined,
  };
}
