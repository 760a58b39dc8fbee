/**
 * Continuous batching: one loop runs one batched decode step for every active sequence. Queued requests are prefilled
 * between steps and join the running batch (their caches stacked onto it); finished or abandoned sequences leave
 * between steps (model.selectCacheRows). Rows are left-padded and masked, so each sequence computes what it would alone.
 */
import type { CausalLM, KVCache } from '../models/types.js';
import { LlamaKVCache } from '../models/kvCache.js';
import { createRng, Sampler, StopStringBuffer, TokenHistory, type FinishReason, type GenerationTokenizer, type ResolvedGenerationOptions } from '../generate/index.js';

export interface SequenceRequest {
  promptIds: number[];
  options: ResolvedGenerationOptions;
  /** Newly decoded text (whole characters, never part of a stop string). */
  onText?(delta: string): void;
  /** Aborting frees the sequence's slot before the next step (or drops it from the queue). */
  signal?: AbortSignal;
}

export interface SequenceResult {
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  /** From submit to the first token, and to the end. */
  firstTokenMs: number;
  totalMs: number;
}

export interface SchedulerOptions {
  /** Sequences decoded together at most (default 4). */
  parallel?: number;
  /** Requests waiting for a slot at most; more are refused with QueueFullError (default 64). */
  maxQueue?: number;
  /** Positions per sequence, prompt + output (default and maximum: the model's). */
  contextLength?: number;
}

export class QueueFullError extends Error {
  override name = 'QueueFullError';
}

export interface SchedulerStats {
  active: number;
  queued: number;
  parallel: number;
  maxQueue: number;
  steps: number;
  /** Sum over steps of the rows decoded: tokens per step = rowSteps / steps. */
  rowSteps: number;
  completed: number;
  aborted: number;
}

interface Sequence {
  req: SequenceRequest;
  submittedAt: number;
  firstTokenAt: number;
  tokens: number[];
  sampler: Sampler;
  history: TokenHistory | undefined;
  decoder: { push(id: number): string; flush(): string } | undefined;
  stop: StopStringBuffer | undefined;
  eos: Set<number>;
  text: string;
  /** Set once, when the sequence ends (its promise is then settled). */
  finish: FinishReason | null;
  /** Attention mask of this row's cached positions (aligned with the batch cache's columns). */
  mask: number[];
  resolve(r: SequenceResult): void;
  reject(e: unknown): void;
}

export class BatchScheduler {
  readonly parallel: number;
  readonly maxQueue: number;
  readonly contextLength: number;
  private readonly queue: Sequence[] = [];
  /** Requests taken off the queue whose prompts are being prefilled (admit), not yet in `active`. */
  private admitting = 0;
  private active: Sequence[] = [];
  private cache: KVCache | undefined;
  private running = false;
  private closed = false;
  private idle: Promise<void> = Promise.resolve();
  private counters = { steps: 0, rowSteps: 0, completed: 0, aborted: 0 };

  constructor(readonly model: CausalLM, private readonly tokenizer: GenerationTokenizer, opts: SchedulerOptions = {}) {
    const maxPos = model.config.maxPositionEmbeddings;
    this.parallel = opts.parallel ?? 4;
    this.maxQueue = opts.maxQueue ?? 64;
    this.contextLength = Math.min(opts.contextLength ?? maxPos, maxPos);
    if (!Number.isInteger(this.parallel) || this.parallel < 1) throw new RangeError(`parallel must be an integer >= 1, got ${this.parallel}`);
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new RangeError(`maxQueue must be an integer >= 0, got ${this.maxQueue}`);
    if (!Number.isInteger(this.contextLength) || this.contextLength < 2) throw new RangeError(`contextLength must be an integer >= 2, got ${this.contextLength}`);
  }

  get stats(): SchedulerStats {
    return { active: this.active.length + this.admitting, queued: this.queue.length, parallel: this.parallel, maxQueue: this.maxQueue, ...this.counters };
  }

