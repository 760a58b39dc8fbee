/**
 * An OpenAI-compatible HTTP server on Node's http module: POST /v1/chat/completions and /v1/completions (server-sent
 * events or one JSON), GET /v1/models, GET /health, and the chat page at /. All generation goes through one
 * BatchScheduler (continuous batching). Every failure is an OpenAI error object; the server keeps serving.
 */
import http from 'node:http';
import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { ChatFormat } from '../chat/index.js';
import { ChatTemplateError, replyEndIds } from '../chat/index.js';
import type { CausalLM } from '../models/types.js';
import type { ResolvedGenerationOptions, FinishReason } from '../generate/index.js';
import type { Tokenizer } from '../tokenizers/index.js';
import { ApiError, parseChatRequest, parseCompletionRequest, type ParsedRequest } from './openai.js';
import { BatchScheduler, QueueFullError, type SequenceResult } from './scheduler.js';
import { CHAT_PAGE_HTML } from './page.js';

export interface ServerOptions {
  model: CausalLM;
  tokenizer: Tokenizer;
  chat: ChatFormat;
  /** The name clients pass as `model` (GET /v1/models lists it). */
  modelId: string;
  host?: string;
  /** 0 = any free port. Default 8080. */
  port?: number;
  /** Requests to /v1/* need `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  parallel?: number;
  maxQueue?: number;
  /** Positions per sequence (default: the model's context length). */
  contextLength?: number;
  /** Default 1 MiB. */
  maxBodyBytes?: number;
}

export interface RunningServer {
  url: string;
  server: http.Server;
  scheduler: BatchScheduler;
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY = 1 << 20;

export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const scheduler = new BatchScheduler(o.model, o.tokenizer, { parallel: o.parallel, maxQueue: o.maxQueue, contextLength: o.contextLength });
  const handler = new Handler(o, scheduler);
  const server = http.createServer((req, res) => {
    handler.handle(req, res).catch((err) => handler.fail(res, err));
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `http://${host}:${port}`,
    server,
    scheduler,
    async close() {
      const closed = new Promise((r) => server.close(r));
      await scheduler.close();
      server.closeAllConnections();
      await closed;
    },
  };
}

const FINISH: Record<FinishReason, string> = { eos: 'stop', stop: 'stop', length: 'length', abort: 'stop' };

class Handler {
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly maxBody: number;

  constructor(private readonly o: ServerOptions, private readonly scheduler: BatchScheduler) {
    this.maxBody = o.maxBodyBytes ?? DEFAULT_MAX_BODY;
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    res.setHeader('Access-Control-Allow-Origin', '*');
    res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type');
    res.setHeader('Access-Control-Allow-Methods', 'GET, POST, OPTIONS');
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    const route = (verb: string): void => {
      if (method !== verb && !(verb === 'GET' && method === 'HEAD')) throw new ApiError(405, `${method} is not allowed on ${path}; use ${verb}`, 'invalid_request_error', null, 'method_not_allowed');
    };
    if (path === '/' || path === '/index.html') {
      route('GET');
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' }).end(CHAT_PAGE_HTML);
      return;
    }
    if (path === '/health') {
      route('GET');
      const s = this.scheduler.stats;
      return json(res, 200, {
        status: 'ok', model: this.o.modelId, context_length: this.scheduler.contextLength,
        slots: { total: s.parallel, processing: s.active, idle: Math.max(0, s.parallel - s.active) }, queue: { waiting: s.queued, max: s.maxQueue },
      });
    }
    if (!path.startsWith('/v1/')) throw new ApiError(404, `no route ${method} ${path}`, 'invalid_request_error', null, 'not_found');
    this.authorize(req);
    if (path === '/v1/models') {
      route('GET');
      return json(res, 200, { object: 'list', data: [this.modelCard()] });
    }
    if (path.startsWith('/v1/models/')) {
      route('GET');
      let id: string;
      try { id = decodeURIComponent(path.slice('/v1/models/'.length)); } catch { throw new ApiError(400, `malformed model id in ${path}`, 'invalid_request_error', 'model', 'invalid_value'); }
      this.checkModel(id);
      return json(res, 200, this.modelCard());
    }
    if (path === '/v1/chat/completions' || path === '/v1/completions') {
      route('POST');
      const body = await readJson(req, this.maxBody);
      const chat = path === '/v1/chat/completions';
      const parsed = chat ? parseChatRequest(body) : parseCompletionRequest(body);
      this.checkModel(parsed.model);
      return this.complete(req, res, parsed, chat);
    }
    throw new ApiError(404, `no route ${method} ${path}`, 'invalid_request_error', null, 'not_found');
  }

