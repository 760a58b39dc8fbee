#!/usr/bin/python3
"""Tiny random Mistral/Llama checkpoints in Hugging Face layout + PyTorch reference logits.

Writes (see test/fixtures/README.md for the layout):
  test/fixtures/mistral-tiny/       MistralForCausalLM, fp32, one model.safetensors, rope_theta 1e4, sliding_window 7
  test/fixtures/mistral-tiny-bf16/  same weights rounded to bf16, rope_theta 1e6, sharded in 2 files + index
  test/fixtures/llama-tiny/         LlamaForCausalLM, fp32, tied embeddings, no sliding window, MHA, rope_theta 5e5
Each folder also has reference.json + logits_batch.bin + logits_single.bin.

Run: /usr/bin/python3 scripts/make_mistral_reference.py   (deterministic; needs only torch + numpy)
"""
import json
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep scripts/py free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'py'))
import mistral  # noqa: E402
import safetensors_io as st  # noqa: E402
from fixture_io import write_f32, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'test', 'fixtures')
TRANSFORMERS_VERSION = '4.44.2'  # the config.json layout below is what this version writes
PAD_ID = 0
TOLERANCE = 1e-4


def hf_config(model_type: str, *, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
              num_key_value_heads, rope_theta, rms_norm_eps, sliding_window, tie_word_embeddings, torch_dtype) -> dict:
    """config.json as transformers' PretrainedConfig.to_json_string() writes it (sorted keys, indent 2)."""
    c = {
        'architectures': ['MistralForCausalLM' if model_type == 'mistral' else 'LlamaForCausalLM'],
        'attention_dropout': 0.0,
        'bos_token_id': 1,
        'eos_token_id': 2,
        'hidden_act': 'silu',
        'hidden_size': hidden_size,
        'initializer_range': 0.02,
        'intermediate_size': intermediate_size,
        'max_position_embeddings': 128,
        'model_type': model_type,
        'num_attention_heads': num_attention_heads,
        'num_hidden_layers': num_hidden_layers,
        'num_key_value_heads': num_key_value_heads,
        'rms_norm_eps': rms_norm_eps,
        'rope_theta': float(rope_theta),
        'tie_word_embeddings': tie_word_embeddings,
        'torch_dtype': torch_dtype,
        'transformers_version': TRANSFORMERS_VERSION,
        'use_cache': True,
        'vocab_size': vocab_size,
    }
    if model_type == 'mistral':
        c['head_dim'] = hidden_size // num_attention_heads
        c['sliding_window'] = sliding_window
    else:
        c.update({'attention_bias': False, 'mlp_bias': False, 'pretraining_tp': 1, 'rope_scaling': None})
    return c


def random_weights(cfg: mistral.Config, gen: torch.Generator, std: float = 0.2) -> dict:
    """State dict in transformers' module order (embed, layers, norm, lm_head)."""
    def normal(*shape, s=std):
        return torch.randn(*shape, generator=gen) * s

    def norm_weight():
        return 1.0 + normal(cfg.hidden_size, s=0.1)

    hd, q_out, kv_out = cfg.head_dim, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    w = {'model.embed_tokens.weight': normal(cfg.vocab_size, cfg.hidden_size, s=0.4)}
    for i in range(cfg.num_hidden_layers):
        p = f'model.layers.{i}.'
        w[p + 'self_attn.q_proj.weight'] = normal(q_out, cfg.hidden_size)
        w[p + 'self_attn.k_proj.weight'] = normal(kv_out, cfg.hidden_size)
        w[p + 'self_attn.v_proj.weight'] = normal(kv_out, cfg.hidden_size)
        w[p + 'self_attn.o_proj.weight'] = normal(cfg.hidden_size, q_out, s=std / 2)
        w[p + 'mlp.gate_proj.weight'] = normal(cfg.intermediate_size, cfg.hidden_size)
        w[p + 'mlp.up_proj.weight'] = normal(cfg.intermediate_size, cfg.hidden_size)
        w[p + 'mlp.down_proj.weight'] = normal(cfg.hidden_size, cfg.intermediate_size, s=std / 2)
        w[p + 'input_layernorm.weight'] = norm_weight()
        w[p + 'post_attention_layernorm.weight'] = norm_weight()
    w['model.norm.weight'] = norm_weight()
    if not cfg.tie_word_embeddings:
        w['lm_head.weight'] = normal(cfg.vocab_size, cfg.hidden_size)
    assert hd % 2 == 0
    return w


