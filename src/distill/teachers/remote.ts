/**
 * Remote teacher: an OpenAI-compatible server that returns log-probabilities of the prompt tokens.
 * - 'vllm': POST /v1/completions with `prompt_logprobs: k` (vLLM extension; https://docs.vllm.ai/en/latest/api/vllm/logprobs.html):
 *   `choices[0].prompt_logprobs[i]` maps token id → {logprob, rank, decoded_token} for the token at position i given the
 *   ones before; the last position comes from the one generated token's `logprobs` (`return_tokens_as_token_ids`).
 * - 'openai-echo': POST /v1/completions with `echo: true, logprobs: k` (legacy OpenAI completions;
 *   https://platform.openai.com/docs/api-reference/completions/create): `logprobs.top_logprobs[i]` maps token *strings* to logprobs.
 * - 'llama.cpp': POST /completion with `n_probs: k, n_predict: 1` (https://github.com/ggml-org/llama.cpp/tree/master/tools/server),
 *   one request per prefix (`cache_prompt` makes each cost one token); `completion_probabilities[0].top_logprobs` (ids) or the
 *   older `probs: [{tok_str, prob}]`.
 * Token strings are mapped to ids through the student's tokenizer; a string it does not know means another vocabulary → error.
 */
import type { Tokenizer } from '../../tokenizers/index.js';
import type { Teacher, TeacherOutput, TokenBatch } from '../types.js';
import { batchRows, checkBatch, PAD_LOGPROB, TeacherError, UNDERFLOW_LOGPROB, VocabularyMismatchError } from './common.js';

export type RemoteApi = 'vllm' | 'openai-echo' | 'llama.cpp';

export interface RemoteTeacherOptions {
  /** Server root, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted). */
  url: string;
  topK: number;
  /** Default: 'llama.cpp' if GET /props answers like llama.cpp's server, else 'vllm'. */
  api?: RemoteApi | 'auto';
  /** `model` field of the request (vLLM needs the served name; default: the first of GET /v1/models). */
  model?: string;
  /** The student's tokenizer: maps token strings to ids and fixes the vocabulary size. */
  tokenizer?: Tokenizer;
  /** Vocabulary size when no tokenizer is given (then the server must return token ids). */
  vocabSize?: number;
  apiKey?: string;
  /** Requests in flight at once (default 4). */
  concurrency?: number;
  /** Per request (default 600 s: a big batch on a busy server can be slow). */
  timeoutMs?: number;
}

type Dist = { id: number; logprob: number }[];

export class RemoteTeacher implements Teacher {
  readonly vocabSize: number;
  readonly description: string;
  private readonly base: string;
  private api: RemoteApi | null;
  private model: string | undefined;
  private stringToId: Map<string, number> | null = null;
  /** Aborts every request in flight (a failed batch, close()). */
  private inFlight = new AbortController();

  constructor(private readonly opts: RemoteTeacherOptions) {
    this.base = opts.url.replace(/\/+$/, '').replace(/\/v1$/, '');
    const vocab = opts.tokenizer?.vocabSize ?? opts.vocabSize;
    if (!vocab) throw new TeacherError('remote teacher: give the student tokenizer (or vocabSize) so token ids can be checked');
    this.vocabSize = vocab;
    if (!Number.isInteger(opts.topK) || opts.topK < 1) throw new TeacherError(`remote teacher: top-k must be a positive integer, got ${opts.topK}`);
    this.api = opts.api && opts.api !== 'auto' ? opts.api : null;
    this.model = opts.model;
    this.description = `${this.base} (remote${this.api ? `, ${this.api}` : ''})`;
  }

