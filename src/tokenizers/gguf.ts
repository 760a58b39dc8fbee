/**
 * The SentencePiece vocabulary llama.cpp stores inside a GGUF file (`tokenizer.ggml.*`, model "llama"):
 * https://github.com/ggml-org/ggml/blob/master/docs/gguf.md#tokenizer — tokens, scores, token types
 * (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), special ids, add_bos/add_eos, add_space_prefix.
 * Encoding follows llama.cpp's SPM tokenizer: spaces become ▁, a dummy prefix is added, whitespace is not collapsed.
 */
import { GGUFFile } from '../formats/gguf.js';
import { sentencePieceNormalizer } from './normalize.js';
import { SentencePieceBPETokenizer, type AddedToken } from './sentencepiece-bpe.js';
import type { Piece, PieceType } from './sentencepiece-model.js';

const TOKEN_TYPES: Record<number, PieceType> = { 1: 'normal', 2: 'unknown', 3: 'control', 4: 'user_defined', 5: 'unused', 6: 'byte' };

export function ggufTokenizer(file: string): SentencePieceBPETokenizer {
  const gguf = GGUFFile.open(file);
  try {
    const model = gguf.string('tokenizer.ggml.model');
    if (model === undefined) throw new Error(`${file}: this GGUF holds no tokenizer (no tokenizer.ggml.model)`);
    if (model !== 'llama') throw new Error(`${file}: GGUF tokenizer model "${model}" is not supported (only SentencePiece "llama")`);
    const tokens = gguf.value('tokenizer.ggml.tokens');
    if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== 'string')) throw new Error(`${file}: tokenizer.ggml.tokens is not a string array`);
    const scores = gguf.value('tokenizer.ggml.scores') as ArrayLike<number> | undefined;
    const types = gguf.value('tokenizer.ggml.token_type') as ArrayLike<number> | undefined;
    for (const [key, arr] of [['scores', scores], ['token_type', types]] as const) {
      if (arr !== undefined && arr.length !== tokens.length) throw new Error(`${file}: tokenizer.ggml.${key} has ${arr.length} entries for ${tokens.length} tokens`);
    }
    const pieces: Piece[] = (tokens as string[]).map((piece, id) => ({
      piece, score: scores ? Number(scores[id]) : 0, type: TOKEN_TYPES[types ? Number(types[id]) : 1] ?? 'normal',
    }));
    const id = (key: string, fallback: number | null): number | null => {
      const v = gguf.number(`tokenizer.ggml.${key}`, -1);
      return v >= 0 && v < pieces.length ? v : fallback;
    };
    const flag = (key: string, fallback: boolean): boolean => {
      const v = gguf.value(`tokenizer.ggml.${key}`);
      return typeof v === 'boolean' ? v : fallback;
    };
    const normalize = sentencePieceNormalizer({
      name: 'identity', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: flag('add_space_prefix', true),
      removeExtraWhitespaces: false, escapeWhitespaces: true,
    }, false);
    const addedTokens: AddedToken[] = [];
    pieces.forEach((p, i) => { if (p.type === 'control' || p.type === 'unknown') addedTokens.push({ id: i, content: p.piece, special: true }); });
    return new SentencePieceBPETokenizer({
      source: file, format: 'sentencepiece', pieces, byteFallback: pieces.some((p) => p.type === 'byte'), fuseUnk: true,
      pretokenize: (segment) => { const s = normalize(segment); return s ? [s] : []; },
      addedTokens,
      unkId: id('unknown_token_id', pieces.findIndex((p) => p.type === 'unknown')),
      bosId: id('bos_token_id', null), eosId: id('eos_token_id', null), padId: id('padding_token_id', null),
      addBos: flag('add_bos_token', true), addEos: flag('add_eos_token', false),
      chatTemplate: gguf.string('tokenizer.chat_template') ?? null,
      leadingSpace: flag('add_space_prefix', true) ? 'sentencepiece' : 'keep',
    });
  } finally {
    gguf.close();
  }
}
