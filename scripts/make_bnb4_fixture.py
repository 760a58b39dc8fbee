#!/usr/bin/python3
"""Reference NF4/FP4 quantization (with and without double quantization) in NumPy, written from bitsandbytes'
published algorithm (bitsandbytes/functional.py `quantize_4bit`, `quantize_blockwise`, `create_dynamic_map`,
`get_4bit_type`, `QuantState.as_dict(packed=True)`; bitsandbytes/backends/default/ops.py kernels), independently of
slimlm's TypeScript.

  absmax  = max |x| per block of 64 (fp32)
  scaled  = clip(x * (1 / absmax), -1, 1)                       (fp32)
  index   = argmin |scaled - code|  (first index on ties)        packed two per byte, first in the high nibble
  double quantization: offset = mean(absmax); (absmax - offset) -> 8-bit dynamic map, blocks of 256, fp32 nested absmax

Differences from running bitsandbytes itself, on purpose and documented in src/quantize/bnb4.ts:
  - the dynamic map's linspace is computed in float64 and rounded (torch's SIMD linspace differs by <= 1 ulp in a few
    entries; every file stores its own map, so this changes no decoded value);
  - the offset mean is accumulated in float64 and rounded to float32.

Run: /usr/bin/python3 scripts/make_bnb4_fixture.py
Writes test/fixtures/bnb4/bnb4.safetensors: inputs `x.<case>` (f32) and, for every case, the bnb HF layout tensors
`<case>.weight`, `<case>.weight.absmax`, `.quant_map`, [`.nested_absmax`, `.nested_quant_map`],
`.quant_state.bitsandbytes__<type>`, plus `<case>.dequant` (f32) = the dequantized weight (double-quantized cases only).
Cases: <input>.<nf4|fp4>[.dq] for inputs `normal` (96x192) and `heavy` (13x21, odd count).
"""
import json
import os
import struct

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'bnb4', 'bnb4.safetensors')
f32 = np.float32

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
    -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=f32)
_fp4 = np.array([0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0], dtype=f32)
FP4 = (_fp4 / np.abs(_fp4).max()).astype(f32)


def dynamic_map():
    data = []
    for i in range(7):
        n = 2 ** i + 1
        b = np.linspace(0.1, 1.0, n).astype(f32)
        means = ((b[:-1] + b[1:]) / f32(2.0)).astype(f32)
        s = f32(10.0 ** (i - 6))
        data += list((s * means).astype(f32)) + list((-s * means).astype(f32))
    data += [f32(0.0), f32(1.0)]
    return np.sort(np.array(data, dtype=f32))


def quantize_blockwise(x, code, blocksize):
    n = x.size
    blocks = -(-n // blocksize)
    absmax = np.zeros(blocks, dtype=f32)
    idx = np.zeros(n, dtype=np.uint8)
    for b in range(blocks):
        blk = x[b * blocksize:(b + 1) * blocksize]
        absmax[b] = np.abs(blk).max()
        scaled = np.clip(blk * (f32(1.0) / absmax[b]), -1, 1).astype(f32)
        idx[b * blocksize:(b + 1) * blocksize] = np.argmin(np.abs(scaled[:, None] - code[None, :]), axis=1)
    return idx, absmax


def quantize_4bit(x, quant_type, blocksize, double_quant):
    code = NF4 if quant_type == 'nf4' else FP4
    flat = x.reshape(-1).astype(f32)
    idx, absmax = quantize_blockwise(flat, code, blocksize)
    if idx.size % 2:
        idx = np.append(idx, np.uint8(0))
    packed = ((idx[0::2] << 4) | idx[1::2]).astype(np.uint8)
    state = {'quant_type': quant_type, 'blocksize': blocksize, 'dtype': 'float32', 'shape': list(x.shape)}
    out = {'weight': packed.reshape(-1, 1), 'quant_map': code}
    scales = absmax
    if double_quant:
        offset = f32(np.mean(absmax.astype(np.float64)))
        dmap = dynamic_map()
        q8, nested_absmax = quantize_blockwise((absmax - offset).astype(f32), dmap, 256)
        out.update({'absmax': q8, 'nested_absmax': nested_absmax, 'nested_quant_map': dmap})
        state.update({'nested_blocksize': 256, 'nested_dtype': 'float32', 'nested_offset': float(offset)})
        scales = ((dmap[q8] * np.repeat(nested_absmax, 256)[:q8.size]).astype(f32) + offset).astype(f32)
    else:
        out['absmax'] = absmax
    out['quant_state.bitsandbytes__' + quant_type] = np.frombuffer(json.dumps(state).encode('utf-8'), dtype=np.uint8)
    deq = (code[idx[:flat.size]] * np.repeat(scales, blocksize)[:flat.size]).astype(f32)
    out['dequant'] = deq.reshape(x.shape)
    return out


def write_safetensors(path, tensors):
    names = {np.dtype(np.float32): 'F32', np.dtype(np.uint8): 'U8'}
    header, blobs, pos = {'__metadata__': {'format': 'pt'}}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        b = arr.astype(arr.dtype.newbyteorder('<')).tobytes()
        header[name] = {'dtype': names[arr.dtype], 'shape': list(arr.shape), 'data_offsets': [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def main():
    rng = np.random.default_rng(20240521)
    inputs = {
        # 288 blocks of 64 -> 2 nested blocks of 256 (the second one partial)
        'normal': rng.standard_normal((96, 192)).astype(f32) * f32(0.02),
        # heavy tails and an odd element count (last 4-bit block partial, padding nibble)
        'heavy': (rng.standard_t(3, (13, 21)) * 0.1).astype(f32),
    }
    tensors = {}
    for case, x in inputs.items():
        tensors['x.' + case] = x
        for qt in ('nf4', 'fp4'):
            for dq in (False, True):
                key = f'{case}.{qt}{".dq" if dq else ""}'
                for k, v in quantize_4bit(x, qt, 64, dq).items():
                    if k == 'dequant' and not dq:
                        continue  # the double-quantized cases cover dequantization; keeps the fixture small
                    tensors[f'{key}.{k}' if k in ('weight', 'dequant') else f'{key}.weight.{k}'] = v
    write_safetensors(OUT, tensors)
    print(f'wrote {OUT} ({os.path.getsize(OUT)} bytes)')


if __name__ == '__main__':
    main()
