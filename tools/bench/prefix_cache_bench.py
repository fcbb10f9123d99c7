#!/usr/bin/env python3
"""Prefix caching measured: N requests that share a long prefix, each with its own suffix, sent
at once to a daemon with --prefix_cache=on and =off, alternated in one sitting.

    python3 tools/bench/prefix_cache_bench.py --model_dir=/tmp/cat-random-2k [--requests=64] \\
        [--suffix_tokens=32] [--chunk_size=8] [--kv_page_entries=16] [--repeat=3]

For each run it reports the time to first token (p50, p90) over the requests, the prompt tokens the
cache served (usage.prompt_tokens_details.cached_tokens summed) and the prefill positions computed
(prompt tokens minus cached ones), and the wall time of the whole batch. The prefix is as long as
the model allows: max_position_embeddings - suffix - max_tokens - 1 tokens. Requests go through
the OpenAI API (streamed), one thread each; the daemon runs with --threads=0 (one per core).
"""

import argparse
import http.client
import json
import os
import pathlib
import random
import re
import statistics
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]


def start(binary, model_dir, prefix_cache, kv_pool_mb, page_entries):
    cmd = [binary, f"--model_dir={model_dir}", "--listen=127.0.0.1:0", "--http_listen=127.0.0.1:0",
           "--openai_listen=127.0.0.1:0", f"--prefix_cache={prefix_cache}",
           f"--kv_pool_mb={kv_pool_mb}", f"--kv_page_entries={page_entries}",
           "--max_new_tokens=0"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = ""
    for line in proc.stderr:
        log += line
        if line.startswith("catserve: ready"):
            break
    port = re.search(r"openai api on http://\S+:(\d+)/v1", log)
    if port is None:
        proc.kill()
        sys.exit(f"catserve did not start:\n{log}")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, int(port.group(1))


def one(port, prompt, max_tokens, chunk_size, out):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "chunk_size": chunk_size, "ignore_eos": True, "stream": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first = None
    usage = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if first is None and chunk.get("choices"):
            first = time.perf_counter() - start
        if chunk.get("usage"):
            usage = chunk["usage"]
    conn.close()
    out.append((first, usage))


def run(args, prefix_cache, prompts):
    proc, port = start(args.catserve, args.model_dir, prefix_cache, args.kv_pool_mb,
                       args.kv_page_entries)
    try:
        results = []
        threads = [threading.Thread(target=one, args=(port, p, args.max_tokens, args.chunk_size,
                                                      results)) for p in prompts]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)
    ttft = sorted(r[0] for r in results)
    cached = sum(r[1]["prompt_tokens_details"]["cached_tokens"] for r in results)
    prompt = sum(r[1]["prompt_tokens"] for r in results)
    return {"prefix_cache": prefix_cache, "ttft_p50": statistics.median(ttft),
            "ttft_p90": ttft[int(0.9 * (len(ttft) - 1))], "cached_tokens": cached,
            "prefill_positions": prompt - cached, "prompt_tokens": prompt, "wall_s": wall}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--catserve", default=str(REPO / "build" / "server" / "catserve"))
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--suffix_tokens", type=int, default=32)
    p.add_argument("--max_tokens", type=int, default=8)
    p.add_argument("--chunk_size", type=int, default=8)
    p.add_argument("--kv_pool_mb", type=int, default=2048)
    p.add_argument("--kv_page_entries", type=int, default=16,
                   help="the daemon's pages; a cached prefix is whole pages of compressed entries")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    config = json.load(open(os.path.join(args.model_dir, "config.json")))
    context = config["max_position_embeddings"]
    vocab = config["vocab_size"]
    prefix_len = context - args.suffix_tokens - args.max_tokens - 1
    rng = random.Random(1)
    prefix = [rng.randrange(3, vocab) for _ in range(prefix_len)]
    prompts = [prefix + [rng.randrange(3, vocab) for _ in range(args.suffix_tokens)]
               for _ in range(args.requests)]
    print(f"model {args.model_dir}: context {context}; {args.requests} requests, prefix "
          f"{prefix_len} + suffix {args.suffix_tokens} tokens, max_tokens {args.max_tokens}, "
          f"chunk {args.chunk_size}, pages of {args.kv_page_entries} entries")
    rows = []
    for i in range(args.repeat):
        for mode in ("off", "on"):
            r = run(args, mode, prompts)
            rows.append(r)
            print(f"run {i + 1} prefix_cache={mode}: TTFT p50 {r['ttft_p50']:.3f} s, "
                  f"p90 {r['ttft_p90']:.3f} s; prefill positions {r['prefill_positions']} of "
                  f"{r['prompt_tokens']} prompt tokens; wall {r['wall_s']:.2f} s", flush=True)
    off = [r for r in rows if r["prefix_cache"] == "off"]
    on = [r for r in rows if r["prefix_cache"] == "on"]
    p50_off = statistics.median(r["ttft_p50"] for r in off)
    p50_on = statistics.median(r["ttft_p50"] for r in on)
    pos_off = statistics.median(r["prefill_positions"] for r in off)
    pos_on = statistics.median(r["prefill_positions"] for r in on)
    print(f"median over runs: TTFT p50 off {p50_off:.3f} s, on {p50_on:.3f} s: "
          f"{p50_off / p50_on:.1f}x lower; prefill positions off {pos_off:.0f}, on {pos_on:.0f}: "
          f"{pos_off / pos_on:.1f}x fewer")


if __name__ == "__main__":
    main()
