/**
 * The OpenAI request surface (https://platform.openai.com/docs/api-reference/chat/create, …/completions/create):
 * request validation with OpenAI-style errors `{error: {message, type, param, code}}`. Fields slimlm cannot honour
 * (n > 1, logprobs, tools, suffix, echo) are refused rather than silently ignored; pure hints (user, penalties of 0) pass.
 * Sampling extensions that vLLM and llama.cpp's server accept are honoured: top_k (-1 or 0 = off), min_p, repetition_penalty.
 */
import type { ChatMessage } from '../chat/index.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface ParsedRequest {
  model: string;
  /** Chat completions. */
  messages?: ChatMessage[];
  /** Completions: text, or token ids. */
  prompt?: string | number[];
  stream: boolean;
  includeUsage: boolean;
  maxTokens: number | undefined;
  temperature: number;
  topP: number;
  /** 0 = off. */
  topK: number;
  minP: number;
  repetitionPenalty: number;
  stop: string[];
  seed: number | undefined;
}

type Json = Record<string, unknown>;

const bad = (message: string, param: string | null, code: string | null = null) => new ApiError(400, message, 'invalid_request_error', param, code);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

function checkObject(body: unknown): Json {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad(`the request body must be a JSON object, got ${describe(body)}`, null);
  return body as Json;
}

function optional<T>(b: Json, key: string, check: (v: unknown) => v is T, rule: string): T | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (!check(v)) throw bad(`'${key}' must be ${rule}, got ${describe(v)}`, key, 'invalid_type');
  return v;
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isString = (v: unknown): v is string => typeof v === 'string';

function parseCommon(b: Json): Omit<ParsedRequest, 'messages' | 'prompt'> {
  const model = b.model;
  if (model === undefined) throw bad('you must provide a model parameter', 'model', 'missing_required_parameter');
  if (!isString(model)) throw bad(`'model' must be a string, got ${describe(model)}`, 'model', 'invalid_type');

  const n = optional(b, 'n', isInt, 'an integer');
  if (n !== undefined && n !== 1) throw bad(`only n=1 is supported, got ${n}`, 'n', 'unsupported_value');
  for (const key of ['logprobs', 'top_logprobs', 'tools', 'functions', 'suffix', 'echo', 'best_of', 'logit_bias']) {
    const v = b[key];
    const harmless = v === undefined || v === null || v === false || (key === 'best_of' && v === 1) || (Array.isArray(v) && v.length === 0)
      || (key === 'logit_bias' && typeof v === 'object' && Object.keys(v as Json).length === 0);
    if (!harmless) throw bad(`'${key}' is not supported by this server`, key, 'unsupported_parameter');
  }
  for (const key of ['presence_penalty', 'frequency_penalty']) {
    const v = optional(b, key, isNumber, 'a number');
    if (v !== undefined && v !== 0) throw bad(`'${key}' is not supported by this server (use 0)`, key, 'unsupported_parameter');
  }
  const rf = b.response_format as Json | undefined | null;
  if (rf !== undefined && rf !== null && (typeof rf !== 'object' || rf.type !== 'text')) throw bad("only response_format {type: 'text'} is supported", 'response_format', 'unsupported_parameter');

  const stream = optional(b, 'stream', isBool, 'a boolean') ?? false;
  const so = optional(b, 'stream_options', (v): v is Json => typeof v === 'object' && !Array.isArray(v), 'an object');
  const includeUsage = so ? optional(so, 'include_usage', isBool, 'a boolean') ?? false : false;

  const maxTokens = optional(b, 'max_completion_tokens', isInt, 'an integer') ?? optional(b, 'max_tokens', isInt, 'an integer');
  const maxKey = b.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  if (maxTokens !== undefined && maxTokens < 1) throw bad(`'${maxKey}' must be at least 1, got ${maxTokens}`, maxKey, 'invalid_value');

  const temperature = optional(b, 'temperature', isNumber, 'a number') ?? 1;
  if (temperature < 0 || temperature > 2) throw bad(`'temperature' must be in [0, 2], got ${temperature}`, 'temperature', 'invalid_value');
  const topP = optional(b, 'top_p', isNumber, 'a number') ?? 1;
  if (topP < 0 || topP > 1) throw bad(`'top_p' must be in [0, 1], got ${topP}`, 'top_p', 'invalid_value');
  const seed = optional(b, 'seed', isInt, 'an integer');
  const topK = optional(b, 'top_k', isInt, 'an integer') ?? 0;
  if (topK < -1) throw bad(`'top_k' must be -1 (off), 0 (off) or positive, got ${topK}`, 'top_k', 'invalid_value');
  const minP = optional(b, 'min_p', isNumber, 'a number') ?? 0;
  if (minP < 0 || minP > 1) throw bad(`'min_p' must be in [0, 1], got ${minP}`, 'min_p', 'invalid_value');
  const repetitionPenalty = optional(b, 'repetition_penalty', isNumber, 'a number') ?? 1;
  if (!(repetitionPenalty > 0)) throw bad(`'repetition_penalty' must be > 0, got ${repetitionPenalty}`, 'repetition_penalty', 'invalid_value');

  let stop: string[] = [];
  const s = b.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) stop = s as string[];
  else if (s !== undefined && s !== null) throw bad(`'stop' must be a string or an array of strings, got ${describe(s)}`, 'stop', 'invalid_type');
  if (stop.length > 4 || stop.some((x) => typeof x !== 'string' || x.length === 0)) throw bad("'stop' must hold at most 4 non-empty strings", 'stop', 'invalid_value');

  return { model, stream, includeUsage, maxTokens, temperature, topP, topK: Math.max(0, topK), minP, repetitionPenalty, stop, seed };
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant']);

