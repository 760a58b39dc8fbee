#!/usr/bin/python3
"""PyTorch reference for slimlm's training step (llm.c-style parity): same tiny Llama, batches, KD+CE loss, AdamW.

Two scenarios, 3 optimizer steps each, all in float32:
  dense_kl:     dense teacher logits, forward KL at T=2 (x T^2) mixed 0.5/0.5 with CE, grad clipping at 1.0, wd 0.01
  sparse_rkl:   top-8 teacher log-probs with a tail bucket, reverse KL at T=1.5, alpha 0.7, 2 accumulated micro-batches,
                no clipping, wd 0.1
The model is scripts/py/mistral.py (HF LlamaForCausalLM semantics); the loss is written out independently here;
the optimizer is torch.optim.AdamW with HF Trainer's parameter groups (no decay on 1-D norm weights) and
torch.nn.utils.clip_grad_norm_. Labels are next-token targets, -100 on padding and the last position.

Run: /usr/bin/python3 scripts/torch_train_reference.py
Writes test/fixtures/train-ref/{config.json, init.safetensors, <scenario>.safetensors, reference.json}.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'py'))
import mistral  # noqa: E402
from fixture_io import write_json  # noqa: E402
from safetensors_io import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'train-ref')

CONFIG = {
    'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'vocab_size': 64, 'hidden_size': 32,
    'intermediate_size': 48, 'num_hidden_layers': 2, 'num_attention_heads': 4, 'num_key_value_heads': 2,
    'head_dim': 8, 'rms_norm_eps': 1e-5, 'rope_theta': 10000.0, 'max_position_embeddings': 64,
    'tie_word_embeddings': False, 'bos_token_id': 1, 'eos_token_id': 2, 'pad_token_id': 0,
}
SCENARIOS = {
    'dense_kl': dict(teacher='dense', loss='kl', T=2.0, alpha=0.5, lrs=[1e-2, 8e-3, 5e-3], wd=0.01, clip=1.0, micro=1),
    'sparse_rkl': dict(teacher='sparse', k=8, loss='rkl', T=1.5, alpha=0.7, lrs=[5e-3, 5e-3, 2e-3], wd=0.1, clip=0.0, micro=2),
}


def init_weights(cfg: mistral.Config, gen: torch.Generator) -> dict:
    w = {}
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    shapes = {'model.embed_tokens.weight': (cfg.vocab_size, cfg.hidden_size)}
    for i in range(cfg.num_hidden_layers):
        p = f'model.layers.{i}.'
        shapes.update({p + 'input_layernorm.weight': (cfg.hidden_size,), p + 'self_attn.q_proj.weight': (q, cfg.hidden_size),
                       p + 'self_attn.k_proj.weight': (kv, cfg.hidden_size), p + 'self_attn.v_proj.weight': (kv, cfg.hidden_size),
                       p + 'self_attn.o_proj.weight': (cfg.hidden_size, q), p + 'post_attention_layernorm.weight': (cfg.hidden_size,),
                       p + 'mlp.gate_proj.weight': (cfg.intermediate_size, cfg.hidden_size),
                       p + 'mlp.up_proj.weight': (cfg.intermediate_size, cfg.hidden_size),
                       p + 'mlp.down_proj.weight': (cfg.hidden_size, cfg.intermediate_size)})
    shapes.update({'model.norm.weight': (cfg.hidden_size,), 'lm_head.weight': (cfg.vocab_size, cfg.hidden_size)})
    for name, shape in shapes.items():
        w[name] = (1 + 0.1 * torch.randn(shape, generator=gen)) if len(shape) == 1 else 0.2 * torch.randn(shape, generator=gen)
    return w


def make_batch(gen: torch.Generator, lengths: list, seq: int, vocab: int):
    ids = torch.randint(3, vocab, (len(lengths), seq), generator=gen)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    labels = torch.full((len(lengths), seq), -100, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        ids[b, n:] = CONFIG['pad_token_id']
        labels[b, :n - 1] = ids[b, 1:n]
    return ids, mask, labels


def token_losses(logits, labels, teacher, s):
    """alpha*KD + (1-alpha)*CE per token, 0 where labels == -100."""
    valid = labels != -100
    T = s['T']
    logq = F.log_softmax(logits, -1)
    ce = -logq.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    lqT = F.log_softmax(logits / T, -1)
    if teacher['kind'] == 'dense':
        lp, lq = F.log_softmax(teacher['logits'] / T, -1), lqT
    else:  # top-k ids + one tail bucket holding the rest of the mass, both sides at T=1, then softened alike
        def buckets(lk):
            tail = (1 - lk.exp().sum(-1, keepdim=True)).clamp(min=1e-30)
            return F.log_softmax(torch.cat([lk, tail.log()], -1) / T, -1)
        lp = buckets(teacher['logprobs'])
        lq = buckets(logq.gather(-1, teacher['ids']))
    div = (lp.exp() * (lp - lq)).sum(-1) if s['loss'] == 'kl' else (lq.exp() * (lq - lp)).sum(-1)
    kd = T * T * div
    total = s['alpha'] * kd + (1 - s['alpha']) * ce
    return torch.where(valid, total, torch.zeros_like(total)), valid


def run(name: str, s: dict, init: dict, cfg: mistral.Config, gen: torch.Generator):
    seq, vocab = 8, cfg.vocab_size
    micro = []
    tensors = {}
    for i in range(s['micro']):
        ids, mask, labels = make_batch(gen, [8, 5] if i == 0 else [6, 8], seq, vocab)
        tlogits = 2.0 * torch.randn(2, seq, vocab, generator=gen)
        if s['teacher'] == 'dense':
            teacher = {'kind': 'dense', 'logits': tlogits}
            tensors[f'teacher.{i}.logits'] = tlogits
        else:
            lp = F.log_softmax(tlogits, -1)
            top = lp.topk(s['k'], -1)
            teacher = {'kind': 'sparse', 'ids': top.indices, 'logprobs': top.values}
            tensors[f'teacher.{i}.ids'] = top.indices.to(torch.int32)
            tensors[f'teacher.{i}.logprobs'] = top.values
        micro.append({'ids': ids, 'mask': mask, 'labels': labels, 'teacher': teacher})

    params = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    decay = [p for k, p in params.items() if p.dim() >= 2]
    no_decay = [p for k, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': s['wd']}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=s['lrs'][0], betas=(0.9, 0.999), eps=1e-8)
    tokens = sum(int((m['labels'] != -100).sum()) for m in micro)
    steps = []
    for step, lr in enumerate(s['lrs']):
        for g in opt.param_groups:
            g['lr'] = lr
        opt.zero_grad()
        loss_total = 0.0
        for m in micro:
            logits, _ = mistral.forward(params, cfg, m['ids'], m['mask'])
            per_token, _ = token_losses(logits, m['labels'], m['teacher'], s)
            loss = per_token.sum() / tokens
            loss.backward()
            loss_total += loss.item()
        norms = {k: p.grad.norm().item() for k, p in params.items()}
        global_norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params.values())).item()
        if s['clip'] > 0:
            torch.nn.utils.clip_grad_norm_(list(params.values()), s['clip'])
        opt.step()
        steps.append({'loss': loss_total, 'grad_norm': global_norm, 'grad_norms': norms, 'lr': lr})
        print(f'{name} step {step + 1}: loss {loss_total:.6f} grad norm {global_norm:.6f}')
    for k, p in params.items():
        tensors[f'final.{k}'] = p.detach()
    save_file(tensors, os.path.join(OUT, f'{name}.safetensors'))
    spec = {k: v for k, v in s.items()}
    batches = [{'input_ids': m['ids'].tolist(), 'attention_mask': m['mask'].tolist(), 'labels': m['labels'].tolist()} for m in micro]
    return {'options': spec, 'batches': batches, 'steps': steps}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    cfg = mistral.Config.from_hf(CONFIG)
    init = init_weights(cfg, gen)
    with open(os.path.join(OUT, 'config.json'), 'w') as f:
        json.dump(CONFIG, f, indent=2)
    save_file(init, os.path.join(OUT, 'init.safetensors'))
    ref = {'torch': torch.__version__, 'scenarios': {name: run(name, s, init, cfg, gen) for name, s in SCENARIOS.items()}}
    write_json(os.path.join(OUT, 'reference.json'), ref)


if __name__ == '__main__':
    main()
