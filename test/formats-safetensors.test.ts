import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, fromFloat32, toFloat32 } from '../src/formats/dtype.js';
import { SafetensorsFile, ShardedSafetensors, openSafetensors, writeSafetensors, writeShardedSafetensors } from '../src/formats/safetensors.js';
import { writeFileAtomic, writeBytesAtomic } from '../src/formats/atomic.js';
import { locateHFFiles, readHFConfig, writeHFFolder } from '../src/formats/hf.js';
import type { HostTensor } from '../src/formats/tensor.js';

const tmp = () => mkdtempSync(join(tmpdir(), 'slimlm-st-'));
const f32bits = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0];

test('f16: every bit pattern round-trips through f32, and f32 → f16 rounds to nearest even', () => {
  for (let h = 0; h < 65536; h++) {
    const v = f16ToF32(h);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(f16ToF32(f32ToF16(v))));
    else assert.equal(f32ToF16(v), h, `pattern ${h.toString(16)}`);
  }
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  // Halfway cases: 1 + 2^-11 lies between 1 and 1+2^-10 → even (1); 1 + 3*2^-11 → 1 + 2^-9.
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00);
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16(65520), 0x7c00); // rounds up to +Inf
  assert.equal(f32ToF16(65519.99), 0x7bff);
  assert.equal(f32ToF16(2 ** -25), 0); // exactly half the smallest subnormal → even (0)
  assert.equal(f32ToF16(1.5 * 2 ** -25), 1);
  assert.equal(f32ToF16(-0), 0x8000);
});

test('bf16: round to nearest even, NaN stays NaN, widening is exact', () => {
  assert.equal(f32ToBf16(1), 0x3f80);
  const oneUlpHalf = new Float32Array(new Uint32Array([0x3f808000]).buffer)[0]; // halfway between 0x3f80 and 0x3f81
  assert.equal(f32ToBf16(oneUlpHalf), 0x3f80);
  const above = new Float32Array(new Uint32Array([0x3f818000]).buffer)[0]; // halfway, odd below → rounds up
  assert.equal(f32ToBf16(above), 0x3f82);
  assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
  for (let b = 0; b < 65536; b += 7) {
    const v = bf16ToF32(b);
    if (!Number.isNaN(v)) assert.equal(f32ToBf16(v), b);
  }
  assert.equal(f32bits(bf16ToF32(0xc0490fdb >>> 16)), 0xc0490000);
});

function sample(dtype: 'f32' | 'f16' | 'bf16', shape: number[], seed: number): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 43758.5453 % 3);
  return fromFloat32(v, shape, dtype);
}

test('safetensors: write → read is bit-exact for f32/f16/bf16/i64/bool, metadata format=pt, header 8-aligned', () => {
  const dir = tmp();
  const tensors = new Map<string, HostTensor>([
    ['a.f32', sample('f32', [3, 5], 1)],
    ['b.f16', sample('f16', [7], 2)],
    ['c.bf16', sample('bf16', [2, 2, 3], 3)],
    ['d.i64', { dtype: 'i64', shape: [2], data: new Uint8Array(BigInt64Array.of(-5n, 1n << 60n).buffer) }],
    ['e.bool', { dtype: 'bool', shape: [3], data: Uint8Array.of(1, 0, 1) }],
    ['scalar', { dtype: 'f32', shape: [], data: new Uint8Array(Float32Array.of(42).buffer) }],
    ['empty', { dtype: 'f32', shape: [0, 4], data: new Uint8Array(0) }],
  ]);
  const path = join(dir, 'm.safetensors');
  writeSafetensors(path, tensors, { note: 'hi' });
  const raw = readFileSync(path);
  const n = Number(raw.readBigUInt64LE(0));
  assert.equal((8 + n) % 8, 0);
  const header = JSON.parse(raw.subarray(8, 8 + n).toString());
  assert.deepEqual(header.__metadata__, { format: 'pt', note: 'hi' });
  assert.equal(header['c.bf16'].dtype, 'BF16');
  const f = SafetensorsFile.open(path);
  assert.deepEqual(f.names().sort(), [...tensors.keys()].sort());
  for (const [name, t] of tensors) {
    const r = f.read(name);
    assert.equal(r.dtype, t.dtype);
    assert.deepEqual(r.shape, t.shape);
    assert.deepEqual(Buffer.from(r.data), Buffer.from(t.data), name);
  }
  assert.equal(toFloat32(f.read('scalar'))[0], 42);
  f.close();
  assert.throws(() => f.read('a.f32'), /after close/);
  rmSync(dir, { recursive: true });
});

