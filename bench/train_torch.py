#!/usr/bin/python3
"""PyTorch side of bench/train.ts: the same student, batch, KD+CE loss and AdamW step, timed; prints one JSON line.

Model: scripts/py/mistral.py (HF Llama semantics) with the weights as leaf tensors; loss: alpha*T^2*KL(p_T||q_T) +
(1-alpha)*CE, mean over tokens; torch.optim.AdamW (wd on matrices only) + clip_grad_norm_. Run with OpenBLAS:
  OPENBLAS_CORETYPE=SkylakeX /usr/bin/python3 bench/train_torch.py '{"hidden":512,...}'
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts', 'py'))
import mistral  # noqa: E402


def main():
    a = json.loads(sys.argv[1])
    torch.set_num_threads(a['threads'])
    torch.manual_seed(0)
    cfg = mistral.Config(model_type='llama', vocab_size=a['vocab'], hidden_size=a['hidden'], intermediate_size=a['ffn'],
                         num_hidden_layers=a['layers'], num_attention_heads=a['heads'], num_key_value_heads=a['kvHeads'],
                         head_dim=a['hidden'] // a['heads'], rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=None,
                         tie_word_embeddings=False)
    H, V, F_, L = a['hidden'], a['vocab'], a['ffn'], a['layers']
    q, kv = H, a['kvHeads'] * (H // a['heads'])
    shapes = {'model.embed_tokens.weight': (V, H), 'model.norm.weight': (H,), 'lm_head.weight': (V, H)}
    for i in range(L):
        p = f'model.layers.{i}.'
        shapes.update({p + 'input_layernorm.weight': (H,), p + 'post_attention_layernorm.weight': (H,),
                       p + 'self_attn.q_proj.weight': (q, H), p + 'self_attn.k_proj.weight': (kv, H), p + 'self_attn.v_proj.weight': (kv, H),
                       p + 'self_attn.o_proj.weight': (H, q), p + 'mlp.gate_proj.weight': (F_, H), p + 'mlp.up_proj.weight': (F_, H),
                       p + 'mlp.down_proj.weight': (H, F_)})
    params = {k: (torch.ones(s) if len(s) == 1 else 0.02 * torch.randn(s)).requires_grad_(True) for k, s in shapes.items()}
    opt = torch.optim.AdamW([{'params': [p for p in params.values() if p.dim() >= 2], 'weight_decay': 0.01},
                             {'params': [p for p in params.values() if p.dim() < 2], 'weight_decay': 0.0}], lr=5e-5)
    B, S, T, alpha = a['batch'], a['seq'], a['temperature'], a['alpha']
    ids = torch.randint(3, V, (B, S))
    mask = torch.ones(B, S, dtype=torch.long)
    labels = torch.cat([ids[:, 1:], torch.full((B, 1), -100)], 1)
    teacher = 3 * torch.randn(B, S, V)
    times = []
    for step in range(a['steps']):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits, _ = mistral.forward(params, cfg, ids, mask)
        valid = labels != -100
        ce = F.cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100, reduction='sum')
        lq = F.log_softmax(logits / T, -1)
        lp = F.log_softmax(teacher / T, -1)
        kl = ((lp.exp() * (lp - lq)).sum(-1) * valid).sum() * T * T
        loss = (alpha * kl + (1 - alpha) * ce) / valid.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    warm = sorted(times[a['warmup']:])
    med = warm[len(warm) // 2]
    print(json.dumps({'engine': 'pytorch ' + torch.__version__, 'median_step_s': med, 'tokens_per_s': B * S / med,
                      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'loss': loss.item(),
                      'params': sum(p.numel() for p in params.values())}))


if __name__ == '__main__':
    main()
