import { int, str, threadsOption, UsageError, type Command } from '../common.js';
import { loadModelAndTokenizer, samplingFlags, samplingOptions } from '../modelOptions.js';

export const generate: Command = {
    summary: 'generate a continuation of a prompt',
    usage: `slimlm generate [--model PATH] [--tokenizer PATH] [--prompt TEXT | TEXT] [--max-new-tokens N] [--temperature T]
                [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]... [--threads N]
  Prints only the generated continuation on stdout; timings on stderr.
  Defaults: the shipped stories260K model, empty prompt (starts from BOS), 256 new tokens,
  temperature 0.8, top-k 40, top-p 0.95 (temperature 0 = greedy).`,
    options: {
      model: { type: 'string' }, tokenizer: { type: 'string' }, prompt: { type: 'string' },
      'max-new-tokens': { type: 'string' }, ...samplingFlags,
      stop: { type: 'string', multiple: true }, quiet: { type: 'boolean' }, ...threadsOption,
    },
    positionals: true,
    async run(v, positionals) {
      const sampling = samplingOptions(v); // flags checked before the model loads
      if (positionals.length && str(v, 'prompt') !== undefined) throw new UsageError('give the prompt once: as --prompt TEXT or as an argument');
      const maxNewTokens = int(v, 'max-new-tokens', 256);
      const { model, tokenizer } = await loadModelAndTokenizer(v);
      try {
        const promptIds = tokenizer.encode(str(v, 'prompt') ?? positionals.join(' '));
        const result = await model.generate(promptIds, {
          maxNewTokens,
          ...sampling,
          stopStrings: (v.stop as string[] | undefined) ?? [],
          tokenizer,
        }, { onText: (text: string) => { process.stdout.write(text); } });
        process.stdout.write('\n');
        if (!v.quiet) {
          const t = result.timings;
          process.stderr.write(`[${result.tokens.length} tokens, prompt ${promptIds.length} tokens in ${t.prefillMs.toFixed(0)} ms, ` +
            `${t.tokensPerSecond.toFixed(1)} tok/s, finish: ${result.finishReason}]\n`);
        }
      } finally {
        await model.dispose();
      }
    },
  };