def make_inputs(gen: torch.Generator, vocab: int, lengths: list, single_len: int):
    """Left-padded batch (BOS first in every row) and one unpadded sequence."""
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, width - n] = 1
        ids[r, width - n + 1:] = torch.randint(3, vocab, (n - 1,), generator=gen)
        mask[r, width - n:] = 1
    single = torch.cat([torch.tensor([1]), torch.randint(3, vocab, (single_len - 1,), generator=gen)])[None]
    return ids, mask, single


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def check_and_reference(name: str, folder: str, weights: dict, cfg: mistral.Config, gen: torch.Generator) -> dict:
    lengths, single_len = [22, 16, 9], 24
    ids, mask, single = make_inputs(gen, cfg.vocab_size, lengths, single_len)
    f64 = torch.float64
    # Reference: fp64 arithmetic on the stored weight values (exact for fp32 and bf16), rounded to fp32 at the end.
    batch_logits, _ = mistral.forward(weights, cfg, ids, mask, dtype=f64)
    single_logits, _ = mistral.forward(weights, cfg, single, dtype=f64)
    report = {}

    # 1. Padded rows equal the same rows run alone (left padding + positions from mask).
    worst = 0.0
    for r, n in enumerate(lengths):
        alone, _ = mistral.forward(weights, cfg, ids[r:r + 1, -n:], dtype=f64)
        worst = max(worst, max_diff(alone[0], batch_logits[r, -n:]))
    assert worst < 1e-9, f'{name}: padded row != unpadded row ({worst})'
    report['padded_vs_unpadded_max_abs_diff'] = worst

    # 2. The same model in fp32 (what the engine computes) agrees with the fp64 reference.
    b32, _ = mistral.forward(weights, cfg, ids, mask, dtype=torch.float32)
    s32, _ = mistral.forward(weights, cfg, single, dtype=torch.float32)
    real = mask.bool()
    fp32_diff = max(max_diff(b32[real], batch_logits[real]), max_diff(s32, single_logits))
    assert fp32_diff < TOLERANCE / 5, f'{name}: fp32 forward deviates from fp64 by {fp32_diff}'
    report['fp32_vs_reference_max_abs_diff'] = fp32_diff

    # 3. Incremental decoding with a KV cache (prefill 5, then one token at a time) equals the full forward.
    prefix = 5
    step_logits, cache = mistral.forward(weights, cfg, ids[:, :prefix], mask[:, :prefix], dtype=f64)
    pieces = [step_logits]
    for t in range(prefix, ids.shape[1]):
        step_logits, cache = mistral.forward(weights, cfg, ids[:, t:t + 1], mask[:, :t + 1], past=cache, dtype=f64)
        pieces.append(step_logits)
    inc = torch.cat(pieces, dim=1)
    inc_diff = max_diff(inc[real], batch_logits[real])
    assert inc_diff < 1e-9, f'{name}: KV-cache decoding != full forward ({inc_diff})'
    report['kv_cache_vs_full_max_abs_diff'] = inc_diff

    # 4. The fixture really exercises the sliding window: same up to the window, different after it.
    if cfg.sliding_window is not None:
        full = mistral.Config(**{**cfg.__dict__, 'sliding_window': None})
        no_window, _ = mistral.forward(weights, full, single, dtype=f64)
        w = cfg.sliding_window
        inside = max_diff(no_window[0, :w], single_logits[0, :w])
        outside = max_diff(no_window[0, w:], single_logits[0, w:])
        assert inside < 1e-12 and outside > 1e-2, (inside, outside)
        report['sliding_window_effect_max_abs_diff'] = outside

    # 5. Greedy continuation of the single sequence (KV cache), with the smallest top-1/top-2 logit margin so a
    #    consumer can tell whether a mismatch could be a near tie.
    out, margins = [], []
    logits, cache = mistral.forward(weights, cfg, single, dtype=f64)
    attn = torch.ones(1, single.shape[1], dtype=torch.long)
    for _ in range(16):
        top2 = logits[0, -1].topk(2)
        margins.append((top2.values[0] - top2.values[1]).item())
        nxt = int(top2.indices[0])
        out.append(nxt)
        attn = torch.cat([attn, torch.ones(1, 1, dtype=torch.long)], dim=1)
        logits, cache = mistral.forward(weights, cfg, torch.tensor([[nxt]]), attn, past=cache, dtype=f64)
    assert 2 not in out, f'{name}: greedy emitted EOS; a generate() stopping at EOS would differ'
    full_ids = torch.cat([single, torch.tensor([out])], dim=1)
    recompute, _ = mistral.forward(weights, cfg, full_ids, dtype=f64)
    assert recompute[0, single_len - 1:-1].argmax(-1).tolist() == out

    logits_batch = batch_logits.to(torch.float32).masked_fill(~real[..., None], 0.0)
    ref = {
        'model': name,
        'description': 'Logits of the PyTorch reference forward (scripts/py/mistral.py, transformers semantics), '
                       'computed in float64 from the stored weight values and rounded to float32. '
                       'Padded positions of logits_batch are 0 and carry no meaning.',
        'tolerance': {'max_abs_diff': TOLERANCE},
        'pad_token_id': PAD_ID,
        'batch': {
            'input_ids': ids.tolist(),
            'attention_mask': mask.tolist(),
            'position_ids': mistral.positions_from_mask(mask).tolist(),
            'lengths': lengths,
            'logits': write_f32(os.path.join(folder, 'logits_batch.bin'), logits_batch),
        },
        'single': {
            'input_ids': single[0].tolist(),
            'logits': write_f32(os.path.join(folder, 'logits_single.bin'), single_logits[0]),
        },
        'greedy': {
            'prompt_ids': single[0].tolist(),
            'max_new_tokens': len(out),
            'new_ids': out,
            'min_top2_margin': min(margins),
        },
        'checks': report,
    }
    write_json(os.path.join(folder, 'reference.json'), ref)
    print(f'{name}: logits std {single_logits.std().item():.3f} max |.| {single_logits.abs().max().item():.2f}; '
          + ', '.join(f'{k}={v:.2e}' for k, v in report.items()) + f'; greedy min margin {min(margins):.3f}')
    return ref


