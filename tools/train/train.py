#!/usr/bin/env python3
"""Trains the adaptive CAT model shipped as models/cat-small-en (CPU, PyTorch).

    python3 tools/train/prepare_data.py                         # data + tokenizer (once)
    nice -n 10 python3 tools/train/train.py --steps 600        # -> models/cat-small-en/
    nice -n 10 python3 tools/train/train.py --steps 600 --resume   # continue an interrupted run

The exact command sequence that made the shipped model is in models/cat-small-en/README.md.

One set of weights is trained on chunk sizes 1, 2, 4, 8, 16: every step draws one size for the
whole batch. Rows are 384-token windows of the fortunes text (documents joined by EOS) or, with
probability --recall_frac, a synthetic recall document (see prepare_data.py) followed by text.
Row 0 (the prediction of the first token from nothing) is not trained.

Deterministic given --seed: the batch and chunk size of step s depend only on (seed, s), and a
checkpoint (tools/train/runs/ckpt.pt, written every --ckpt_every steps) holds the model,
optimizer and torch RNG state, so --resume reproduces an uninterrupted run. AdamW, linear warmup
then cosine decay to 10%. The model is the reference implementation tools/catref/model.py; its
attention is swapped for torch's scaled_dot_product_attention (same math, faster on CPU).

Exports config.json + model.safetensors (bf16) + tokenizer.model into --out and a
training.json with the run's settings and losses.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import catref.model as catref  # noqa: E402
from catref.model import CatConfig, CatForCausalLM, save_model  # noqa: E402

CHUNK_SIZES = (1, 2, 4, 8, 16)


def sdpa_attention(q, k, v, mask):
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def model_config(args, vocab: int) -> CatConfig:
    return CatConfig(
        vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_heads=args.heads, num_kv_heads=args.heads, compressor_hidden_size=args.chidden,
        compressor_num_layers=args.clayers, compressor_num_heads=args.cheads, max_chunk_size=16,
        min_train_chunk_size=1, max_position_embeddings=args.max_positions, rope_theta=10000.0,
        norm_eps=1e-6, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@torch.no_grad()
def init_weights(model: CatForCausalLM, seed: int, layers: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            std = 0.02
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std = 0.02 / math.sqrt(2 * layers)
            p.copy_(torch.randn(p.shape, generator=g) * std)


class Batches:
    def __init__(self, data_dir: str, seq_len: int, recall_frac: float):
        import numpy as np  # only the text training reads arrays (tools/recall imports this file)

        self.text = np.load(os.path.join(data_dir, "text_train.npy"))
        r = np.load(os.path.join(data_dir, "recall_train.npz"))
        self.recall_ids, self.recall_off = r["ids"], r["offsets"]
        self.seq_len, self.recall_frac = seq_len, recall_frac

    def get(self, seed: int, step: int, batch: int):
        import numpy as np

        rng = np.random.default_rng([seed, step])
        l = int(rng.choice(CHUNK_SIZES))
        T = self.seq_len
        rows = np.empty((batch, T), dtype=np.int64)
        for b in range(batch):
            head = np.empty(0, dtype=np.int32)
            if rng.random() < self.recall_frac:
                d = int(rng.integers(len(self.recall_off) - 1))
                head = self.recall_ids[self.recall_off[d]:self.recall_off[d + 1]][:T]
            need = T - head.size
            start = int(rng.integers(self.text.size - need))
            rows[b] = np.concatenate([head, self.text[start:start + need]])
        ids = torch.from_numpy(rows)
        targets = ids.clone()
        targets[:, 0] = -100
        return l, ids, targets


@torch.no_grad()
def evaluate(model, data_dir: str, seq_len: int, windows: int = 16) -> dict:
    """Mean next-token loss on held-out text windows, per chunk size (row 0 excluded)."""
    import numpy as np

    val = np.load(os.path.join(data_dir, "text_val.npy"))
    step = max(1, (val.size - seq_len) // windows)
    ids = torch.from_numpy(np.stack([val[i * step:i * step + seq_len] for i in range(windows)])
                           .astype(np.int64))
    targets = ids.clone()
    targets[:, 0] = -100
    model.eval()
    out = {}
    for l in CHUNK_SIZES:
        _, loss = model(ids, l, targets=targets)
        out[l] = round(float(loss), 4)
    model.train()
    return out


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="tools/train/runs/data")
    ap.add_argument("--out", default="models/cat-small-en")
    ap.add_argument("--ckpt", default="tools/train/runs/ckpt.pt")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq_len", type=int, default=384)
    ap.add_argument("--recall_frac", type=float, default=0.4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min_lr_frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--weight_decay", type=float, default=0.1)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--chidden", type=int, default=96)
    ap.add_argument("--clayers", type=int, default=2)
    ap.add_argument("--cheads", type=int, default=2)
    ap.add_argument("--max_positions", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1, help="torch threads. 1 by default: on 2 cores shared with compile jobs, 2 OpenMP threads ran 3-5x slower "
                    "than 1 (threads wait on each other at every op)")
    ap.add_argument("--log_every", type=int, default=10)
    ap.add_argument("--ckpt_every", type=int, default=50)
    ap.add_argument("--eval_every", type=int, default=0, help="every this many steps, print the "
                    "held-out text loss per chunk size and, when its mean is the lowest so far, "
                    "copy the checkpoint to <ckpt>-best.pt; 0 = only at the end")
    ap.add_argument("--time_limit", type=float, default=0, help="stop (and export) after this many "
                    "seconds of this process; 0 = no limit. Not deterministic: timing runs only")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--no_export", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    catref.masked_attention = sdpa_attention

    import sentencepiece as spm
    tok_path = os.path.join(args.data, "tokenizer.model")
    vocab = spm.SentencePieceProcessor(model_file=tok_path).get_piece_size()
    config = model_config(args, vocab)
    model = CatForCausalLM(config)
    init_weights(model, args.seed, args.layers)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: {json.dumps(config.to_dict())}", flush=True)
    print(f"parameters: {n_params / 1e6:.2f}M", flush=True)

    start_step, history, elapsed_before, best = 0, [], 0.0, None
    if args.resume and os.path.exists(args.ckpt):
        ck = torch.load(args.ckpt, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        torch.set_rng_state(ck["torch_rng"])
        start_step, history, elapsed_before = ck["step"], ck["history"], ck["elapsed"]
        best = ck.get("best_heldout")
        print(f"resumed from {args.ckpt} at step {start_step}", flush=True)

    batches = Batches(args.data, args.seq_len, args.recall_frac)
    model.train()
    t0 = time.time()
    tokens_done, ema = 0, None
    step = start_step

    def save_ckpt():
        tmp = args.ckpt + ".tmp"
        os.makedirs(os.path.dirname(args.ckpt) or ".", exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state(), "history": history, "best_heldout": best,
                    "elapsed": elapsed_before + time.time() - t0, "args": vars(args)}, tmp)
        os.replace(tmp, args.ckpt)

    while step < args.steps:
        l, ids, targets = batches.get(args.seed, step, args.batch)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        _, loss = model(ids, l, targets=targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_done += ids.numel()
        lv = float(loss.detach())
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        history.append([step, l, round(lv, 4)])
        if step % args.log_every == 0 or step == args.steps:
            dt = time.time() - t0
            left = dt / (step - start_step) * (args.steps - step)
            print(f"step {step}/{args.steps} l={l:2d} loss {lv:.3f} (ema {ema:.3f}) "
                  f"lr {lr_at(step - 1, args):.2e} {tokens_done / dt:.0f} tok/s "
                  f"elapsed {dt / 60:.1f}m left {left / 60:.1f}m", flush=True)
        if args.eval_every and step % args.eval_every == 0:
            val = evaluate(model, args.data, args.seq_len)
            mean = sum(val.values()) / len(val)
            improved = best is None or mean < best[1]
            if improved:
                best = [step, round(mean, 4)]
            print(f"held-out loss at step {step}: {val} mean {mean:.4f}"
                  f"{' (best so far)' if improved else ''}", flush=True)
            save_ckpt()
            if improved:
                root, ext = os.path.splitext(args.ckpt)
                shutil.copy(args.ckpt, f"{root}-best{ext}")
        elif step % args.ckpt_every == 0:
            save_ckpt()
        if args.time_limit and time.time() - t0 > args.time_limit:
            print(f"time limit reached at step {step}", flush=True)
            break
    save_ckpt()
    wall = elapsed_before + time.time() - t0
    val = evaluate(model, "tools/train/runs/data" if not args.data else args.data, args.seq_len)
    print(f"held-out loss per chunk size: {val}", flush=True)
    print(f"training wall time {wall / 60:.1f} min ({step} steps)", flush=True)
    if args.no_export:
        return
    save_model(model, args.out, args.dtype)
    shutil.copy(tok_path, os.path.join(args.out, "tokenizer.model"))
    last = [h[2] for h in history[-100:]]
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"args": vars(args), "parameters": n_params, "steps": step,
                   "wall_time_s": round(wall, 1), "final_train_loss_mean_last_100": round(
                       sum(last) / max(1, len(last)), 4),
                   "heldout_text_loss_per_chunk_size": val, "torch": torch.__version__}, f,
                  indent=2)
        f.write("\n")
    print(f"exported to {args.out}", flush=True)


if __name__ == "__main__":
    main()
