/** The OpenAI-compatible server on the real stories260K model, driven by the official `openai` client and raw HTTP. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { AutoModelForCausalLM, AutoTokenizer, type PreTrainedCausalLM } from '../src/api.js';
import { chatFormat, type ChatFormat, type ChatMessage } from '../src/chat/index.js';
import { startServer, type RunningServer } from '../src/serve/index.js';
import type { Tokenizer } from '../src/tokenizers/index.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const modelPath = path.join(root, '../shared/models/stories260K/stories260K.bin');

let lm: PreTrainedCausalLM;
let tokenizer: Tokenizer;
let chat: ChatFormat;

before(async () => {
  lm = await AutoModelForCausalLM.fromPretrained(modelPath, { threads: 2 });
  tokenizer = await AutoTokenizer.fromPretrained(modelPath);
  chat = chatFormat(tokenizer); // stories260K has no template: the Mistral default
});
after(() => lm?.dispose());

async function withServer<T>(opts: { parallel?: number; maxQueue?: number; apiKey?: string; maxBodyBytes?: number; contextLength?: number }, fn: (s: RunningServer) => Promise<T>): Promise<T> {
  const s = await startServer({ model: lm.model, tokenizer, chat, modelId: 'stories260K', port: 0, ...opts });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}

/** slimlm's own greedy output for a chat, computed without the server. */
async function greedyChat(messages: ChatMessage[], maxNewTokens: number): Promise<string> {
  const r = await lm.generate(chat.encode(messages), { maxNewTokens, tokenizer });
  return r.text!;
}

test('the openai client gets slimlm\'s greedy output, streaming and not, for chat and text completions', async () => {
  await withServer({}, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ['stories260K']);

    const messages: ChatMessage[] = [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Once upon a time there was a cat.' }];
    const expected = await greedyChat(messages, 80);
    assert.ok(expected.length > 20, expected);

    const whole = await client.chat.completions.create({ model: 'stories260K', messages: messages as never, temperature: 0, max_tokens: 80 });
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0].message.role, 'assistant');
    assert.equal(whole.choices[0].message.content, expected);
    assert.ok(['stop', 'length'].includes(whole.choices[0].finish_reason));
    assert.equal(whole.usage!.prompt_tokens, chat.encode(messages).length);

    const stream = await client.chat.completions.create({ model: 'stories260K', messages: messages as never, temperature: 0, max_tokens: 80, stream: true, stream_options: { include_usage: true } });
    let streamed = '';
    let chunks = 0;
    let finish: string | null = null;
    let usage;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      streamed += c.delta.content ?? '';
      chunks++;
      finish = c.finish_reason ?? finish;
    }
    assert.equal(streamed, expected);
    assert.ok(chunks > 10, 'streamed in many chunks');
    assert.equal(finish, whole.choices[0].finish_reason);
    assert.equal(usage!.completion_tokens, whole.usage!.completion_tokens);

    // Text completions: the prompt is encoded as `generate` would (BOS added), then continued greedily.
    const prompt = 'Lily and Ben went to the park.';
    const plain = await lm.generate(tokenizer.encode(prompt), { maxNewTokens: 40, tokenizer });
    const text = await client.completions.create({ model: 'stories260K', prompt, temperature: 0, max_tokens: 40 });
    assert.equal(text.choices[0].text, plain.text);
    let textStream = '';
    for await (const chunk of await client.completions.create({ model: 'stories260K', prompt, temperature: 0, max_tokens: 40, stream: true })) textStream += chunk.choices[0]?.text ?? '';
    assert.equal(textStream, plain.text);

    // Stop strings end the reply before the stop string; a seed makes sampling reproducible.
    const cut = expected.indexOf(' ', 10);
    const stopAt = expected.slice(cut, cut + 4);
    const stopped = await client.chat.completions.create({ model: 'stories260K', messages: messages as never, temperature: 0, max_tokens: 80, stop: [stopAt] });
    assert.equal(stopped.choices[0].message.content, expected.slice(0, expected.indexOf(stopAt)));
    assert.equal(stopped.choices[0].finish_reason, 'stop');
    const sample = (seed: number) => client.chat.completions.create({ model: 'stories260K', messages: messages as never, temperature: 1, top_p: 0.9, seed, max_tokens: 40 }).then((r) => r.choices[0].message.content);
    assert.equal(await sample(5), await sample(5));
  });
});

