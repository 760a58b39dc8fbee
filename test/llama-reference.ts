/** Test helpers: seeded random Llama weights and a plain-JS (float64) reference forward pass following HF semantics. */
import type { HostTensor } from '../src/formats/tensor.js';
import { expectedTensors, type LlamaConfig } from '../src/models/config.js';

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function tinyConfig(over: Partial<LlamaConfig> = {}): LlamaConfig {
  return {
    modelType: 'mistral', vocabSize: 37, hiddenSize: 32, intermediateSize: 48, numHiddenLayers: 2,
    numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 8, rmsNormEps: 1e-5, ropeTheta: 10000,
    maxPositionEmbeddings: 128, slidingWindow: null, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2, padTokenId: null,
    ...over,
  };
}

/** f32 weights with scales that make attention and the masks matter. */
export function randomWeights(c: LlamaConfig, seed = 1): Map<string, HostTensor> {
  const rand = rng(seed);
  const m = new Map<string, HostTensor>();
  for (const [name, shape] of expectedTensors(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const isNorm = name.endsWith('norm.weight');
    const scale = name.includes('embed') ? 1 : 2.5 / Math.sqrt(shape[1] ?? 1);
    for (let i = 0; i < n; i++) a[i] = isNorm ? 0.8 + 0.4 * rand() : (rand() * 2 - 1) * scale;
    m.set(name, { dtype: 'f32', shape, data: new Uint8Array(a.buffer) });
  }
  return m;
}

const f32 = (t: HostTensor) => new Float32Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 4);

/** y[o] = sum_i W[o, i] x[i] for HF Linear weights [out, in]. */
function linear(w: Float32Array, out: number, x: number[]): number[] {
  const n = x.length;
  return Array.from({ length: out }, (_, o) => { let s = 0; for (let i = 0; i < n; i++) s += w[o * n + i] * x[i]; return s; });
}
function rmsNorm(x: number[], w: Float32Array, eps: number): number[] {
  const ms = x.reduce((a, v) => a + v * v, 0) / x.length;
  const r = 1 / Math.sqrt(ms + eps);
  return x.map((v, i) => v * r * w[i]);
}
function rope(x: number[], pos: number, theta: number): number[] {
  const d = x.length, half = d / 2;
  const out = new Array<number>(d);
  for (let i = 0; i < half; i++) {
    const a = pos / Math.pow(theta, (2 * i) / d);
    out[i] = x[i] * Math.cos(a) - x[i + half] * Math.sin(a);
    out[i + half] = x[i + half] * Math.cos(a) + x[i] * Math.sin(a);
  }
  return out;
}

/** Logits [seq][vocab] of one unpadded sequence (positions 0..seq-1), float64 throughout. */
export function referenceLogits(c: LlamaConfig, weights: Map<string, HostTensor>, ids: number[]): number[][] {
  const W = (n: string) => f32(weights.get(n)!);
  const H = c.hiddenSize, D = c.headDim, nH = c.numAttentionHeads, kvH = c.numKeyValueHeads, rep = nH / kvH;
  const emb = W('model.embed_tokens.weight');
  let h = ids.map((id) => Array.from(emb.subarray(id * H, (id + 1) * H)));
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `model.layers.${l}.`;
    const x = h.map((v) => rmsNorm(v, W(p + 'input_layernorm.weight'), c.rmsNormEps));
    const split = (v: number[], n: number, pos: number, rot: boolean) =>
      Array.from({ length: n }, (_, k) => { const s = v.slice(k * D, (k + 1) * D); return rot ? rope(s, pos, c.ropeTheta) : s; });
    const q = x.map((v, s) => split(linear(W(p + 'self_attn.q_proj.weight'), nH * D, v), nH, s, true));
    const k = x.map((v, s) => split(linear(W(p + 'self_attn.k_proj.weight'), kvH * D, v), kvH, s, true));
    const vv = x.map((v, s) => split(linear(W(p + 'self_attn.v_proj.weight'), kvH * D, v), kvH, s, false));
    const attnOut = q.map((qs, i) => {
      const o: number[] = [];
      for (let hd = 0; hd < nH; hd++) {
        const g = Math.floor(hd / rep);
        const js = [...Array(i + 1).keys()].filter((j) => c.slidingWindow === null || i - j < c.slidingWindow);
        const sc = js.map((j) => qs[hd].reduce((a, qv, d) => a + qv * k[j][g][d], 0) / Math.sqrt(D));
        const mx = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < D; d++) o.push(js.reduce((a, j, t) => a + (e[t] / z) * vv[j][g][d], 0));
      }
      return linear(W(p + 'self_attn.o_proj.weight'), H, o);
    });
    h = h.map((v, s) => v.map((a, i) => a + attnOut[s][i]));
    h = h.map((v) => {
      const y = rmsNorm(v, W(p + 'post_attention_layernorm.weight'), c.rmsNormEps);
      const gate = linear(W(p + 'mlp.gate_proj.weight'), c.intermediateSize, y);
      const up = linear(W(p + 'mlp.up_proj.weight'), c.intermediateSize, y);
      const act = gate.map((gv, i) => (gv / (1 + Math.exp(-gv))) * up[i]);
      const down = linear(W(p + 'mlp.down_proj.weight'), H, act);
      return v.map((a, i) => a + down[i]);
    });
  }
  const head = W(c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight');
  return h.map((v) => linear(head, c.vocabSize, rmsNorm(v, W('model.norm.weight'), c.rmsNormEps)));
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
