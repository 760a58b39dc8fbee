/**
 * Autoregressive generation over any CausalLM: one prefill forward for the prompt, then one token per step through the
 * KV cache, sampling in JS on the last position's logits. Options follow Hugging Face's GenerationConfig in camelCase.
 */
import { eosIds, type LlamaConfig } from '../models/config.js';
import type { CausalLM, ForwardResult, KVCache } from '../models/types.js';
import { createRng } from './rng.js';
import { Sampler, TokenHistory, type SamplingParams } from './sampling.js';
import { StopStringBuffer } from './stop.js';

export type FinishReason = 'stop' | 'length' | 'eos' | 'abort';

/** What generation needs from a tokenizer (a structural subset of src/tokenizers' Tokenizer). */
export interface GenerationTokenizer {
  readonly eosId: number | null;
  readonly padId?: number | null;
  /** Incremental decoder that never emits a partial UTF-8 character. */
  createStreamDecoder(opts?: { skipSpecialTokens?: boolean }): { push(id: number): string; flush(): string };
}

export interface GenerateOptions {
  /** Tokens to generate at most (default 256). Generation also stops when prompt + output reach the context length. */
  maxNewTokens?: number;
  /** false: greedy. Default: true when temperature > 0, topK, topP or minP is given, else false (greedy, as in HF). */
  doSample?: boolean;
  /** Default 1 when sampling; 0 means greedy. */
  temperature?: number;
  /** Keep the k most likely tokens; HF's default 50 when sampling; 0 = off. */
  topK?: number;
  /** Nucleus sampling in (0, 1]; 1 = off (default). */
  topP?: number;
  /** Drop tokens less likely than minP × the top token, in [0, 1]; 0 = off (default). */
  minP?: number;
  /** CTRL/HF repetition penalty over prompt + output, > 0; 1 = off (default). */
  repetitionPenalty?: number;
  /** Integer seed for reproducible sampling; batch row i uses seed + i. Omitted: seeded from Math.random. */
  seed?: number;
  /** Stop when the decoded output contains one of these (needs `tokenizer`); the stop string is not returned. */
  stopStrings?: string[];
  /** End-of-sequence ids. Default: the config's eos_token_id(s) plus the tokenizer's eosId. [] disables EOS. */
  eosTokenIds?: number[];
  signal?: AbortSignal;
  /** Enables `text`, `onText` streaming and stop strings. */
  tokenizer?: GenerationTokenizer;
  /** Passed to the stream decoder (default true). */
  skipSpecialTokens?: boolean;
}

/**
 * A stream decoder that has already seen the prompt, so the continuation decodes as it does inside the whole text
 * (SentencePiece drops the leading space of the first piece only at the start of a sequence).
 */
function primedDecoder(tokenizer: GenerationTokenizer, prompt: number[], skipSpecialTokens: boolean) {
  const decoder = tokenizer.createStreamDecoder({ skipSpecialTokens });
  for (const id of prompt) decoder.push(id);
  return decoder;
}

export interface GenerateCallbacks {
  /** Every generated token, EOS included; `row` is the prompt's index (0 for `generate`). */
  onToken?(id: number, row: number): void;
  /** Newly decoded text: whole characters only, never part of a stop string. */
  onText?(delta: string, row: number): void;
}

export interface GenerationTimings {
  /** The prompt's forward pass. */
  prefillMs: number;
  /** From the first token to the end. */
  decodeMs: number;
  /** From the call to the first sampled token (0 if none). */
  firstTokenMs: number;
  /** Decode rate: tokens after the first (all rows) per second of decodeMs (0 if none). */
  tokensPerSecond: number;
}

export interface GenerateResult {
  /** Generated ids, including the EOS or the token completing a stop string. */
  tokens: number[];
  /** Decoded output without the stop string (only with a tokenizer). */
  text?: string;
  finishReason: FinishReason;
  /** The stop string that ended generation, when finishReason is 'stop'. */
  stopString?: string;
  /** Shared by all rows of a batch. */
  timings: GenerationTimings;
}

