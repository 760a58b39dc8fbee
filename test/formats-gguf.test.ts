import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readGgufFileInfo } from 'node-llama-cpp';
import {
  GGUFFile, GGUFValueType, DEQUANTIZABLE, dequantize, plainValue, quantizeQ4_0, quantizeQ8_0, writeGGUF, type GGUFTypedValue,
} from '../src/formats/gguf.js';
import { f32ToBf16Bytes, f32ToF16Bytes } from '../src/formats/dtype.js';

const REF = 'test/fixtures/gguf-ggml/ggml-reference.gguf';
const TINY = '../shared/fixtures/llama-2-tiny-random.gguf';
const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-gguf-'));
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => Object.is(v, b[i]));

test('ggml reference file (written by libggml): metadata of every type', () => {
  const f = GGUFFile.open(REF);
  assert.equal(f.version, 3);
  const v = (k: string) => f.value(k);
  assert.equal(v('t.u8'), 250); assert.equal(v('t.i8'), -100); assert.equal(v('t.u16'), 65000); assert.equal(v('t.i16'), -32000);
  assert.equal(v('t.u32'), 4000000000); assert.equal(v('t.i32'), -2000000000); assert.equal(v('t.f32'), Math.fround(0.1));
  assert.equal(v('t.u64'), 18000000000000000000n); assert.equal(v('t.i64'), -9000000000000000000n); assert.equal(v('t.f64'), Math.PI);
  assert.equal(v('t.bool'), true); assert.equal(v('t.str'), 'héllo GGUF ✓');
  assert.deepEqual(v('t.arr.i32'), Int32Array.of(1, -2, 3));
  assert.deepEqual(v('t.arr.f32'), Float32Array.of(0.5, -1.25));
  assert.deepEqual(v('t.arr.i64'), BigInt64Array.of(-(2n ** 40n), 7n));
  assert.deepEqual(v('t.arr.bool'), [true, false, true]);
  assert.deepEqual(v('t.arr.str'), ['<unk>', '', 'ā😀']);
  assert.equal(f.get('t.u64')!.type, GGUFValueType.UINT64);
  assert.deepEqual(f.tensor('cube').shape, [2, 3, 4]);
  assert.deepEqual(Array.from(f.readF32('cube')), Array.from({ length: 24 }, (_, i) => i));
  f.close();
});

test('dequantization of every block type is bit-identical to ggml dequantize_row_*; F16/BF16 conversions match ggml', () => {
  const f = GGUFFile.open(REF);
  const x = f.readF32('x');
  const types = f.tensors.filter((t) => t.name.startsWith('q.')).map((t) => t.type);
  assert.deepEqual(types.sort(), ['BF16', 'F16', 'Q2_K', 'Q3_K', 'Q4_0', 'Q4_1', 'Q4_K', 'Q5_0', 'Q5_1', 'Q5_K', 'Q6_K', 'Q8_0', 'Q8_K'].sort());
  for (const type of types) {
    const mine = f.readF32(`q.${type}`);
    if (type === 'F16') assert.deepEqual(Buffer.from(f32ToF16Bytes(x)), Buffer.from(f.readRaw('q.F16')));
    else if (type === 'BF16') assert.deepEqual(Buffer.from(f32ToBf16Bytes(x)), Buffer.from(f.readRaw('q.BF16')));
    else assert.ok(same(mine, f.readF32(`deq.${type}`)), `${type} differs from ggml`);
    // Sanity on top of bit-identity: dequantized values approximate the input.
    const maxErr = mine.reduce((m, v, i) => Math.max(m, Math.abs(v - x[i])), 0);
    assert.ok(maxErr < 0.2, `${type} max error ${maxErr}`);
  }
  f.close();
});