const animals = ['cat', 'dog', 'bird', 'fish', 'frog', 'bear', 'lion', 'duck'];
const prompts: ChatMessage[][] = Array.from({ length: 32 }, (_, i) => [
  ...(i % 3 === 0 ? [{ role: 'system', content: 'Be kind.' }] : []),
  { role: 'user', content: `${i % 2 ? 'Tell me about' : 'Once there was'} a ${animals[i % animals.length]} named ${'Tim Sue Max Amy'.split(' ')[i % 4]}${'.'.repeat(1 + (i % 5))}` },
]);

test('32 concurrent streaming requests equal their one-at-a-time greedy outputs (continuous batching)', async () => {
  const maxTokens = (i: number) => 24 + ((i * 37) % 90); // different lengths: sequences leave and join between steps
  const expected = [];
  for (let i = 0; i < prompts.length; i++) expected.push(await greedyChat(prompts[i], maxTokens(i)));
  await withServer({ parallel: 8, maxQueue: 32 }, async (s) => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const outputs = await Promise.all(prompts.map(async (messages, i) => {
      const stream = await client.chat.completions.create({ model: 'stories260K', messages: messages as never, temperature: 0, max_tokens: maxTokens(i), stream: true });
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      return text;
    }));
    outputs.forEach((out, i) => assert.equal(out, expected[i], `request ${i}`));
    const st = s.scheduler.stats;
    assert.equal(st.completed, 32);
    assert.ok(st.rowSteps / st.steps > 4, `decode steps were batched (${(st.rowSteps / st.steps).toFixed(2)} rows per step)`);
  });
});

interface Raw { status: number; body: string; json: any }

function raw(url: string, method: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode!, body: text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('bad requests get OpenAI error objects with the right status, and the server keeps serving', async () => {
  await withServer({ maxBodyBytes: 64 * 1024, contextLength: 256 }, async (s) => {
    const chatUrl = `${s.url}/v1/chat/completions`;
    const ok = { model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 };
    const post = (body: unknown) => raw(chatUrl, 'POST', typeof body === 'string' ? body : JSON.stringify(body));
    const cases: [string, () => Promise<Raw>, number, string | null][] = [
      ['malformed JSON', () => post('{"model": "stories260K", "messages": ['), 400, 'invalid_json'],
      ['body is an array', () => post([1, 2]), 400, null],
      ['missing model', () => post({ messages: ok.messages }), 400, 'missing_required_parameter'],
      ['model is a number', () => post({ ...ok, model: 7 }), 400, 'invalid_type'],
      ['unknown model', () => post({ ...ok, model: 'gpt-4' }), 404, 'model_not_found'],
      ['missing messages', () => post({ model: 'stories260K' }), 400, 'missing_required_parameter'],
      ['messages not an array', () => post({ ...ok, messages: 'hi' }), 400, 'invalid_type'],
      ['empty messages', () => post({ ...ok, messages: [] }), 400, 'invalid_value'],
      ['unknown role', () => post({ ...ok, messages: [{ role: 'wizard', content: 'x' }] }), 400, 'invalid_value'],
      ['content is a number', () => post({ ...ok, messages: [{ role: 'user', content: 5 }] }), 400, 'invalid_type'],
      ['roles do not alternate (template raises)', () => post({ ...ok, messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }] }), 400, 'invalid_value'],
      ['temperature is a string', () => post({ ...ok, temperature: 'hot' }), 400, 'invalid_type'],
      ['temperature out of range', () => post({ ...ok, temperature: 3 }), 400, 'invalid_value'],
      ['top_p out of range', () => post({ ...ok, top_p: 1.5 }), 400, 'invalid_value'],
      ['max_tokens 0', () => post({ ...ok, max_tokens: 0 }), 400, 'invalid_value'],
      ['max_tokens not an integer', () => post({ ...ok, max_tokens: 2.5 }), 400, 'invalid_type'],
      ['n = 2', () => post({ ...ok, n: 2 }), 400, 'unsupported_value'],
      ['stop with 5 strings', () => post({ ...ok, stop: ['a', 'b', 'c', 'd', 'e'] }), 400, 'invalid_value'],
      ['stream is a string', () => post({ ...ok, stream: 'yes' }), 400, 'invalid_type'],
      ['seed is a float', () => post({ ...ok, seed: 1.5 }), 400, 'invalid_type'],
      ['prompt longer than the context', () => post({ ...ok, messages: [{ role: 'user', content: 'word '.repeat(400) }] }), 400, 'context_length_exceeded'],
      ['prompt + max_tokens over the context', () => post({ ...ok, max_tokens: 250 }), 400, 'context_length_exceeded'],
      ['body over the size limit', () => post({ ...ok, messages: [{ role: 'user', content: 'x'.repeat(100_000) }] }), 413, 'request_too_large'],
      ['body far over the size limit (not drained)', () => post({ ...ok, messages: [{ role: 'user', content: 'x'.repeat(3_000_000) }] }), 413, 'request_too_large'],
      ['malformed model id', () => raw(`${s.url}/v1/models/%E0%A4%A`, 'GET'), 400, 'invalid_value'],
      ['top_k below -1', () => post({ ...ok, top_k: -2 }), 400, 'invalid_value'],
      ['min_p out of range', () => post({ ...ok, min_p: 2 }), 400, 'invalid_value'],
      ['repetition_penalty 0', () => post({ ...ok, repetition_penalty: 0 }), 400, 'invalid_value'],
      ['completions: prompt is an object', () => raw(`${s.url}/v1/completions`, 'POST', JSON.stringify({ model: 'stories260K', prompt: { a: 1 } })), 400, 'invalid_type'],
      ['completions: token id out of vocabulary', () => raw(`${s.url}/v1/completions`, 'POST', JSON.stringify({ model: 'stories260K', prompt: [1, 99999] })), 400, 'invalid_value'],
      ['GET on a POST route', () => raw(chatUrl, 'GET'), 405, 'method_not_allowed'],
      ['unknown route', () => raw(`${s.url}/v1/embeddings`, 'POST', '{}'), 404, 'not_found'],
      ['unknown model card', () => raw(`${s.url}/v1/models/llama`, 'GET'), 404, 'model_not_found'],
    ];
    assert.ok(cases.length >= 15);
    for (const [name, send, status, code] of cases) {
      const r = await send();
      assert.equal(r.status, status, `${name}: ${r.body}`);
      assert.equal(typeof r.json?.error?.message, 'string', `${name}: OpenAI error object, got ${r.body}`);
      assert.ok('type' in r.json.error && 'param' in r.json.error && 'code' in r.json.error, name);
      if (code) assert.equal(r.json.error.code, code, `${name}: ${r.body}`);
    }
    const health = await raw(`${s.url}/health`, 'GET');
    assert.equal(health.status, 200);
    assert.equal(health.json.status, 'ok');
    const good = await post(ok);
    assert.equal(good.status, 200, good.body);
    assert.equal(good.json.choices[0].message.role, 'assistant');
  });
});

