#!/usr/bin/env python3
"""THE evaluation of a CAT model: quality, recall and memory at every chunk size.

    cmake --build build-train -j2 --target catserve_engine_cli
    python3 tools/train/prepare_data.py            # held-out splits (deterministic)
    python3 tools/eval/eval.py [--model_dir models/cat-small-en] [--out eval.md]

For each chunk size l in the model's trained sizes (1, 2, 4, 8, 16):
  * held-out perplexity on fortunes the model never saw (windows of --seq_len tokens of the
    held-out stream; every token but a window's first is scored given the ones before it),
    computed by the C++ engine (`catserve-engine score`: prefill one token, then teacher-force
    one token a step, the decode path) and, beside it, by the PyTorch reference
    (tools/catref, full forward) as a check;
  * recall: exact match of the greedy answer (`catserve-engine recall`) on held-out synthetic
    key-value prompts at two context lengths (about 128 and 352 tokens);
  * KV cache bytes per sequence at 1,000 tokens of context, from docs/CAT_MODEL.md:
    L * 2 * Hkv * head_dim * bytes * ((1 + floor(n/l)) + (1 + n mod l)), fp32 (4 bytes, what the
    CPU engine stores), beside the dense transformer's L * 2 * Hkv * head_dim * bytes * n;
  * engine speed: wall milliseconds per scored token in `score` (one decode step each, 1 thread;
    indicative only on a shared machine).
Writes a markdown table to stdout and --out, and the raw numbers to --json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
from catref.model import load_model  # noqa: E402


def find_engine(path: str | None) -> str:
    if path:
        return path
    for build in ("build-train", "build", "build-main"):
        p = os.path.join(REPO, build, "tools", "engine_cli", "catserve-engine")
        if os.path.exists(p):
            return p
    sys.exit("catserve-engine not found; build the catserve_engine_cli target or pass --engine")


def run_engine(engine: str, args: list[str]) -> list[dict]:
    out = subprocess.run([engine] + args, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def kv_bytes(cfg: dict, n: int, l: int | None, bytes_per_value: int = 4) -> int:
    per_entry = cfg["num_hidden_layers"] * 2 * cfg["num_kv_heads"] * (
        cfg["hidden_size"] // cfg["num_heads"]) * bytes_per_value
    if l is None:
        return per_entry * n
    return per_entry * ((1 + n // l) + (1 + n % l))


@torch.no_grad()
def torch_nll(model, windows: np.ndarray, l: int) -> tuple[float, int]:
    ids = torch.from_numpy(windows.astype(np.int64))
    total = 0.0
    for b in range(0, ids.shape[0], 8):
        x = ids[b:b + 8]
        logp = model(x, l).double().log_softmax(-1)  # [B, N+1, V]; row i predicts t_i
        total -= float(logp[:, 1:x.shape[1], :].gather(-1, x[:, 1:, None]).sum())
    return total, int(ids.shape[0] * (ids.shape[1] - 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", default=os.path.join(REPO, "models", "cat-small-en"))
    ap.add_argument("--data", default=os.path.join(REPO, "tools", "train", "runs", "data"))
    ap.add_argument("--engine", default=None)
    ap.add_argument("--seq_len", type=int, default=384)
    ap.add_argument("--windows", type=int, default=24, help="held-out text windows")
    ap.add_argument("--recall_cases", type=int, default=200, help="per context length")
    ap.add_argument("--recall_lengths", default="128,352")
    ap.add_argument("--kv_context", type=int, default=1000)
    ap.add_argument("--out", default=None, help="markdown output file")
    ap.add_argument("--json", default=None, help="raw results (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    engine = find_engine(args.engine)
    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    sizes = [1 << k for k in range(int(math.log2(cfg["min_train_chunk_size"])),
                                    int(math.log2(cfg["max_chunk_size"])) + 1)]
    model = load_model(args.model_dir)

    val = np.load(os.path.join(args.data, "text_val.npy"))
    n_win = min(args.windows, val.size // args.seq_len)
    windows = val[:n_win * args.seq_len].reshape(n_win, args.seq_len)
    recall_lengths = [int(x) for x in args.recall_lengths.split(",")]

    tmp = tempfile.mkdtemp(prefix="cat_eval_")
    tokens_file = os.path.join(tmp, "heldout.txt")
    with open(tokens_file, "w") as f:
        for w in windows:
            f.write(" ".join(map(str, w.tolist())) + "\n")
    cases_files = {}
    for n in recall_lengths:
        path = os.path.join(tmp, f"recall_{n}.tsv")
        cases = [json.loads(line) for line in open(os.path.join(args.data, f"recall_val_{n}.jsonl"))]
        cases = cases[:args.recall_cases]
        with open(path, "w") as f:
            for c in cases:
                f.write(" ".join(map(str, c["prompt"])) + "\t" + " ".join(map(str, c["answer"])) + "\n")
        cases_files[n] = (path, len(cases), float(np.mean([len(c["prompt"]) for c in cases])),
                          [c["answer"] for c in cases])

    results = []
    for l in sizes:
        t0 = time.time()
        rows = run_engine(engine, ["score", f"--model_dir={args.model_dir}", f"--chunk_size={l}",
                                   f"--tokens_file={tokens_file}", "--threads=1"])
        score_s = time.time() - t0
        nll_cpp = sum(r["nll"] for r in rows)
        count = sum(r["tokens"] for r in rows)
        nll_pt, count_pt = torch_nll(model, windows, l)
        assert count == count_pt, (count, count_pt)
        r = {"chunk_size": l, "ppl_engine": math.exp(nll_cpp / count),
             "ppl_torch": math.exp(nll_pt / count_pt), "scored_tokens": count,
             "engine_ms_per_token": 1000 * score_s / count,
             "kv_bytes": kv_bytes(cfg, args.kv_context, l)}
        for n in recall_lengths:
            path = cases_files[n][0]
            out = run_engine(engine, ["recall", f"--model_dir={args.model_dir}", f"--chunk_size={l}",
                                      f"--cases_file={path}", "--threads=1"])
            r[f"recall_{n}"] = out[-1]["accuracy"]
            # Softer signal: share of the answer's digits right, position by position (the
            # answer is "▁" then 3 digit tokens; the space is left out of this count).
            answers = cases_files[n][3]
            hit = sum(sum(int(g == a) for g, a in zip(o["got"][-3:], ans[-3:]))
                      for o, ans in zip(out[:-1], answers))
            r[f"answer_digits_{n}"] = hit / (3 * len(answers))
        results.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)

    dense = kv_bytes(cfg, args.kv_context, None)
    lines = [
        f"Held-out text: {n_win} windows x {args.seq_len} tokens of fortunes never trained on "
        f"({results[0]['scored_tokens']} scored tokens). Recall: exact match of the greedy answer "
        "(in brackets: the share of its 3 digits right, position by position; chance 10%) on "
        + ", ".join(f"{cases_files[n][1]} cases at ~{cases_files[n][2]:.0f} prompt tokens"
                    for n in recall_lengths)
        + f". KV: bytes per sequence at {args.kv_context} tokens of context, fp32 (the CPU engine's "
        f"dtype); a dense transformer of the same shape holds {dense:,} bytes.",
        "",
        "| chunk size | perplexity (C++ engine) | perplexity (PyTorch) | "
        + " | ".join(f"recall @~{n} tok (digits)" for n in recall_lengths)
        + f" | KV bytes @{args.kv_context} tok (fp32) | vs dense | engine ms/token |",
        "|---:|---:|---:|" + "---:|" * len(recall_lengths) + "---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['chunk_size']} | {r['ppl_engine']:.4g} | {r['ppl_torch']:.4g} | "
            + " | ".join(f"{100 * r[f'recall_{n}']:.1f}% ({100 * r[f'answer_digits_{n}']:.0f}%)"
                         for n in recall_lengths)
            + f" | {r['kv_bytes']:,} | {r['kv_bytes'] / dense:.3f}x | {r['engine_ms_per_token']:.2f} |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "dense_kv_bytes": dense, "config": cfg}, f, indent=2)
    agree = all(f"{r['ppl_engine']:.3g}" == f"{r['ppl_torch']:.3g}" for r in results)
    print(f"engine and PyTorch perplexities agree to 3 significant digits: {agree}", file=sys.stderr)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
