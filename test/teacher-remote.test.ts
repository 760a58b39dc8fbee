import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { makeBatch } from '../src/data/index.js';
import { InProcessTeacher, RemoteTeacher, VocabularyMismatchError, topKLogSoftmax } from '../src/distill/teachers/index.js';
import type { TeacherOutput } from '../src/distill/types.js';
import { loadTokenizer } from '../src/tokenizers/index.js';

/**
 * A local stand-in for vLLM / an OpenAI-style echo server / llama.cpp's server, answering with log-probabilities computed
 * by a real slimlm model (stories260K), in each server's documented response shape.
 */
const STORIES = '../shared/models/stories260K/stories260K.bin';
const tok = await loadTokenizer('../shared/models/stories260K/tok512.model');
const model = await InProcessTeacher.load(STORIES, { threads: 1 });
const reference = new InProcessTeacher((model as unknown as { model: never }).model, 'reference', { topK: 5 });
const V = 512;
type Sparse = TeacherOutput & { kind: 'sparse' };

interface ServerMode {
  kind: 'vllm' | 'llama.cpp'; legacyProbs?: boolean; idOffset?: number; gpt2Strings?: boolean;
  /** Misbehaviour: a null logprob (how llama.cpp's JSON prints NaN), an echo answer with BOS prepended, or every other request hanging and the rest failing. */
  fault?: 'null-logprob' | 'echo-extra-bos' | 'hang-or-500' | 'hang';
  /** Answers only requests carrying this bearer key. */
  apiKey?: string;
  /** Another tokenizer of the same size: ids permuted, each printed as the text of the token it really is. */
  permuteIds?: boolean;
}

/** Log-softmax rows [seq, V] of the model for one prompt. */
async function logprobsOf(ids: number[]): Promise<Float32Array[]> {
  const batch = makeBatch([{ ids: Int32Array.from(ids), targets: new Uint8Array(ids.length).fill(1) }], 0, 0);
  const logits = await model.logits(batch);
  return ids.map((_, t) => {
    const row = logits.subarray(t * V, (t + 1) * V);
    const max = Math.max(...row);
    const z = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    return row.map((v) => v - z);
  });
}

function topOf(lp: Float32Array, k: number): number[] {
  const ids = new Int32Array(k), out = new Float32Array(k);
  topKLogSoftmax(lp, 0, V, k, ids, out, 0); // already normalised: log-softmax of log-probs is the identity
  return Array.from(ids);
}

async function readJson(req: IncomingMessage): Promise<any> {
  let body = '';
  for await (const chunk of req) body += chunk;
  return JSON.parse(body);
}

