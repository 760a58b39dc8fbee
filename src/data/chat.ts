/**
 * Chat rendering and tokenization with a loss mask. The tokenizer's own `chat_template` (tokenizer_config.json) is rendered
 * with @huggingface/jinja exactly as transformers' `apply_chat_template` does
 * (https://huggingface.co/docs/transformers/main/en/chat_templating); without one, DEFAULT_CHAT_TEMPLATE gives Mistral's
 * instruct format `<s> [INST] question [/INST] answer</s>` (src/chat's built-in `mistral` template).
 */
import { Template } from '@huggingface/jinja';
import { BUILTIN_CHAT_TEMPLATES } from '../chat/template.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { DataError, type ChatMessage } from './readers.js';

/** The chat CLI and server's default too, so a model trained on Q/A rows is prompted exactly as it was trained. */
export const DEFAULT_CHAT_TEMPLATE = BUILTIN_CHAT_TEMPLATES.mistral;

export class ChatRenderer {
  private readonly template: Template;
  private readonly bosToken: string;
  private readonly eosToken: string;

  constructor(private readonly tokenizer: Tokenizer, templateSource?: string | null) {
    const own = (tokenizer as { chatTemplate?: string | null }).chatTemplate;
    this.template = new Template(templateSource ?? own ?? DEFAULT_CHAT_TEMPLATE);
    this.bosToken = tokenizer.bosId === null ? '' : tokenizer.idToToken(tokenizer.bosId) ?? '';
    this.eosToken = tokenizer.eosId === null ? '' : tokenizer.idToToken(tokenizer.eosId) ?? '';
  }

  render(messages: ChatMessage[], addGenerationPrompt = false): string {
    try {
      return this.template.render({
        messages, bos_token: this.bosToken, eos_token: this.eosToken, add_generation_prompt: addGenerationPrompt,
      });
    } catch (e) {
      throw new DataError(`chat template: ${(e as Error).message}`);
    }
  }

  /** The template writes BOS/EOS itself, so the text is encoded without adding them again and with special tokens parsed. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { addBos: false, addEos: false, parseSpecial: true });
  }

  /**
   * Token ids of the chat and, per token, whether it is a loss target. With `maskPrompt`, only assistant turns are targets:
   * each turn's extent is found by rendering the conversation up to it (with the generation prompt) and after it, and
   * taking the common token prefix with the full rendering (robust to templates that merge text across the boundary).
   */
  tokenize(messages: ChatMessage[], maskPrompt: boolean): { ids: number[]; targets: Uint8Array } {
    const ids = this.encode(this.render(messages));
    const targets = new Uint8Array(ids.length).fill(maskPrompt ? 0 : 1);
    if (maskPrompt) {
      messages.forEach((m, i) => {
        if (m.role !== 'assistant') return;
        const start = commonPrefix(ids, this.encode(this.render(messages.slice(0, i), true)));
        const end = i === messages.length - 1 ? ids.length : commonPrefix(ids, this.encode(this.render(messages.slice(0, i + 1))));
        targets.fill(1, start, end);
      });
    }
    return { ids, targets };
  }
}

function commonPrefix(a: number[], b: number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}