test('Q8_0 / Q4_0 quantizers are byte-identical to quantize_row_q8_0_ref / quantize_row_q4_0_ref', () => {
  const f = GGUFFile.open(REF);
  const x = f.readF32('x');
  assert.deepEqual(Buffer.from(quantizeQ8_0(x)), Buffer.from(f.readRaw('q.Q8_0')));
  assert.deepEqual(Buffer.from(quantizeQ4_0(x)), Buffer.from(f.readRaw('q.Q4_0')));
  f.close();
});

test('Q8_0 / Q4_0 quantize → dequantize error bounds', () => {
  let s = 7;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from({ length: 32 * 64 }, (_, i) => rand() * (i % 97 === 0 ? 10 : 1));
  x.fill(0, 64, 96); // an all-zero block must come back as zeros
  // Q8_0: codes ±127 around 0, error ≤ half a step. Q4_0: codes -8..7 with the signed extreme at -8, so values of the
  // opposite sign near amax clip at 7 steps: error ≤ one step.
  for (const [q, steps, stepsOfError] of [[quantizeQ8_0, 127, 0.5], [quantizeQ4_0, 8, 1]] as const) {
    const y = dequantize(q === quantizeQ8_0 ? 'Q8_0' : 'Q4_0', q(x), x.length);
    for (let b = 0; b < x.length; b += 32) {
      const amax = Math.max(...x.subarray(b, b + 32).map(Math.abs));
      const d = amax / steps;
      for (let j = b; j < b + 32; j++) {
        // Plus the fp16 rounding of the scale (relative 2^-11, times the largest code).
        assert.ok(Math.abs(y[j] - x[j]) <= d * stepsOfError + amax * 2 ** -10 + 1e-7, `block ${b / 32}: ${x[j]} → ${y[j]}`);
      }
    }
    assert.ok(y.subarray(64, 96).every((v) => v === 0));
  }
});

test('llama-2-tiny-random.gguf (llama.cpp tooling): metadata, tensor infos and data agree with node-llama-cpp\'s parser', async () => {
  const f = GGUFFile.open(TINY);
  const ref = await readGgufFileInfo(TINY, { readTensorInfo: true });
  assert.equal(f.version, ref.version);
  assert.equal(f.string('general.architecture'), 'llama');
  const blocks = f.number('llama.block_count');
  const blockIds = new Set(f.tensors.flatMap((t) => /^blk\.(\d+)\./.exec(t.name)?.[1] ?? []));
  assert.equal(blockIds.size, blocks);
  assert.equal(f.tensors.length, 3 + 9 * blocks);
  const tokens = f.value('tokenizer.ggml.tokens') as string[];
  assert.equal(tokens.length, f.tensor('token_embd.weight').shape[0]);
  assert.equal(tokens.length, (ref.metadata.tokenizer as unknown as { ggml: { tokens: string[] } }).ggml.tokens.length);
  assert.deepEqual(tokens.slice(0, 3), ['<unk>', '<s>', '</s>']);
  assert.equal(f.number('llama.embedding_length'), ref.metadata.llama!.embedding_length);
  assert.equal(f.number('llama.attention.head_count'), (ref.metadata.llama as { attention: { head_count: number } }).attention.head_count);
  const infos = ref.fullTensorInfo!;
  assert.equal(infos.length, f.tensors.length);
  for (const t of infos) {
    const mine = f.tensor(t.name);
    assert.deepEqual(mine.ne, t.dimensions.map(Number));
    assert.equal(mine.offset, f.dataOffset + Number(t.offset));
    const values = f.readF32(t.name);
    assert.equal(values.length, mine.shape.reduce((a, b) => a * b, 1));
    assert.ok(values.every(Number.isFinite), t.name);
  }
  assert.deepEqual(f.tensor('blk.0.ffn_down.weight').shape, [8, 32]);
  f.close();
});

