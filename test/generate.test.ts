import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LlamaConfig } from '../src/models/config.js';
import type { CausalLM, ForwardArgs, ForwardResult, KVCache } from '../src/models/types.js';
import { argmax, generate, generateBatch, type GenerationTokenizer } from '../src/generate/index.js';

// ---------------------------------------------------------------------------------------------------------------
// A deterministic fake CausalLM: each row's state is a hash of its real (mask 1) tokens and their count, so a wrong
// mask, a lost cache row or a mis-fed token changes every later logit. Its cache checks the mask widths it is fed.

interface FakeCache extends KVCache {
  rows: { hash: number; count: number; mask: number[] }[];
}

type LogitsFn = (state: { hash: number; count: number; last: number }, out: Float32Array) => void;

function mix(h: number, x: number): number {
  h = Math.imul(h ^ x, 0x9e3779b1);
  h ^= h >>> 15;
  h = Math.imul(h, 0x85ebca77);
  return (h ^ (h >>> 13)) >>> 0;
}

/** Pseudo-random logits in [-4, 4) from the row hash. */
const hashedLogits: LogitsFn = ({ hash }, out) => {
  for (let v = 0; v < out.length; v++) out[v] = (mix(hash, v + 1) / 2 ** 32) * 8 - 4;
};

function makeConfig(vocabSize: number, over: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    modelType: 'llama', vocabSize, hiddenSize: 8, intermediateSize: 16, numHiddenLayers: 1, numAttentionHeads: 2,
    numKeyValueHeads: 2, headDim: 4, rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 512, slidingWindow: null,
    tieWordEmbeddings: true, bosTokenId: 1, eosTokenId: null, padTokenId: null, ...over,
  };
}

class FakeLM implements CausalLM {
  calls: ForwardArgs[] = [];
  selectCacheRows?: (cache: KVCache, rows: number[]) => KVCache;

  constructor(readonly config: LlamaConfig, private readonly logitsFn: LogitsFn = hashedLogits, withSelect = false) {
    if (withSelect) {
      this.selectCacheRows = (cache, rows) => {
        const c = cache as FakeCache;
        return { length: c.length, batchSize: rows.length, rows: rows.map((r) => ({ ...c.rows[r], mask: c.rows[r].mask.slice() })) } as FakeCache;
      };
    }
  }

  async forward(args: ForwardArgs): Promise<ForwardResult> {
    this.calls.push(structuredClone(args));
    const { inputIds, allLogits = false } = args;
    const prev = args.cache as FakeCache | undefined;
    const batch = inputIds.length;
    const seq = inputIds[0].length;
    const past = prev?.length ?? 0;
    if (prev && prev.batchSize !== batch) throw new Error(`cache has ${prev.batchSize} rows, input ${batch}`);
    const mask = args.attentionMask ?? inputIds.map(() => new Array(past + seq).fill(1));
    if (mask.length !== batch || mask.some((m) => m.length !== past + seq)) throw new Error('attention mask has the wrong shape');
    const V = this.config.vocabSize;
    const outSeq = allLogits ? seq : 1;
    const logits = new Float32Array(batch * outSeq * V);
    const rows = inputIds.map((ids, b) => {
      if (ids.length !== seq) throw new Error('ragged input');
      const st = prev ? { ...prev.rows[b], mask: mask[b].slice() } : { hash: 17, count: 0, mask: mask[b].slice() };
      // A real model attends over the whole mask: the past part must be exactly what this row was fed before.
      if (prev && prev.rows[b].mask.some((m, j) => mask[b][j] !== m)) throw new Error(`row ${b}: attention mask history changed`);
      let last = -1;
      ids.forEach((id, s) => {
        if (mask[b][past + s] === 1) {
          st.hash = mix(st.hash, id + 1);
          st.count++;
          last = id;
        }
        if (allLogits || s === seq - 1) {
          const at = (b * outSeq + (allLogits ? s : 0)) * V;
          this.logitsFn({ hash: st.hash, count: st.count, last }, logits.subarray(at, at + V));
        }
      });
      return st;
    });
    return { logits, dims: [batch, outSeq, V], cache: { length: past + seq, batchSize: batch, rows } as FakeCache };
  }

  async dispose(): Promise<void> {}
}

/** Reference greedy decoding without any cache: re-run the whole sequence every step. */
async function naiveGreedy(model: FakeLM, prompt: number[], maxNew: number, eos: number[]): Promise<number[]> {
  const seq = prompt.slice();
  const out: number[] = [];
  while (out.length < maxNew && seq.length < model.config.maxPositionEmbeddings) {
    const { logits } = await model.forward({ inputIds: [seq] });
    const id = argmax(logits);
    out.push(id);
    seq.push(id);
    if (eos.includes(id)) break;
  }
  return out;
}

