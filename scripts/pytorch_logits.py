#!/usr/bin/env python3
"""Load a Hugging Face Llama/Mistral folder written by slimlm in PyTorch (Debian python3-torch; an independent
implementation of transformers' forward in scripts/py/mistral.py) and print the logits for the given token ids as JSON.

    /usr/bin/python3 scripts/pytorch_logits.py MODEL_DIR 1,733,16289,...
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'py'))
from mistral import Config, forward  # noqa: E402
from safetensors_io import load_folder  # noqa: E402


def main() -> None:
    folder, ids = sys.argv[1], [int(x) for x in sys.argv[2].split(',')]
    with open(os.path.join(folder, 'config.json')) as f:
        cfg = Config.from_hf(json.load(f))
    weights = load_folder(folder)
    with torch.no_grad():
        logits, _ = forward(weights, cfg, torch.tensor([ids]))
    json.dump({'shape': list(logits.shape), 'logits': logits[0].flatten().tolist()}, sys.stdout)


if __name__ == '__main__':
    main()
