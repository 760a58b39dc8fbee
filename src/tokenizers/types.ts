/** The tokenizer contract of docs/ARCHITECTURE.md. */

export interface EncodeOptions {
  /** Default: as the tokenizer config says (tokenizer_config.json add_bos_token, the tokenizer.json post-processor, else true). */
  addBos?: boolean;
  addEos?: boolean;
  /** Split special tokens written in the text (e.g. "<s>") out as their ids. Default false. */
  parseSpecial?: boolean;
  /** transformers.js spelling: false = neither BOS nor EOS (unless addBos/addEos say otherwise). */
  add_special_tokens?: boolean;
}

/** `skip_special_tokens` is the transformers.js spelling of `skipSpecialTokens`. */
export interface DecodeOptions { skipSpecialTokens?: boolean; skip_special_tokens?: boolean }

export interface StreamDecoder {
  /** Text that became final with this token; never ends inside a UTF-8 character. */
  push(id: number): string;
  /** Whatever is still buffered (an incomplete byte sequence becomes U+FFFD per byte), then resets. */
  flush(): string;
}

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  encode(text: string, opts?: EncodeOptions): number[];
  decode(ids: number[], opts?: DecodeOptions): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  isSpecial(id: number): boolean;
  createStreamDecoder(opts?: DecodeOptions): StreamDecoder;
}