  /** Resolves when the sequence ends (also when aborted: finishReason 'abort'). Throws QueueFullError at once when full. */
  submit(req: SequenceRequest): Promise<SequenceResult> {
    if (this.closed) throw new Error('scheduler is closed');
    const { promptIds, options: o } = req;
    if (promptIds.length === 0) throw new RangeError('prompt is empty');
    if (promptIds.length >= this.contextLength) throw new RangeError(`prompt has ${promptIds.length} tokens; the context holds ${this.contextLength}`);
    const running = this.active.length + this.admitting;
    if (running + this.queue.length >= this.parallel + this.maxQueue) {
      throw new QueueFullError(`server busy: ${running} sequences running and ${this.queue.length} queued (max ${this.maxQueue})`);
    }
    return new Promise<SequenceResult>((resolve, reject) => {
      const seq: Sequence = {
        req,
        submittedAt: performance.now(),
        firstTokenAt: -1,
        tokens: [],
        sampler: new Sampler(this.model.config.vocabSize, o.sampling, createRng(o.seed)),
        history: o.sampling.repetitionPenalty !== 1 ? new TokenHistory(promptIds) : undefined,
        decoder: this.primedDecoder(promptIds, o.skipSpecialTokens),
        stop: o.stopStrings.length ? new StopStringBuffer(o.stopStrings) : undefined,
        eos: new Set(o.eosTokenIds),
        text: '',
        finish: null,
        mask: [],
        resolve,
        reject,
      };
      if (o.maxNewTokens === 0) return this.end(seq, 'length');
      req.signal?.addEventListener('abort', () => this.wake(), { once: true });
      this.queue.push(seq);
      this.wake();
    });
  }

  /** Refuses new requests, aborts running and queued ones, and waits for the loop to stop. */
  async close(): Promise<void> {
    this.closed = true;
    for (const s of [...this.queue, ...this.active]) this.end(s, 'abort');
    this.wake();
    await this.idle;
  }

  private wake(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.loop().finally(() => (this.running = false));
  }

  private async loop(): Promise<void> {
    // Let every request that arrived in the same tick join the first prefill.
    await new Promise((r) => setImmediate(r));
    for (;;) {
      try {
        this.dropQueuedAborts();
        this.dropFinished();
        await this.admit();
        this.dropFinished();
        if (!this.active.length) {
          if (!this.queue.length) return;
          continue;
        }
        await this.step();
      } catch (err) {
        // A failed forward ends the sequences it touched; the server keeps serving the rest.
        for (const s of this.active) if (!s.finish) fail(s, err);
        this.active = [];
        this.cache = undefined;
      }
    }
  }

  private primedDecoder(prompt: number[], skipSpecialTokens: boolean) {
    const decoder = this.tokenizer.createStreamDecoder({ skipSpecialTokens });
    for (const id of prompt) decoder.push(id);
    return decoder;
  }

