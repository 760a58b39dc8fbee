/**
 * The SentencePiece vocabulary llama.cpp stores inside a GGUF file (`tokenizer.ggml.*`, model "llama"):
 * https://github.com/ggml-org/ggml/blob/master/docs/gguf.md#tokenizer — tokens, scores, token types
 * (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte), special ids, add_bos/add_eos, add_space_prefix.
 * Encoding follows llama.cpp's SPM tokenizer: spaces become ▁, a dummy prefix is added, whitespace is not collapsed.
 */
import { GGUFFile } from '../formats/gguf.js';
import { sentencePieceNormalizer } from './normalize.js';
import { SentencePieceBPETokenizer, type AddedToken } from './sentencepiece-bpe.js';
import { serializeSentencePieceModel, type NormalizerSpec, type Piece, type PieceType } from './sentencepiece-model.js';

const TOKEN_TYPES: Record<number, PieceType> = { 1: 'normal', 2: 'unknown', 3: 'control', 4: 'user_defined', 5: 'unused', 6: 'byte' };

interface GGUFVocab {
  pieces: Piece[];
  unkId: number | null; bosId: number | null; eosId: number | null; padId: number | null;
  addBos: boolean; addEos: boolean; addSpacePrefix: boolean;
  chatTemplate: string | null;
}

function readGGUFVocab(file: string): GGUFVocab {
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
    const unknown = pieces.findIndex((p) => p.type === 'unknown');
    return {
      pieces, unkId: id('unknown_token_id', unknown >= 0 ? unknown : null),
      bosId: id('bos_token_id', null), eosId: id('eos_token_id', null), padId: id('padding_token_id', null),
      addBos: flag('add_bos_token', true), addEos: flag('add_eos_token', false), addSpacePrefix: flag('add_space_prefix', true),
      chatTemplate: gguf.string('tokenizer.chat_template') ?? null,
    };
  } finally {
    gguf.close();
  }
}

/** llama.cpp's SPM text handling: identity normalization, spaces → ▁, an optional dummy prefix, whitespace kept. */
const ggufNormalizer = (v: GGUFVocab): NormalizerSpec => ({
  name: 'identity', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: v.addSpacePrefix, removeExtraWhitespaces: false, escapeWhitespaces: true,
});

export function ggufTokenizer(file: string): SentencePieceBPETokenizer {
  const v = readGGUFVocab(file);
  const normalize = sentencePieceNormalizer(ggufNormalizer(v), false);
  const addedTokens: AddedToken[] = [];
  v.pieces.forEach((p, i) => { if (p.type === 'control' || p.type === 'unknown') addedTokens.push({ id: i, content: p.piece, special: true }); });
  return new SentencePieceBPETokenizer({
    source: file, format: 'sentencepiece', pieces: v.pieces, byteFallback: v.pieces.some((p) => p.type === 'byte'), fuseUnk: true,
    pretokenize: (segment) => { const s = normalize(segment); return s ? [s] : []; },
    addedTokens, unkId: v.unkId, bosId: v.bosId, eosId: v.eosId, padId: v.padId, addBos: v.addBos, addEos: v.addEos,
    chatTemplate: v.chatTemplate, leadingSpace: v.addSpacePrefix ? 'sentencepiece' : 'keep',
  });
}

/**
 * The GGUF's vocabulary as the files a Hugging Face folder carries: a SentencePiece `tokenizer.model` and a
 * `tokenizer_config.json` (BOS/EOS flags, special tokens, chat template). Loading them gives the same tokenizer as
 * `ggufTokenizer`; transformers' LlamaTokenizer reads them too.
 */
export function ggufTokenizerFiles(file: string): { model: Uint8Array; config: Record<string, unknown> } {
  const v = readGGUFVocab(file);
  const model = serializeSentencePieceModel({
    pieces: v.pieces, modelType: 'bpe', byteFallback: v.pieces.some((p) => p.type === 'byte'), treatWhitespaceAsSuffix: false,
    unkId: v.unkId ?? -1, bosId: v.bosId ?? -1, eosId: v.eosId ?? -1, padId: v.padId ?? -1, unkSurface: ' \u2047 ', normalizer: ggufNormalizer(v),
  });
  const piece = (id: number | null) => (id === null ? null : v.pieces[id]!.piece);
  const config: Record<string, unknown> = {
    tokenizer_class: 'LlamaTokenizer', add_bos_token: v.addBos, add_eos_token: v.addEos,
    bos_token: piece(v.bosId), eos_token: piece(v.eosId), unk_token: piece(v.unkId), pad_token: piece(v.padId),
    ...(v.chatTemplate ? { chat_template: v.chatTemplate } : {}),
  };
  return { model, config };
}
