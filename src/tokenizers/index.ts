/** Tokenizers: SentencePiece-style BPE from tokenizer.model, tokenizer.json or llama2.c tok*.bin. See README.md here. */
export type { Tokenizer, EncodeOptions, DecodeOptions, StreamDecoder } from './types.js';
export { SentencePieceBPETokenizer, type AddedToken, type SentencePieceBPEOptions } from './sentencepiece-bpe.js';
export { loadTokenizer, sentencePieceTokenizer, huggingFaceTokenizer, llama2cTokenizer, parseTokenizerConfig, type TokenizerConfig } from './load.js';
export { ggufTokenizer, ggufTokenizerFiles } from './gguf.js';
export { tokenizerFiles, writeTokenizerFiles } from './files.js';
export { parseSentencePieceModel, serializeSentencePieceModel, type SentencePieceModel, type Piece, type PieceType } from './sentencepiece-model.js';
