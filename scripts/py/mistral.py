"""Independent PyTorch forward of Hugging Face LlamaForCausalLM / MistralForCausalLM.

Follows transformers' modeling_llama.py / modeling_mistral.py (eager attention) step by step, operating on a
plain dict of HF-named weights so no `transformers` install is needed:
  - RMSNorm: upcast to fp32 (or keep fp64), x * rsqrt(mean(x^2) + eps), cast back, then weight * x
  - RoPE (rotate-half / NeoX order): inv_freq = 1 / theta^(arange(0, d, 2) / d), emb = cat(freqs, freqs)
  - positions of a left-padded row: cumsum(attention_mask) - 1 (pads get 1, as in generate())
  - GQA via repeat_kv; scores * 1/sqrt(head_dim); mask = causal & padding & sliding window
    (query i attends key j iff 0 <= i - j < sliding_window), masked entries = finfo.min; softmax in fp32
  - MLP: down(silu(gate(x)) * up(x)); final norm; lm_head (or tied embed_tokens)
A KV cache (list of (k, v) per layer, k after RoPE) allows incremental decoding.
"""
import math
from dataclasses import dataclass

import torch


@dataclass
class Config:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    sliding_window: int | None
    tie_word_embeddings: bool

    @staticmethod
    def from_hf(j: dict) -> 'Config':
        heads = j['num_attention_heads']
        sw = j.get('sliding_window') if j['model_type'] == 'mistral' else None
        return Config(
            model_type=j['model_type'],
            vocab_size=j['vocab_size'],
            hidden_size=j['hidden_size'],
            intermediate_size=j['intermediate_size'],
            num_hidden_layers=j['num_hidden_layers'],
            num_attention_heads=heads,
            num_key_value_heads=j.get('num_key_value_heads') or heads,
            head_dim=j.get('head_dim') or j['hidden_size'] // heads,
            rms_norm_eps=j.get('rms_norm_eps', 1e-6),
            rope_theta=float(j.get('rope_theta', 10000.0)),
            sliding_window=sw if sw else None,
            tie_word_embeddings=bool(j.get('tie_word_embeddings', False)),
        )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    input_dtype = x.dtype
    up = torch.float64 if input_dtype == torch.float64 else torch.float32
    h = x.to(up)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin of shape [B, S, head_dim], computed in fp32 (fp64 for an fp64 model) like transformers."""
    calc = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(calc) / head_dim))
    freqs = position_ids.to(calc)[..., None] * inv_freq  # [B, S, d/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, kvh, S, d] -> [B, kvh * n_rep, S, d]; query head h uses kv head h // n_rep."""
    if n_rep == 1:
        return x
    b, kvh, s, d = x.shape
    return x[:, :, None, :, :].expand(b, kvh, n_rep, s, d).reshape(b, kvh * n_rep, s, d)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def build_mask(attention_mask: torch.Tensor, q_len: int, sliding_window: int | None, dtype) -> torch.Tensor:
    """Additive mask [B, 1, q_len, kv_len]; queries are the last q_len slots of the kv sequence."""
    kv_len = attention_mask.shape[1]
    i = torch.arange(kv_len - q_len, kv_len)[:, None]
    j = torch.arange(kv_len)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed = allowed & (i - j < sliding_window)
    allowed = allowed[None, None] & attention_mask.bool()[:, None, None, :]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def forward(weights: dict, cfg: Config, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            past: list | None = None, dtype: torch.dtype = torch.float32):
    """Return (logits [B, S, V] in `dtype`, new cache).

    attention_mask covers past + new tokens ([B, past_len + S]); default all ones.
    Weights are cast to `dtype` (e.g. bf16-rounded checkpoint evaluated in fp32).
    """
    w = {k: v.to(dtype) for k, v in weights.items()}
    b, s = input_ids.shape
    past_len = 0 if past is None else past[0][0].shape[2]
    if attention_mask is None:
        attention_mask = torch.ones(b, past_len + s, dtype=torch.long)
    assert attention_mask.shape == (b, past_len + s), (attention_mask.shape, (b, past_len + s))
    position_ids = positions_from_mask(attention_mask)[:, past_len:]
    cos, sin = rope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta, dtype)
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    mask = build_mask(attention_mask, s, cfg.sliding_window, dtype)
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim

    h = w['model.embed_tokens.weight'][input_ids]
    new_cache = []
    for layer in range(cfg.num_hidden_layers):
        p = f'model.layers.{layer}.'
        x = rms_norm(h, w[p + 'input_layernorm.weight'], cfg.rms_norm_eps)
        q = (x @ w[p + 'self_attn.q_proj.weight'].T).view(b, s, nh, hd).transpose(1, 2)
        k = (x @ w[p + 'self_attn.k_proj.weight'].T).view(b, s, nkv, hd).transpose(1, 2)
        v = (x @ w[p + 'self_attn.v_proj.weight'].T).view(b, s, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = torch.cat([past[layer][0], k], dim=2)
            v = torch.cat([past[layer][1], v], dim=2)
        new_cache.append((k, v))
        kr, vr = repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv)
        scores = (q @ kr.transpose(2, 3)) / math.sqrt(hd) + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32 if dtype != torch.float64 else torch.float64).to(dtype)
        attn = (probs @ vr).transpose(1, 2).reshape(b, s, nh * hd)
        h = h + attn @ w[p + 'self_attn.o_proj.weight'].T
        x = rms_norm(h, w[p + 'post_attention_layernorm.weight'], cfg.rms_norm_eps)
        gate = x @ w[p + 'mlp.gate_proj.weight'].T
        up = x @ w[p + 'mlp.up_proj.weight'].T
        h = h + (torch.nn.functional.silu(gate) * up) @ w[p + 'mlp.down_proj.weight'].T
    h = rms_norm(h, w['model.norm.weight'], cfg.rms_norm_eps)
    head = w['model.embed_tokens.weight'] if cfg.tie_word_embeddings else w['lm_head.weight']
    return h @ head.T, new_cache


def hf_permute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Meta interleaved q/k rows -> HF rotate-half order (transformers' convert_llama_weights_to_hf.permute)."""
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)