test('safetensors: sharded write → index + shards readable; missing shard / tensor give clear errors', () => {
  const dir = tmp();
  const tensors = new Map<string, HostTensor>();
  for (let i = 0; i < 6; i++) tensors.set(`t${i}`, sample(i % 2 ? 'bf16' : 'f32', [8, 4], i));
  const shards = writeShardedSafetensors(dir, tensors, 200);
  assert.ok(shards.length >= 2);
  assert.equal(shards[0], `model-00001-of-${String(shards.length).padStart(5, '0')}.safetensors`);
  const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
  assert.equal(index.metadata.total_size, 3 * 128 + 3 * 64);
  const r = openSafetensors(join(dir, 'model.safetensors.index.json'));
  for (const [name, t] of tensors) assert.deepEqual(Buffer.from(r.read(name).data), Buffer.from(t.data));
  assert.throws(() => r.read('nope'), /model\.safetensors\.index\.json: no tensor "nope"/);
  r.close();
  // Index names a tensor that its shard lacks.
  index.weight_map.ghost = shards[0];
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  const r2 = ShardedSafetensors.open(join(dir, 'model.safetensors.index.json'));
  assert.throws(() => r2.read('ghost'), (e: Error) => e.message.includes(shards[0]) && e.message.includes('"ghost"'));
  r2.close();
  rmSync(join(dir, shards[1]));
  assert.throws(() => ShardedSafetensors.open(join(dir, 'model.safetensors.index.json')), new RegExp(`missing shard.*${shards[1]}`));
  rmSync(dir, { recursive: true });
});

function rawFile(header: unknown, dataBytes: number, lenOverride?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + dataBytes);
  out.writeBigUInt64LE(lenOverride ?? BigInt(json.length), 0);
  json.copy(out, 8);
  return out;
}

test('safetensors: corrupt and truncated files give clear errors naming file and tensor', () => {
  const dir = tmp();
  const cases: [string, Uint8Array, RegExp][] = [
    ['short', Uint8Array.of(1, 2, 3), /too short/],
    ['len-past-eof', rawFile({}, 0, 1000n), /header length 1000 runs past the end/],
    ['huge-len', rawFile({}, 0, 1n << 62n), /runs past the end/],
    ['bad-json', rawFile('{"a": {', 0), /not valid JSON/],
    ['not-object', rawFile('[1,2]', 0), /not a JSON object/],
    ['unknown-dtype', rawFile({ w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, 2), /tensor "w": unsupported dtype "F8_E4M3"/],
    ['size-mismatch', rawFile({ w: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4), /tensor "w": F32 shape \[2\] needs 8 bytes/],
    ['overlap', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12), /tensor "b".*overlap/],
    ['gap', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12), /tensor "b": gap of 4 bytes/],
    ['trailing', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 8), /cover 4 bytes but the data buffer has 8/],
    ['truncated-data', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, 10), /tensor "a": data_offsets \[0, 16\] run past the data buffer/],
    ['bad-offsets', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, 4), /tensor "a": bad data_offsets/],
    ['bad-shape', rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4), /tensor "a": shape/],
    ['bad-metadata', rawFile({ __metadata__: { x: 1 } }, 0), /__metadata__ must be an object of string values/],
  ];
  for (const [name, bytes, re] of cases) {
    const p = join(dir, `${name}.safetensors`);
    writeFileSync(p, bytes);
    assert.throws(() => SafetensorsFile.open(p), (e: Error) => re.test(e.message) && e.message.includes(p), name);
  }
  // A real file truncated by one byte.
  const good = join(dir, 'good.safetensors');
  writeSafetensors(good, new Map([['w', sample('f32', [4, 4], 0)]]));
  const bytes = readFileSync(good);
  writeFileSync(join(dir, 'cut.safetensors'), bytes.subarray(0, bytes.length - 1));
  assert.throws(() => SafetensorsFile.open(join(dir, 'cut.safetensors')), /tensor "w".*run past the data buffer/);
  rmSync(dir, { recursive: true });
});

