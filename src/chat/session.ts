/**
 * A multi-turn conversation with a local model: the history is rendered with the chat template and kept inside the
 * context window (oldest turns dropped first, then the start of an over-long message), so a long chat never fails.
 */
import { generate, type GenerateOptions, type GenerateResult } from '../generate/index.js';
import { eosIds, type LlamaConfig } from '../models/config.js';
import type { CausalLM } from '../models/types.js';
import type { Tokenizer } from '../tokenizers/index.js';
import type { ChatFormat, ChatMessage } from './template.js';

export interface ChatSessionOptions {
  /** Tokens per reply at most (default 256). */
  maxNewTokens?: number;
  /** Positions used, prompt + reply (default and maximum: the model's context length). */
  contextLength?: number;
  /** Sampling and other generation options (maxNewTokens, tokenizer and EOS are set by the session). */
  generation?: Omit<GenerateOptions, 'maxNewTokens' | 'tokenizer' | 'signal'>;
  system?: string;
}

export interface ChatReply {
  text: string;
  result: GenerateResult;
  promptTokens: number;
  /** Earlier turns (user + assistant messages) dropped from the history to fit this one. */
  droppedMessages: number;
  /** Characters cut from the start of the user's message because it alone did not fit. */
  truncatedChars: number;
}

/**
 * The ids that end a reply: the model config's EOS id(s), the tokenizer's EOS, and with a chat format the special tokens
 * that close its turns (e.g. <|im_end|>), without repeats.
 */
export function replyEndIds(config: LlamaConfig, tokenizer: { eosId: number | null }, format?: { endTokenIds: number[] } | null): number[] {
  return [...new Set([...eosIds(config), ...(tokenizer.eosId !== null ? [tokenizer.eosId] : []), ...(format?.endTokenIds ?? [])])];
}

export class ChatSession {
  system: string | undefined;
  private turns: ChatMessage[] = [];
  readonly contextLength: number;
  readonly maxNewTokens: number;

  constructor(private readonly model: CausalLM, private readonly tokenizer: Tokenizer, readonly format: ChatFormat, private readonly opts: ChatSessionOptions = {}) {
    const maxPos = model.config.maxPositionEmbeddings;
    this.contextLength = Math.min(opts.contextLength ?? maxPos, maxPos);
    this.maxNewTokens = opts.maxNewTokens ?? 256;
    this.system = opts.system;
  }

  /** The conversation so far (system message first, when set). */
  get messages(): ChatMessage[] {
    return [...(this.system ? [{ role: 'system', content: this.system }] : []), ...this.turns];
  }

  reset(): void {
    this.turns = [];
  }

  /**
   * The prompt for `user` after the history, within the context minus room for the reply. Drops the oldest
   * user/assistant pairs for good; cuts the start of `user` only when it alone is too long.
   */
  fitPrompt(user: string): { ids: number[]; droppedMessages: number; truncatedChars: number; user: string } {
    const reserve = Math.min(this.maxNewTokens, Math.floor(this.contextLength / 2));
    const budget = this.contextLength - reserve;
    const encode = (turns: ChatMessage[], text: string, system = this.system) =>
      this.format.encode([...(system ? [{ role: 'system', content: system }] : []), ...turns, { role: 'user', content: text }]);
    let dropped = 0;
    let ids = encode(this.turns, user);
    while (ids.length > budget && this.turns.length > 0) {
      this.turns.splice(0, 2);
      dropped += 2;
      ids = encode(this.turns, user);
    }
    if (ids.length <= budget) return { ids, droppedMessages: dropped, truncatedChars: 0, user };
    // The message alone is too long: keep its longest tail that fits (binary search over characters).
    const chars = [...user];
    let lo = 0;
    let hi = chars.length;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (encode([], chars.slice(chars.length - mid).join('')).length <= budget) lo = mid;
      else hi = mid - 1;
    }
    const tail = chars.slice(chars.length - lo).join('');
    ids = encode([], tail);
    // Even an empty message does not fit beside the system prompt: leave the system prompt out of this turn.
    if (ids.length > budget) ids = encode([], tail, undefined).slice(-budget);
    return { ids, droppedMessages: dropped, truncatedChars: chars.length - lo, user: tail };
  }

  /** Generates the reply to `user`, streaming text through `onText`; an aborted reply keeps what was said so far. */
  async reply(user: string, callbacks: { onText?(delta: string): void; signal?: AbortSignal } = {}): Promise<ChatReply> {
    const prompt = this.fitPrompt(user);
    const eos = replyEndIds(this.model.config, this.tokenizer, this.format);
    const gen = this.opts.generation ?? {};
    const result = await generate(this.model, prompt.ids, {
      ...gen,
      maxNewTokens: Math.min(this.maxNewTokens, this.contextLength - prompt.ids.length),
      stopStrings: [...(gen.stopStrings ?? []), ...this.format.stopStrings],
      eosTokenIds: gen.eosTokenIds ?? eos,
      tokenizer: this.tokenizer,
      signal: callbacks.signal,
    }, { onText: (d) => callbacks.onText?.(d) });
    const text = result.text ?? '';
    // Keep roles alternating: a reply stopped before its first word takes its question with it.
    if (text.trim() || result.finishReason !== 'abort') this.turns.push({ role: 'user', content: prompt.user }, { role: 'assistant', content: text.trim() });
    return { text, result, promptTokens: prompt.ids.length, droppedMessages: prompt.droppedMessages, truncatedChars: prompt.truncatedChars };
  }
}
