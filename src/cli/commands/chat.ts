import path from 'node:path';
import readline from 'node:readline';
import { CHAT_TEMPLATE_CHOICES, ChatSession, chatFormat } from '../../chat/index.js';
import { int, str, threadsOption, UsageError, type Command } from '../common.js';
import { loadModelAndTokenizer, samplingFlags, samplingOptions } from '../modelOptions.js';

const HELP = '/reset clears the conversation · /system TEXT sets the system prompt (/system alone clears it) · /exit quits · Ctrl-C stops a reply';

export const chat: Command = {
  summary: 'chat with a model in the terminal (streamed replies, history within the context)',
  usage: `slimlm chat [--model PATH] [--tokenizer PATH] [--template NAME|FILE] [--system TEXT] [--max-new-tokens N]
            [--ctx N] [--temperature T] [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--threads N]
  Interactive on a terminal; from a pipe, each input line is one user message and the replies go to stdout.
  In the chat: ${HELP}; Ctrl-C twice at the prompt exits.
  --template: ${CHAT_TEMPLATE_CHOICES}.
  Defaults: the shipped stories260K model, 256 new tokens, temperature 0.8, top-k 40, top-p 0.95 (temperature 0 = greedy).
  Time to first token and tokens/s are printed on stderr after each reply.`,
  options: {
    model: { type: 'string' }, tokenizer: { type: 'string' }, template: { type: 'string' }, system: { type: 'string' },
    'max-new-tokens': { type: 'string' }, ctx: { type: 'string' }, ...samplingFlags, ...threadsOption,
  },
  async run(v) {
    const maxNewTokens = int(v, 'max-new-tokens', 256)!;
    if (maxNewTokens < 1) throw new UsageError('--max-new-tokens must be at least 1');
    const ctx = int(v, 'ctx');
    if (ctx !== undefined && ctx < 16) throw new UsageError('--ctx must be at least 16');
    const generation = samplingOptions(v); // flags checked before the model loads
    const { modelPath, model, tokenizer } = await loadModelAndTokenizer(v);
    try {
      const format = chatFormat(tokenizer, str(v, 'template') ?? 'auto');
      const session = new ChatSession(model.model, tokenizer, format, {
        maxNewTokens,
        contextLength: ctx,
        system: str(v, 'system'),
        generation,
      });
      await chatLoop(session, `${path.basename(modelPath)} · template ${format.name} · context ${session.contextLength} tokens`);
    } finally {
      await model.dispose();
    }
  },
};

async function chatLoop(session: ChatSession, banner: string): Promise<void> {
  const tty = Boolean(process.stdin.isTTY && process.stdout.isTTY);
  const dim = (s: string) => (process.stderr.isTTY ? `\x1b[2m${s}\x1b[0m` : s);
  const note = (s: string) => process.stderr.write(dim(s) + '\n');
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout, terminal: tty, prompt: '> ' });
  if (tty) note(`slimlm chat · ${banner}\n${HELP}`);

  let replying: AbortController | null = null;
  let exitArmed = false;
  // Ctrl-C stops the reply in progress; at the prompt the first one warns and the second exits.
  const interrupt = () => {
    if (replying) {
      replying.abort();
      return;
    }
    if (exitArmed) {
      rl.close();
      return;
    }
    exitArmed = true;
    if (tty) process.stdout.write('\n');
    note('(Ctrl-C again to exit, or /exit)');
    if (tty) rl.prompt();
  };
  rl.on('SIGINT', interrupt); // a terminal in raw mode delivers Ctrl-C to readline
  process.on('SIGINT', interrupt); // a real signal (pipes, kill -INT)

  try {
    if (tty) rl.prompt();
    for await (const raw of rl) {
      exitArmed = false;
      const line = raw.trim();
      if (line === '/exit' || line === '/quit') break;
      if (line === '/reset') {
        session.reset();
        note('(conversation cleared)');
      } else if (line === '/system' || line.startsWith('/system ')) {
        session.system = line.slice('/system'.length).trim() || undefined;
        note(session.system ? '(system prompt set)' : '(system prompt cleared)');
      } else if (line === '/help') {
        note(HELP);
      } else if (line.startsWith('/')) {
        note(`unknown command ${line.split(/\s/)[0]}; ${HELP}`);
      } else if (line) {
        await answer(session, line, (c) => (replying = c), note);
        replying = null;
      }
      if (tty) rl.prompt();
    }
  } finally {
    process.off('SIGINT', interrupt);
    rl.close();
  }
}

async function answer(session: ChatSession, text: string, setReplying: (c: AbortController) => void, note: (s: string) => void): Promise<void> {
  const controller = new AbortController();
  setReplying(controller);
  try {
    const r = await session.reply(text, { signal: controller.signal, onText: (d) => process.stdout.write(d) });
    process.stdout.write('\n');
    const t = r.result.timings;
    const parts = [
      `${r.result.tokens.length} tokens`,
      `first token ${t.firstTokenMs.toFixed(0)} ms`,
      `${t.tokensPerSecond.toFixed(1)} tokens/s`,
      `prompt ${r.promptTokens} tokens`,
    ];
    if (r.result.finishReason === 'abort') parts.push('stopped');
    else if (r.result.finishReason === 'length') parts.push('length limit');
    if (r.droppedMessages) parts.push(`${r.droppedMessages} oldest messages dropped to fit the context`);
    if (r.truncatedChars) parts.push(`the start of your message (${r.truncatedChars} characters) was cut to fit`);
    note(`[${parts.join(' · ')}]`);
  } catch (err) {
    process.stdout.write('\n');
    note(`error: ${(err as Error).message}`);
  }
}