test('--api-key: /v1 needs the bearer key; / and /health stay open; / is the UTF-8 chat page', async () => {
  await withServer({ apiKey: 'sekret' }, async (s) => {
    assert.equal((await raw(`${s.url}/v1/models`, 'GET')).status, 401);
    const wrong = await raw(`${s.url}/v1/models`, 'GET', undefined, { Authorization: 'Bearer nope' });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, 'invalid_api_key');
    assert.equal((await raw(`${s.url}/v1/models`, 'GET', undefined, { Authorization: 'Bearer sekret' })).status, 200);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sekret', maxRetries: 0 });
    const r = await client.chat.completions.create({ model: 'stories260K', messages: [{ role: 'user', content: '안녕하세요' }], max_tokens: 5, temperature: 0 });
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal((await raw(`${s.url}/health`, 'GET')).status, 200);
    const page = await raw(`${s.url}/`, 'GET');
    assert.equal(page.status, 200);
    assert.match(page.body, /<meta charset="utf-8">/);
    assert.match(page.body, /\/v1\/chat\/completions/);
  });
});

test('a client that disconnects mid-stream frees its slot at once; the next request is served', async () => {
  await withServer({ parallel: 1 }, async (s) => {
    const body = JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 400, temperature: 0, stream: true });
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' } }, (res) => {
        let seen = '';
        res.on('data', (c) => {
          seen += c;
          if ((seen.match(/"content":"[^"]/g) ?? []).length < 3) return;
          req.destroy(); // the client goes away after a few tokens
          resolve();
        });
      });
      req.on('error', () => {});
      req.end(body);
      setTimeout(() => reject(new Error('no first chunk')), 10_000).unref();
    });
    for (let i = 0; i < 200 && s.scheduler.stats.active + s.scheduler.stats.queued > 0; i++) await new Promise((r) => setTimeout(r, 5));
    const st = s.scheduler.stats;
    assert.equal(st.active, 0, 'the slot is free');
    assert.ok(st.steps >= 2 && st.steps < 300, `stopped mid-generation after ${st.steps} steps`);
    assert.equal(st.aborted, 1, `the sequence was aborted, not run to its 400 tokens: ${JSON.stringify(st)}`);
    const next = await raw(`${s.url}/v1/chat/completions`, 'POST', JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8 }));
    assert.equal(next.status, 200, next.body);
    assert.equal(s.scheduler.stats.completed, 1);
  });
});

