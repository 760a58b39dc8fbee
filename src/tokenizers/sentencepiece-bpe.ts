/**
 * SentencePiece-style BPE tokenizer (Llama, Mistral, llama2.c), fed by three loaders:
 * `.model` (SentencePiece semantics, https://github.com/google/sentencepiece), `tokenizer.json`
 * (Hugging Face tokenizers semantics, https://github.com/huggingface/tokenizers) and llama2.c `tok*.bin`.
 * The loaders differ only in how a text segment is normalized and how pairs are prioritized; see README.md here.
 */
import { bpeMerge, MergeTable } from './bpe.js';
import type { Piece } from './sentencepiece-model.js';
import type { DecodeOptions, EncodeOptions, StreamDecoder, Tokenizer } from './types.js';
import { decodeUtf8 } from './utf8.js';

export const SPACE_SYMBOL = '\u2581';

export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens are only split out with `parseSpecial`, and are dropped by `skipSpecialTokens`. */
  special: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  singleWord?: boolean;
}

export interface SentencePieceBPEOptions {
  /** File the vocabulary came from, for messages. */
  source: string;
  format: 'sentencepiece' | 'huggingface' | 'llama2c';
  /** Indexed by id. Scores drive merges unless `mergeRanks` is given. */
  pieces: Piece[];
  /** HF merges in rank order (earlier merges first); absent: SentencePiece merges by piece score. */
  merges?: [string, string][];
  byteFallback: boolean;
  /** Collapse a run of unknown characters into one unk id (SentencePiece always does; HF `fuse_unk`). */
  fuseUnk: boolean;
  /** Normalizes one text segment between added tokens into the strings BPE runs on, one after the other. */
  pretokenize(segment: string, atTextStart: boolean): string[];
  addedTokens: AddedToken[];
  unkId: number | null; bosId: number | null; eosId: number | null; padId: number | null;
  addBos: boolean; addEos: boolean;
  chatTemplate: string | null;
  /**
   * How decoding drops the dummy-prefix space: 'sentencepiece' strips one "▁" from the first piece,
   * 'sentencepiece-all' keeps stripping while nothing is printed (remove_extra_whitespaces models),
   * 'strip-first' removes the first character of the output if it is a space (HF `Strip` decoder).
   */
  leadingSpace: 'keep' | 'sentencepiece' | 'sentencepiece-all' | 'strip-first';
}

interface TextSegment { text: string; start: number }

function bytesOf(s: string): Uint8Array { return new TextEncoder().encode(s); }

