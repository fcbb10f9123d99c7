#!/usr/bin/env python3
"""Recall against KV memory over chunk sizes 1-16, from eval_daemon.py's JSON, as a PNG.

    python3 tools/recall/plot.py recall.json [more.json ...] --out recall.png \
        [--model_dir DIR] [--tokens N] [--kv_bytes_per_value 2]

Left panel: exact-match recall (%) against KV bytes per sequence, one point per chunk size
(labelled l=...), one line per JSON file. KV bytes per sequence are computed here from the model's
config.json (docs/CAT_MODEL.md, "The KV cache"): after n tokens at chunk size l a sequence holds
(1 + n // l) compressed and (1 + n % l) local entries, each num_hidden_layers * 2 * num_kv_heads *
head_dim values; n is the task's sequence length (--tokens to change it) and a value takes the
bytes the daemon stored (its ModelInfo.kv_bytes_per_entry, recorded in the JSON: 2 for bf16, the
daemon's default). Chance and "copy any context value" are drawn as reference lines.
Right panel: decode tokens/s per chunk size (eval_daemon.py's throughput phase), and, when the
JSON has a memory-pressure run, its numbers in the legend.

Needs matplotlib (deploy/install-deps.sh --bench).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def entry_bytes(config: dict, bytes_per_value: float) -> float:
    heads = config["num_heads"]
    kv_heads = config.get("num_kv_heads") or heads
    head_dim = config["hidden_size"] // heads
    return config["num_hidden_layers"] * 2 * kv_heads * head_dim * bytes_per_value


def kv_bytes_per_sequence(config: dict, tokens: int, l: int, bytes_per_value: float) -> int:
    return int(((1 + tokens // l) + (1 + tokens % l)) * entry_bytes(config, bytes_per_value))


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def load(path: str, args) -> dict:
    with open(path) as f:
        report = json.load(f)
    model_dir = args.model_dir or report.get("model_dir")
    config_path = os.path.join(model_dir, "config.json") if model_dir else None
    if config_path and os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
    else:
        config = report["config"]  # eval_daemon.py keeps a copy
    bpv = args.kv_bytes_per_value
    if bpv is None:
        bpv = report["kv_bytes_per_entry"] / entry_bytes(config, 1) if report.get(
            "kv_bytes_per_entry") else 2
    tokens = args.tokens or report["task"]["seq_len"]
    rows = sorted(report["chunk_sizes"], key=lambda s: s["chunk_size"])
    for s in rows:
        s["kv"] = kv_bytes_per_sequence(config, tokens, s["chunk_size"], bpv)
    return {"report": report, "rows": rows, "tokens": tokens, "bpv": bpv, "path": path}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("json", nargs="+", help="eval_daemon.py --json files")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--model_dir", help="config.json from here (default: the JSON's model_dir)")
    ap.add_argument("--tokens", type=int, help="sequence length for KV bytes (default: the task's)")
    ap.add_argument("--kv_bytes_per_value", type=float,
                    help="default: the daemon's, from the JSON (2 = bf16)")
    ap.add_argument("--title")
    args = ap.parse_args(argv)
    runs = [load(p, args) for p in args.json]

    for run in runs:
        r = run["report"]
        print(f"{run['path']}: {r.get('model')} task {r['task']}, KV at {run['tokens']} tokens, "
              f"{run['bpv']:g} bytes per value")
        print(f"{'chunk':>5} {'KV bytes/seq':>12} {'recall':>7} {'decode tok/s':>12}")
        for s in run["rows"]:
            tp = s.get("throughput", {}).get("generated_tokens_per_s")
            print(f"{s['chunk_size']:>5} {s['kv']:>12,} {100 * s['accuracy']:>6.1f}% "
                  f"{'-' if tp is None else tp:>12}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rec, speed) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = ["tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    for i, run in enumerate(runs):
        r, rows, c = run["report"], run["rows"], colors[i % len(colors)]
        t = r["task"]
        label = (f"{r.get('model')}: {t['kind']} {t['pairs']} pairs / {t['seq_len']} tokens, "
                 f"n={r['n']}, seed {r['seed']}")
        xs = [s["kv"] / 1024 for s in rows]
        ys = [100 * s["accuracy"] for s in rows]
        rec.plot(xs, ys, "o-", color=c, label=label)
        for s, x, y in zip(rows, xs, ys):
            rec.annotate(f"l={s['chunk_size']}", (x, y), textcoords="offset points",
                         xytext=(4, 6), fontsize=8, color=c)
        rec.axhline(100 * r["copy_baseline"], color=c, ls=":", lw=1,
                    label=f"copy any context value ({100 * r['copy_baseline']:.1f}%)")
        if i == 0:
            rec.axhline(100 * r["chance"], color="0.5", ls="--", lw=1,
                        label=f"chance ({100 * r['chance']:.1f}%)")
        tp = [(s["chunk_size"], s["throughput"]["generated_tokens_per_s"]) for s in rows
              if s.get("throughput")]
        if tp:
            p = r.get("pressure")
            extra = ""
            if p:
                d, q = p["degrade"], p["queue"]
                dg, nd = d["degraded"], d["not_degraded"]
                extra = (f"\npressure (tier {p['tier']}, {p['kv_pool_mb']} MiB pool): degrade "
                         f"{d['generated_tokens_per_s']:,.0f} tok/s vs queue "
                         f"{q['generated_tokens_per_s']:,.0f};\n  recall degraded "
                         f"{pct(dg['accuracy'])} ({dg['n']}), not degraded {pct(nd['accuracy'])} "
                         f"({nd['n']})")
            speed.plot([x for x, _ in tp], [y for _, y in tp], "o-", color=c,
                       label=f"{r.get('model')} ({r.get('backend')}), "
                             f"{tp and rows[0]['throughput']['n']} streams x "
                             f"{rows[0]['throughput']['max_tokens']} tokens" + extra)
            for x, y in tp:
                speed.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(-10, 7),
                               fontsize=8, color=c)
    rec.set_xscale("log", base=2)
    ticks = [s["kv"] / 1024 for s in runs[0]["rows"]]
    rec.set_xticks(ticks)
    rec.set_xticklabels([f"{t:,.1f}" if t < 10 else f"{t:,.0f}" for t in ticks])
    rec.minorticks_off()
    rec.set_xlabel(f"KV bytes per sequence (KiB, at {runs[0]['tokens']} tokens, "
                   f"{runs[0]['bpv']:g} B/value)")
    rec.set_ylabel("recall, exact match through the daemon (%)")
    rec.set_ylim(0, 112)
    rec.grid(True, alpha=0.3)
    rec.legend(fontsize=7, loc="center left")
    rec.set_title("recall against KV memory per sequence", fontsize=10)
    speed.set_xscale("log", base=2)
    chunks = [s["chunk_size"] for s in runs[0]["rows"]]
    speed.set_xticks(chunks)
    speed.set_xticklabels([str(c) for c in chunks])
    speed.set_xlabel("chunk size l")
    speed.set_ylabel("generated tokens/s")
    top = max([s.get("throughput", {}).get("generated_tokens_per_s") or 0
               for run in runs for s in run["rows"]] + [1])
    speed.set_ylim(0, top * 1.18)
    speed.grid(True, alpha=0.3)
    speed.legend(fontsize=7, loc="lower right")
    speed.set_title("decode throughput", fontsize=10)
    fig.suptitle(args.title or "Recall against memory over chunk sizes, measured through catserve",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
