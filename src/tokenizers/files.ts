/** Putting a model's tokenizer into a Hugging Face folder, whatever form it came in. */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeBytesAtomic } from '../formats/atomic.js';
import { ggufTokenizerFiles } from './gguf.js';

/**
 * Writes the tokenizer at `tokenizerPath` into folder `dir` and returns the main file written:
 *  - tokenizer.json / *.model: copied (a *.model as tokenizer.model), with tokenizer_config.json and
 *    special_tokens_map.json from beside it;
 *  - a llama2.c tok*.bin: its SentencePiece twin (same name, .model) as tokenizer.model when there is one, else copied as is;
 *  - a .gguf: its embedded vocabulary as tokenizer.model + tokenizer_config.json.
 * Files are written whole (temp file + rename) and get default permissions, not the source's (a read-only source stays readable, the copy writable).
 */
export function writeTokenizerFiles(tokenizerPath: string, dir: string): string {
  if (tokenizerPath.endsWith('.gguf')) {
    const { model, config } = ggufTokenizerFiles(tokenizerPath);
    writeBytesAtomic(join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
    writeBytesAtomic(join(dir, 'tokenizer.model'), model);
    return join(dir, 'tokenizer.model');
  }
  const twin = tokenizerPath.replace(/\.bin$/, '.model');
  const src = tokenizerPath.endsWith('.bin') && existsSync(twin) ? twin : tokenizerPath;
  const target = join(dir, src.endsWith('.model') ? 'tokenizer.model' : basename(src));
  for (const extra of ['tokenizer_config.json', 'special_tokens_map.json']) {
    const from = join(dirname(tokenizerPath), extra);
    if (existsSync(from)) writeBytesAtomic(join(dir, extra), readFileSync(from));
  }
  writeBytesAtomic(target, readFileSync(src));
  return target;
}
