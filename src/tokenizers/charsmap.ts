/**
 * SentencePiece's precompiled normalization charsmap (e.g. nmt_nfkc): a Darts-clone double-array trie over UTF-8
 * byte strings whose values index NUL-terminated replacement strings.
 * Layout: uint32le trie size in bytes, the trie's uint32le units, then the replacement strings.
 * Specs: https://github.com/google/sentencepiece/blob/master/src/normalizer.cc (NormalizePrefix),
 * https://github.com/s-yata/darts-clone (DoubleArray::commonPrefixSearch).
 */
export class PrecompiledCharsmap {
  private readonly units: Uint32Array;
  private readonly strings: Uint8Array;

  constructor(blob: Uint8Array) {
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    if (blob.length < 4) throw new Error('precompiled charsmap is truncated');
    const trieSize = view.getUint32(0, true);
    if (trieSize % 4 !== 0 || 4 + trieSize > blob.length) throw new Error(`precompiled charsmap trie size ${trieSize} does not fit in ${blob.length} bytes`);
    this.units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = view.getUint32(4 + 4 * i, true);
    this.strings = blob.subarray(4 + trieSize);
  }

  /** Longest rule matching bytes[start..]: [matched byte length, replacement offset], or null. */
  private longestMatch(bytes: Uint8Array, start: number): [number, number] | null {
    const units = this.units;
    if (units.length === 0) return null;
    let best: [number, number] | null = null;
    let pos = offsetOf(units[0]!);
    for (let i = start; i < bytes.length; i++) {
      const c = bytes[i]!;
      pos ^= c;
      const unit = units[pos];
      if (unit === undefined || (unit & 0x800000ff) !== c) break;
      pos ^= offsetOf(unit);
      if ((unit >>> 8) & 1) best = [i - start + 1, units[pos]! & 0x7fffffff];
    }
    return best;
  }

  normalize(text: string): string {
    const bytes = new TextEncoder().encode(text);
    const out: number[] = [];
    for (let i = 0; i < bytes.length;) {
      const m = this.longestMatch(bytes, i);
      if (m) {
        for (let k = m[1]; k < this.strings.length && this.strings[k] !== 0; k++) out.push(this.strings[k]!);
        i += m[0];
      } else {
        const len = utf8Length(bytes[i]!);
        for (let k = 0; k < len && i < bytes.length; k++) out.push(bytes[i++]!);
      }
    }
    return new TextDecoder("utf-8", { ignoreBOM: true }).decode(new Uint8Array(out)); // a leading U+FEFF is text here
  }
}

function offsetOf(unit: number): number { return (unit >>> 10) << ((unit & (1 << 9)) >>> 6); }

function utf8Length(b0: number): number { return b0 < 0x80 ? 1 : b0 < 0xe0 ? 2 : b0 < 0xf0 ? 3 : 4; }