test('slots and queue are bounded: a request beyond them gets 503 server_busy, then is served once a slot frees', async () => {
  await withServer({ parallel: 1, maxQueue: 0 }, async (s) => {
    const long = raw(`${s.url}/v1/chat/completions`, 'POST', JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Once' }], max_tokens: 300, temperature: 0 }));
    for (let i = 0; i < 400 && s.scheduler.stats.active === 0; i++) await new Promise((r) => setTimeout(r, 5));
    const busy = await raw(`${s.url}/v1/chat/completions`, 'POST', JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 }));
    assert.equal(busy.status, 503, busy.body);
    assert.equal(busy.json.error.code, 'server_busy');
    assert.equal((await long).status, 200);
    const after = await raw(`${s.url}/v1/chat/completions`, 'POST', JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 }));
    assert.equal(after.status, 200, after.body);
  });
});

test('top_k, min_p and repetition_penalty (vLLM / llama.cpp server extensions) are honoured, not ignored', async () => {
  await withServer({}, async (s) => {
    const complete = async (extra: Record<string, unknown>) => {
      const r = await raw(`${s.url}/v1/completions`, 'POST', JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 24, seed: 7, ...extra }));
      assert.equal(r.status, 200, r.body);
      return r.json.choices[0].text as string;
    };
    const greedy = await complete({ temperature: 0 });
    assert.equal(await complete({ temperature: 1, top_k: 1 }), greedy);
    assert.equal(await complete({ temperature: 1, min_p: 1 }), greedy);
    assert.notEqual(await complete({ temperature: 0, repetition_penalty: 5 }), greedy);
  });
});

test('requests being prefilled count against parallel + max-queue', async () => {
  const { BatchScheduler, QueueFullError } = await import('../src/serve/scheduler.js');
  const { resolveGenerationOptions } = await import('../src/generate/index.js');
  // A model whose prompt pass takes 300 ms: the window where admitted requests are neither queued nor active.
  const slow = Object.create(lm.model) as typeof lm.model;
  slow.forward = async (a) => { if (!a.cache) await new Promise((r) => setTimeout(r, 300)); return lm.model.forward(a); };
  const scheduler = new BatchScheduler(slow, tokenizer, { parallel: 1, maxQueue: 1 });
  const req = () => ({ promptIds: tokenizer.encode('Once upon a time'), options: resolveGenerationOptions({ maxNewTokens: 8, temperature: 0 }, lm.model.config) });
  const first = scheduler.submit(req());
  await new Promise((r) => setTimeout(r, 100)); // the first one is in its prompt pass now
  const second = scheduler.submit(req());
  assert.throws(() => scheduler.submit(req()), (e: Error) => e instanceof QueueFullError && /1 sequences running and 1 queued/.test(e.message));
  await Promise.all([first, second]);
  await scheduler.close();
});

test('`slimlm serve` binds 127.0.0.1, needs its --api-key, and stops cleanly on SIGTERM', async () => {
  const { spawn } = await import('node:child_process');
  const entry = 'import("./src/cli/main.ts").then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })';
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', entry, '--', 'serve', '--model', modelPath, '--port', '0', '--api-key', 'k1', '--threads', '1'], { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    let err = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr!.setEncoding('utf8').on('data', (d: string) => {
        err += d;
        const m = /on (http:\/\/\S+) /.exec(err);
        if (m) resolve(m[1]);
      });
      child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
      setTimeout(() => reject(new Error(`serve did not start: ${err}`)), 20_000).unref();
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal((await raw(`${url}/v1/models`, 'GET')).status, 401);
    const models = await raw(`${url}/v1/models`, 'GET', undefined, { Authorization: 'Bearer k1' });
    assert.deepEqual(models.json.data.map((m: { id: string }) => m.id), ['stories260K']);
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    child.kill('SIGKILL');
  }
});