def write_folder(folder: str, config: dict, weights: dict, max_shard_size: int | None = None) -> None:
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        if f.endswith('.safetensors') or f == 'model.safetensors.index.json':
            os.unlink(os.path.join(folder, f))
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        f.write(json.dumps(config, indent=2, sort_keys=True) + '\n')  # byte-for-byte transformers' layout
    if max_shard_size is None:
        st.save_file(weights, os.path.join(folder, 'model.safetensors'))
    else:
        files = st.save_sharded(weights, folder, max_shard_size)
        assert len(files) == 3, files  # two shards + index
    back = st.load_folder(folder)
    assert set(back) == set(weights)
    for k, v in weights.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def main() -> None:
    torch.manual_seed(0)

    # --- Mistral, fp32 -------------------------------------------------------------------------------------------
    mcfg = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=8,
                num_key_value_heads=2, rms_norm_eps=1e-5, sliding_window=7, tie_word_embeddings=False)
    config = hf_config('mistral', rope_theta=10000.0, torch_dtype='float32', **mcfg)
    cfg = mistral.Config.from_hf(config)
    gen = torch.Generator().manual_seed(20240601)
    weights = random_weights(cfg, gen)
    folder = os.path.join(FIXTURES, 'mistral-tiny')
    write_folder(folder, config, weights)
    check_and_reference('mistral-tiny', folder, weights, cfg, torch.Generator().manual_seed(1))

    # --- Mistral, bf16, sharded, rope_theta 1e6 (same weights rounded to nearest-even bf16) ------------------------
    config16 = hf_config('mistral', rope_theta=1e6, torch_dtype='bfloat16', **mcfg)
    cfg16 = mistral.Config.from_hf(config16)
    w16 = {k: v.to(torch.bfloat16) for k, v in weights.items()}
    folder = os.path.join(FIXTURES, 'mistral-tiny-bf16')
    total = sum(t.numel() * 2 for t in w16.values())
    write_folder(folder, config16, w16, max_shard_size=total * 6 // 10)
    check_and_reference('mistral-tiny-bf16', folder, w16, cfg16, torch.Generator().manual_seed(2))

    # --- Llama, fp32, tied embeddings, no sliding window, MHA ------------------------------------------------------
    lconfig = hf_config('llama', vocab_size=320, hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=4, rope_theta=500000.0, rms_norm_eps=1e-6,
                        sliding_window=None, tie_word_embeddings=True, torch_dtype='float32')
    lcfg = mistral.Config.from_hf(lconfig)
    lweights = random_weights(lcfg, torch.Generator().manual_seed(7))
    folder = os.path.join(FIXTURES, 'llama-tiny')
    write_folder(folder, lconfig, lweights)
    check_and_reference('llama-tiny', folder, lweights, lcfg, torch.Generator().manual_seed(3))


if __name__ == '__main__':
    main()
