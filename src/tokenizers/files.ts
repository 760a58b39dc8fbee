/** Putting a model's tokenizer into a Hugging Face folder, whatever form it came in. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeBytesAtomic } from '../formats/atomic.js';
import { ggufTokenizerFiles } from './gguf.js';

/** Files beside a tokenizer that belong in the folder with it. */
const COMPANIONS = ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'];

/**
 * The files (name → bytes) that carry the tokenizer at `tokenizerPath` into a Hugging Face folder:
 *  - a folder: its tokenizer.json, tokenizer.model, tokenizer_config.json, special_tokens_map.json, generation_config.json;
 *  - a file: the same companions from its folder, with the file itself under the name loaders look for (a *.json as
 *    tokenizer.json, a *.model as tokenizer.model); a llama2.c tok*.bin keeps its name and brings its SentencePiece twin
 *    (same name, .model) as tokenizer.model;
 *  - a .gguf: its embedded vocabulary as tokenizer.model + tokenizer_config.json.
 */
export function tokenizerFiles(tokenizerPath: string): Record<string, Uint8Array> {
  if (tokenizerPath.endsWith('.gguf')) {
    const { model, config } = ggufTokenizerFiles(tokenizerPath);
    return { 'tokenizer.model': model, 'tokenizer_config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n') };
  }
  const isDir = statSync(tokenizerPath).isDirectory();
  const dir = isDir ? tokenizerPath : dirname(tokenizerPath);
  const out: Record<string, Uint8Array> = {};
  for (const f of COMPANIONS) if (existsSync(join(dir, f))) out[f] = readFileSync(join(dir, f));
  if (isDir) return out;
  const name = basename(tokenizerPath);
  if (/^tok.*\.bin$/.test(name)) {
    out[name] = readFileSync(tokenizerPath);
    const twin = tokenizerPath.replace(/\.bin$/, '.model');
    if (!out['tokenizer.model'] && existsSync(twin)) out['tokenizer.model'] = readFileSync(twin);
  } else if (name.endsWith('.model')) out['tokenizer.model'] = readFileSync(tokenizerPath);
  else if (name.endsWith('.json')) out['tokenizer.json'] = readFileSync(tokenizerPath);
  return out;
}

/**
 * Writes `tokenizerFiles(tokenizerPath)` into folder `dir` and returns the main file written (tokenizer.json,
 * tokenizer.model or the tok*.bin). Files are written whole (temp file + rename) and get default permissions, not the
 * source's (a read-only source stays readable, the copy writable).
 */
export function writeTokenizerFiles(tokenizerPath: string, dir: string): string {
  const files = tokenizerFiles(tokenizerPath);
  for (const [name, bytes] of Object.entries(files)) writeBytesAtomic(join(dir, name), bytes);
  const main = ['tokenizer.json', 'tokenizer.model'].find((f) => f in files) ?? Object.keys(files).find((f) => /^tok.*\.bin$/.test(f));
  if (!main) throw new Error(`${tokenizerPath}: no tokenizer file to copy`);
  return join(dir, main);
}
