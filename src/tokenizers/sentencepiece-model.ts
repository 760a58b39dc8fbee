/**
 * Reader for SentencePiece `.model` files (a serialized `sentencepiece.ModelProto`).
 * Spec: https://github.com/google/sentencepiece/blob/master/src/sentencepiece_model.proto
 * Only the fields a BPE encoder/decoder needs are decoded; everything else is skipped by wire type.
 */

export type PieceType = 'normal' | 'unknown' | 'control' | 'user_defined' | 'unused' | 'byte';
const PIECE_TYPES: Record<number, PieceType> = { 1: 'normal', 2: 'unknown', 3: 'control', 4: 'user_defined', 5: 'unused', 6: 'byte' };
const MODEL_TYPES: Record<number, string> = { 1: 'unigram', 2: 'bpe', 3: 'word', 4: 'char' };

export interface Piece { piece: string; score: number; type: PieceType }

export interface NormalizerSpec {
  name: string;
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModel {
  pieces: Piece[];
  modelType: string;
  byteFallback: boolean;
  treatWhitespaceAsSuffix: boolean;
  unkId: number; bosId: number; eosId: number; padId: number;  // -1 = disabled, as in the proto
  unkSurface: string;
  normalizer: NormalizerSpec;
}

/** Minimal protobuf wire-format reader (varints, fixed32, length-delimited). */
class ProtoReader {
  pos: number;
  constructor(readonly buf: Uint8Array, start = 0, readonly end = buf.length, private readonly where = 'message') { this.pos = start; }

  private fail(msg: string): never {
    throw new Error(`${msg} at byte ${this.pos} of ${this.where}`);
  }
  done(): boolean { return this.pos >= this.end; }
  varint(): number {
    let result = 0, mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 128;
    }
    this.fail('malformed varint');
  }
  /** int32 fields are sign-extended to 64-bit varints on the wire: keep the low 32 bits. */
  int32(): number {
    let low = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.buf[this.pos++]!;
      if (i < 5) low |= (b & 0x7f) << (7 * i);
      if ((b & 0x80) === 0) return low | 0;
    }
    this.fail('malformed varint');
  }
  float(): number {
    if (this.pos + 4 > this.end) this.fail('truncated float');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }
  bytes(): Uint8Array {
    const len = this.varint();
    if (this.pos + len > this.end) this.fail(`length-delimited field of ${len} bytes overruns its message`);
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  // ignoreBOM: a piece may be U+FEFF itself (Mistral's 31759), which a default TextDecoder would drop.
  string(): string { return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(this.bytes()); }
  sub(): ProtoReader {
    const len = this.varint();
    if (this.pos + len > this.end) this.fail(`sub-message of ${len} bytes overruns its parent`);
    const r = new ProtoReader(this.buf, this.pos, this.pos + len, this.where);
    this.pos += len;
    return r;
  }
  skip(wireType: number): void {
    switch (wireType) {
      case 0: this.varint(); break;
      case 1: this.pos += 8; break;
      case 2: this.bytes(); break;
      case 5: this.pos += 4; break;
      default: this.fail(`unsupported wire type ${wireType}`);
    }
    if (this.pos > this.end) this.fail('truncated field');
  }
  /** Iterates (fieldNumber, wireType) tags until the end of this message. */
  *fields(): Generator<[number, number]> {
    while (!this.done()) {
      const tag = this.varint();
      const field = Math.floor(tag / 8), wire = tag & 7;
      if (field === 0) this.fail('field number 0');
      yield [field, wire];
    }
  }
}

function parsePiece(r: ProtoReader): Piece {
  const p: Piece = { piece: '', score: 0, type: 'normal' };
  for (const [f, w] of r.fields()) {
    if (f === 1 && w === 2) p.piece = r.string();
    else if (f === 2 && w === 5) p.score = r.float();
    else if (f === 3 && w === 0) {
      const t = r.varint();
      const type = PIECE_TYPES[t];
      if (!type) throw new Error(`unknown piece type ${t}`);
      p.type = type;
    } else r.skip(w);
  }
  return p;
}

function parseNormalizer(r: ProtoReader | null): NormalizerSpec {
  const n: NormalizerSpec = { name: '', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true };
  if (!r) return n;
  for (const [f, w] of r.fields()) {
    if (f === 1 && w === 2) n.name = r.string();
    else if (f === 2 && w === 2) n.precompiledCharsmap = r.bytes();
    else if (f === 3 && w === 0) n.addDummyPrefix = r.varint() !== 0;
    else if (f === 4 && w === 0) n.removeExtraWhitespaces = r.varint() !== 0;
    else if (f === 5 && w === 0) n.escapeWhitespaces = r.varint() !== 0;
    else r.skip(w);
  }
  return n;
}