// A fake byte-level tokenizer: ids map to UTF-8 byte strings; TextDecoder's stream mode never emits half a character.
function fakeTokenizer(pieces: (string | number[])[], eosId: number | null = null): GenerationTokenizer {
  const bytes = pieces.map((p) => (typeof p === 'string' ? new TextEncoder().encode(p) : Uint8Array.from(p)));
  return {
    eosId,
    padId: null,
    createStreamDecoder() {
      const dec = new TextDecoder('utf-8');
      return { push: (id) => dec.decode(bytes[id], { stream: true }), flush: () => dec.decode() };
    },
  };
}

/** Logits that make `script[count - promptLength]` the clear winner (position-driven, for scripted outputs). */
function scripted(script: number[], promptLength: number): LogitsFn {
  return ({ count }, out) => {
    out.fill(0);
    const next = script[count - promptLength];
    if (next !== undefined) out[next] = 10;
  };
}

// ---------------------------------------------------------------------------------------------------------------

test('greedy: one prefill call, then one cached token per step; equals cache-free decoding', async () => {
  const model = new FakeLM(makeConfig(40));
  const prompt = [1, 5, 9, 2];
  const res = await generate(model, prompt, { maxNewTokens: 12 });
  assert.equal(res.finishReason, 'length');
  assert.equal(res.tokens.length, 12);
  assert.equal(res.text, undefined);
  assert.equal(model.calls.length, 12); // prefill + 11 decode steps; the last token is never fed
  assert.deepEqual(model.calls[0].inputIds, [prompt]);
  assert.equal(model.calls[0].allLogits, false);
  assert.equal(model.calls[0].cache, undefined);
  model.calls.slice(1).forEach((c, i) => {
    assert.deepEqual(c.inputIds, [[res.tokens[i]]]);
    assert.ok(c.cache);
  });
  assert.deepEqual(res.tokens, await naiveGreedy(new FakeLM(makeConfig(40)), prompt, 12, []));
  const t = res.timings;
  for (const v of [t.prefillMs, t.decodeMs, t.firstTokenMs, t.tokensPerSecond]) assert.ok(Number.isFinite(v) && v >= 0);
  assert.ok(t.firstTokenMs >= t.prefillMs);
});

test('EOS from config, tokenizer or options stops with "eos" and keeps the EOS token', async () => {
  const script = [7, 8, 3, 9];
  const cfg = makeConfig(16, { eosTokenId: [3, 15] });
  const res = await generate(new FakeLM(cfg, scripted(script, 1)), [1], { maxNewTokens: 10 });
  assert.deepEqual(res.tokens, [7, 8, 3]);
  assert.equal(res.finishReason, 'eos');
  const fromTokenizer = await generate(new FakeLM(makeConfig(16), scripted(script, 1)), [1], { tokenizer: fakeTokenizer(Array(16).fill('x'), 8) });
  assert.deepEqual(fromTokenizer.tokens, [7, 8]);
  assert.equal(fromTokenizer.text, 'x'); // the EOS itself is not decoded
  const disabled = await generate(new FakeLM(cfg, scripted(script, 1)), [1], { maxNewTokens: 4, eosTokenIds: [] });
  assert.deepEqual(disabled.tokens, script);
  assert.equal(disabled.finishReason, 'length');
});