async function startServer(mode: ServerMode): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const printed = (id: number) => (mode.gpt2Strings ? `Ġ${tok.idToToken(id)}` : tok.idToToken(id)!);
  let posts = 0;
  const server = createServer(async (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (mode.apiKey && req.headers.authorization !== `Bearer ${mode.apiKey}`) { res.writeHead(401).end('{"error":"unauthorized"}'); return; }
    if (req.method === 'POST' && (mode.fault === 'hang' || (mode.fault === 'hang-or-500' && posts++ % 2 === 0))) return; // never answers
    if (req.method === 'POST' && mode.fault === 'hang-or-500') { res.writeHead(500).end('{"error":"boom"}'); return; }
    const send = (status: number, body: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    try {
      if (req.method === 'GET' && req.url === '/v1/models') return send(200, { object: 'list', data: [{ id: 'stories260K', object: 'model' }] });
      if (req.method === 'GET' && req.url === '/props') {
        return mode.kind === 'llama.cpp' ? send(200, { default_generation_settings: { n_ctx: 512 }, total_slots: 1 }) : send(404, { error: 'not found' });
      }
      if (req.method === 'POST' && req.url === '/v1/completions' && mode.kind === 'vllm') {
        const body = await readJson(req);
        const ids: number[] = body.prompt;
        const lps = await logprobsOf(ids);
        const out = (id: number) => (mode.permuteIds ? (id * 7 + 3) % V : id + (mode.idOffset ?? 0));
        const last = lps[ids.length - 1];
        const generated = topOf(last, 1)[0];
        const topDict = (lp: Float32Array, k: number, key: (id: number) => string) => Object.fromEntries(topOf(lp, k).map((id) => [key(id), lp[id]]));
        const choice: Record<string, unknown> = { index: 0, text: printed(generated), finish_reason: 'length' };
        if (body.prompt_logprobs) {
          const k = body.prompt_logprobs;
          // vLLM: entry i is the distribution of token i given the ones before; the actual token is always included.
          choice.prompt_logprobs = [null, ...ids.slice(1).map((id, i) => {
            const lp = lps[i];
            const rank = (x: number) => 1 + Array.from(lp).filter((v) => v > lp[x]).length;
            const chosen = new Set([...topOf(lp, k), id]);
            return Object.fromEntries([...chosen].map((x, j) => [String(out(x)), { logprob: mode.fault === 'null-logprob' && i === 1 && j === 0 ? null : lp[x], rank: rank(x), decoded_token: printed(x) }]));
          })];
          choice.logprobs = { tokens: [`token_id:${out(generated)}`], token_logprobs: [last[generated]], top_logprobs: [topDict(last, body.logprobs, (x) => `token_id:${out(x)}`)], text_offset: [0] };
        } else if (body.echo) {
          const all = [...(mode.fault === 'echo-extra-bos' ? [1] : []), ...ids, generated];
          choice.logprobs = {
            tokens: all.map(printed),
            token_logprobs: [null, ...all.slice(1).map((id, i) => lps[Math.min(i, lps.length - 1)][id])],
            top_logprobs: [null, ...all.slice(1).map((_, i) => topDict(lps[Math.min(i, lps.length - 1)], body.logprobs, printed))],
            text_offset: all.map(() => 0),
          };
        } else return send(400, { error: 'expected prompt_logprobs or echo' });
        return send(200, { id: 'cmpl-1', object: 'text_completion', model: body.model, choices: [choice] });
      }
      if (req.method === 'POST' && req.url === '/completion' && mode.kind === 'llama.cpp') {
        const body = await readJson(req);
        const ids: number[] = body.prompt;
        const lp = (await logprobsOf(ids))[ids.length - 1];
        const top = topOf(lp, body.n_probs);
        const entry = mode.legacyProbs
          ? { content: printed(top[0]), probs: top.map((id) => ({ tok_str: printed(id), prob: Math.exp(lp[id]) })) }
          : { id: top[0], token: printed(top[0]), logprob: lp[top[0]], bytes: [], top_logprobs: top.map((id) => ({ id: mode.permuteIds ? (id * 7 + 3) % V : id + (mode.idOffset ?? 0), token: printed(id), logprob: lp[id], bytes: [] })) };
        return send(200, { content: printed(top[0]), tokens: [top[0]], stop: true, completion_probabilities: [entry] });
      }
      send(404, { error: `no route ${req.method} ${req.url}` });
    } catch (e) {
      send(500, { error: String(e) });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, requests };
}

const texts = ['Once upon a time, there was a little girl named Lily.', 'The dog ran to the park.'];
const batch = makeBatch(texts.map((t) => { const ids = tok.encode(t); return { ids: Int32Array.from(ids), targets: new Uint8Array(ids.length).fill(1) }; }), 0, 0);
const expected = await reference.run(batch) as Sparse;

async function withServer(mode: ServerMode, fn: (url: string, requests: string[]) => Promise<void>): Promise<void> {
  const { url, server, requests } = await startServer(mode);
  try {
    await fn(url, requests);
  } finally {
    server.closeAllConnections(); // hanging requests included
    await new Promise((r) => server.close(r));
  }
}

function assertSameTopK(got: Sparse, tol: number): void {
  assert.equal(got.kind, 'sparse');
  assert.equal(got.k, expected.k);
  for (let p = 0; p < batch.batch * batch.seq; p++) {
    if (!batch.attentionMask[p]) continue;
    for (let j = 0; j < got.k; j++) {
      const i = p * got.k + j;
      assert.equal(got.ids[i], expected.ids[i], `position ${p} rank ${j}`);
      assert.ok(Math.abs(got.logprobs[i] - expected.logprobs[i]) <= tol, `position ${p} rank ${j}: ${got.logprobs[i]} vs ${expected.logprobs[i]}`);
    }
  }
}

test('vLLM prompt_logprobs (ids) give the in-process teacher\'s top-k, including the last position', async () => {
  await withServer({ kind: 'vllm' }, async (url, requests) => {
    const remote = new RemoteTeacher({ url: `${url}/v1`, topK: 5, tokenizer: tok });
    assertSameTopK(await remote.run(batch) as Sparse, 1e-6);
    assert.ok(requests.includes('GET /props'), 'api detected by probing /props');
    assert.ok(requests.includes('GET /v1/models'), 'model name taken from /v1/models');
  });
});

test('OpenAI-style echo + logprobs (token strings mapped through the tokenizer)', async () => {
  await withServer({ kind: 'vllm' }, async (url) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'openai-echo', model: 'stories260K' });
    assertSameTopK(await remote.run(batch) as Sparse, 1e-6);
  });
});

