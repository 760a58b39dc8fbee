/**
 * Chat templates: the Jinja `chat_template` of a model's tokenizer_config.json rendered with @huggingface/jinja (the
 * engine transformers.js uses) with the variables of transformers' `apply_chat_template`: messages, bos_token,
 * eos_token, unk_token, pad_token, add_generation_prompt, raise_exception. Models without a template get a built-in one.
 */
import fs from 'node:fs';
import { Template } from '@huggingface/jinja';
import { parseTokenizerConfig } from '../tokenizers/index.js';
import type { Tokenizer } from '../tokenizers/index.js';

export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * Mistral-7B-Instruct-v0.1's own template (its tokenizer_config.json, revision with system-message support):
 * `<s> [INST] system\n\nuser [/INST] answer</s> [INST] … [/INST]`. The default for models without a template.
 */
const MISTRAL = `{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
`;

/** ChatML (OpenAI / Qwen style): `<|im_start|>role\ncontent<|im_end|>\n`, then `<|im_start|>assistant\n` to prompt a reply. */
const CHATML = `{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
`;

export const BUILTIN_CHAT_TEMPLATES: Readonly<Record<string, string>> = { mistral: MISTRAL, chatml: CHATML };

/** Turn-end markers of common templates: a reply stops at them (as text, or as a special token id). */
const TURN_END_MARKERS = ['<|im_end|>', '<|eot_id|>', '<|end|>', '<end_of_turn>', '<|endoftext|>'];

export const CHAT_TEMPLATE_CHOICES = 'auto (the model\'s template, else mistral), model, mistral, chatml, or a path to a .jinja file or tokenizer_config.json';

export class ChatTemplateError extends Error {
  override name = 'ChatTemplateError';
}

export interface ChatFormat {
  /** 'model', 'mistral', 'chatml' or the file it came from. */
  name: string;
  source: string;
  /** Strings that end an assistant turn besides EOS. */
  stopStrings: string[];
  render(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  /** Rendered and tokenized like apply_chat_template(tokenize=True): special tokens in the text become their ids, no extra BOS. */
  encode(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): number[];
  /** Special-token ids that end a turn (e.g. <|im_end|> in a ChatML vocabulary); generation treats them as EOS. */
  endTokenIds: number[];
}

/** A tokenizer that may carry its tokenizer_config.json template (SentencePieceBPETokenizer does). */
type TemplatedTokenizer = Tokenizer & { readonly chatTemplate?: string | null };

/** Resolves `choice` (see CHAT_TEMPLATE_CHOICES) for `tokenizer`. */
export function chatFormat(tokenizer: TemplatedTokenizer, choice = 'auto'): ChatFormat {
  const own = tokenizer.chatTemplate ?? null;
  let name = choice;
  let source: string;
  if (choice === 'auto') {
    name = own ? 'model' : 'mistral';
    source = own ?? MISTRAL;
  } else if (choice === 'model') {
    if (!own) throw new ChatTemplateError('this tokenizer has no chat_template; use --template mistral, chatml or a template file');
    source = own;
  } else if (Object.hasOwn(BUILTIN_CHAT_TEMPLATES, choice)) {
    source = BUILTIN_CHAT_TEMPLATES[choice];
  } else if (fs.existsSync(choice)) {
    source = readTemplateFile(choice);
  } else {
    throw new ChatTemplateError(`unknown chat template ${JSON.stringify(choice)}; choose ${CHAT_TEMPLATE_CHOICES}`);
  }
  return createChatFormat(tokenizer, source, name);
}

function readTemplateFile(file: string): string {
  const text = fs.readFileSync(file, 'utf8');
  if (!file.endsWith('.json')) return text;
  const template = parseTokenizerConfig(JSON.parse(text), file).chatTemplate;
  if (!template) throw new ChatTemplateError(`${file} has no chat_template`);
  return template;
}

export function createChatFormat(tokenizer: Tokenizer, source: string, name = 'custom'): ChatFormat {
  let template: Template;
  try {
    template = new Template(source);
  } catch (err) {
    throw new ChatTemplateError(`chat template ${name} does not parse: ${(err as Error).message}`);
  }
  const tokenText = (id: number | null) => (id === null ? '' : tokenizer.idToToken(id) ?? '');
  const specials = {
    bos_token: tokenText(tokenizer.bosId),
    eos_token: tokenText(tokenizer.eosId),
    unk_token: tokenText(tokenizer.unkId),
    pad_token: tokenText(tokenizer.padId),
  };
  const stopStrings = TURN_END_MARKERS.filter((m) => source.includes(m));
  const endTokenIds = stopStrings.flatMap((m) => {
    const id = tokenizer.tokenToId(m);
    return id !== undefined && tokenizer.isSpecial(id) ? [id] : [];
  });
  const render = (messages: readonly ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string => {
    try {
      return template.render({
        ...specials,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      }); // raise_exception is a global of @huggingface/jinja
    } catch (err) {
      throw new ChatTemplateError(`chat template ${name}: ${(err as Error).message}`);
    }
  };
  return {
    name,
    source,
    stopStrings,
    endTokenIds,
    render,
    encode: (messages, opts) => tokenizer.encode(render(messages, opts), { addBos: false, addEos: false, parseSpecial: true }),
  };
}
