"""Small helpers shared by the fixture scripts: readable JSON and raw little-endian float32 arrays."""
import json
import os

import torch

from safetensors_io import tensor_bytes


def write_json(path: str, obj) -> None:
    """Indented JSON with sorted keys; lists of numbers stay on one line so id/mask rows remain readable."""
    def dump(o, depth):
        pad = '  ' * (depth + 1)
        if isinstance(o, dict):
            items = [f'{pad}{json.dumps(k)}: {dump(o[k], depth + 1)}' for k in sorted(o)]
            return '{\n' + ',\n'.join(items) + '\n' + '  ' * depth + '}' if items else '{}'
        if isinstance(o, list) and any(isinstance(x, (dict, list)) for x in o):
            return '[\n' + ',\n'.join(pad + dump(x, depth + 1) for x in o) + '\n' + '  ' * depth + ']'
        return json.dumps(o, ensure_ascii=False)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(dump(obj, 0) + '\n')


def write_f32(path: str, t: torch.Tensor) -> dict:
    """Write t as raw little-endian float32 (row-major) and return its descriptor for reference.json."""
    with open(path, 'wb') as f:
        f.write(tensor_bytes(t.to(torch.float32)))
    return {'file': os.path.basename(path), 'dtype': 'float32', 'byte_order': 'little', 'shape': list(t.shape)}