test('context length: stops with "length" at maxPositionEmbeddings; longer prompts are an error', async () => {
  const cfg = makeConfig(20, { maxPositionEmbeddings: 8 });
  const model = new FakeLM(cfg);
  const res = await generate(model, [1, 2, 3, 4, 5], { maxNewTokens: 100 });
  assert.equal(res.tokens.length, 3);
  assert.equal(res.finishReason, 'length');
  const full = new FakeLM(cfg);
  const none = await generate(full, [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([none.tokens, none.finishReason, full.calls.length], [[], 'length', 0]);
  await assert.rejects(generate(model, [1, 2, 3, 4, 5, 6, 7, 8, 9]), /context length 8/);
  const zero = new FakeLM(cfg);
  assert.deepEqual((await generate(zero, [1], { maxNewTokens: 0 })).tokens, []);
  assert.equal(zero.calls.length, 0);
});

test('options are validated with clear errors', async () => {
  const model = new FakeLM(makeConfig(10));
  const bad: [object, RegExp][] = [
    [{ temperature: -1 }, /temperature must be a finite number >= 0/],
    [{ topP: 0 }, /topP must be in \(0, 1\]/],
    [{ topP: 1.5 }, /topP must be in \(0, 1\]/],
    [{ topK: 2.5 }, /topK must be an integer/],
    [{ minP: 2 }, /minP/],
    [{ maxNewTokens: -1 }, /maxNewTokens must be an integer >= 0/],
    [{ maxNewTokens: 1.5 }, /maxNewTokens/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty/],
    [{ seed: 0.5 }, /seed/],
    [{ stopStrings: ['x'] }, /need a tokenizer/],
    [{ stopStrings: [''], tokenizer: fakeTokenizer([]) }, /non-empty strings/],
    [{ eosTokenIds: [10] }, /eosTokenIds/],
  ];
  for (const [opts, re] of bad) await assert.rejects(generate(model, [1], opts), re, JSON.stringify(opts));
  await assert.rejects(generate(model, []), /non-empty/);
  await assert.rejects(generate(model, [1, 10]), /not a token id/);
  await assert.rejects(generateBatch(model, []), /non-empty/);
  await assert.rejects(generateBatch(model, [[1], [2, -1]]), /prompt 1 holds -1/);
  assert.equal(model.calls.length, 0);
});

test('stop strings spanning tokens: not returned, not streamed, streamed text == text, UTF-8 never split', async () => {
  // ids: 0 "<eos>", 1 "Hel", 2 "lo", 3 " <", 4 "/", 5 "s", 6 "> tail", 7 é first byte, 8 é second byte, 9 "<b>"
  const pieces: (string | number[])[] = ['', 'Hel', 'lo', ' <', '/', 's', '> tail', [0xc3], [0xa9], '<b>'];
  const tok = fakeTokenizer(pieces, 0);
  const script = [1, 2, 7, 8, 3, 9, 3, 4, 5, 6, 1];
  const deltas: string[] = [];
  const ids: number[] = [];
  const res = await generate(new FakeLM(makeConfig(10), scripted(script, 1)), [1], { tokenizer: tok, stopStrings: ['</s>'], maxNewTokens: 50 }, {
    onText: (d) => deltas.push(d),
    onToken: (id) => ids.push(id),
  });
  assert.equal(res.finishReason, 'stop');
  assert.equal(res.stopString, '</s>');
  assert.equal(res.text, 'Helloé <<b> ');
  assert.deepEqual(res.tokens, script.slice(0, 10)); // up to the token completing the stop string
  assert.deepEqual(ids, res.tokens);
  assert.equal(deltas.join(''), res.text);
  // é arrives in two byte tokens but streams whole; " <" holds "<" back until "<b>" rules the stop string out.
  assert.deepEqual(deltas, ['Hel', 'lo', 'é', ' ', '<<b>', ' ']);

  // Ending by length while a stop string might be starting: the held text is output after all.
  const held: string[] = [];
  const cut = await generate(new FakeLM(makeConfig(10), scripted(script, 1)), [1], { tokenizer: tok, stopStrings: ['</s>'], maxNewTokens: 8 }, {
    onText: (d) => held.push(d),
  });
  assert.deepEqual([cut.finishReason, cut.text, held.join('')], ['length', 'Helloé <<b> </', 'Helloé <<b> </']);
  assert.equal(cut.stopString, undefined);
});

test('abort: a pre-aborted signal does no work; aborting mid-way keeps the tokens so far', async () => {
  const pre = new FakeLM(makeConfig(30));
  const res0 = await generate(pre, [1, 2], { signal: AbortSignal.abort() });
  assert.deepEqual([res0.tokens, res0.finishReason, pre.calls.length], [[], 'abort', 0]);
  const ctl = new AbortController();
  const model = new FakeLM(makeConfig(30));
  const res = await generate(model, [1, 2], { signal: ctl.signal, maxNewTokens: 100 }, {
    onToken: (_, row) => {
      assert.equal(row, 0);
      if (model.calls.length === 3) ctl.abort();
    },
  });
  assert.equal(res.finishReason, 'abort');
  assert.equal(res.tokens.length, 3);
  assert.equal(model.calls.length, 3);
});

test('repetition penalty covers the prompt and the output (hand-computed)', async () => {
  // Token 5 scores 2, token 6 scores 1.5, the rest 0. Prompt holds 5 → 2/2 = 1 < 1.5 → 6; then 6 → 0.75 < 1 → 5; ...
  const model = new FakeLM(makeConfig(10), (_s, out) => {
    out.fill(0);
    out[5] = 2;
    out[6] = 1.5;
  });
  const res = await generate(model, [5], { maxNewTokens: 4, repetitionPenalty: 2 });
  assert.deepEqual(res.tokens, [6, 5, 5, 5]);
  assert.deepEqual((await generate(model, [1], { maxNewTokens: 3 })).tokens, [5, 5, 5]);
});

test('seeded sampling is reproducible; doSample false or temperature 0 is greedy', async () => {
  const model = new FakeLM(makeConfig(50));
  const opts = { maxNewTokens: 30, temperature: 1.2, topK: 20, topP: 0.95, seed: 1234 };
  const a = await generate(model, [1, 2], opts);
  const b = await generate(model, [1, 2], opts);
  const c = await generate(model, [1, 2], { ...opts, seed: 1235 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
  const greedy = (await generate(model, [1, 2], { maxNewTokens: 30 })).tokens;
  assert.notDeepEqual(a.tokens, greedy);
  assert.deepEqual((await generate(model, [1, 2], { ...opts, doSample: false })).tokens, greedy);
  assert.deepEqual((await generate(model, [1, 2], { ...opts, temperature: 0 })).tokens, greedy);
});

const batchPrompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10], [11, 12], [2, 2, 2, 2], [13]];

for (const withSelect of [false, true]) {
  test(`batch greedy == each prompt alone (${withSelect ? 'selectCacheRows' : 'masked pad rows'})`, async () => {
    const cfg = makeConfig(16, { eosTokenId: 0 });
    const model = new FakeLM(cfg, hashedLogits, withSelect);
    const streamed = batchPrompts.map(() => [] as number[]);
    const batch = await generateBatch(model, batchPrompts, { maxNewTokens: 15 }, { onToken: (id, row) => streamed[row].push(id) });
    const reasons = new Set(batch.map((r) => r.finishReason));
    assert.ok(reasons.has('eos') && reasons.has('length'), `rows should stop at different times: ${[...reasons]}`);
    for (let r = 0; r < batchPrompts.length; r++) {
      const single = await generate(new FakeLM(cfg), batchPrompts[r], { maxNewTokens: 15 });
      assert.deepEqual(batch[r].tokens, single.tokens, `row ${r}`);
      assert.equal(batch[r].finishReason, single.finishReason);
      assert.deepEqual(streamed[r], single.tokens);
      assert.deepEqual(batch[r].tokens, await naiveGreedy(new FakeLM(cfg), batchPrompts[r], 15, [0]));
    }
    // Prefill is one left-padded, masked call; later steps feed one token per (remaining) row.
    const first = model.calls[0];
    assert.deepEqual(first.attentionMask![1], [0, 0, 0, 0, 0, 1]);
    assert.equal(first.inputIds[1][5], 4);
    assert.ok(model.calls.slice(1).every((c) => c.inputIds.every((row) => row.length === 1)));
    const longest = Math.max(...batch.map((r) => r.tokens.length));
    assert.equal(model.calls.length, longest);
    const lastBatch = model.calls[model.calls.length - 1].inputIds.length;
    if (withSelect) assert.ok(lastBatch < batchPrompts.length, 'finished rows are dropped');
    else {
      assert.equal(lastBatch, batchPrompts.length);
      const done = batch.findIndex((r) => r.tokens.length < longest);
      const lastCall = model.calls[model.calls.length - 1];
      assert.deepEqual([lastCall.attentionMask![done].at(-1), lastCall.inputIds[done][0]], [0, 0], 'a finished row is fed a masked pad');
    }
  });
}

test('batch sampling row i == single generation with seed + i; stop strings per row', async () => {
  const cfg = makeConfig(16, { eosTokenId: 0 });
  const opts = { maxNewTokens: 12, temperature: 0.9, topP: 0.9, seed: 77 };
  const batch = await generateBatch(new FakeLM(cfg, hashedLogits, true), batchPrompts, opts);
  for (let r = 0; r < batchPrompts.length; r++) {
    const single = await generate(new FakeLM(cfg), batchPrompts[r], { ...opts, seed: 77 + r });
    assert.deepEqual(batch[r].tokens, single.tokens, `row ${r}`);
  }

  const pieces = ['', 'a', 'b', 'c', 'x', 'y'];
  // Row 0 writes "bca...", row 1 "yxyx...": stop "ca" only ends row 0.
  const model = new FakeLM(makeConfig(6), ({ last }, out) => {
    out.fill(0);
    out[{ 1: 2, 2: 3, 3: 1, 4: 5, 5: 4 }[last] ?? 1] = 5;
  });
  const texts = ['', ''];
  const res = await generateBatch(model, [[1], [3, 4]], { tokenizer: fakeTokenizer(pieces), stopStrings: ['ca'], maxNewTokens: 6 }, {
    onText: (d, row) => (texts[row] += d),
  });
  assert.deepEqual(res.map((r) => [r.text, r.finishReason]), [['b', 'stop'], ['yxyxyx', 'length']]);
  assert.deepEqual(texts, ['b', 'yxyxyx']);
});