/** Parses a ModelProto. `name` is used in error messages (usually the file path). */
export function parseSentencePieceModel(buf: Uint8Array, name: string): SentencePieceModel {
  const m: SentencePieceModel = {
    pieces: [], modelType: 'unigram', byteFallback: false, treatWhitespaceAsSuffix: false,
    unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
    normalizer: parseNormalizer(null),
  };
  try {
    const r = new ProtoReader(buf, 0, buf.length, name);
    let normalizer: NormalizerSpec | null = null;
    for (const [f, w] of r.fields()) {
      if (f === 1 && w === 2) m.pieces.push(parsePiece(r.sub()));
      else if (f === 2 && w === 2) {
        const t = r.sub();
        for (const [tf, tw] of t.fields()) {
          if (tf === 3 && tw === 0) m.modelType = MODEL_TYPES[t.varint()] ?? 'unknown';
          else if (tf === 24 && tw === 0) m.treatWhitespaceAsSuffix = t.varint() !== 0;
          else if (tf === 35 && tw === 0) m.byteFallback = t.varint() !== 0;
          else if (tf === 40 && tw === 0) m.unkId = t.int32();
          else if (tf === 41 && tw === 0) m.bosId = t.int32();
          else if (tf === 42 && tw === 0) m.eosId = t.int32();
          else if (tf === 43 && tw === 0) m.padId = t.int32();
          else if (tf === 44 && tw === 2) m.unkSurface = t.string();
          else t.skip(tw);
        }
      } else if (f === 3 && w === 2) normalizer = parseNormalizer(r.sub());
      else r.skip(w);
    }
    m.normalizer = normalizer ?? m.normalizer;
  } catch (e) {
    throw new Error(`${name}: not a valid SentencePiece model (${(e as Error).message})`);
  }
  if (m.pieces.length === 0) throw new Error(`${name}: not a valid SentencePiece model (no pieces)`);
  return m;
}

/** Minimal protobuf wire-format writer: the fields `serializeSentencePieceModel` emits. */
class ProtoWriter {
  private readonly chunks: number[] = [];
  private varint(v: number): void {
    // Negative int32 values go on the wire as 10-byte two's-complement varints, as protobuf encodes them.
    let n = v < 0 ? BigInt.asUintN(64, BigInt(v)) : BigInt(v);
    do { const b = Number(n & 0x7fn); n >>= 7n; this.chunks.push(n ? b | 0x80 : b); } while (n);
  }
  int(field: number, v: number): this { this.varint(field * 8); this.varint(v); return this; }
  bool(field: number, v: boolean): this { return this.int(field, v ? 1 : 0); }
  float(field: number, v: number): this {
    this.varint(field * 8 + 5);
    const b = new Uint8Array(4); new DataView(b.buffer).setFloat32(0, v, true);
    this.chunks.push(...b);
    return this;
  }
  bytes(field: number, data: Uint8Array): this {
    this.varint(field * 8 + 2); this.varint(data.length);
    for (const b of data) this.chunks.push(b);
    return this;
  }
  string(field: number, s: string): this { return this.bytes(field, new TextEncoder().encode(s)); }
  finish(): Uint8Array { return Uint8Array.from(this.chunks); }
}

const PIECE_TYPE_IDS = Object.fromEntries(Object.entries(PIECE_TYPES).map(([id, t]) => [t, Number(id)])) as Record<PieceType, number>;
const MODEL_TYPE_IDS: Record<string, number> = { unigram: 1, bpe: 2, word: 3, char: 4 };

/**
 * Serializes a model as a SentencePiece `.model` (ModelProto): the pieces, the trainer fields an encoder reads
 * (model type, vocab size, byte fallback, special ids) and the normalizer spec. `parseSentencePieceModel` and the
 * sentencepiece library read it back; what slimlm writes when a tokenizer exists only inside a GGUF.
 */
export function serializeSentencePieceModel(m: SentencePieceModel): Uint8Array {
  const out = new ProtoWriter();
  for (const p of m.pieces) out.bytes(1, new ProtoWriter().string(1, p.piece).float(2, p.score).int(3, PIECE_TYPE_IDS[p.type]).finish());
  const modelType = MODEL_TYPE_IDS[m.modelType];
  if (modelType === undefined) throw new Error(`cannot serialize SentencePiece model type ${m.modelType}`);
  out.bytes(2, new ProtoWriter().int(3, modelType).int(4, m.pieces.length).bool(24, m.treatWhitespaceAsSuffix).bool(35, m.byteFallback)
    .int(40, m.unkId).int(41, m.bosId).int(42, m.eosId).int(43, m.padId).string(44, m.unkSurface).finish());
  const n = m.normalizer;
  out.bytes(3, new ProtoWriter().string(1, n.name).bytes(2, n.precompiledCharsmap).bool(3, n.addDummyPrefix)
    .bool(4, n.removeExtraWhitespaces).bool(5, n.escapeWhitespaces).finish());
  return out.finish();
}