test('GGUF writer: metadata of all types and F32/F16/Q8_0/Q4_0 tensors round-trip; node-llama-cpp parses the file', async () => {
  const dir = tmp();
  const path = join(dir, 'out.gguf');
  const meta: Record<string, GGUFTypedValue | unknown> = {
    'general.architecture': 'llama',
    'x.u8': { type: GGUFValueType.UINT8, value: 200 },
    'x.i8': { type: GGUFValueType.INT8, value: -7 },
    'x.u16': { type: GGUFValueType.UINT16, value: 60000 },
    'x.i16': { type: GGUFValueType.INT16, value: -3 },
    'x.u32': 123456,
    'x.i32': -5,
    'x.f32': 0.25,
    'x.f64': { type: GGUFValueType.FLOAT64, value: 1 / 3 },
    'x.u64': 2n ** 63n,
    'x.i64': -(2n ** 62n),
    'x.bool': false,
    'x.str': 'ünïcode',
    'x.arr.str': ['a', 'bb', ''],
    'x.arr.f32': Float32Array.of(1.5, -2),
    'x.arr.i32': [1, 2, -3],
    'x.arr.nested': { type: GGUFValueType.ARRAY, itemType: GGUFValueType.ARRAY, value: [
      { type: GGUFValueType.ARRAY, itemType: GGUFValueType.UINT8, value: Uint8Array.of(1, 2) },
      { type: GGUFValueType.ARRAY, itemType: GGUFValueType.STRING, value: ['z'] },
    ] },
  };
  const x = Float32Array.from({ length: 64 * 3 }, (_, i) => Math.sin(i) * 0.3);
  writeGGUF(path, {
    metadata: meta,
    alignment: 64,
    tensors: [
      { name: 'a', shape: [3, 64], type: 'F32', data: x },
      { name: 'b', shape: [3, 64], type: 'F16', data: () => x },
      { name: 'c', shape: [3, 64], type: 'Q8_0', data: x },
      { name: 'd', shape: [6, 32], type: 'Q4_0', data: x },
      { name: 'e', shape: [5], type: 'F32', data: Float32Array.of(1, 2, 3, 4, 5) },
    ],
  });
  const f = GGUFFile.open(path);
  assert.equal(f.alignment, 64);
  assert.equal(f.dataOffset % 64, 0);
  for (const t of f.tensors) assert.equal((t.offset - f.dataOffset) % 64, 0);
  assert.equal(f.value('x.u8'), 200); assert.equal(f.value('x.i8'), -7); assert.equal(f.value('x.u16'), 60000);
  assert.equal(f.value('x.u32'), 123456); assert.equal(f.get('x.u32')!.type, GGUFValueType.UINT32);
  assert.equal(f.value('x.i32'), -5); assert.equal(f.get('x.i32')!.type, GGUFValueType.INT32);
  assert.equal(f.value('x.f64'), 1 / 3); assert.equal(f.value('x.u64'), 2n ** 63n); assert.equal(f.value('x.i64'), -(2n ** 62n));
  assert.equal(f.value('x.bool'), false); assert.equal(f.value('x.str'), 'ünïcode');
  assert.deepEqual(f.value('x.arr.str'), ['a', 'bb', '']);
  assert.deepEqual(f.value('x.arr.i32'), Int32Array.of(1, 2, -3));
  assert.deepEqual(plainValue(f.get('x.arr.nested')!), [Uint8Array.of(1, 2), ['z']]);
  assert.ok(same(f.readF32('a'), x));
  assert.deepEqual(Buffer.from(f.readRaw('b')), Buffer.from(f32ToF16Bytes(x)));
  assert.deepEqual(Buffer.from(f.readRaw('c')), Buffer.from(quantizeQ8_0(x)));
  assert.deepEqual(Buffer.from(f.readRaw('d')), Buffer.from(quantizeQ4_0(x)));
  assert.deepEqual(f.tensor('d').shape, [6, 32]);
  assert.deepEqual(Array.from(f.readF32('e')), [1, 2, 3, 4, 5]);
  // Rewriting from the reader's typed values reproduces the file byte for byte.
  const again = join(dir, 'again.gguf');
  writeGGUF(again, { metadata: f.metadata, alignment: f.alignment, tensors: f.tensors.map((t) => ({ name: t.name, shape: t.shape, type: t.type, data: f.readRaw(t.name) })) });
  assert.deepEqual(readFileSync(again), readFileSync(path));
  f.close();
  const ref = await readGgufFileInfo(path, { readTensorInfo: true });
  assert.equal(ref.fullTensorInfo!.length, 5);
  assert.deepEqual(ref.fullTensorInfo!.map((t) => t.dimensions.map(Number)), [[64, 3], [64, 3], [64, 3], [32, 6], [5]]);
  assert.deepEqual(ref.fullTensorInfo!.map((t) => t.ggmlType), [0, 1, 8, 2, 0]);
  assert.equal((ref.metadata as unknown as { x: { str: string } }).x.str, 'ünïcode');
  rmSync(dir, { recursive: true });
});