  private async request(path: string, body?: unknown): Promise<any> {
    const res = await fetch(this.base + path, {
      method: body === undefined ? 'GET' : 'POST',
      headers: { 'content-type': 'application/json', ...(this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.any([this.inFlight.signal, AbortSignal.timeout(this.opts.timeoutMs ?? 600_000)]),
    }).catch((e: Error) => {
      const why = e.name === 'TimeoutError' ? `no answer within ${((this.opts.timeoutMs ?? 600_000) / 1000).toFixed(0)} s` : e.message;
      throw new TeacherError(`remote teacher ${this.base}${path}: ${why}${(e as { cause?: Error }).cause ? ` (${(e as { cause?: Error }).cause!.message})` : ''}`);
    });
    const text = await res.text();
    if (!res.ok) throw new TeacherError(`remote teacher ${this.base}${path}: HTTP ${res.status}: ${text.slice(0, 500)}`);
    try {
      return JSON.parse(text);
    } catch {
      throw new TeacherError(`remote teacher ${this.base}${path}: the answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  private async resolveApi(): Promise<RemoteApi> {
    if (this.api) return this.api;
    const props = await this.request('/props').catch(() => null);
    this.api = props && typeof props === 'object' && ('default_generation_settings' in props || 'total_slots' in props) ? 'llama.cpp' : 'vllm';
    return this.api;
  }

  private async modelName(): Promise<string | undefined> {
    if (this.model === undefined) {
      const models = await this.request('/v1/models').catch(() => null);
      this.model = models?.data?.[0]?.id ?? '';
    }
    return this.model || undefined;
  }

  /** Token string (as a server prints it) → id in the student's vocabulary. */
  private idOf(token: string): number {
    const m = /^token_id:(\d+)$/.exec(token);
    if (m) return this.checkId(Number(m[1]));
    const tok = this.opts.tokenizer;
    if (!tok) throw new TeacherError(`remote teacher: the server returned token strings (${JSON.stringify(token)}); give the student tokenizer to map them to ids`);
    if (!this.stringToId) {
      // Pieces as stored ("▁the", "<0x0A>") and as servers print them (" the", "\n"); the exact piece wins on a clash.
      const map = new Map<string, number>();
      for (let id = tok.vocabSize - 1; id >= 0; id--) {
        const printed = this.printed(id);
        if (typeof printed === 'string' && !map.has(printed)) map.set(printed, id);
      }
      for (let id = tok.vocabSize - 1; id >= 0; id--) {
        const piece = tok.idToToken(id);
        if (piece !== undefined) map.set(piece, id);
      }
      this.stringToId = map;
    }
    const id = this.stringToId.get(token);
    if (id === undefined) throw new VocabularyMismatchError(`vocabulary mismatch: the server's token ${JSON.stringify(token)} is not in the student's vocabulary; the teacher uses another tokenizer`);
    return id;
  }

  /** How a server prints the student's token `id` (" the" for "▁the", "\n" for <0x0A>); null for bytes ≥ 0x80. */
  private printed(id: number): string | null | undefined {
    const piece = this.opts.tokenizer?.idToToken(id);
    if (piece === undefined) return undefined;
    const byte = /^<0x([0-9A-F]{2})>$/.exec(piece);
    return byte ? (parseInt(byte[1], 16) < 0x80 ? String.fromCharCode(parseInt(byte[1], 16)) : null) : piece.replaceAll('\u2581', ' ');
  }

  private textSamples: [number, string][] | null = [];
  /**
   * Servers that answer with ids also print each token: over the first answers (32 ids), those texts must mostly agree
   * with the student's pieces, or the server runs another tokenizer of the same size (Llama 2 and Mistral both have 32000).
   */
  private checkTokenTexts(pairs: [number, unknown][]): void {
    if (!this.textSamples || !this.opts.tokenizer) return;
    for (const [id, text] of pairs) if (typeof text === 'string' && typeof this.printed(id) === 'string') this.textSamples.push([id, text]);
    if (this.textSamples.length < 32) return;
    const known = this.textSamples;
    this.textSamples = null;
    const differ = known.filter(([id, text]) => this.printed(id) !== text && this.opts.tokenizer!.idToToken(id) !== text);
    if (differ.length > known.length / 2) {
      const [id, text] = differ[0];
      throw new VocabularyMismatchError(`vocabulary mismatch: the server prints ${differ.length} of ${known.length} token ids differently from the student's tokenizer ` +
        `(id ${id}: server ${JSON.stringify(text)}, student ${JSON.stringify(this.opts.tokenizer!.idToToken(id))}); the teacher uses another tokenizer of the same size`);
    }
  }

  private checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new VocabularyMismatchError(`vocabulary mismatch: the server returned token id ${id}, outside the student's vocabulary of ${this.vocabSize}`);
    }
    return id;
  }

  /** A log-probability as servers send it (a number, or a numeric string); -Infinity → the underflow floor; anything else that is not finite and ≤ 0 is an error. */
  private logprob(v: unknown, where: string): number {
    const x = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    if (x === -Infinity) return UNDERFLOW_LOGPROB;
    // f32/f16 rounding on the server can give a tiny positive value for a certain token.
    if (typeof x !== 'number' || !Number.isFinite(x) || x > 1e-3) {
      throw new TeacherError(`remote teacher: ${JSON.stringify(v) ?? String(v)} at ${where} is not a log-probability (a finite number ≤ 0)`);
    }
    return Math.min(x, 0);
  }

  private fromIdMap(entry: Record<string, { logprob: unknown }> | null | undefined, where: string): Dist {
    if (!entry) throw new TeacherError(`remote teacher: no prompt logprobs at ${where}`);
    return Object.entries(entry).map(([id, v]) => {
      if (!/^\d+$/.test(id)) throw new TeacherError(`remote teacher: prompt_logprobs at ${where} is keyed by ${JSON.stringify(id)}, not a token id (vLLM keys them by id)`);
      return { id: this.checkId(Number(id)), logprob: this.logprob(v?.logprob, where) };
    });
  }

  private fromStringMap(entry: Record<string, unknown> | null | undefined, where: string): Dist {
    if (!entry) throw new TeacherError(`remote teacher: no top_logprobs at ${where}`);
    return Object.entries(entry).map(([s, lp]) => ({ id: this.idOf(s), logprob: this.logprob(lp, where) }));
  }

