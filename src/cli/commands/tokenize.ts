import { AutoTokenizer, DEFAULT_MODEL } from '../../api.js';
import { UsageError, type Command } from '../common.js';

export const tokenize: Command = {
    summary: 'print the token ids of a text as JSON',
    usage: `slimlm tokenize [--tokenizer PATH] --text TEXT [--no-bos]
  PATH: tokenizer.json, tokenizer.model, a llama2.c tok*.bin, or a folder/model holding one. Prints ids (with BOS) as a JSON array.`,
    options: { tokenizer: { type: 'string' }, model: { type: 'string' }, text: { type: 'string' }, 'no-bos': { type: 'boolean' } },
    async run(v) {
      if (typeof v.text !== 'string') throw new UsageError('--text is required');
      const tokenizer = await AutoTokenizer.fromPretrained((v.tokenizer ?? v.model ?? DEFAULT_MODEL) as string);
      process.stdout.write(JSON.stringify(tokenizer.encode(v.text, { addBos: !v['no-bos'] })) + '\n');
    },
  };