test('GGUF: truncated, bad magic, bad version, corrupt counts and offsets give clear errors', () => {
  const dir = tmp();
  const good = readFileSync(TINY);
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty', new Uint8Array(0), /truncated file: magic/],
    ['magic', Buffer.concat([Buffer.from('GGML'), good.subarray(4)]), /not a GGUF file \(magic/],
    ['version', (() => { const b = Buffer.from(good.subarray(0, 4096)); b.writeUInt32LE(7, 4); return b; })(), /unsupported GGUF version 7/],
    ['header-cut', good.subarray(0, 200), /truncated file/],
    ['data-cut', good.subarray(0, good.length - 100), /tensor "output\.weight".*truncated\?/],
    ['huge-count', (() => { const b = Buffer.from(good); b.writeBigUInt64LE(1n << 60n, 8); return b; })(), /tensor count .* does not fit in the file/],
  ];
  for (const [name, bytes, re] of cases) {
    const p = join(dir, `${name}.gguf`);
    writeFileSync(p, bytes);
    assert.throws(() => GGUFFile.open(p), (e: Error) => re.test(e.message) && e.message.includes(p), `${name}: wrong error`);
  }
  // Tensor with an unsupported block type for dequantization: reading names file and tensor.
  const p = join(dir, 'iq.gguf');
  writeGGUF(p, { metadata: {}, tensors: [{ name: 'w', shape: [1, 256], type: 'IQ2_XXS', data: new Uint8Array(66) }] });
  const f = GGUFFile.open(p);
  assert.equal(f.readRaw('w').length, 66);
  assert.throws(() => f.readF32('w'), (e: Error) => e.message.includes(p) && e.message.includes('"w"') && /IQ2_XXS is not supported/.test(e.message));
  f.close();
  assert.ok(DEQUANTIZABLE.includes('Q6_K'));
  rmSync(dir, { recursive: true });
});

test('GGUF: truncation anywhere and random header byte flips give GGUFError (never RangeError/TypeError)', async () => {
  const { GGUFError } = await import('../src/formats/gguf.js');
  const dir = tmp();
  const good = readFileSync(TINY);
  const { dataOffset } = GGUFFile.open(TINY);
  const p = join(dir, 'x.gguf');
  for (let cut = 0; cut < good.length; cut += Math.floor(good.length / 60)) {
    writeFileSync(p, good.subarray(0, cut));
    assert.throws(() => GGUFFile.open(p), GGUFError, `cut at ${cut}`);
  }
  let s = 99;
  const rand = (n: number) => (s = (s * 1103515245 + 12345) >>> 0) % n;
  for (let i = 0; i < 60; i++) {
    const b = Buffer.from(good);
    const at = i < 30 ? rand(64) : rand(dataOffset);
    b[at] ^= 1 << rand(8);
    writeFileSync(p, b);
    try {
      GGUFFile.open(p).close();
    } catch (e) {
      assert.ok(e instanceof GGUFError, `flip at ${at}: ${(e as Error).name}: ${(e as Error).message}`);
    }
  }
  rmSync(dir, { recursive: true });
});
