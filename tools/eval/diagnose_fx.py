#!/usr/bin/env python3
"""How much does a CAT model use its compressed past? A diagnosis to read beside eval.py.

    python3 tools/eval/diagnose_fx.py [--model_dir models/cat-small-en] [--out diagnose.md]

On the same held-out text windows as tools/eval/eval.py, for every chunk size, the perplexity of
the PyTorch reference (tools/catref) three ways:
  * as trained (each chunk's fx from the compressor),
  * fx shuffled: the same fx vectors, permuted across the chunks of each window (a model that
    reads *which* chunk said what loses; one that only uses the bag of past chunks does not),
  * fx zero: every fx replaced by zeros (the decoder keeps only the tokens of its own chunk).
Beside them, two baselines that see no model at all, estimated on the training text and scored
on the same tokens: unigram and bigram (add-0.05 smoothing). A chunk size whose perplexity sits at
the unigram baseline predicts its first-of-chunk tokens from nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from catref.model import load_model  # noqa: E402
from eval import torch_nll  # noqa: E402  (the same scoring as eval.py's PyTorch column)


def perplexity(model, windows: np.ndarray, l: int) -> float:
    nll, count = torch_nll(model, windows, l)
    return math.exp(nll / count)


def ngram_baselines(train: np.ndarray, windows: np.ndarray, vocab: int) -> tuple[float, float]:
    uni = np.bincount(train, minlength=vocab) + 0.5
    uni = uni / uni.sum()
    big = np.full((vocab, vocab), 0.05)
    np.add.at(big, (train[:-1], train[1:]), 1.0)
    big /= big.sum(axis=1, keepdims=True)
    prev, nxt = windows[:, :-1].ravel(), windows[:, 1:].ravel()
    return (math.exp(-np.log(uni[nxt]).mean()), math.exp(-np.log(big[prev, nxt]).mean()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", default=os.path.join(REPO, "models", "cat-small-en"))
    ap.add_argument("--data", default=os.path.join(REPO, "tools", "train", "runs", "data"))
    ap.add_argument("--seq_len", type=int, default=384)
    ap.add_argument("--windows", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0, help="seed of the fx permutation")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model_dir)
    cfg = model.config
    val = np.load(os.path.join(args.data, "text_val.npy"))
    n_win = min(args.windows, val.size // args.seq_len)
    windows = val[:n_win * args.seq_len].reshape(n_win, args.seq_len)
    unigram, bigram = ngram_baselines(np.load(os.path.join(args.data, "text_train.npy")),
                                      windows, cfg.vocab_size)

    mode = {"fx": "trained"}

    def override_fx(_module, _inputs, fx):  # fx [B, K, D]
        if mode["fx"] == "shuffled":
            g = torch.Generator().manual_seed(args.seed)
            return fx[:, torch.randperm(fx.shape[1], generator=g)]
        if mode["fx"] == "zero":
            return torch.zeros_like(fx)
        return fx

    model.model.compressor.register_forward_hook(override_fx)
    lines = [
        f"Held-out text: {n_win} windows x {args.seq_len} tokens (as in eval.py); PyTorch "
        f"reference. Baselines on the same tokens: unigram {unigram:.1f}, bigram {bigram:.1f}.",
        "",
        "| chunk size | perplexity | fx shuffled | fx zero |",
        "|---:|---:|---:|---:|",
    ]
    for l in cfg.train_chunk_sizes():
        row = {}
        for m in ("trained", "shuffled", "zero"):
            mode["fx"] = m
            row[m] = perplexity(model, windows, l)
        lines.append(f"| {l} | {row['trained']:.1f} | {row['shuffled']:.1f} | {row['zero']:.1f} |")
        print(lines[-1], file=sys.stderr, flush=True)
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)


if __name__ == "__main__":
    main()
