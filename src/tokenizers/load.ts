/**
 * Tokenizer loaders: SentencePiece `.model`, Hugging Face `tokenizer.json` (+ `tokenizer_config.json`),
 * llama2.c `tok*.bin` (https://github.com/karpathy/llama2.c/blob/master/run.c, build_tokenizer), or a folder.
 */
import { readFile, stat, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { hfDecoderStripsLeadingSpace, hfNormalizer, hfPreTokenizer, sentencePieceNormalizer } from './normalize.js';
import { SentencePieceBPETokenizer, SPACE_SYMBOL, type AddedToken } from './sentencepiece-bpe.js';
import { parseSentencePieceModel, type Piece } from './sentencepiece-model.js';
import { ggufTokenizer } from './gguf.js';

type Json = Record<string, any>;

/** The parts of HF's tokenizer_config.json we honour. */
export interface TokenizerConfig {
  addBos?: boolean;
  addEos?: boolean;
  bosToken?: string | null;
  eosToken?: string | null;
  padToken?: string | null;
  unkToken?: string | null;
  chatTemplate?: string | null;
  addedTokens?: AddedToken[];
}

const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;

export function parseTokenizerConfig(json: Json, file: string): TokenizerConfig {
  const tokenText = (v: unknown, key: string): string | null | undefined => {
    if (v === undefined) return undefined;
    if (v === null || typeof v === 'string') return v;
    if (typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content;
    throw new Error(`${file}: ${key} must be a string or {content}`);
  };
  let chatTemplate: string | null | undefined = json.chat_template;
  if (Array.isArray(json.chat_template)) {
    // Named templates: [{name, template}]; the "default" one is what apply_chat_template uses.
    const named = json.chat_template as { name: string; template: string }[];
    chatTemplate = (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
  }
  const addedTokens: AddedToken[] = Object.entries((json.added_tokens_decoder ?? {}) as Json).map(([id, t]) => ({
    id: Number(id), content: String(t.content), special: t.special === true, lstrip: !!t.lstrip, rstrip: !!t.rstrip, singleWord: !!t.single_word,
  }));
  return {
    addBos: typeof json.add_bos_token === 'boolean' ? json.add_bos_token : undefined,
    addEos: typeof json.add_eos_token === 'boolean' ? json.add_eos_token : undefined,
    bosToken: tokenText(json.bos_token, 'bos_token'),
    eosToken: tokenText(json.eos_token, 'eos_token'),
    padToken: tokenText(json.pad_token, 'pad_token'),
    unkToken: tokenText(json.unk_token, 'unk_token'),
    chatTemplate,
    addedTokens,
  };
}

/** Resolves a configured special token to an id: the config wins over the model's own default. */
function resolveId(configured: string | null | undefined, fallback: number | null, lookup: (s: string) => number | undefined, what: string, file: string): number | null {
  if (configured === undefined) return fallback;
  if (configured === null) return null;
  const id = lookup(configured);
  if (id === undefined) throw new Error(`${file}: ${what} ${JSON.stringify(configured)} is not in the vocabulary`);
  return id;
}

/** Adds tokenizer_config's added tokens: ids past the model's vocabulary extend it; known ids get their flags. */
function mergeAddedTokens(pieces: Piece[], base: AddedToken[], extra: AddedToken[], file: string): AddedToken[] {
  const byId = new Map(base.map((t) => [t.id, t]));
  for (const t of extra) {
    if (t.id < pieces.length) {
      if (pieces[t.id]!.piece !== t.content) throw new Error(`${file}: added token ${t.id} is ${JSON.stringify(t.content)} but the vocabulary has ${JSON.stringify(pieces[t.id]!.piece)}`);
    } else if (t.id === pieces.length) {
      pieces.push({ piece: t.content, score: 0, type: t.special ? 'control' : 'user_defined' });
    } else {
      throw new Error(`${file}: added token id ${t.id} leaves a gap after the vocabulary of ${pieces.length}`);
    }
    byId.set(t.id, t);
  }
  return [...byId.values()];
}

export function sentencePieceTokenizer(buf: Uint8Array, file: string, config: TokenizerConfig = {}): SentencePieceBPETokenizer {
  const model = parseSentencePieceModel(buf, file);
  if (model.modelType !== 'bpe') throw new Error(`${file}: SentencePiece model type ${model.modelType} is not supported (only bpe)`);
  const pieces = model.pieces;
  const opt = (id: number) => (id >= 0 && id < pieces.length ? id : null);
  // Control and unknown pieces are what HF splits out as special tokens.
  const base: AddedToken[] = [];
  pieces.forEach((p, id) => { if (p.type === 'control' || p.type === 'unknown') base.push({ id, content: p.piece, special: true }); });
  const addedTokens = mergeAddedTokens(pieces, base, config.addedTokens ?? [], file);
  const normalize = sentencePieceNormalizer(model.normalizer, model.treatWhitespaceAsSuffix);
  const lookup = (s: string) => { const i = pieces.findIndex((p) => p.piece === s); return i < 0 ? undefined : i; };
  return new SentencePieceBPETokenizer({
    source: file, format: 'sentencepiece', pieces, byteFallback: model.byteFallback, fuseUnk: true,
    // Each segment between special tokens is its own SentencePiece sentence (dummy prefix included).
    pretokenize: (segment) => { const s = normalize(segment); return s ? [s] : []; },
    addedTokens,
    unkId: resolveId(config.unkToken, opt(model.unkId), lookup, 'unk_token', file),
    bosId: resolveId(config.bosToken, opt(model.bosId), lookup, 'bos_token', file),
    eosId: resolveId(config.eosToken, opt(model.eosId), lookup, 'eos_token', file),
    padId: resolveId(config.padToken, opt(model.padId), lookup, 'pad_token', file),
    addBos: config.addBos ?? true, addEos: config.addEos ?? false,
    chatTemplate: config.chatTemplate ?? null,
    leadingSpace: model.treatWhitespaceAsSuffix ? 'keep' : model.normalizer.removeExtraWhitespaces ? 'sentencepiece-all'
      : model.normalizer.addDummyPrefix ? 'sentencepiece' : 'keep',
  });
}

export function huggingFaceTokenizer(json: Json, file: string, config: TokenizerConfig = {}): SentencePieceBPETokenizer {
  const model = json.model as Json | undefined;
  if (!model || typeof model !== 'object') throw new Error(`${file}: no "model" section; not a tokenizer.json`);
  if (model.type !== 'BPE') throw new Error(`${file}: model type ${JSON.stringify(model.type)} is not supported (only SentencePiece-style BPE)`);
  if (model.continuing_subword_prefix || model.end_of_word_suffix) throw new Error(`${file}: BPE subword prefixes/suffixes are not supported`);
  const vocab = model.vocab as Record<string, number>;
  if (!vocab || typeof vocab !== 'object') throw new Error(`${file}: model.vocab is missing`);
  const added = (json.added_tokens ?? []) as Json[];
  let size = 0;
  for (const id of Object.values(vocab)) size = Math.max(size, id + 1);
  for (const t of added) size = Math.max(size, t.id + 1);
  const pieces: (Piece | undefined)[] = new Array(size);
  const byteFallback = model.byte_fallback === true;
  for (const [piece, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || id < 0) throw new Error(`${file}: bad id ${id} for ${JSON.stringify(piece)}`);
    pieces[id] = { piece, score: 0, type: byteFallback && BYTE_PIECE.test(piece) ? 'byte' : piece === model.unk_token ? 'unknown' : 'normal' };
  }
  const addedTokens: AddedToken[] = added.map((t) => ({
    id: t.id, content: String(t.content), special: t.special === true, lstrip: !!t.lstrip, rstrip: !!t.rstrip, singleWord: !!t.single_word,
  }));
  for (const t of addedTokens) {
    const known = pieces[t.id];
    if (known && known.piece !== t.content) throw new Error(`${file}: added token ${t.id} ${JSON.stringify(t.content)} clashes with vocabulary entry ${JSON.stringify(known.piece)}`);
    pieces[t.id] = { piece: t.content, score: 0, type: t.content === model.unk_token ? 'unknown' : t.special ? 'control' : 'user_defined' };
  }
  const missing = pieces.findIndex((p) => p === undefined);
  if (missing >= 0) throw new Error(`${file}: vocabulary has no token with id ${missing}`);
  const full = pieces as Piece[];

  const merges = ((model.merges ?? []) as (string | [string, string])[]).map((m) => (typeof m === 'string' ? splitMerge(m, file) : m));
  // tokenizer.json has merge ranks, not SentencePiece scores. Scores that order merged pieces by their first merge's
  // rank make SentencePiece's highest-score-first merging (llama.cpp's SPM tokenizer, a written tokenizer.model) pick
  // the same merges; pieces no merge makes score below all of them, special tokens 0.
  const scored = new Set<string>();
  merges.forEach(([a, b], rank) => {
    const id = vocab[a + b];
    if (id === undefined || scored.has(a + b)) return;
    scored.add(a + b);
    full[id]!.score = -rank;
  });
  for (const p of full) if (p.type === 'normal' && !scored.has(p.piece)) p.score = -merges.length - 1;

  const normalizer = hfNormalizer(json.normalizer, file);
  const preTokenizer = hfPreTokenizer(json.pre_tokenizer, file);
  const lookup = (s: string) => vocab[s] ?? addedTokens.find((t) => t.content === s)?.id;
  const template = (json.post_processor?.type === 'TemplateProcessing' ? json.post_processor.single : null) as Json[] | null;
  const templateBos = template?.[0]?.SpecialToken !== undefined;
  const templateEos = template !== null && template.length > 1 && template[template.length - 1]?.SpecialToken !== undefined;
  const unkId = model.unk_token ? (vocab[model.unk_token] ?? null) : null;
  const tokenizer = new SentencePieceBPETokenizer({
    source: file, format: 'huggingface', pieces: full, merges, byteFallback, fuseUnk: model.fuse_unk === true,
    pretokenize: (segment, atStart) => preTokenizer(normalizer(segment), atStart),
    addedTokens: mergeAddedTokens(full, addedTokens, config.addedTokens ?? [], file),
    unkId: resolveId(config.unkToken, unkId, lookup, 'unk_token', file),
    bosId: resolveId(config.bosToken, lookup('<s>') ?? null, lookup, 'bos_token', file),
    eosId: resolveId(config.eosToken, lookup('</s>') ?? null, lookup, 'eos_token', file),
    padId: resolveId(config.padToken, null, lookup, 'pad_token', file),
    addBos: config.addBos ?? (template ? templateBos : true), addEos: config.addEos ?? templateEos,
    chatTemplate: config.chatTemplate ?? null,
    leadingSpace: hfDecoderStripsLeadingSpace(json.decoder, file) ? 'strip-first' : 'keep',
  });
  return tokenizer;
}

function splitMerge(m: string, file: string): [string, string] {
  const i = m.indexOf(' ', 1);
  if (i < 0) throw new Error(`${file}: malformed merge ${JSON.stringify(m)}`);
  return [m.slice(0, i), m.slice(i + 1)];
}

/**
 * llama2.c's tokenizer.bin: int32 max_token_length, then per token float32 score, int32 byte length, bytes.
 * The file has no token count, types or normalizer settings, so: id 0 is <unk>, 1 and 2 are <s>/</s> (exported
 * as "\n<s>\n"/"\n</s>\n"), <0xNN> pieces are byte fallback, and extra whitespace is removed (SentencePiece's
 * default, used by llama2.c's train_vocab) unless the vocabulary holds multi-space pieces (Llama 2's tokenizer).
 */
export function llama2cTokenizer(buf: Uint8Array, file: string, config: TokenizerConfig = {}): SentencePieceBPETokenizer {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 4) throw new Error(`${file}: truncated llama2.c tokenizer (no header)`);
  const maxLen = view.getInt32(0, true);
  if (maxLen <= 0 || maxLen > 1 << 16) throw new Error(`${file}: not a llama2.c tokenizer (max_token_length ${maxLen})`);
  const pieces: Piece[] = [];
  const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }); // a piece may be U+FEFF itself
  for (let pos = 4; pos < buf.length;) {
    if (pos + 8 > buf.length) throw new Error(`${file}: truncated llama2.c tokenizer at token ${pieces.length} (byte ${pos})`);
    const score = view.getFloat32(pos, true);
    const len = view.getInt32(pos + 4, true);
    pos += 8;
    if (len < 0 || len > maxLen || pos + len > buf.length) throw new Error(`${file}: truncated or corrupt llama2.c tokenizer at token ${pieces.length} (length ${len}, byte ${pos})`);
    const text = utf8.decode(buf.subarray(pos, pos + len));
    pos += len;
    const id = pieces.length;
    const type = id === 0 ? 'unknown' : id <= 2 ? 'control' : BYTE_PIECE.test(text) ? 'byte' : 'normal';
    const piece = id === 0 ? '<unk>' : id === 1 ? '<s>' : id === 2 ? '</s>' : type === 'byte' ? text : text.replaceAll(' ', SPACE_SYMBOL);
    pieces.push({ piece, score, type });
  }
  if (pieces.length < 3) throw new Error(`${file}: llama2.c tokenizer has only ${pieces.length} tokens`);
  const byteCount = pieces.filter((p) => p.type === 'byte').length;
  const multiSpace = pieces.some((p) => p.type === 'normal' && /^\u2581{2,}$/.test(p.piece));
  const normalize = sentencePieceNormalizer(
    { name: 'identity', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: !multiSpace, escapeWhitespaces: true }, false);
  const base: AddedToken[] = [0, 1, 2].map((id) => ({ id, content: pieces[id]!.piece, special: true }));
  const lookup = (s: string) => { const i = pieces.findIndex((p) => p.piece === s); return i < 0 ? undefined : i; };
  return new SentencePieceBPETokenizer({
    source: file, format: 'llama2c', pieces, byteFallback: byteCount === 256, fuseUnk: true,
    pretokenize: (segment) => { const s = normalize(segment); return s ? [s] : []; },
    addedTokens: mergeAddedTokens(pieces, base, config.addedTokens ?? [], file),
    unkId: resolveId(config.unkToken, 0, lookup, 'unk_token', file),
    bosId: resolveId(config.bosToken, 1, lookup, 'bos_token', file),
    eosId: resolveId(config.eosToken, 2, lookup, 'eos_token', file),
    padId: resolveId(config.padToken, null, lookup, 'pad_token', file),
    addBos: config.addBos ?? true, addEos: config.addEos ?? false,
    chatTemplate: config.chatTemplate ?? null,
    leadingSpace: multiSpace ? 'sentencepiece' : 'sentencepiece-all',
  });
}

