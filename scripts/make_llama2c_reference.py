#!/usr/bin/python3
"""Reference logits for the real stories260K llama2.c checkpoint, computed the way llama2.c's model.py does.

Reads the run.c `.bin` (legacy version-0 layout) directly and runs Meta's forward: interleaved complex RoPE
(pairs (2i, 2i+1) rotated by pos * theta^(-2i/d)), RMSNorm eps 1e-5, GQA, SwiGLU, untied/tied classifier.
This checks the TypeScript llama2.c loader's q/k permutation independently of it. Cross-checks inside:
  - the file's freq_cis_real/imag tables equal the RoPE frequencies used here;
  - the same weights permuted to Hugging Face order and run through scripts/py/mistral.py (rotate-half RoPE)
    give the same logits;
  - the greedy continuation from BOS starts with the published llama2.c output (stories260K.md).

Run: /usr/bin/python3 scripts/make_llama2c_reference.py [path/to/stories260K.bin]
Writes test/fixtures/stories260K-ref/{reference.json, logits.bin}.
"""
import os
import struct
import sys

import numpy as np
import sentencepiece
import torch

sys.dont_write_bytecode = True  # keep scripts/py free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'py'))
import mistral  # noqa: E402
from fixture_io import write_f32, write_json  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, '..', 'shared', 'models', 'stories260K')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'stories260K-ref')
PUBLISHED_START = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park.'
PROMPT = 'Once upon a time, there was a big dog named Max. He liked to run and play in the park with his friends.'
NORM_EPS = 1e-5
ROPE_THETA = 10000.0
BOS = 1