test('llama.cpp /completion with n_probs, current (ids) and legacy (tok_str + prob) formats, detected from /props', async () => {
  await withServer({ kind: 'llama.cpp' }, async (url, requests) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok, concurrency: 2 });
    assertSameTopK(await remote.run(batch) as Sparse, 1e-6);
    assert.equal(requests.filter((r) => r === 'POST /completion').length, batch.attentionMask.reduce((a, b) => a + b, 0));
  });
  await withServer({ kind: 'llama.cpp', legacyProbs: true }, async (url) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'llama.cpp' });
    assertSameTopK(await remote.run(batch) as Sparse, 1e-5);
  });
});

test('a server with another vocabulary is refused with a clear error', async () => {
  await withServer({ kind: 'vllm', idOffset: 1000 }, async (url) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm' });
    await assert.rejects(remote.run(batch), (e: Error) => e instanceof VocabularyMismatchError && /token id 1\d{3}, outside the student's vocabulary of 512/.test(e.message));
  });
  await withServer({ kind: 'vllm', gpt2Strings: true }, async (url) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'openai-echo' });
    await assert.rejects(remote.run(batch), (e: Error) => e instanceof VocabularyMismatchError && /server's token "Ġ.*" is not in the student's vocabulary/.test(e.message));
  });
  await withServer({ kind: 'llama.cpp', idOffset: 600 }, async (url) => {
    const remote = new RemoteTeacher({ url, topK: 5, tokenizer: tok });
    await assert.rejects(remote.run(batch), /outside the student's vocabulary/);
  });
  // Student ids the teacher cannot have: refused before any request.
  const wide = makeBatch([{ ids: Int32Array.of(1, 700, 3), targets: Uint8Array.of(1, 1, 1) }], 0, 0);
  await assert.rejects(new RemoteTeacher({ url: 'http://127.0.0.1:9', topK: 5, tokenizer: tok }).run(wide), VocabularyMismatchError);
  await assert.rejects(new RemoteTeacher({ url: 'http://127.0.0.1:9', topK: 5, tokenizer: tok, api: 'vllm', model: 'x' }).run(batch), /remote teacher http:\/\/127.0.0.1:9\/v1\/completions: fetch failed/);
});

test.after(() => model.close());

test('a misbehaving server is refused with a clear error and nothing is left running: bad logprobs, an extra BOS, hangs and failures', async () => {
  await withServer({ kind: 'vllm', fault: 'null-logprob' }, async (url) => {
    const t = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm' });
    await assert.rejects(t.run(batch), /null at position 2 is not a log-probability/);
  });
  await withServer({ kind: 'vllm', fault: 'echo-extra-bos' }, async (url) => {
    const t = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'openai-echo' });
    await assert.rejects(t.run(batch), /did the server add BOS/);
  });
  // The first failure ends the batch at once: requests still hanging are aborted, not waited for.
  await withServer({ kind: 'vllm', fault: 'hang-or-500' }, async (url) => {
    const t = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm', concurrency: 2 });
    const started = Date.now();
    await assert.rejects(t.run(batch), /HTTP 500/);
    assert.ok(Date.now() - started < 5000, `${Date.now() - started} ms`);
    await t.close();
  });
  await withServer({ kind: 'vllm', fault: 'hang' }, async (url) => {
    const t = new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm', timeoutMs: 300 });
    await assert.rejects(t.run(batch), /no answer within/);
  });
});

test('a server that needs a key: --api-key / SLIMLM_TEACHER_API_KEY reach it', async () => {
  await withServer({ kind: 'vllm', apiKey: 'k1' }, async (url) => {
    await assert.rejects(new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm' }).run(batch), /HTTP 401/);
    assertSameTopK(await new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: 'vllm', apiKey: 'k1' }).run(batch) as Sparse, 1e-5);
    const { teacherAccess } = await import('../src/cli/dataOptions.js');
    assert.equal(teacherAccess({ 'api-key': 'k1' }).apiKey, 'k1');
    process.env.SLIMLM_TEACHER_API_KEY = 'k2';
    try { assert.equal(teacherAccess({}).apiKey, 'k2'); } finally { delete process.env.SLIMLM_TEACHER_API_KEY; }
  });
});

test('a server with another tokenizer of the same size is caught by the token texts it prints', async () => {
  for (const kind of ['vllm', 'llama.cpp'] as const) {
    await withServer({ kind, permuteIds: true }, async (url) => {
      await assert.rejects(new RemoteTeacher({ url, topK: 5, tokenizer: tok, api: kind }).run(batch),
        (e: Error) => e instanceof VocabularyMismatchError && /prints \d+ of \d+ token ids differently/.test(e.message));
    });
  }
});