function messageText(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (content === null || content === undefined) return '';
  if (Array.isArray(content)) {
    return content.map((part, j) => {
      const p = part as Json;
      if (p === null || typeof p !== 'object' || p.type !== 'text' || typeof p.text !== 'string') {
        throw bad(`messages[${i}].content[${j}] must be a text part {type: 'text', text}; other parts are not supported`, `messages[${i}].content[${j}]`, 'invalid_type');
      }
      return p.text;
    }).join('');
  }
  throw bad(`messages[${i}].content must be a string or an array of text parts, got ${describe(content)}`, `messages[${i}].content`, 'invalid_type');
}

export function parseChatRequest(body: unknown): ParsedRequest {
  const b = checkObject(body);
  const common = parseCommon(b);
  const raw = b.messages;
  if (raw === undefined) throw bad('you must provide a messages parameter', 'messages', 'missing_required_parameter');
  if (!Array.isArray(raw)) throw bad(`'messages' must be an array, got ${describe(raw)}`, 'messages', 'invalid_type');
  if (raw.length === 0) throw bad("'messages' must not be empty", 'messages', 'invalid_value');
  const messages = raw.map((m, i): ChatMessage => {
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw bad(`messages[${i}] must be an object, got ${describe(m)}`, `messages[${i}]`, 'invalid_type');
    const { role, content } = m as Json;
    if (typeof role !== 'string' || !ROLES.has(role)) {
      throw bad(`messages[${i}].role must be one of system, developer, user, assistant; got ${describe(role)}`, `messages[${i}].role`, 'invalid_value');
    }
    if ((m as Json).tool_calls !== undefined) throw bad('tool calls are not supported by this server', `messages[${i}].tool_calls`, 'unsupported_parameter');
    // OpenAI's "developer" role is the newer name of "system".
    return { role: role === 'developer' ? 'system' : role, content: messageText(content, i) };
  });
  return { ...common, messages };
}

export function parseCompletionRequest(body: unknown): ParsedRequest {
  const b = checkObject(body);
  const common = parseCommon(b);
  let p = b.prompt;
  if (p === undefined) throw bad('you must provide a prompt parameter', 'prompt', 'missing_required_parameter');
  // A batch of one prompt is that prompt; several need n prompts' worth of choices, which we do not return.
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') return { ...common, prompt: p };
  if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x))) return { ...common, prompt: p as number[] };
  if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === 'string')) throw bad('only one prompt per request is supported', 'prompt', 'unsupported_value');
  throw bad(`'prompt' must be a string or an array of token ids, got ${describe(p)}`, 'prompt', 'invalid_type');
}