export class SentencePieceBPETokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly unkId: number | null;
  readonly chatTemplate: string | null;
  readonly addBosDefault: boolean;
  readonly addEosDefault: boolean;
  readonly source: string;
  readonly format: SentencePieceBPEOptions['format'];

  private readonly pieces: Piece[];
  private readonly lookup = new Map<string, number>();
  /** SentencePiece merges into normal, user-defined and unused pieces only. */
  private readonly mergeable = new Map<string, number>();
  private readonly userDefined = new Map<string, string[]>();
  private readonly byteIds: (number | undefined)[] = new Array(256);
  private readonly byteValue: Int16Array;
  private readonly surfaces: string[];
  private readonly special: Uint8Array;
  private readonly hasUnused: boolean;
  private readonly splitAtSpaceRuns: boolean;
  private readonly cache = new Map<string, number[]>();
  private readonly addedAll: Map<string, AddedToken[]>;
  private readonly mergeTable: MergeTable;
  /** Id a one-character string starts merging with (SentencePiece: its normal piece; HF: its vocab entry). */
  private readonly symbolIds: Map<string, number>;
  private readonly addedPlain: Map<string, AddedToken[]>;

  constructor(private readonly opts: SentencePieceBPEOptions) {
    const { pieces } = opts;
    this.pieces = pieces;
    this.source = opts.source;
    this.format = opts.format;
    this.vocabSize = pieces.length;
    this.bosId = opts.bosId; this.eosId = opts.eosId; this.padId = opts.padId; this.unkId = opts.unkId;
    this.chatTemplate = opts.chatTemplate;
    this.addBosDefault = opts.addBos && opts.bosId !== null;
    this.addEosDefault = opts.addEos && opts.eosId !== null;
    this.byteValue = new Int16Array(pieces.length).fill(-1);
    this.special = new Uint8Array(pieces.length);
    this.surfaces = new Array(pieces.length);

    // SentencePiece resolves reserved pieces (control, unknown, byte) before normal ones; the first id of a string wins.
    const normal = new Map<string, number>();
    pieces.forEach((p, id) => {
      const reserved = p.type === 'control' || p.type === 'unknown' || p.type === 'byte';
      const map = reserved ? this.lookup : normal;
      if (!map.has(p.piece)) map.set(p.piece, id);
      if (!reserved && !this.mergeable.has(p.piece)) this.mergeable.set(p.piece, id);
      if (p.type === 'user_defined' && opts.format === 'sentencepiece') {
        const first = p.piece[0] ?? '';
        const list = this.userDefined.get(first) ?? [];
        list.push(p.piece);
        list.sort((a, b) => b.length - a.length);
        this.userDefined.set(first, list);
      }
      const byte = p.type === 'byte' ? /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece) : null;
      if (byte) {
        const v = parseInt(byte[1]!, 16);
        this.byteValue[id] = v;
        if (this.byteIds[v] === undefined) this.byteIds[v] = id;
      }
      if (p.type === 'control' || p.type === 'unknown') this.special[id] = 1;
      this.surfaces[id] = p.piece.replaceAll(SPACE_SYMBOL, ' ');
    });
    for (const [k, v] of normal) if (!this.lookup.has(k)) this.lookup.set(k, v);
    for (const t of opts.addedTokens) this.special[t.id] = t.special ? 1 : 0;
    this.addedAll = groupByFirstChar(opts.addedTokens);
    this.addedPlain = groupByFirstChar(opts.addedTokens.filter((t) => !t.special));
    this.hasUnused = pieces.some((p) => p.type === 'unused');
    this.splitAtSpaceRuns = this.mergeable.has(SPACE_SYMBOL) && ![...this.mergeable.keys()].some((p) => /[^\u2581]\u2581/.test(p));
    this.symbolIds = opts.merges ? this.lookup : this.mergeable;
    this.mergeTable = opts.merges ? this.rankTable(opts.merges) : this.scoreTable();
  }

  /** The vocabulary by id (piece, score, type), e.g. for GGUF export. */
  get vocabulary(): readonly Piece[] { return this.pieces; }

  /** HF merges in rank order, when the tokenizer came with them (tokenizer.json); null for score-driven merges. */
  get merges(): readonly (readonly [string, string])[] | null { return this.opts.merges ?? null; }

  /** SentencePiece: any two pieces whose concatenation is a piece merge, best score first. */
  private scoreTable(): MergeTable {
    const table = new MergeTable(this.pieces.length);
    for (const [piece, id] of this.mergeable) {
      for (let k = 1; k < piece.length; k++) {
        const left = this.mergeable.get(piece.slice(0, k)), right = this.mergeable.get(piece.slice(k));
        if (left !== undefined && right !== undefined) table.add(left, right, id, this.pieces[id]!.score);
      }
    }
    return table;
  }

  /** HF: only the listed merges, lowest rank first. */
  private rankTable(merges: [string, string][]): MergeTable {
    const table = new MergeTable(this.pieces.length);
    merges.forEach(([a, b], rank) => {
      const left = this.lookup.get(a), right = this.lookup.get(b), merged = this.lookup.get(a + b);
      if (left === undefined || right === undefined || merged === undefined) {
        throw new Error(`${this.source}: merge ${JSON.stringify(a + ' ' + b)} uses a token missing from the vocabulary`);
      }
      table.add(left, right, merged, -rank);
    });
    return table;
  }

  idToToken(id: number): string | undefined { return this.pieces[id]?.piece; }
  tokenToId(token: string): number | undefined { return this.lookup.get(token); }
  isSpecial(id: number): boolean { return this.special[id] === 1; }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    const special = opts.add_special_tokens ?? true;
    if ((opts.addBos ?? (special && this.addBosDefault)) && this.bosId !== null) ids.push(this.bosId);
    for (const seg of this.splitAddedTokens(text, opts.parseSpecial ?? false)) {
      if (typeof seg === 'number') { ids.push(seg); continue; }
      for (const word of this.opts.pretokenize(seg.text, seg.start === 0)) this.encodeWord(word, ids);
    }
    if ((opts.addEos ?? (special && this.addEosDefault)) && this.eosId !== null) ids.push(this.eosId);
    return ids;
  }

  decode(ids: number[], opts: DecodeOptions = {}): string {
    const stream = this.createStreamDecoder(opts);
    let text = '';
    for (const id of ids) text += stream.push(id);
    return text + stream.flush();
  }

  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    const skipSpecial = opts.skipSpecialTokens ?? opts.skip_special_tokens ?? false;
    const mode = this.opts.leadingSpace;
    // SentencePiece's decoder state (sentencepiece_processor.cc Decode): is_bos_ws, bos_ws_seen, text non-empty.
    let bosWs = true, bosWsSeen = false, emitted = false, stripped = false;
    let pending: number[] = [];
    const emit = (text: string): string => {
      if (mode === 'strip-first' && !stripped && text) {
        stripped = true;
        if (text.startsWith(' ')) text = text.slice(1);
      }
      if (text) emitted = true;
      return text;
    };
    const flushBytes = (): string => {
      const text = decodeUtf8(pending, true).text;
      pending = [];
      return emit(text);
    };
    const sentencePieceStep = (): void => {
      if (bosWsSeen || emitted) bosWs = false;
      bosWsSeen = false;
    };
    return {
      push: (id: number): string => {
        if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
          throw new RangeError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize}) of ${this.source}`);
        }
        const special = this.special[id] === 1;
        if (skipSpecial && special) {
          if (mode === 'sentencepiece' || mode === 'sentencepiece-all') sentencePieceStep();
          return '';
        }
        const byte = this.byteValue[id]!;
        if (byte >= 0) {
          pending.push(byte);
          const { text, consumed } = decodeUtf8(pending, false);
          pending = pending.slice(consumed);
          return emit(text);
        }
        const before = pending.length ? flushBytes() : '';
        let surface = this.surfaces[id]!;
        if (mode === 'sentencepiece' || mode === 'sentencepiece-all') {
          sentencePieceStep();
          if (bosWs && !special && surface.startsWith(' ')) {
            surface = surface.slice(1);
            // With remove_extra_whitespaces SentencePiece strips every leading space piece, else only the first.
            bosWsSeen = mode === 'sentencepiece';
          }
        }
        return before + emit(surface);
      },
      flush: (): string => {
        const text = flushBytes();
        bosWs = true; bosWsSeen = false; emitted = false; stripped = false;
        return text;
      },
    };
  }

  /** Splits out added tokens (always the non-special ones, special ones with `parseSpecial`), leftmost-longest. */
  private splitAddedTokens(text: string, parseSpecial: boolean): (TextSegment | number)[] {
    const table = parseSpecial ? this.addedAll : this.addedPlain;
    if (table.size === 0) return text ? [{ text, start: 0 }] : [];
    const out: (TextSegment | number)[] = [];
    let segStart = 0;
    let i = 0;
    while (i < text.length) {
      const match = table.get(text[i]!)?.find((t) => text.startsWith(t.content, i) && wordBoundaryOk(t, text, i));
      if (!match) { i++; continue; }
      let before = i, after = i + match.content.length;
      if (match.lstrip) while (before > segStart && /\s/.test(text[before - 1]!)) before--;
      if (match.rstrip) while (after < text.length && /\s/.test(text[after]!)) after++;
      if (before > segStart) out.push({ text: text.slice(segStart, before), start: segStart });
      out.push(match.id);
      segStart = i = after;
    }
    if (segStart < text.length) out.push({ text: text.slice(segStart), start: segStart });
    return out;
  }

  private encodeWord(word: string, out: number[]): void {
    if (!this.splitAtSpaceRuns) return this.encodeChunk(word, out);
    // No piece holds "x▁" (x not ▁), so merges never cross the start of a "▁" run: chunks there are independent,
    // which keeps heaps small and lets repeated words come from the cache.
    let start = 0;
    for (let i = 1; i <= word.length; i++) {
      if (i < word.length && !(word[i] === SPACE_SYMBOL && word[i - 1] !== SPACE_SYMBOL)) continue;
      const chunk = word.slice(start, i);
      start = i;
      let ids = this.cache.get(chunk);
      if (!ids) {
        ids = [];
        this.encodeChunk(chunk, ids);
        if (chunk.length <= 64) {
          if (this.cache.size >= 1 << 16) this.cache.clear();
          this.cache.set(chunk, ids);
        }
      }
      for (const id of ids) out.push(id);
    }
  }

  private encodeChunk(word: string, out: number[]): void {
    if (!word) return;
    const strings: string[] = [];
    let frozen: Uint8Array | undefined;
    for (let i = 0; i < word.length;) {
      const user = this.userDefined.size ? this.userDefined.get(word[i]!)?.find((u) => word.startsWith(u, i)) : undefined;
      if (user) {
        (frozen ??= new Uint8Array(word.length))[strings.length] = 1;
        strings.push(user);
        i += user.length;
        continue;
      }
      const len = word.codePointAt(i)! > 0xffff ? 2 : 1;
      strings.push(word.slice(i, i + len));
      i += len;
    }
    const ids = new Int32Array(strings.length);
    for (let i = 0; i < strings.length; i++) ids[i] = this.symbolIds.get(strings[i]!) ?? -1;
    // Unused pieces take part in merging but are split back afterwards (SentencePiece's resegmentation).
    const revMerge = new Map<number, [number, number]>();
    const onMerge = this.hasUnused ? (m: number, l: number, r: number) => { if (this.pieces[m]!.type === 'unused') revMerge.set(m, [l, r]); } : undefined;
    let prevUnk = false;
    const emit = (id: number, text: string): void => {
      const parts = revMerge.get(id);
      if (parts) { emit(parts[0], this.pieces[parts[0]]!.piece); emit(parts[1], this.pieces[parts[1]]!.piece); return; }
      // SentencePiece resolves the final string again, reserved pieces first.
      const final = id >= 0 && !this.opts.merges ? this.lookup.get(text) : id >= 0 ? id : undefined;
      if (final !== undefined && final !== this.unkId) { out.push(final); prevUnk = false; return; }
      if (this.opts.byteFallback) {
        const bytes = bytesOf(text);
        if (bytes.every((b) => this.byteIds[b] !== undefined)) {
          for (const b of bytes) out.push(this.byteIds[b]!);
          prevUnk = false;
          return;
        }
      }
      if (this.unkId === null) throw new Error(`${this.source}: cannot encode ${JSON.stringify(text)}: no unknown token and no byte fallback`);
      if (!(prevUnk && this.opts.fuseUnk)) out.push(this.unkId);
      prevUnk = true;
    };
    for (const i of bpeMerge(ids, this.mergeTable, frozen, onMerge)) {
      const id = ids[i]!;
      emit(id, id >= 0 ? this.pieces[id]!.piece : strings[i]!);
    }
  }
}

function groupByFirstChar(tokens: AddedToken[]): Map<string, AddedToken[]> {
  const map = new Map<string, AddedToken[]>();
  for (const t of tokens) {
    if (!t.content) continue;
    const list = map.get(t.content[0]!) ?? [];
    list.push(t);
    list.sort((a, b) => b.content.length - a.content.length);
    map.set(t.content[0]!, list);
  }
  return map;
}

function wordBoundaryOk(t: AddedToken, text: string, i: number): boolean {
  if (!t.singleWord) return true;
  const isWordChar = (c: string | undefined) => c !== undefined && /[\p{L}\p{N}_]/u.test(c);
  return !isWordChar(text[i - 1]) && !isWordChar(text[i + t.content.length]);
}