async function readJson(file: string): Promise<Json> {
  const text = await readFile(file, 'utf8');
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
  }
}

/** Finds the tokenizer file in a folder: tokenizer.json, then tokenizer.model, then any *.model, then tok*.bin. */
async function findTokenizerFile(dir: string): Promise<string> {
  const names = await readdir(dir);
  const pick = names.includes('tokenizer.json') ? 'tokenizer.json'
    : names.includes('tokenizer.model') ? 'tokenizer.model'
    : names.filter((n) => n.endsWith('.model')).sort()[0]
    ?? names.filter((n) => /^tok.*\.bin$/.test(n)).sort()[0];
  if (!pick) throw new Error(`${dir}: no tokenizer.json, tokenizer.model or llama2.c tok*.bin in this folder`);
  return join(dir, pick);
}

/** Loads tokenizer.json | *.model | llama2.c tok*.bin | the vocabulary inside a .gguf, or a folder holding one (with tokenizer_config.json beside it). */
export async function loadTokenizer(path: string): Promise<SentencePieceBPETokenizer> {
  let info;
  try { info = await stat(path); } catch { throw new Error(`${path}: no such tokenizer file or folder`); }
  const file = info.isDirectory() ? await findTokenizerFile(path) : path;
  const configFile = join(dirname(file), 'tokenizer_config.json');
  const config = basename(file) !== 'tokenizer_config.json' && (await stat(configFile).catch(() => null))
    ? parseTokenizerConfig(await readJson(configFile), configFile) : {};
  const name = basename(file);
  if (name.endsWith('.gguf')) return ggufTokenizer(file);
  if (name.endsWith('.json')) return huggingFaceTokenizer(await readJson(file), file, config);
  const buf = await readFile(file);
  if (name.endsWith('.bin')) return llama2cTokenizer(buf, file, config);
  return sentencePieceTokenizer(buf, file, config);
}
