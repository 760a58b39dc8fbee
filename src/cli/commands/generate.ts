import { AutoModelForCausalLM, AutoTokenizer, DEFAULT_MODEL } from '../../api.js';
import { int, num, str, threads, threadsOption, UsageError, type Command } from '../common.js';

export const generate: Command = {
    summary: 'generate a continuation of a prompt',
    usage: `slimlm generate [--model PATH] [--tokenizer PATH] [--prompt TEXT] [--max-new-tokens N] [--temperature T]
                [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--stop TEXT]... [--threads N]
  Prints only the generated continuation on stdout; timings on stderr.
  Defaults: the shipped stories260K model, empty prompt (starts from BOS), 256 new tokens,
  temperature 0.8, top-k 40, top-p 0.95 (temperature 0 = greedy).`,
    options: {
      model: { type: 'string' }, tokenizer: { type: 'string' }, prompt: { type: 'string' },
      'max-new-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
      'top-p': { type: 'string' }, 'repetition-penalty': { type: 'string' }, seed: { type: 'string' },
      stop: { type: 'string', multiple: true }, quiet: { type: 'boolean' }, ...threadsOption,
    },
    async run(v) {
      const modelPath = str(v, 'model') ?? DEFAULT_MODEL;
      const model = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: threads(v) });
      try {
        const tokenizer = await AutoTokenizer.fromPretrained(str(v, 'tokenizer') ?? modelPath);
        if (tokenizer.vocabSize !== model.config.vocabSize) {
          throw new UsageError(`tokenizer vocabulary (${tokenizer.vocabSize}) does not match the model's (${model.config.vocabSize})`);
        }
        const promptIds = tokenizer.encode(str(v, 'prompt') ?? '');
        const temperature = num(v, 'temperature', 0.8)!;
        const result = await model.generate(promptIds, {
          maxNewTokens: int(v, 'max-new-tokens', 256),
          temperature,
          doSample: temperature > 0,
          topK: int(v, 'top-k', 40),
          topP: num(v, 'top-p', 0.95),
          repetitionPenalty: num(v, 'repetition-penalty', 1),
          seed: int(v, 'seed'),
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
