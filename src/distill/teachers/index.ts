/**
 * Teachers behind one interface (`Teacher` in ../types.ts): in-process (any model slimlm loads), a teacher cache written by
 * `slimlm teacher-cache`, a GGUF through node-llama-cpp, or a remote OpenAI-compatible server with prompt logprobs.
 */
import { statSync } from 'node:fs';
import type { Tokenizer } from '../../tokenizers/index.js';
import type { Teacher } from '../types.js';
import { CacheTeacher, isTeacherCache } from './cache.js';
import { GGUFTeacher } from './gguf.js';
import { InProcessTeacher } from './inprocess.js';
import { RemoteTeacher, type RemoteApi } from './remote.js';
import { assertSameVocabulary, vocabularyHash } from './common.js';

export { InProcessTeacher, type InProcessTeacherOptions } from './inprocess.js';
export {
  CacheTeacher, buildTeacherCache, readManifest, isTeacherCache, TeacherCacheError, CACHE_FORMAT, CACHE_VERSION,
  type CacheManifest, type CacheShard, type BuildCacheOptions, type BuildCacheResult, type CacheTeacherOptions,
} from './cache.js';
export { GGUFTeacher, type GGUFTeacherOptions } from './gguf.js';
export { RemoteTeacher, type RemoteTeacherOptions, type RemoteApi } from './remote.js';
export {
  assertSameVocabulary, vocabularyHash, denseToTopK, topKLogSoftmax, VocabularyMismatchError, TeacherError, PAD_LOGPROB, UNDERFLOW_LOGPROB,
} from './common.js';

export interface OpenTeacherOptions {
  /** Sparse top-k (required for GGUF and remote teachers; in-process returns dense logits without it). */
  topK?: number;
  threads?: number;
  /** The student's tokenizer: checked against the teacher's vocabulary, and used to map a remote server's token strings. */
  tokenizer?: Tokenizer;
  /** A .gguf runs through node-llama-cpp by default (fast, quantized); 'slimlm' loads it in-process instead. */
  ggufEngine?: 'llama.cpp' | 'slimlm';
  /** Remote teachers: which API (default: detected). */
  api?: RemoteApi | 'auto';
  model?: string;
  apiKey?: string;
  /** Remote teachers: per request (default 600 s). */
  timeoutMs?: number;
  /** Teacher caches: the fingerprint of the data the trainer uses (`loadData(...).fingerprint`). */
  expectFingerprint?: string;
  expectTokenizerHash?: string;
}

/** `--teacher PATH|CACHE|URL`: a http(s) URL → remote; a folder with manifest.json → cache; *.gguf → node-llama-cpp; else in-process. */
export async function openTeacher(spec: string, opts: OpenTeacherOptions = {}): Promise<Teacher> {
  const teacher = await open(spec, opts);
  try {
    if (opts.tokenizer) assertSameVocabulary(teacher as Teacher & { tokens?: string[] | null }, { tokenizer: opts.tokenizer });
  } catch (e) {
    await teacher.close();
    throw e;
  }
  return teacher;
}

async function open(spec: string, opts: OpenTeacherOptions): Promise<Teacher> {
  if (/^https?:\/\//.test(spec)) {
    return new RemoteTeacher({ url: spec, topK: opts.topK ?? 64, api: opts.api, model: opts.model, tokenizer: opts.tokenizer, apiKey: opts.apiKey, timeoutMs: opts.timeoutMs });
  }
  if (statSync(spec, { throwIfNoEntry: false })?.isDirectory() && isTeacherCache(spec)) {
    const expectTokenizerHash = opts.expectTokenizerHash ?? (opts.tokenizer ? vocabularyHash(opts.tokenizer) : undefined);
    return CacheTeacher.open(spec, { expectFingerprint: opts.expectFingerprint, expectTokenizerHash });
  }
  if (/\.gguf$/i.test(spec) && (opts.ggufEngine ?? 'llama.cpp') === 'llama.cpp') {
    return GGUFTeacher.load(spec, { topK: opts.topK ?? 64, threads: opts.threads });
  }
  return InProcessTeacher.load(spec, { topK: opts.topK, threads: opts.threads });
}