test('atomic writes: an error mid-write leaves the old file and no temp file behind', () => {
  const dir = tmp();
  const p = join(dir, 'model.safetensors');
  writeBytesAtomic(p, 'old content');
  assert.throws(() => writeFileAtomic(p, (sink) => { sink.write(Buffer.from('partial new')); throw new Error('disk full'); }), /disk full/);
  assert.equal(readFileSync(p, 'utf8'), 'old content');
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  // Writer failing on a bad tensor (wrong byte count) also keeps the target.
  assert.throws(() => writeSafetensors(p, [{ name: 'w', dtype: 'f32', shape: [4], data: () => new Uint8Array(3) }]), /tensor "w": f32 \[4\] needs 16 bytes, got 3/);
  assert.equal(readFileSync(p, 'utf8'), 'old content');
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  rmSync(dir, { recursive: true });
});

test('atomic writes: temp files of killed writers are removed by the next write; I/O errors name the file', async () => {
  const dir = tmp();
  const p = join(dir, 'model.safetensors');
  // A PID that no longer runs: a child that has exited.
  const { spawnSync } = await import('node:child_process');
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  writeFileSync(join(dir, `.model.safetensors.${dead}.0a1b2c3d.tmp`), 'half of a killed write');
  writeFileSync(join(dir, `.model.safetensors.${process.pid}.ffffffff.tmp`), 'a write of this process: left alone');
  writeFileSync(join(dir, `.other.bin.${dead}.0a1b2c3d.tmp`), 'another file\'s temp: left alone');
  writeBytesAtomic(p, 'new');
  assert.deepEqual(readdirSync(dir).sort(), [`.model.safetensors.${process.pid}.ffffffff.tmp`, `.other.bin.${dead}.0a1b2c3d.tmp`, 'model.safetensors'].sort());
  const full = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  assert.throws(() => writeFileAtomic(p, () => { throw full; }), (e: NodeJS.ErrnoException) => e.code === 'ENOSPC' && e.message.includes(p));
  assert.equal(readFileSync(p, 'utf8'), 'new');
  rmSync(dir, { recursive: true });
});

test('HF folder: write single and sharded, locate files, config round-trips; switching layouts removes stale weights', () => {
  const dir = tmp();
  const config = readHFConfig('../shared/tokenizers/mistral-7b-v0.1');
  const small = { ...config, vocabSize: 8, hiddenSize: 4 };
  const tensors = new Map([['x', sample('bf16', [16, 4], 1)], ['y', sample('bf16', [16, 4], 2)]]);
  writeHFFolder(dir, small, tensors, { extraFiles: { 'tokenizer.json': '{}' } });
  let files = locateHFFiles(dir);
  assert.equal(files.weightsKind, 'single');
  assert.equal(files.tokenizerJson, join(dir, 'tokenizer.json'));
  assert.deepEqual(readHFConfig(dir), small);
  writeHFFolder(dir, small, tensors, { maxShardBytes: 128 });
  files = locateHFFiles(dir);
  assert.equal(files.weightsKind, 'sharded');
  assert.ok(!existsSync(join(dir, 'model.safetensors')));
  const r = openSafetensors(files.weights!);
  assert.deepEqual(Buffer.from(r.read('y').data), Buffer.from(tensors.get('y')!.data));
  r.close();
  writeHFFolder(dir, small, tensors);
  assert.deepEqual(readdirSync(dir).sort(), ['config.json', 'model.safetensors', 'tokenizer.json']);
  rmSync(dir, { recursive: true });
});

test('real Mistral-7B index: every tensor maps to a named shard (shards absent → clear error)', () => {
  const idx = '../shared/tokenizers/mistral-7b-v0.1/model.safetensors.index.json';
  assert.throws(() => ShardedSafetensors.open(idx), /missing shard file\(s\): .*model-00001-of-00002\.safetensors/);
  const map = JSON.parse(readFileSync(idx, 'utf8')).weight_map as Record<string, string>;
  assert.equal(Object.keys(map).length, 291);
});