  private dropQueuedAborts(): void {
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const s = this.queue[i];
      if (s.finish || s.req.signal?.aborted) {
        this.queue.splice(i, 1);
        this.end(s, 'abort');
      }
    }
  }

  /** Removes finished and aborted rows from the batch and its cache. */
  private dropFinished(): void {
    for (const s of this.active) if (!s.finish && s.req.signal?.aborted) this.end(s, 'abort');
    if (!this.active.some((s) => s.finish)) return;
    const keep = this.active.flatMap((s, i) => (s.finish ? [] : [i]));
    if (!keep.length || !this.model.selectCacheRows) {
      // Without selectCacheRows finished rows stay in the batch until it drains; they are fed masked padding.
      if (keep.length) return;
      this.active = [];
      this.cache = undefined;
      return;
    }
    const cache = this.model.selectCacheRows(this.cache!, keep);
    this.active = keep.map((i) => this.active[i]);
    for (const s of this.active) s.mask = s.mask.slice(s.mask.length - cache.length);
    this.cache = cache;
  }

  /** Prefills queued requests into free slots, samples their first token, and stacks their cache onto the batch. */
  private async admit(): Promise<void> {
    const free = this.parallel - this.active.length;
    if (free <= 0 || !this.queue.length) return;
    // Joining a running batch needs cache stacking; other models run batch by batch.
    if (this.active.length && !(this.cache instanceof LlamaKVCache && this.model.selectCacheRows)) return;
    const joining = this.queue.splice(0, free);
    // Off the queue but not yet active while their prompts run: still counted against the limits.
    this.admitting = joining.length;
    try {
      await this.prefill(joining);
    } finally {
      this.admitting = 0;
    }
  }

  private async prefill(joining: Sequence[]): Promise<void> {
    const width = Math.max(...joining.map((s) => s.req.promptIds.length));
    for (const s of joining) s.mask = [...new Array<number>(width - s.req.promptIds.length).fill(0), ...s.req.promptIds.map(() => 1)];
    const pad = this.model.config.padTokenId ?? 0;
    let res;
    try {
      res = await this.model.forward({
        inputIds: joining.map((s) => [...new Array<number>(width - s.req.promptIds.length).fill(pad), ...s.req.promptIds]),
        attentionMask: joining.map((s) => s.mask),
      });
    } catch (err) {
      for (const s of joining) fail(s, err);
      return;
    }
    const vocab = this.model.config.vocabSize;
    joining.forEach((s, i) => this.accept(s, s.sampler.sample(res.logits.subarray(i * vocab, (i + 1) * vocab), s.history)));
    if (!this.active.length) {
      this.cache = res.cache;
    } else {
      const merged = LlamaKVCache.concat([this.cache as LlamaKVCache, res.cache as LlamaKVCache]);
      for (const s of [...this.active, ...joining]) s.mask = [...new Array<number>(merged.length - s.mask.length).fill(0), ...s.mask];
      this.cache = merged;
    }
    this.active.push(...joining);
  }

  /** One decode step: every active row feeds its last token. */
  private async step(): Promise<void> {
    const pad = this.model.config.padTokenId ?? 0;
    const rows = this.active;
    for (const s of rows) s.mask.push(s.finish ? 0 : 1);
    const res = await this.model.forward({
      inputIds: rows.map((s) => [s.finish ? pad : s.tokens[s.tokens.length - 1]]),
      attentionMask: rows.map((s) => s.mask),
      cache: this.cache,
    });
    this.cache = res.cache;
    this.counters.steps++;
    this.counters.rowSteps += rows.length;
    const vocab = this.model.config.vocabSize;
    rows.forEach((s, i) => {
      if (s.finish) return;
      if (s.req.signal?.aborted) return this.end(s, 'abort');
      this.accept(s, s.sampler.sample(res.logits.subarray(i * vocab, (i + 1) * vocab), s.history));
    });
  }

  private accept(s: Sequence, id: number): void {
    if (s.firstTokenAt < 0) s.firstTokenAt = performance.now();
    s.tokens.push(id);
    s.history?.add(id);
    if (s.eos.has(id)) return this.end(s, 'eos');
    if (s.decoder) {
      const piece = s.decoder.push(id);
      const out = s.stop ? s.stop.push(piece) : { text: piece, stopped: false };
      this.emit(s, out.text);
      if (out.stopped) return this.end(s, 'stop');
    }
    if (s.tokens.length >= s.req.options.maxNewTokens || s.req.promptIds.length + s.tokens.length >= this.contextLength) this.end(s, 'length');
  }

  private emit(s: Sequence, text: string): void {
    if (!text) return;
    s.text += text;
    try {
      s.req.onText?.(text);
    } catch {
      this.end(s, 'abort'); // a broken consumer ends only its own sequence
    }
  }

  private end(s: Sequence, reason: FinishReason): void {
    if (s.finish) return;
    s.finish = reason;
    if (reason !== 'stop' && reason !== 'abort' && s.decoder) {
      const tail = s.decoder.flush();
      const held = s.stop ? s.stop.push(tail) : { text: tail, stopped: false };
      this.emit(s, held.text);
      if (held.stopped) s.finish = 'stop';
      else if (s.stop) this.emit(s, s.stop.flush());
    }
    if (reason === 'abort') this.counters.aborted++;
    else this.counters.completed++;
    const now = performance.now();
    s.resolve({
      tokens: s.tokens,
      text: s.text,
      finishReason: s.finish,
      promptTokens: s.req.promptIds.length,
      firstTokenMs: s.firstTokenAt < 0 ? 0 : s.firstTokenAt - s.submittedAt,
      totalMs: now - s.submittedAt,
    });
  }
}

function fail(s: Sequence, err: unknown): void {
  s.finish = 'abort';
  s.reject(err);
}