  fail(res: http.ServerResponse, err: unknown): void {
    const apiErr = err instanceof ApiError ? err : new ApiError(500, `internal error: ${(err as Error)?.message ?? String(err)}`, 'server_error');
    if (res.destroyed) return;
    if (res.headersSent) {
      // Mid-stream: the status is gone; tell the client in the stream, as OpenAI does.
      res.end(`data: ${JSON.stringify(apiErr.body())}\n\n`);
      return;
    }
    // A body too large to drain is left unread: answer, and let Connection: close end the socket.
    json(res, apiErr.status, apiErr.body(), apiErr.status === 503 ? { 'Retry-After': '1' } : apiErr.code === 'request_too_large' ? { Connection: 'close' } : {});
  }

  private authorize(req: http.IncomingMessage): void {
    const key = this.o.apiKey;
    if (!key) return;
    const given = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim() ?? '';
    const a = Buffer.from(given);
    const b = Buffer.from(key);
    if (a.length !== b.length || !timingSafeEqual(a, b)) {
      throw new ApiError(401, given ? 'Incorrect API key provided.' : "You didn't provide an API key (Authorization: Bearer KEY).", 'invalid_request_error', null, 'invalid_api_key');
    }
  }

  private modelCard() {
    return { id: this.o.modelId, object: 'model', created: this.created, owned_by: 'slimlm', context_length: this.scheduler.contextLength };
  }

  private checkModel(model: string): void {
    if (model !== this.o.modelId) {
      throw new ApiError(404, `The model '${model}' does not exist; this server serves '${this.o.modelId}'.`, 'invalid_request_error', 'model', 'model_not_found');
    }
  }

  private promptIds(p: ParsedRequest): number[] {
    const { tokenizer, chat } = this.o;
    if (p.messages) {
      try {
        return chat.encode(p.messages);
      } catch (err) {
        if (err instanceof ChatTemplateError) throw new ApiError(400, err.message, 'invalid_request_error', 'messages', 'invalid_value');
        throw err;
      }
    }
    if (typeof p.prompt === 'string') return tokenizer.encode(p.prompt);
    const ids = p.prompt!;
    const vocab = this.o.model.config.vocabSize;
    const badId = ids.find((id) => id < 0 || id >= vocab);
    if (badId !== undefined) throw new ApiError(400, `prompt token ${badId} is not in the vocabulary [0, ${vocab})`, 'invalid_request_error', 'prompt', 'invalid_value');
    return ids;
  }

  private options(p: ParsedRequest, promptTokens: number, chat: boolean): ResolvedGenerationOptions {
    const ctx = this.scheduler.contextLength;
    const param = chat ? 'messages' : 'prompt';
    if (promptTokens === 0) throw new ApiError(400, 'the prompt is empty', 'invalid_request_error', param, 'invalid_value');
    const wanted = p.maxTokens ?? ctx - promptTokens;
    if (promptTokens >= ctx) {
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, your ${param} resulted in ${promptTokens} tokens. ` +
        `Please reduce the length of the ${param}.`, 'invalid_request_error', param, 'context_length_exceeded');
    }
    if (promptTokens + wanted > ctx) {
      throw new ApiError(400, `This model's maximum context length is ${ctx} tokens. However, you requested ${promptTokens + wanted} tokens ` +
        `(${promptTokens} in the ${param}, ${wanted} in the completion). Please reduce the length of the ${param} or completion.`,
        'invalid_request_error', param, 'context_length_exceeded');
    }
    const greedy = p.temperature === 0 || p.topP === 0;
    const tokenizer = this.o.tokenizer;
    return {
      maxNewTokens: wanted,
      sampling: { doSample: !greedy, temperature: greedy ? 1 : p.temperature, topK: p.topK, topP: greedy ? 1 : p.topP, minP: p.minP, repetitionPenalty: p.repetitionPenalty },
      seed: p.seed,
      stopStrings: [...new Set([...(chat ? this.o.chat.stopStrings : []), ...p.stop])],
      eosTokenIds: replyEndIds(this.o.model.config, tokenizer, chat ? this.o.chat : null),
      skipSpecialTokens: true,
    };
  }

