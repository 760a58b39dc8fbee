/**
 * NF4 / FP4 (bitsandbytes) against an independent NumPy implementation of bitsandbytes' algorithm
 * (scripts/make_bnb4_fixture.py → test/fixtures/bnb4/bnb4.safetensors, in bnb's HF safetensors layout).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SafetensorsFile } from '../src/formats/safetensors.js';
import type { HostTensor } from '../src/formats/tensor.js';
import {
  bnb4BitsPerWeight, bnb4FromHF, bnb4ToHF, dequantizeBnb4, dynamicMap, quantizeBnb4, type Bnb4Type,
} from '../src/quantize/bnb4.js';

const st = SafetensorsFile.open('test/fixtures/bnb4/bnb4.safetensors');
const get = (n: string): HostTensor | undefined => (st.has(n) ? st.read(n) : undefined);
const f32 = (t: HostTensor) => new Float32Array(t.data.slice().buffer);
const bytes = (t: HostTensor | undefined) => Array.from(t!.data);

test('dynamic 8-bit map: 256 sorted values in [-1, 1] equal to the reference script\'s', () => {
  const map = dynamicMap();
  assert.equal(map.length, 256);
  assert.deepEqual(Array.from(map), Array.from(f32(get('normal.nf4.dq.weight.nested_quant_map')!)));
});

for (const input of ['normal', 'heavy']) {
  for (const type of ['nf4', 'fp4'] as Bnb4Type[]) {
    for (const dq of [false, true]) {
      const key = `${input}.${type}${dq ? '.dq' : ''}`;
      test(`${key}: packed indices, absmax${dq ? ', nested absmax/offset' : ''} and quant state equal the reference`, () => {
        const xT = get(`x.${input}`)!;
        const q = quantizeBnb4(f32(xT), xT.shape, { quantType: type, blocksize: 64, doubleQuant: dq });
        const ours = new Map(bnb4ToHF(`${key}.weight`, q));
        for (const [name, t] of ours) {
          const ref = get(name);
          assert.ok(ref, `reference lacks ${name}`);
          assert.deepEqual(t.shape, ref!.shape, `${name} shape`);
          if (name.includes('quant_state')) {
            const a = JSON.parse(new TextDecoder().decode(t.data)), b = JSON.parse(new TextDecoder().decode(ref!.data));
            assert.deepEqual(a, b, name);
          } else {
            assert.deepEqual(bytes(t), bytes(ref), name);
          }
        }
        assert.equal(ours.size, st.names().filter((n) => n.startsWith(`${key}.weight`)).length);
        // Loading the reference's tensors gives back the same state, and the same dequantized weights as the reference.
        const loaded = bnb4FromHF(`${key}.weight`, get);
        if (dq) assert.deepEqual(Array.from(dequantizeBnb4(loaded)), Array.from(f32(get(`${key}.dequant`)!)));
        assert.deepEqual(Array.from(dequantizeBnb4(loaded)), Array.from(dequantizeBnb4(q)));
      });
    }
  }
}

test('bits per weight: 4.5 with fp32 absmax, ≈4.127 with double quantization (blocks of 64 and 256)', () => {
  const x = Float32Array.from({ length: 4096 * 64 }, (_, i) => Math.sin(i * 0.37) * 0.02);
  const plain = quantizeBnb4(x, [4096, 64], { quantType: 'nf4' });
  const double = quantizeBnb4(x, [4096, 64], { quantType: 'nf4', doubleQuant: true });
  const n = x.length, codeBits = (bytes: number) => (bytes * 8) / n; // per-tensor code books, amortized
  assert.equal(bnb4BitsPerWeight(plain), 4 + 32 / 64 + codeBits(16 * 4));
  assert.equal(bnb4BitsPerWeight(double), 4 + 8 / 64 + 32 / (64 * 256) + codeBits(16 * 4 + 256 * 4 + 4)); // 4.127 + code books
  // Double quantization costs little accuracy: the scales move by at most half a dynamic-map step.
  const err = (a: Float32Array) => Math.sqrt(a.reduce((s, v, i) => s + (v - x[i]) ** 2, 0) / x.length);
  assert.ok(err(dequantizeBnb4(double)) < err(dequantizeBnb4(plain)) * 1.05);
});

test('malformed bnb layouts are refused with the missing piece named', () => {
  const q = quantizeBnb4(Float32Array.from({ length: 128 }, (_, i) => i / 128), [2, 64], { doubleQuant: true });
  const m = new Map(bnb4ToHF('w', q));
  m.delete('w.nested_quant_map');
  assert.throws(() => bnb4FromHF('w', (n) => m.get(n)), /nested_quant_map/);
  m.delete('w.quant_state.bitsandbytes__nf4');
  assert.throws(() => bnb4FromHF('w', (n) => m.get(n)), /quant_state/);
});
