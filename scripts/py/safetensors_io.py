"""Pure-Python safetensors reader/writer (no `safetensors` package needed).

Spec: https://github.com/huggingface/safetensors#format
  8 bytes: u64 little-endian N = header size
  N bytes: UTF-8 JSON {"__metadata__": {...}, name: {"dtype", "shape", "data_offsets": [begin, end]}}
           (offsets relative to the start of the data section; padded with spaces to a multiple of 8)
  rest:    tensor bytes, little-endian, row-major, contiguous, no gaps.

Tensor order matches the reference implementation (`safetensors.torch.save_file`): by dtype alignment
descending, then by name. Sharding matches transformers' `save_pretrained` (model-0000i-of-0000n.safetensors
plus model.safetensors.index.json).
"""
import json
import os
import struct
import tempfile

import numpy as np
import torch

# safetensors dtype name -> (torch dtype, bytes per element)
DTYPES = {
    'F64': (torch.float64, 8),
    'F32': (torch.float32, 4),
    'F16': (torch.float16, 2),
    'BF16': (torch.bfloat16, 2),
    'I64': (torch.int64, 8),
    'I32': (torch.int32, 4),
    'I16': (torch.int16, 2),
    'I8': (torch.int8, 1),
    'U8': (torch.uint8, 1),
}
TORCH_TO_ST = {t: name for name, (t, _) in DTYPES.items()}
# Same-width integer views used to get raw bytes through numpy (numpy has no bfloat16).
_RAW_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16}


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    if t.dtype in _RAW_VIEW:
        t = t.view(_RAW_VIEW[t.dtype])
    return t.numpy().astype(t.numpy().dtype.newbyteorder('<'), copy=False).tobytes()


def tensor_from_bytes(buf: bytes, dtype: str, shape) -> torch.Tensor:
    if dtype not in DTYPES:
        raise ValueError(f'unsupported safetensors dtype {dtype}')
    tdtype, size = DTYPES[dtype]
    count = int(np.prod(shape)) if len(shape) else 1
    if len(buf) != count * size:
        raise ValueError(f'{dtype}{list(shape)} needs {count * size} bytes, got {len(buf)}')
    raw_t = _RAW_VIEW.get(tdtype, tdtype)
    np_dtype = torch.empty(0, dtype=raw_t).numpy().dtype.newbyteorder('<')
    arr = np.frombuffer(buf, dtype=np_dtype).astype(np_dtype.newbyteorder('='))
    t = torch.from_numpy(arr.copy()).reshape(list(shape))
    return t.view(tdtype) if raw_t is not tdtype else t


def _atomic_write(path: str, chunks) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.')
    try:
        with os.fdopen(fd, 'wb') as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def serialize(tensors: dict, metadata: dict | None = None) -> list:
    """Return the file as a list of byte chunks (header first)."""
    meta = {'format': 'pt'} if metadata is None else metadata
    names = sorted(tensors, key=lambda n: (-DTYPES[TORCH_TO_ST[tensors[n].dtype]][1], n))
    header = {'__metadata__': meta}
    blobs, offset = [], 0
    for n in names:
        t = tensors[n]
        if t.dtype not in TORCH_TO_ST:
            raise ValueError(f'{n}: unsupported dtype {t.dtype}')
        b = tensor_bytes(t)
        header[n] = {'dtype': TORCH_TO_ST[t.dtype], 'shape': list(t.shape), 'data_offsets': [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    hjson = json.dumps(header, separators=(',', ':')).encode('utf-8')
    hjson += b' ' * (-len(hjson) % 8)
    return [struct.pack('<Q', len(hjson)), hjson] + blobs


def save_file(tensors: dict, path: str, metadata: dict | None = None) -> None:
    _atomic_write(path, serialize(tensors, metadata))


def read_header(path: str):
    """Return (header dict without __metadata__, metadata, data start offset)."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        if size < 8:
            raise ValueError(f'{path}: too small for a safetensors file')
        (n,) = struct.unpack('<Q', f.read(8))
        if n > size - 8:
            raise ValueError(f'{path}: header size {n} exceeds file size {size}')
        header = json.loads(f.read(n).decode('utf-8'))
    meta = header.pop('__metadata__', None)
    data_len = size - 8 - n
    spans = sorted((info['data_offsets'][0], info['data_offsets'][1], name) for name, info in header.items())
    pos = 0
    for begin, end, name in spans:
        if begin != pos or end < begin:
            raise ValueError(f'{path}: tensor {name} offsets {begin}..{end} are not contiguous (expected start {pos})')
        pos = end
    if pos != data_len:
        raise ValueError(f'{path}: data section is {data_len} bytes, tensors cover {pos}')
    return header, meta, 8 + n


def load_file(path: str) -> dict:
    header, _, start = read_header(path)
    out = {}
    with open(path, 'rb') as f:
        for name, info in header.items():
            b, e = info['data_offsets']
            f.seek(start + b)
            out[name] = tensor_from_bytes(f.read(e - b), info['dtype'], info['shape'])
    return out


def save_sharded(state_dict: dict, folder: str, max_shard_size: int) -> list:
    """Write like transformers' save_pretrained(safe_serialization=True, max_shard_size=...).

    Tensors are packed into shards in state-dict order; a new shard starts when the next tensor would
    overflow max_shard_size (bytes). With one shard the file is model.safetensors and there is no index.
    Returns the list of written file names.
    """
    shards, current, current_size = [], {}, 0
    for name, t in state_dict.items():
        nbytes = t.numel() * t.element_size()
        if current and current_size + nbytes > max_shard_size:
            shards.append(current)
            current, current_size = {}, 0
        current[name] = t
        current_size += nbytes
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], os.path.join(folder, 'model.safetensors'))
        return ['model.safetensors']
    files, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        fname = f'model-{i + 1:05d}-of-{len(shards):05d}.safetensors'
        save_file(shard, os.path.join(folder, fname))
        files.append(fname)
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    index = {'metadata': {'total_size': total}, 'weight_map': weight_map}
    text = json.dumps(index, indent=2, sort_keys=True) + '\n'
    _atomic_write(os.path.join(folder, 'model.safetensors.index.json'), [text.encode('utf-8')])
    return files + ['model.safetensors.index.json']


def load_folder(folder: str) -> dict:
    """Load every tensor of a HF folder (single file or sharded index)."""
    index_path = os.path.join(folder, 'model.safetensors.index.json')
    if not os.path.exists(index_path):
        return load_file(os.path.join(folder, 'model.safetensors'))
    with open(index_path) as f:
        index = json.load(f)
    out = {}
    for fname in sorted(set(index['weight_map'].values())):
        part = load_file(os.path.join(folder, fname))
        for name in part:
            if index['weight_map'].get(name) != fname:
                raise ValueError(f'{fname}: tensor {name} not mapped to this shard in the index')
        out.update(part)
    missing = set(index['weight_map']) - set(out)
    if missing:
        raise ValueError(f'index names tensors missing from shards: {sorted(missing)}')
    return out