  private async complete(req: http.IncomingMessage, res: http.ServerResponse, p: ParsedRequest, chat: boolean): Promise<void> {
    const promptIds = this.promptIds(p);
    const options = this.options(p, promptIds.length, chat);
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? 'chat.completion' : 'text_completion';
    const head = { id, object: p.stream ? (chat ? 'chat.completion.chunk' : 'text_completion') : object, created, model: this.o.modelId, system_fingerprint: 'slimlm' };
    // A client that goes away frees its slot before the next decode step.
    const abort = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) abort.abort();
    });
    const send = (choice: object, extra: object = {}) => {
      if (!res.destroyed) res.write(`data: ${JSON.stringify({ ...head, choices: [{ index: 0, ...choice }], ...extra })}\n\n`);
    };
    const onText = !p.stream ? undefined : chat
      ? (delta: string) => send({ delta: { content: delta }, logprobs: null, finish_reason: null })
      : (delta: string) => send({ text: delta, logprobs: null, finish_reason: null });

    let done: Promise<SequenceResult>;
    try {
      done = this.scheduler.submit({ promptIds, options, onText, signal: abort.signal });
    } catch (err) {
      if (err instanceof QueueFullError) throw new ApiError(503, err.message, 'server_error', null, 'server_busy');
      throw new ApiError(400, (err as Error).message, 'invalid_request_error', chat ? 'messages' : 'prompt', 'invalid_value');
    }
    if (p.stream) {
      res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
      res.flushHeaders();
      if (chat) send({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null });
    }
    const result = await done;
    if (result.finishReason === 'abort' || res.destroyed) {
      res.destroy();
      return;
    }
    const usage = { prompt_tokens: result.promptTokens, completion_tokens: result.tokens.length, total_tokens: result.promptTokens + result.tokens.length };
    const finish_reason = FINISH[result.finishReason];
    if (p.stream) {
      send(chat ? { delta: {}, logprobs: null, finish_reason } : { text: '', logprobs: null, finish_reason });
      if (p.includeUsage) res.write(`data: ${JSON.stringify({ ...head, choices: [], usage })}\n\n`);
      res.end('data: [DONE]\n\n');
      return;
    }
    const choice = chat
      ? { index: 0, message: { role: 'assistant', content: result.text, refusal: null }, logprobs: null, finish_reason }
      : { index: 0, text: result.text, logprobs: null, finish_reason };
    json(res, 200, { ...head, choices: [choice], usage });
  }
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers }).end(text);
}

/** Reads a JSON body of at most `limit` bytes; a larger one is drained (or, when huge, cut off) and refused with 413. */
function readJson(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = () => new ApiError(413, `the request body is larger than ${limit} bytes`, 'invalid_request_error', null, 'request_too_large');
  const declared = Number(req.headers['content-length'] ?? 0);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk);
      else if (size > limit * 16 || declared > limit * 16) {
        // Not worth draining: stop reading; the 413 goes out with Connection: close.
        req.removeAllListeners('data');
        req.pause();
        reject(tooLarge());
      }
    });
    req.on('error', reject);
    req.on('end', () => {
      if (size > limit) return reject(tooLarge());
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(new ApiError(400, `the request body is not valid JSON: ${(err as Error).message}`, 'invalid_request_error', null, 'invalid_json'));
      }
    });
  });
}
