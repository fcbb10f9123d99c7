#!/usr/bin/env python3
"""Draws what the chunk size buys on the shipped model: KV memory, throughput and recall.

    python3 tools/bench/plot_chunk_tradeoff.py [--model_dir=models/cat-small-en] \\
        [--csv=docs/measurements/chunk_tradeoff.csv] [--out=docs/chunk_tradeoff.png]

KV bytes per sequence are computed here from the model's config.json (docs/CAT_MODEL.md and
docs/ENGINE.md, "KV layout": after T tokens at chunk size l a sequence holds 1 + T//l compressed
and 1 + T%l local entries; an entry is K and V for every layer and kv head, head_dim values) at
the model's longest context (max_position_embeddings), for fp32 KV (the CPU engine's own
default) and bf16 (the daemon's default, and what the GPU stores). Throughput and recall are
measurements, read from the CSV, whose comment lines name the commands and the date they came
from; the CSV's kv_bytes_per_seq column must equal what this script computes.

Needs matplotlib (deploy/install-deps.sh --bench).
"""

import argparse
import csv
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def kv_entry_bytes(config, bytes_per_value):
    """Bytes of one cache entry: K and V, every layer, every kv head, head_dim values."""
    heads = config["num_heads"]
    kv_heads = config.get("num_kv_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * bytes_per_value


def kv_entries(tokens, chunk):
    """Compressed entries (F_0 plus one per completed chunk) and local ones (S plus the rest)."""
    return (1 + tokens // chunk) + (1 + tokens % chunk)


def read_rows(path):
    with open(path, newline="") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    rows = []
    for r in csv.DictReader(lines):
        rows.append({k: (float(v) if v.strip() else None) for k, v in r.items()})
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", default=str(REPO / "models" / "cat-small-en"))
    p.add_argument("--csv", default=str(REPO / "docs" / "measurements" / "chunk_tradeoff.csv"))
    p.add_argument("--out", default=str(REPO / "docs" / "chunk_tradeoff.png"))
    args = p.parse_args()

    config = json.loads((pathlib.Path(args.model_dir) / "config.json").read_text())
    context = config["max_position_embeddings"]
    rows = read_rows(args.csv)
    chunks = [int(r["chunk_size"]) for r in rows]
    fp32 = [kv_entries(context, l) * kv_entry_bytes(config, 4) for l in chunks]
    bf16 = [kv_entries(context, l) * kv_entry_bytes(config, 2) for l in chunks]
    for r, computed in zip(rows, fp32):
        if r.get("kv_bytes_per_seq") is not None and int(r["kv_bytes_per_seq"]) != computed:
            sys.exit(f"{args.csv}: chunk {int(r['chunk_size'])}: kv_bytes_per_seq "
                     f"{int(r['kv_bytes_per_seq'])} but config.json at {context} tokens gives "
                     f"{computed}")

    print(f"{'chunk':>5} {'KV fp32 B':>10} {'KV bf16 B':>10} {'tok/s 128':>9} {'tok/s 1':>8} "
          f"{'recall128':>9} {'recall352':>9}")
    for r, a, b in zip(rows, fp32, bf16):
        cells = [r["tokens_per_s"], r["tokens_per_s_one_seq"], r["recall_128"], r["recall_352"]]
        print(f"{int(r['chunk_size']):>5} {a:>10} {b:>10} "
              + " ".join(f"{'-' if c is None else c:>9}" for c in cells))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mib = 1024 * 1024
    fig, (mem, speed, recall) = plt.subplots(1, 3, figsize=(13.5, 4.4))
    name = pathlib.Path(args.model_dir).name
    fig.suptitle(f"{name}: what the chunk size buys (KV at {context} tokens of context; "
                 "tokens/s and recall measured on a 2-core CPU)", fontsize=11)

    def chunk_axis(ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(chunks)
        ax.set_xticklabels([str(c) for c in chunks])
        ax.set_xlabel("chunk size l (tokens per compressed entry)")
        ax.grid(True, alpha=0.3)

    mem.plot(chunks, [b / mib for b in fp32], "o-", color="tab:blue", label="fp32 KV (CPU engine)")
    mem.plot(chunks, [b / mib for b in bf16], "s--", color="tab:cyan",
             label="bf16 KV (daemon default, GPU)")
    for c, b in zip(chunks, fp32):
        mem.annotate(f"{b / mib:.2f}", (c, b / mib), textcoords="offset points", xytext=(4, 5),
                     fontsize=8)
    mem.set_ylabel(f"KV per sequence at {context} tokens (MiB)")
    mem.set_title("memory: KV per sequence", fontsize=10)
    mem.set_ylim(0, fp32[0] / mib * 1.12)
    chunk_axis(mem)
    mem.legend(fontsize=8)

    def measured(key):
        pts = [(int(r["chunk_size"]), r[key]) for r in rows if r[key] is not None]
        return [c for c, _ in pts], [v for _, v in pts]

    xs, ys = measured("tokens_per_s")
    speed.plot(xs, ys, "o-", color="tab:green",
               label="daemon, 128 streams of 128+64 tokens\n(loadgen; l=1 and 4 not run)")
    for c, v in zip(xs, ys):
        speed.annotate(f"{v:,.0f}", (c, v), textcoords="offset points", xytext=(-14, 7),
                       fontsize=8)
    xs, ys = measured("tokens_per_s_one_seq")
    speed.plot(xs, ys, "^--", color="tab:olive",
               label="engine, one sequence, 384-token\nwindows (eval.py score)")
    for c, v in zip(xs, ys):
        speed.annotate(f"{v:,.0f}", (c, v), textcoords="offset points", xytext=(4, -12),
                       fontsize=8)
    speed.set_ylabel("generated tokens/s")
    speed.set_title("speed: generated tokens/s", fontsize=10)
    speed.set_ylim(0, max(r["tokens_per_s"] or 0 for r in rows) * 1.4)
    chunk_axis(speed)
    speed.legend(fontsize=8, loc="upper left")

    xs, ys = measured("recall_128")
    recall.plot(xs, ys, "o-", color="tab:red", markersize=9, label="~128-token prompts")
    xs, ys = measured("recall_352")
    recall.plot(xs, ys, "s--", color="tab:orange", label="~352-token prompts")
    recall.set_ylim(0, 100)
    recall.set_ylabel("recall, exact match (%)")
    recall.set_title("recall: 0-0.5% (this model has not learned it)", fontsize=10)
    recall.text(0.5, 0.55, "near zero at every chunk size:\nthe trade will show here once\n"
                "a model that recalls ships", transform=recall.transAxes, ha="center",
                va="center", fontsize=9, color="0.35")
    chunk_axis(recall)
    recall.legend(fontsize=8, loc="upper right")

    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