export interface ResolvedGenerationOptions {
  maxNewTokens: number;
  sampling: SamplingParams;
  seed: number | undefined;
  stopStrings: string[];
  eosTokenIds: number[];
  skipSpecialTokens: boolean;
}

const DEFAULT_MAX_NEW_TOKENS = 256;
const HF_DEFAULT_TOP_K = 50;

/** Validates options against the model config and fills in defaults; throws a clear Error on bad values. */
export function resolveGenerationOptions(options: GenerateOptions, config: LlamaConfig): ResolvedGenerationOptions {
  if (options === null || typeof options !== 'object') throw new Error('generate: options must be an object');
  const o = options;
  const fail = (name: string, rule: string, v: unknown): never => {
    throw new Error(`generate: ${name} must be ${rule}, got ${JSON.stringify(v) ?? String(v)}`);
  };
  const num = (name: string, v: unknown, ok: (x: number) => boolean, rule: string): void => {
    if (v !== undefined && (typeof v !== 'number' || Number.isNaN(v) || !ok(v))) fail(name, rule, v);
  };
  num('maxNewTokens', o.maxNewTokens, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
  num('temperature', o.temperature, (x) => Number.isFinite(x) && x >= 0, 'a finite number >= 0');
  num('topK', o.topK, (x) => Number.isInteger(x) && x >= 0, 'an integer >= 0');
  num('topP', o.topP, (x) => x > 0 && x <= 1, 'in (0, 1]');
  num('minP', o.minP, (x) => x >= 0 && x <= 1, 'in [0, 1]');
  num('repetitionPenalty', o.repetitionPenalty, (x) => Number.isFinite(x) && x > 0, 'a finite number > 0');
  num('seed', o.seed, Number.isSafeInteger, 'a safe integer');
  if (o.doSample !== undefined && typeof o.doSample !== 'boolean') fail('doSample', 'a boolean', o.doSample);
  if (o.stopStrings !== undefined) {
    if (!Array.isArray(o.stopStrings) || o.stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) {
      fail('stopStrings', 'an array of non-empty strings', o.stopStrings);
    }
    if (o.stopStrings.length > 0 && !o.tokenizer) throw new Error('generate: stopStrings need a tokenizer (options.tokenizer) to decode the output');
  }
  if (o.eosTokenIds !== undefined) {
    if (!Array.isArray(o.eosTokenIds) || o.eosTokenIds.some((id) => !Number.isInteger(id) || id < 0 || id >= config.vocabSize)) {
      fail('eosTokenIds', `an array of token ids in [0, ${config.vocabSize})`, o.eosTokenIds);
    }
  }
  if (o.signal !== undefined && typeof (o.signal as { aborted?: unknown } | null)?.aborted !== 'boolean') fail('signal', 'an AbortSignal', o.signal);

  const impliedSampling = (o.temperature !== undefined && o.temperature > 0) || o.topK !== undefined || o.topP !== undefined || o.minP !== undefined;
  const doSample = o.doSample ?? impliedSampling;
  const eos = o.eosTokenIds ?? [...new Set([...eosIds(config), ...(o.tokenizer?.eosId != null ? [o.tokenizer.eosId] : [])])];
  return {
    maxNewTokens: o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS,
    sampling: {
      doSample,
      temperature: o.temperature ?? 1,
      topK: o.topK ?? HF_DEFAULT_TOP_K,
      topP: o.topP ?? 1,
      minP: o.minP ?? 0,
      repetitionPenalty: o.repetitionPenalty ?? 1,
    },
    seed: o.seed,
    stopStrings: o.stopStrings ?? [],
    eosTokenIds: eos,
    skipSpecialTokens: o.skipSpecialTokens ?? true,
  };
}

/** Generates a continuation of one prompt. */
export async function generate(
  model: CausalLM,
  promptIds: number[],
  options: GenerateOptions = {},
  callbacks: GenerateCallbacks = {},
): Promise<GenerateResult> {
  const [result] = await runBatch(model, [promptIds], options, callbacks);
  return result;
}

/**
 * Generates continuations of several prompts together: rows are left-padded (masked) and each stops on its own.
 * Finished rows are dropped with model.selectCacheRows when the model has it, otherwise fed a masked pad token.
 * Greedy row i equals generate(prompts[i]); sampled row i equals generate(prompts[i], {seed: seed + i}).
 */
export async function generateBatch(
  model: CausalLM,
  prompts: number[][],
  options: GenerateOptions = {},
  callbacks: GenerateCallbacks = {},
): Promise<GenerateResult[]> {
  if (!Array.isArray(prompts) || prompts.length === 0) throw new Error('generateBatch: prompts must be a non-empty array of token id arrays');
  return runBatch(model, prompts, options, callbacks);
}

interface Row {
  prompt: number[];
  tokens: number[];
  history: TokenHistory | undefined;
  sampler: Sampler;
  decoder: { push(id: number): string; flush(): string } | undefined;
  stop: StopStringBuffer | undefined;
  text: string;
  finish: FinishReason | null;
}

async function runBatch(model: CausalLM, prompts: number[][], options: GenerateOptions, callbacks: GenerateCallbacks): Promise<GenerateResult[]> {
  const start = performance.now();
  const config = model.config;
  const o = resolveGenerationOptions(options, config);
  const vocab = config.vocabSize;
  const maxPos = config.maxPositionEmbeddings;
  prompts.forEach((p, r) => {
    const where = prompts.length > 1 ? ` ${r}` : '';
    if (!Array.isArray(p) || p.length === 0) throw new Error(`generate: prompt${where} must be a non-empty array of token ids`);
    const bad = p.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) throw new Error(`generate: prompt${where} holds ${bad}, not a token id in [0, ${vocab})`);
    if (p.length > maxPos) throw new Error(`generate: prompt${where} has ${p.length} tokens, more than the model's context length ${maxPos}`);
  });
  if (o.seed !== undefined && !Number.isSafeInteger(o.seed + prompts.length - 1)) throw new Error('generate: seed + batch size must stay a safe integer');

  const tokenizer = options.tokenizer;
  const eos = new Set(o.eosTokenIds);
  const pad = config.padTokenId ?? tokenizer?.padId ?? o.eosTokenIds[0] ?? 0;
  const rows: Row[] = prompts.map((prompt, r) => ({
    prompt,
    tokens: [],
    history: o.sampling.repetitionPenalty !== 1 ? new TokenHistory(prompt) : undefined,
    sampler: new Sampler(vocab, o.sampling, createRng(o.seed === undefined ? undefined : o.seed + r)),
    decoder: tokenizer && primedDecoder(tokenizer, prompt, o.skipSpecialTokens),
    stop: o.stopStrings.length > 0 ? new StopStringBuffer(o.stopStrings) : undefined,
    text: '',
    finish: null,
  }));

  const emit = (row: Row, r: number, text: string): void => {
    if (!text) return;
    row.text += text;
    callbacks.onText?.(text, r);
  };
  const finish = (row: Row, r: number, reason: FinishReason): void => {
    row.finish = reason;
    if (!row.decoder || reason === 'stop') return;
    const tail = row.decoder.flush();
    const held = row.stop ? row.stop.push(tail) : { text: tail, stopped: false };
    emit(row, r, held.text);
    if (held.stopped) row.finish = 'stop';
    else if (row.stop) emit(row, r, row.stop.flush());
  };
  const accept = (row: Row, r: number, id: number): void => {
    row.tokens.push(id);
    row.history?.add(id);
    callbacks.onToken?.(id, r);
    if (eos.has(id)) return finish(row, r, 'eos');
    if (row.decoder) {
      const piece = row.decoder.push(id);
      const out = row.stop ? row.stop.push(piece) : { text: piece, stopped: false };
      emit(row, r, out.text);
      if (out.stopped) return finish(row, r, 'stop');
    }
    if (row.tokens.length >= o.maxNewTokens || row.prompt.length + row.tokens.length >= maxPos) finish(row, r, 'length');
  };
  const abortRest = (): void => rows.forEach((row, r) => row.finish ?? finish(row, r, 'abort'));
  const aborted = (): boolean => options.signal?.aborted === true;

  let prefillMs = 0;
  let firstTokenAt = -1;
  rows.forEach((row, r) => {
    if (o.maxNewTokens === 0 || row.prompt.length >= maxPos) finish(row, r, 'length');
  });
  if (aborted()) abortRest();

  // `active` maps model batch rows to prompt rows; masks are the full [past + seq] attention mask per batch row.
  let active = rows.flatMap((row, r) => (row.finish ? [] : [r]));
  if (active.length > 0) {
    const width = Math.max(...active.map((r) => rows[r].prompt.length));
    const masks = active.map((r) => padLeft(rows[r].prompt.map(() => 1), width, 0));
    let masked = masks.some((m) => m[0] === 0);
    const t = performance.now();
    let res = await model.forward({
      inputIds: active.map((r) => padLeft(rows[r].prompt, width, pad)),
      attentionMask: masked ? masks : undefined,
      allLogits: false,
      reserve: Math.min(width + o.maxNewTokens, maxPos), // the cache's room for the whole generation, allocated once
    });
    prefillMs = performance.now() - t;
    let cache: KVCache = res.cache;
    for (;;) {
      if (aborted()) {
        abortRest();
        break;
      }
      const seq = checkLogits(res, active.length, vocab);
      for (let i = 0; i < active.length; i++) {
        const row = rows[active[i]];
        if (row.finish) continue;
        const offset = (i * seq + seq - 1) * vocab;
        accept(row, active[i], row.sampler.sample(res.logits.subarray(offset, offset + vocab), row.history));
      }
      if (firstTokenAt < 0) firstTokenAt = performance.now();
      if (rows.every((row) => row.finish)) break;
      if (aborted()) {
        abortRest();
        break;
      }
      if (model.selectCacheRows && active.some((r) => rows[r].finish)) {
        const keep = active.flatMap((r, i) => (rows[r].finish ? [] : [i]));
        cache = model.selectCacheRows(cache, keep);
        active = keep.map((i) => active[i]);
        keep.forEach((k, i) => (masks[i] = masks[k]));
        masks.length = keep.length;
      }
      const inputIds = active.map((r) => [rows[r].finish ? pad : rows[r].tokens[rows[r].tokens.length - 1]]);
      active.forEach((r, i) => masks[i].push(rows[r].finish ? 0 : 1));
      masked ||= active.some((r) => rows[r].finish);
      res = await model.forward({ inputIds, attentionMask: masked ? masks : undefined, cache });
      cache = res.cache;
    }
  }

  const end = performance.now();
  const firstTokens = rows.filter((row) => row.tokens.length > 0).length;
  const decodeTokens = rows.reduce((n, row) => n + row.tokens.length, 0) - firstTokens;
  const decodeMs = firstTokenAt < 0 ? 0 : end - firstTokenAt;
  const timings: GenerationTimings = {
    prefillMs,
    decodeMs,
    firstTokenMs: firstTokenAt < 0 ? 0 : firstTokenAt - start,
    tokensPerSecond: decodeMs > 0 ? (decodeTokens * 1000) / decodeMs : 0,
  };
  return rows.map((row) => ({
    tokens: row.tokens,
    ...(tokenizer ? { text: row.text } : {}),
    finishReason: row.finish!,
    ...(row.finish === 'stop' && row.stop?.stopString ? { stopString: row.stop.stopString } : {}),
    timings,
  }));
}

function padLeft<T>(xs: T[], width: number, fill: T): T[] {
  return xs.length >= width ? xs.slice() : [...new Array<T>(width - xs.length).fill(fill), ...xs];
}

/** Returns the sequence length of a [batch, S, vocab] logits result. */
function checkLogits(res: ForwardResult, batch: number, vocab: number): number {
  const [b, s, v] = res.dims;
  if (b !== batch || v !== vocab || s < 1 || res.logits.length !== b * s * v) {
    throw new Error(`model returned logits [${res.dims}] (${res.logits.length} values), expected [${batch}, S, ${vocab}]`);
  }
  return s;
}