def load_llama2c(path: str):
    """Parse a run.c checkpoint: 7 int32 header fields, then float32 tables in run.c's order."""
    with open(path, 'rb') as f:
        raw = f.read()
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = struct.unpack('<7i', raw[:28])
    shared = vocab_size > 0
    vocab_size = abs(vocab_size)
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    layout = [
        ('tok_embeddings', (vocab_size, dim)),
        ('attention_norm', (n_layers, dim)),
        ('wq', (n_layers, dim, dim)),
        ('wk', (n_layers, kv_dim, dim)),
        ('wv', (n_layers, kv_dim, dim)),
        ('wo', (n_layers, dim, dim)),
        ('ffn_norm', (n_layers, dim)),
        ('w1', (n_layers, hidden_dim, dim)),
        ('w2', (n_layers, dim, hidden_dim)),
        ('w3', (n_layers, hidden_dim, dim)),
        ('norm', (dim,)),
        ('freq_cis_real', (seq_len, head_size // 2)),
        ('freq_cis_imag', (seq_len, head_size // 2)),
    ]
    if not shared:
        layout.append(('output', (vocab_size, dim)))
    floats = np.frombuffer(raw, dtype='<f4', offset=28)
    need = sum(int(np.prod(s)) for _, s in layout)
    if floats.size != need:
        raise ValueError(f'{path}: expected {need} floats after the header, found {floats.size}')
    w, off = {}, 0
    for name, shape in layout:
        n = int(np.prod(shape))
        w[name] = torch.from_numpy(floats[off:off + n].astype(np.float64)).reshape(shape)
        off += n
    if shared:
        w['output'] = w['tok_embeddings']
    cfg = dict(dim=dim, hidden_dim=hidden_dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
               vocab_size=vocab_size, seq_len=seq_len, shared_classifier=shared)
    return cfg, w


def meta_freqs(head_size: int, seq_len: int):
    """llama2.c model.py precompute_freqs_cis: cos/sin [seq_len, head_size/2]."""
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, head_size, 2, dtype=torch.float64)[: head_size // 2] / head_size))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    return angles.cos(), angles.sin()


def apply_interleaved_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [S, heads, head_size]; pairs (2i, 2i+1) are (real, imag) of a complex number multiplied by e^(i*angle)."""
    xr, xi = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.stack([xr * c - xi * s, xr * s + xi * c], dim=-1).flatten(-2)


def rmsnorm(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * weight


def meta_forward(cfg: dict, w: dict, tokens: list) -> torch.Tensor:
    """llama2.c model.py Transformer.forward (all positions), float64. Returns logits [S, vocab]."""
    s = len(tokens)
    nh, nkv, hs = cfg['n_heads'], cfg['n_kv_heads'], cfg['dim'] // cfg['n_heads']
    cos, sin = meta_freqs(hs, s)
    mask = torch.full((s, s), float('-inf')).triu(1).to(torch.float64)
    h = w['tok_embeddings'][torch.tensor(tokens)]
    for l in range(cfg['n_layers']):
        x = rmsnorm(h, w['attention_norm'][l])
        q = (x @ w['wq'][l].T).view(s, nh, hs)
        k = (x @ w['wk'][l].T).view(s, nkv, hs)
        v = (x @ w['wv'][l].T).view(s, nkv, hs)
        q, k = apply_interleaved_rope(q, cos, sin), apply_interleaved_rope(k, cos, sin)
        rep = nh // nkv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)  # model.py repeat_kv
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [heads, S, hs]
        scores = q @ k.transpose(1, 2) / hs ** 0.5 + mask
        out = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(s, nh * hs)
        h = h + out @ w['wo'][l].T
        x = rmsnorm(h, w['ffn_norm'][l])
        h = h + (torch.nn.functional.silu(x @ w['w1'][l].T) * (x @ w['w3'][l].T)) @ w['w2'][l].T
    return rmsnorm(h, w['norm']) @ w['output'].T


def to_hf(cfg: dict, w: dict):
    """Same weights as a Hugging Face LlamaForCausalLM state dict (q/k permuted to rotate-half order)."""
    hf = {'model.embed_tokens.weight': w['tok_embeddings'], 'model.norm.weight': w['norm']}
    for l in range(cfg['n_layers']):
        p = f'model.layers.{l}.'
        hf[p + 'input_layernorm.weight'] = w['attention_norm'][l]
        hf[p + 'self_attn.q_proj.weight'] = mistral.hf_permute_qk(w['wq'][l], cfg['n_heads'])
        hf[p + 'self_attn.k_proj.weight'] = mistral.hf_permute_qk(w['wk'][l], cfg['n_kv_heads'])
        hf[p + 'self_attn.v_proj.weight'] = w['wv'][l]
        hf[p + 'self_attn.o_proj.weight'] = w['wo'][l]
        hf[p + 'post_attention_layernorm.weight'] = w['ffn_norm'][l]
        hf[p + 'mlp.gate_proj.weight'] = w['w1'][l]
        hf[p + 'mlp.down_proj.weight'] = w['w2'][l]
        hf[p + 'mlp.up_proj.weight'] = w['w3'][l]
    if not cfg['shared_classifier']:
        hf['lm_head.weight'] = w['output']
    hcfg = mistral.Config(model_type='llama', vocab_size=cfg['vocab_size'], hidden_size=cfg['dim'],
                          intermediate_size=cfg['hidden_dim'], num_hidden_layers=cfg['n_layers'],
                          num_attention_heads=cfg['n_heads'], num_key_value_heads=cfg['n_kv_heads'],
                          head_dim=cfg['dim'] // cfg['n_heads'], rms_norm_eps=NORM_EPS, rope_theta=ROPE_THETA,
                          sliding_window=None, tie_word_embeddings=cfg['shared_classifier'])
    return hcfg, hf


def main() -> None:
    model_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(MODEL_DIR, 'stories260K.bin')
    tok_path = os.path.join(os.path.dirname(model_path), 'tok512.model')
    cfg, w = load_llama2c(model_path)
    sp = sentencepiece.SentencePieceProcessor(model_file=tok_path)
    assert sp.get_piece_size() == cfg['vocab_size'] and sp.bos_id() == BOS

    # The file's RoPE tables (float32) must match model.py's frequencies.
    cos, sin = meta_freqs(cfg['dim'] // cfg['n_heads'], cfg['seq_len'])
    table_diff = max((cos - w['freq_cis_real']).abs().max().item(), (sin - w['freq_cis_imag']).abs().max().item())
    assert table_diff < 1e-5, f'freq_cis tables disagree with theta={ROPE_THETA}: {table_diff}'

    ids = ([BOS] + sp.encode(PROMPT))[:32]
    logits = meta_forward(cfg, w, ids)

    hcfg, hf = to_hf(cfg, w)
    hf_logits, _ = mistral.forward(hf, hcfg, torch.tensor([ids]), dtype=torch.float64)
    hf_diff = (hf_logits[0] - logits).abs().max().item()
    assert hf_diff < 1e-9, f'HF-permuted weights give different logits: {hf_diff}'
    f32_logits, _ = mistral.forward(hf, hcfg, torch.tensor([ids]), dtype=torch.float32)
    f32_diff = (f32_logits[0].double() - logits).abs().max().item()

    # Greedy decoding from BOS, like `./run stories260K.bin -t 0.0` (stops early only at BOS, as run.c does).
    seq, margins = [BOS], []
    for _ in range(60):
        last = meta_forward(cfg, w, seq)[-1]
        top2 = last.topk(2)
        margins.append((top2.values[0] - top2.values[1]).item())
        nxt = int(top2.indices[0])
        if nxt == BOS:
            break
        seq.append(nxt)
    new_ids = seq[1:]
    text = sp.decode(new_ids)
    assert text.startswith(PUBLISHED_START), f'greedy output differs from the published llama2.c sample: {text!r}'

    os.makedirs(OUT, exist_ok=True)
    ref = {
        'model': 'stories260K (llama2.c legacy .bin)',
        'source': '../shared/models/stories260K/stories260K.bin',
        'description': "llama2.c model.py forward (Meta interleaved RoPE), float64 from the file's float32 weights, "
                       'rounded to float32. logits[i] is the distribution for the token after input_ids[i].',
        'config': cfg,
        'norm_eps': NORM_EPS,
        'rope_theta': ROPE_THETA,
        'prompt': PROMPT,
        'input_ids': ids,
        'logits': write_f32(os.path.join(OUT, 'logits.bin'), logits),
        'tolerance': {'max_abs_diff': 1e-4},
        'greedy': {
            'prompt_ids': [BOS],
            'max_new_tokens': 60,
            'new_ids': new_ids,
            'text': text,
            'min_top2_margin': min(margins),
        },
        'checks': {
            'freq_cis_table_max_abs_diff': table_diff,
            'hf_permuted_rotate_half_vs_meta_max_abs_diff': hf_diff,
            'fp32_vs_reference_max_abs_diff': f32_diff,
        },
    }
    write_json(os.path.join(OUT, 'reference.json'), ref)
    print(f'stories260K: {len(ids)} ids, logits {tuple(logits.shape)}; freq table diff {table_diff:.1e}; '
          f'HF permutation diff {hf_diff:.1e}; fp32 diff {f32_diff:.1e}; greedy min margin {min(margins):.3f}')
    print('greedy:', repr(text))


if __name__ == '__main__':
    main()