  /** Distributions after each token of `ids` (index t predicts token t+1). */
  private async rowDistributions(ids: number[]): Promise<Dist[]> {
    const k = this.opts.topK;
    const api = await this.resolveApi();
    if (api === 'llama.cpp') {
      // One prefix after another, so the server's prompt cache turns each request into one new token.
      const dists: Dist[] = [];
      for (let t = 0; t < ids.length; t++) {
        const r = await this.request('/completion', {
          prompt: ids.slice(0, t + 1), n_predict: 1, n_probs: k, temperature: -1, cache_prompt: true, return_tokens: true,
        });
        const p = r?.completion_probabilities?.[0];
        if (!p) throw new TeacherError('remote teacher: llama.cpp answer has no completion_probabilities (is n_probs supported?)');
        if (Array.isArray(p.top_logprobs)) {
          this.checkTokenTexts(p.top_logprobs.filter((e: { id?: number }) => e.id !== undefined).map((e: { id: number; token?: unknown }): [number, unknown] => [e.id, e.token]));
          dists.push(p.top_logprobs.map((e: { id?: number; token: string; logprob: unknown }) => ({ id: e.id !== undefined ? this.checkId(e.id) : this.idOf(e.token), logprob: this.logprob(e.logprob, `position ${t}`) })));
        } else if (Array.isArray(p.probs)) {
          dists.push(p.probs.map((e: { tok_str: string; prob: unknown }) => {
            if (typeof e.prob !== 'number' || !(e.prob >= 0 && e.prob <= 1 + 1e-3)) throw new TeacherError(`remote teacher: probability ${JSON.stringify(e.prob)} at position ${t} is not in [0, 1]`);
            return { id: this.idOf(e.tok_str), logprob: e.prob > 0 ? Math.min(0, Math.log(e.prob)) : UNDERFLOW_LOGPROB };
          }));
        } else {
          throw new TeacherError('remote teacher: unrecognised llama.cpp completion_probabilities format');
        }
      }
      return dists;
    }
    const model = await this.modelName();
    if (api === 'vllm') {
      const r = await this.request('/v1/completions', {
        model, prompt: ids, max_tokens: 1, temperature: 0, prompt_logprobs: k, logprobs: k, return_tokens_as_token_ids: true,
      });
      const c = r?.choices?.[0];
      if (!Array.isArray(c?.prompt_logprobs)) throw new TeacherError('remote teacher: the answer has no choices[0].prompt_logprobs (not vLLM? try api openai-echo or llama.cpp)');
      if (c.prompt_logprobs.length !== ids.length) throw new TeacherError(`remote teacher: ${c.prompt_logprobs.length} prompt logprobs for ${ids.length} prompt tokens (did the server add BOS? send rows as they are)`);
      const dists = ids.slice(1).map((_, t) => this.fromIdMap(c.prompt_logprobs[t + 1], `position ${t + 1}`));
      this.checkTokenTexts(c.prompt_logprobs.slice(1).flatMap((e: Record<string, { decoded_token?: unknown }> | null) =>
        Object.entries(e ?? {}).map(([id, v]): [number, unknown] => [Number(id), v?.decoded_token])));
      dists.push(this.fromStringMap(c.logprobs?.top_logprobs?.[0], 'the generated token'));
      return dists;
    }
    const r = await this.request('/v1/completions', { model, prompt: ids, max_tokens: 1, temperature: 0, echo: true, logprobs: k });
    const top = r?.choices?.[0]?.logprobs?.top_logprobs;
    if (!Array.isArray(top)) throw new TeacherError('remote teacher: echo answer has no logprobs.top_logprobs');
    if (top.length !== ids.length + 1) {
      throw new TeacherError(`remote teacher: ${top.length} top_logprobs entries for ${ids.length} prompt tokens + 1 generated (did the server add BOS? send rows as they are)`);
    }
    return ids.map((_, t) => this.fromStringMap(top[t + 1], `position ${t + 1}`));
  }

  async run(batch: TokenBatch): Promise<TeacherOutput> {
    checkBatch(batch, this.vocabSize, this.description);
    const k = this.opts.topK;
    const ids = new Int32Array(batch.batch * batch.seq * k);
    const logprobs = new Float32Array(batch.batch * batch.seq * k).fill(PAD_LOGPROB);
    const rows = batchRows(batch);
    let next = 0;
    const worker = async () => {
      for (let b; (b = next++) < rows.length;) {
        const row = rows[b];
        if (row.ids.length === 0) continue;
        const dists = await this.rowDistributions(row.ids);
        row.positions.forEach((t, i) => {
          const d = [...dists[i]].sort((x, y) => y.logprob - x.logprob || x.id - y.id).slice(0, k);
          if (d.length < k) throw new TeacherError(`remote teacher: the server returned ${d.length} alternatives, fewer than top-k ${k} (raise its max logprobs)`);
          const at = (b * batch.seq + t) * k;
          d.forEach((e, j) => { ids[at + j] = e.id; logprobs[at + j] = e.logprob; });
        });
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, this.opts.concurrency ?? 4) }, worker));
    } catch (e) {
      // The other workers' requests would keep the process alive until they end: stop them now.
      this.inFlight.abort();
      this.inFlight = new AbortController();
      throw e;
    }
    return { kind: 'sparse', k, ids, logprobs };
  }

  async close(): Promise<void> {
    this.inFlight.abort();
  }
}
