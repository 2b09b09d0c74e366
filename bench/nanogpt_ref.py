"""nanoGPT's CPU recipe in plain PyTorch, the reference bench/train_shakespeare.py times beside gencraft.

nanoGPT (github.com/karpathy/nanoGPT) is not installable here, so this file re-creates, from its
published description, what ``python train.py config/train_shakespeare_char.py --device=cpu
--compile=False --eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`` runs: a pre-norm GPT without biases (LayerNorm,
fused q/k/v, ``scaled_dot_product_attention`` with a causal mask, GELU MLP, learned positions, the
output layer tied to the embedding, N(0, 0.02) init with the residual projections scaled by
1/sqrt(2 n_layer)); float32 (nanoGPT autocasts on CUDA only); AdamW (betas 0.9/0.99, weight decay 0.1
on matrices and embeddings only, PyTorch's default non-fused implementation off CUDA); learning rate
1e-3, 100 warm-up steps, cosine to 1e-4 at step 2000; gradient clipping at 1.0; random windows of the
memory-mapped train tokens; an evaluation of 20 batches of both splits every 250 steps and at the
start; the loss read every 10 steps (``loss.item()``, as its log line does). Nothing of gencraft is
imported: it runs in a fresh process with the environment a user of nanoGPT would have.

    python bench/nanogpt_ref.py TRAIN.bin VAL.bin VOCAB [--iters 2000] [--seed 1337] [--save W.safetensors]
                                [--fused] [--bf16] [--attn-fp32]

prints one JSON line: ``{"val", "train", "time_s", "tok_s", "steps"}`` (the last evaluation's losses,
the wall time of the whole loop evaluations included, its tokens per second). ``--save`` writes the
final weights (after the timed loop) for a whole-split evaluation by the caller. ``--fused`` (fused AdamW),
``--bf16`` (bf16 autocast) and ``--attn-fp32`` (with it, attention in float32) are not nanoGPT's CPU recipe: they are the speed steps
bench/train_shakespeare.py adds to it one at a time, to show what each one buys.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ATTN_FP32 = False  # --attn-fp32


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, bias=False)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.attn_proj = nn.Linear(n_embd, n_embd, bias=False)
        self.ln_2 = nn.LayerNorm(n_embd, bias=False)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if ATTN_FP32 and q.dtype == torch.bfloat16:  # --attn-fp32: outside autocast, which would cast back
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(q.dtype)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=False)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, loss), as nanoGPT's model returns them (loss None without targets)."""
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("vocab", type=int)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--dtype", default="uint16")
    ap.add_argument("--save", default=None, help="write the final weights here (safetensors: no pickle)")
    ap.add_argument("--fused", action="store_true", help="fused AdamW (nanoGPT uses it on CUDA only)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (nanoGPT autocasts on CUDA only)")
    ap.add_argument("--attn-fp32", action="store_true",
                    help="with --bf16: attention in float32 (ATen's bf16 CPU flash attention is slower)")
    a = ap.parse_args()
    global ATTN_FP32
    ATTN_FP32 = a.attn_fp32
    B, T, warmup, lr_max, lr_min, eval_every, eval_iters = 12, 64, 100, 1e-3, 1e-4, 250, 20
    torch.manual_seed(a.seed)
    data = {"train": np.memmap(a.train, dtype=a.dtype, mode="r"), "val": np.memmap(a.val, dtype=a.dtype, mode="r")}

    def batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = data[split]
        ix = torch.randint(len(d) - T, (B,))
        x = torch.stack([torch.from_numpy(d[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    model = GPT(a.vocab, T, 4, 4, 128)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr_max, betas=(0.9, 0.99), fused=a.fused)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)

    def lr_at(it: int) -> float:
        if it < warmup:
            return lr_max * (it + 1) / (warmup + 1)
        ratio = min(1.0, (it - warmup) / (a.iters - warmup))
        return lr_min + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr_max - lr_min)

    @torch.no_grad()
    def estimate() -> dict[str, float]:
        model.eval()
        with autocast:
            out = {s: float(np.mean([model(*batch(s))[1].item() for _ in range(eval_iters)])) for s in ("train", "val")}
        model.train()
        return out

    t0 = time.time()
    losses = {}
    for it in range(a.iters + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        if it % eval_every == 0 or it == a.iters:
            losses = estimate()
        if it == a.iters:
            break
        with autocast:
            _, loss = model(*batch("train"))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it % 10 == 0:  # nanoGPT's log_interval
            loss.item()
    wall = time.time() - t0
    if a.save:
        from safetensors.torch import save_model  # handles the tied embedding and output weights

        save_model(model, a.save)
    print(json.dumps({"val": losses["val"], "train": losses["train"], "time_s": wall,
                      "tok_s": a.iters * B * T / wall, "steps": a.iters}))


if __name__ == "__main__":
    main()
