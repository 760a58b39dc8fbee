/**
 * UTF-8 decoding of byte-fallback runs the way SentencePiece's decoder does it: every byte that does not start a
 * well-formed sequence (Unicode Table 3-7) becomes one U+FFFD. Unlike TextDecoder (one U+FFFD per maximal
 * subpart), this makes a streamed decode and a one-shot decode agree byte for byte with SentencePiece.
 */

/** Length of the well-formed sequence starting at bytes[i]: >0 complete, 0 invalid, -1 a valid prefix cut short. */
function sequenceLength(bytes: ArrayLike<number>, i: number): number {
  const b0 = bytes[i]!;
  if (b0 < 0x80) return 1;
  let len: number, lo = 0x80, hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) len = 2;
  else if (b0 >= 0xe0 && b0 <= 0xef) { len = 3; if (b0 === 0xe0) lo = 0xa0; else if (b0 === 0xed) hi = 0x9f; }
  else if (b0 >= 0xf0 && b0 <= 0xf4) { len = 4; if (b0 === 0xf0) lo = 0x90; else if (b0 === 0xf4) hi = 0x8f; }
  else return 0;
  for (let k = 1; k < len; k++) {
    if (i + k >= bytes.length) return -1;
    const b = bytes[i + k]!;
    if (k === 1 ? b < lo || b > hi : b < 0x80 || b > 0xbf) return 0;
  }
  return len;
}

/**
 * Decodes `bytes`. With `final` false, a trailing valid-but-incomplete sequence is left undecoded and
 * `consumed` tells how many bytes were turned into text.
 */
export function decodeUtf8(bytes: ArrayLike<number>, final: boolean): { text: string; consumed: number } {
  let text = '';
  let i = 0;
  while (i < bytes.length) {
    const len = sequenceLength(bytes, i);
    if (len === -1 && !final) break;
    if (len <= 0) { text += '\uFFFD'; i++; continue; }
    let cp = len === 1 ? bytes[i]! : bytes[i]! & (0xff >> (len + 1));
    for (let k = 1; k < len; k++) cp = (cp << 6) | (bytes[i + k]! & 0x3f);
    text += String.fromCodePoint(cp);
    i += len;
  }
  return { text, consumed: i };
}
