/**
 * Text normalization before BPE.
 * - SentencePiece: normalizer.cc (https://github.com/google/sentencepiece/blob/master/src/normalizer.cc):
 *   optional precompiled charsmap, remove_extra_whitespaces, add_dummy_prefix, escape_whitespaces.
 * - Hugging Face: the `normalizer` (Sequence/Prepend/Replace/NFC…) and `pre_tokenizer` (Metaspace) of tokenizer.json
 *   (https://github.com/huggingface/tokenizers/tree/main/tokenizers/src/normalizers, …/pre_tokenizers/metaspace.rs).
 */
import type { NormalizerSpec } from './sentencepiece-model.js';
import { SPACE_SYMBOL } from './sentencepiece-bpe.js';
import { PrecompiledCharsmap } from './charsmap.js';

/** Returns SentencePiece's normalizer for one sentence; output is the string its BPE model sees. */
export function sentencePieceNormalizer(spec: NormalizerSpec, treatWhitespaceAsSuffix: boolean): (text: string) => string {
  const charsmap = spec.precompiledCharsmap.length ? new PrecompiledCharsmap(spec.precompiledCharsmap) : null;
  const space = spec.escapeWhitespaces ? SPACE_SYMBOL : ' ';
  return (input: string): string => {
    let text = charsmap ? charsmap.normalize(input) : input;
    if (spec.removeExtraWhitespaces) {
      // Leading spaces dropped and inner runs collapsed; only U+0020 (after the charsmap) counts as whitespace.
      text = text.replace(/^ +/, '').replace(/ {2,}/g, ' ');
    }
    if (!text) return '';
    if (spec.escapeWhitespaces) text = text.replaceAll(' ', SPACE_SYMBOL);
    if (spec.addDummyPrefix && !treatWhitespaceAsSuffix) text = space + text;
    // Trailing whitespace goes after escaping, so literal U+2581 at the end is dropped too (as SentencePiece does).
    if (spec.removeExtraWhitespaces) while (text.endsWith(space)) text = text.slice(0, -space.length);
    if (spec.addDummyPrefix && treatWhitespaceAsSuffix) text += space;
    return text;
  };
}

type Json = Record<string, unknown>;

/** A tokenizer.json `normalizer` as a string transform. Throws for kinds these models never use. */
export function hfNormalizer(spec: unknown, file: string): (s: string) => string {
  if (spec === null || spec === undefined) return (s) => s;
  const n = spec as Json;
  switch (n.type) {
    case 'Sequence': {
      const steps = ((n.normalizers as unknown[]) ?? []).map((x) => hfNormalizer(x, file));
      return (s) => steps.reduce((acc, f) => f(acc), s);
    }
    case 'Prepend': {
      const p = String(n.prepend);
      return (s) => (s ? p + s : s);
    }
    case 'Replace': {
      const from = stringPattern(n.pattern, file), to = String(n.content);
      return (s) => s.replaceAll(from, to);
    }
    case 'NFC': case 'NFD': case 'NFKC': case 'NFKD': {
      const form = n.type;
      return (s) => s.normalize(form);
    }
    case 'Lowercase': return (s) => s.toLowerCase();
    case 'Strip': {
      const left = n.strip_left !== false, right = n.strip_right !== false;
      return (s) => (left && right ? s.trim() : left ? s.trimStart() : right ? s.trimEnd() : s);
    }
    default:
      throw new Error(`${file}: unsupported normalizer type ${JSON.stringify(n.type)}`);
  }
}

/** A tokenizer.json `pre_tokenizer` (null, Metaspace, or a Sequence of them) as a splitter. */
export function hfPreTokenizer(spec: unknown, file: string): (s: string, atTextStart: boolean) => string[] {
  if (spec === null || spec === undefined) return (s) => (s ? [s] : []);
  const p = spec as Json;
  if (p.type === 'Sequence') {
    const steps = ((p.pretokenizers as unknown[]) ?? []).map((x) => hfPreTokenizer(x, file));
    return (s, atStart) => steps.reduce<string[]>((words, f) => words.flatMap((w) => f(w, atStart)), [s]);
  }
  if (p.type !== 'Metaspace') throw new Error(`${file}: unsupported pre_tokenizer type ${JSON.stringify(p.type)}`);
  const replacement = String(p.replacement ?? SPACE_SYMBOL);
  // Older files say add_prefix_space; newer ones prepend_scheme ("always" | "first" | "never").
  const scheme = typeof p.prepend_scheme === 'string' ? p.prepend_scheme : p.add_prefix_space === false ? 'never' : 'always';
  const split = p.split !== false;
  return (s, atTextStart) => {
    if (!s) return [];
    let t = s.replaceAll(' ', replacement);
    // HF prepends only when the segment doesn't already start with the replacement ("first": only at offset 0).
    if (!t.startsWith(replacement) && (scheme === 'always' || (scheme === 'first' && atTextStart))) t = replacement + t;
    if (!split) return [t];
    // Split before each replacement char, keeping it with what follows (MergedWithNext).
    return t.split(new RegExp(`(?=${escapeRegExp(replacement)})`, 'u')).filter(Boolean);
  };
}

/** Whether the tokenizer.json decoder removes the first leading space (Strip start / Metaspace decoder). */
export function hfDecoderStripsLeadingSpace(spec: unknown, file: string): boolean {
  if (spec === null || spec === undefined) return false;
  const d = spec as Json;
  switch (d.type) {
    case 'Sequence': return ((d.decoders as unknown[]) ?? []).some((x) => hfDecoderStripsLeadingSpace(x, file));
    case 'Strip': return Number(d.start ?? 0) > 0 && d.content === ' ';
    case 'Metaspace': return typeof d.prepend_scheme === 'string' ? d.prepend_scheme !== 'never' : d.add_prefix_space !== false;
    case 'Replace': case 'ByteFallback': case 'Fuse': return false;
    default: throw new Error(`${file}: unsupported decoder type ${JSON.stringify(d.type)}`);
  }
}

function stringPattern(pattern: unknown, file: string): string {
  const p = pattern as Json | undefined;
  if (p && typeof p.String === 'string') return p.String;
  throw new Error(`${file}: only string patterns are supported in Replace, got ${JSON.stringify(pattern)}`);
}

function escapeRegExp(s: string): string { return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); }
