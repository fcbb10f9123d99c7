#!/usr/bin/env python3
"""Load generator for catserve: closed-loop streams at several concurrencies and chunk sizes.

Starts the daemon on a model, drives it with grpcio (asyncio) and prints a markdown table:
generated tokens/s (and its ratio to chunk size 2 at the same concurrency), time to first token
and time per output token (p50/p99), compressed-KV bytes per sequence at its end, and the serving
layer's own share of the scheduler loop (1 - engine seconds / iteration seconds, read from
/metrics before and after each cell).

    python3 tools/bench/loadgen.py --model_dir=models/cat-small-en \\
        [--catserve=build/server/catserve] [--concurrency=1,8,32,128] [--chunk_sizes=2,8,16] \\
        [--prompt_tokens=128] [--max_tokens=64] [--threads=0] [--sampling_threads=0]
        [--kv_pool_mb=2048] [--device=cpu]

Memory pressure: with --pressure_policies, one daemon per policy, each with a pool sized to hold
--pool_sequences sequences (prompt + max_tokens) at --pool_chunk_size, every client on --tier;
the table compares the policies (tokens/s, TTFT, queue time from /metrics, the chunk sizes the
requests finished with, degrades and preemptions), and --plot writes a PNG (needs matplotlib:
deploy/install-deps.sh --bench).

    python3 tools/bench/loadgen.py --model_dir=models/cat-small-en \\
        --pressure_policies=queue,degrade,preempt --tier=balanced --concurrency=256 \\
        --pool_sequences=32 --pool_chunk_size=2 [--repeat=3] --plot=docs/pressure.png
"""

import argparse
import asyncio
import collections
import math
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]


def load_stubs():
    # CATSERVE_PY_STUBS: a folder of stubs compiled elsewhere (tools/gpu/prepare_cuda_proof.sh),
    # for machines without grpc_tools.
    if os.environ.get("CATSERVE_PY_STUBS"):
        sys.path.insert(0, os.environ["CATSERVE_PY_STUBS"])
        from catserve.v1 import generation_pb2, generation_pb2_grpc

        return generation_pb2, generation_pb2_grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="catserve-stubs-")
    root = REPO / "proto"
    protos = sorted(str(p) for p in (root / "catserve" / "v1").glob("*.proto"))
    if protoc.main(["protoc", f"-I{root}", f"--python_out={out}", f"--grpc_python_out={out}"]
                   + protos) != 0:
        sys.exit("grpc_tools.protoc failed")
    sys.path.insert(0, out)
    from catserve.v1 import generation_pb2, generation_pb2_grpc

    return generation_pb2, generation_pb2_grpc


class Daemon:
    def __init__(self, args, kv_pool_mb=None, pressure_policy=None):
        cmd = [args.catserve, f"--model_dir={args.model_dir}", "--listen=127.0.0.1:0",
               "--http_listen=127.0.0.1:0", f"--threads={args.threads}",
               f"--sampling_threads={args.sampling_threads}",
               f"--kv_pool_mb={kv_pool_mb or args.kv_pool_mb}", "--max_running=256",
               "--max_queued=4096", f"--max_tokens_per_step={args.max_tokens_per_step}",
               f"--device={args.device}"]
        if pressure_policy:
            cmd.append(f"--pressure_policy={pressure_policy}")
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.log = ""
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log += line
                if "catserve: ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(300) or "catserve: ready" not in self.log:
            self.proc.kill()
            sys.exit(f"catserve did not start:\n{self.log}")
        self.address = "127.0.0.1:" + re.search(r"listening on \S+:(\d+)", self.log).group(1)
        self.metrics = "http://127.0.0.1:" + re.search(
            r"metrics on http://\S+:(\d+)/", self.log).group(1) + "/metrics"

    def scrape(self):
        return urllib.request.urlopen(self.metrics, timeout=10).read().decode()

    def counter(self, name):
        """The sum of every series of `name` (labelled or not)."""
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", self.scrape(),
                                                re.M))

    def histogram_quantiles(self, name, qs):
        """Quantiles of a histogram summed over its label sets, interpolated within buckets
        (as PromQL's histogram_quantile), and its mean."""
        text = self.scrape()
        buckets = collections.defaultdict(float)
        for le, v in re.findall(rf'^{name}_bucket{{.*le="([^"]+)"}} (\S+)$', text, re.M):
            buckets[float(le)] += float(v)
        total = sum(float(v) for v in re.findall(rf"^{name}_sum(?:{{[^}}]*}})? (\S+)$", text,
                                                  re.M))
        count = buckets.get(math.inf, 0.0)
        out = []
        for q in qs:
            rank, lo, prev = q * count, 0.0, 0.0
            value = float("nan")
            for le in sorted(buckets):
                if buckets[le] >= rank and count > 0:
                    if le == math.inf:
                        value = lo
                    else:
                        span = buckets[le] - prev
                        value = lo + (le - lo) * ((rank - prev) / span if span else 1.0)
                    break
                lo, prev = le, buckets[le]
            out.append(value)
        return out, (total / count if count else float("nan"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def run_cell(pb2, pb2_grpc, address, vocab, chunk, concurrency, args, tier=""):
    import grpc

    total = max(2 * concurrency, 8)
    rng = random.Random(chunk * 1000 + concurrency)
    finished_at = collections.Counter()  # chunk size each request finished with
    switched = collections.Counter()  # "degraded" / "preempted" from the last messages
    prompts = [[rng.randrange(4, vocab) for _ in range(args.prompt_tokens)] for _ in range(total)]
    queue = list(range(total))
    ttft, tpot, kv_bytes = [], [], []
    tokens = 0

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb2_grpc.GenerationStub(channel)

        async def worker():
            nonlocal tokens
            while queue:
                i = queue.pop()
                req = pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=prompts[i]),
                                          max_tokens=args.max_tokens, ignore_eos=True,
                                          chunk_size=0 if tier else chunk, tier=tier)
                req.sampling.temperature = 0.0
                start = time.perf_counter()
                first = last = None
                n = 0
                async for msg in stub.Generate(req):
                    if msg.token_ids:
                        last = time.perf_counter()
                        first = first or last
                        n += len(msg.token_ids)
                    if msg.HasField("usage"):
                        kv_bytes.append(msg.usage.kv_bytes)
                        finished_at[msg.usage.chunk_size] += 1
                        switched["degraded"] += msg.usage.degraded
                        switched["preempted"] += msg.usage.preempted
                tokens += n
                ttft.append(first - start)
                if n > 1:
                    tpot.append((last - first) / (n - 1))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"tok_s": tokens / wall, "ttft": ttft, "tpot": tpot,
            "kv": sum(kv_bytes) / max(1, len(kv_bytes)), "finished_at": finished_at,
            "switched": switched, "requests": total}


def peak_pages(tokens, chunk_size, page_entries):
    """engine::PeakPages: each region's peak, in whole pages (engine/kv/sequence.h)."""
    compressed, local = 1 + tokens // chunk_size, min(chunk_size, 1 + tokens)
    return -(-compressed // page_entries) + -(-local // page_entries)


def run_pressure(args, pb2, pb2_grpc):
    import grpc

    # The pool's geometry, from a daemon with the default pool.
    probe = Daemon(args)
    try:
        with grpc.insecure_channel(probe.address) as ch:
            info = pb2_grpc.GenerationStub(ch).GetModelInfo(pb2.GetModelInfoRequest())
    finally:
        probe.stop()
    page_entries, page_bytes = info.kv_pool.page_entries, info.kv_pool.page_bytes
    per_seq = peak_pages(args.prompt_tokens + args.max_tokens - 1, args.pool_chunk_size,
                         page_entries)
    pool_mb = math.ceil(args.pool_sequences * per_seq * page_bytes / (1 << 20))
    concurrency = int(args.concurrency.split(",")[0])
    tier = args.tier
    print(f"model {info.model} ({args.model_dir}), backend {info.backend}, prompt "
          f"{args.prompt_tokens} tokens, {args.max_tokens} generated, greedy; {concurrency} "
          f"closed-loop clients, {2 * concurrency} requests, tier {tier} "
          f"({info.tiers[tier]}:{info.tier_coarsest_chunk_sizes[tier]}); --kv_pool_mb={pool_mb}\n")
    runs = collections.defaultdict(list)  # policy -> one result per repetition
    for _ in range(args.repeat):  # interleaved, so slow phases of a shared machine hit all alike
        for policy in args.pressure_policies.split(","):
            daemon = Daemon(args, kv_pool_mb=pool_mb, pressure_policy=policy)
            try:
                with grpc.insecure_channel(daemon.address) as ch:
                    pages = pb2_grpc.GenerationStub(ch).GetModelInfo(
                        pb2.GetModelInfoRequest()).kv_pool.total_pages
                r = asyncio.run(run_cell(pb2, pb2_grpc, daemon.address, info.vocab_size, 0,
                                         concurrency, args, tier=tier))
                (q50, q99), q_mean = daemon.histogram_quantiles(
                    "catserve_request_queue_time_seconds", [0.5, 0.99])
                r.update(policy=policy, pages=pages, q50=q50, q99=q99, q_mean=q_mean,
                         degrades=daemon.counter("catserve_degrades_total"),
                         preemptions=daemon.counter("catserve_preemptions_total"),
                         ttft50=percentile(r["ttft"], 50), ttft99=percentile(r["ttft"], 99))
                runs[policy].append(r)
            finally:
                daemon.stop()
    # Per policy: the median of each figure over the repetitions, the counts summed.
    rows = []
    for policy, rs in runs.items():
        med = lambda k: percentile([r[k] for r in rs], 50)  # noqa: E731
        row = {k: med(k) for k in ("tok_s", "ttft50", "ttft99", "q50", "q99", "q_mean")}
        row.update(policy=policy, pages=rs[0]["pages"], tok_s_all=[r["tok_s"] for r in rs],
                   finished_at=sum((r["finished_at"] for r in rs), collections.Counter()),
                   switched=sum((r["switched"] for r in rs), collections.Counter()),
                   degrades=sum(r["degrades"] for r in rs),
                   preemptions=sum(r["preemptions"] for r in rs))
        rows.append(row)
    print(f"pool: {rows[0]['pages']} pages of {page_entries} entries; one sequence peaks at "
          f"{per_seq} pages at chunk size {args.pool_chunk_size}, so the pool holds "
          f"{rows[0]['pages'] // per_seq} of them\n")
    print(f"median of {args.repeat} interleaved runs per policy; counts summed over them\n")
    print("| policy | gen tok/s | (each run) | vs queue | TTFT p50 ms | TTFT p99 ms | "
          "p99 TTFT vs queue | queue p50 ms | queue p99 ms | queue mean ms | "
          "finished at chunk size | degraded | preempted | degrades | preemptions |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    base = next((r for r in rows if r["policy"] == "queue"), rows[0])
    ms = lambda v: 1e3 * v  # noqa: E731
    for r in rows:
        sizes = ", ".join(f"{l}: {n}" for l, n in sorted(r["finished_at"].items()))
        each = " / ".join(f"{v:.0f}" for v in r["tok_s_all"])
        print(f"| {r['policy']} | {r['tok_s']:.1f} | {each} | {r['tok_s'] / base['tok_s']:.2f}x | "
              f"{ms(r['ttft50']):.0f} | {ms(r['ttft99']):.0f} | "
              f"{base['ttft99'] / r['ttft99']:.2f}x lower | {ms(r['q50']):.0f} | "
              f"{ms(r['q99']):.0f} | {ms(r['q_mean']):.0f} | {sizes} | "
              f"{r['switched']['degraded']} | {r['switched']['preempted']} | "
              f"{r['degrades']:.0f} | {r['preemptions']:.0f} |", flush=True)
    if args.plot:
        plot(rows, args.plot, f"{concurrency} clients on tier {tier}, pool of "
             f"{rows[0]['pages'] // per_seq} sequences at chunk {args.pool_chunk_size}")


def plot(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["policy"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    tok = [r["tok_s"] for r in rows]
    spread = [[t - min(r["tok_s_all"]) for t, r in zip(tok, rows)],
              [max(r["tok_s_all"]) - t for t, r in zip(tok, rows)]]
    a.bar(names, tok, yerr=spread, capsize=4, color="#4c72b0")
    a.set_ylabel("generated tokens/s")
    a.set_title("throughput (median, min-max)")
    b.bar(names, [1e3 * r["ttft99"] for r in rows], color="#dd8452")
    b.set_ylabel("ms")
    b.set_title("p99 time to first token (median)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--catserve", default=str(REPO / "build" / "server" / "catserve"))
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--chunk_sizes", default="2,8,16")
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--sampling_threads", type=int, default=0)
    p.add_argument("--kv_pool_mb", type=int, default=2048)
    p.add_argument("--device", default="cpu", help="the daemon's --device: cpu or cuda")
    p.add_argument("--max_tokens_per_step", type=int, default=2048)
    p.add_argument("--pressure_policies", default="",
                   help="e.g. queue,degrade,preempt: compare them under memory pressure")
    p.add_argument("--tier", default="balanced", help="the clients' tier (pressure runs)")
    p.add_argument("--pool_sequences", type=int, default=32)
    p.add_argument("--pool_chunk_size", type=int, default=2)
    p.add_argument("--plot", default="", help="PNG of the pressure comparison")
    p.add_argument("--repeat", type=int, default=3,
                   help="pressure runs: repetitions per policy (the table shows medians)")
    args = p.parse_args()
    pb2, pb2_grpc = load_stubs()
    if args.pressure_policies:
        run_pressure(args, pb2, pb2_grpc)
        return
    daemon = Daemon(args)
    try:
        import grpc

        with grpc.insecure_channel(daemon.address) as ch:
            info = pb2_grpc.GenerationStub(ch).GetModelInfo(pb2.GetModelInfoRequest())
        print(f"model {info.model} ({args.model_dir}), backend {info.backend}, "
              f"prompt {args.prompt_tokens} tokens, {args.max_tokens} generated, greedy\n")
        print("| concurrency | chunk | gen tok/s | vs chunk 2 | TTFT p50 ms | TTFT p99 ms | "
              "TPOT p50 ms | TPOT p99 ms | KV bytes/seq | serving share |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in [int(x) for x in args.concurrency.split(",")]:
            base = None
            for l in [int(x) for x in args.chunk_sizes.split(",")]:
                e0 = daemon.counter("catserve_engine_busy_seconds_total")
                i0 = daemon.counter("catserve_scheduler_iteration_seconds_total")
                r = asyncio.run(run_cell(pb2, pb2_grpc, daemon.address, info.vocab_size, l, c,
                                         args))
                e1 = daemon.counter("catserve_engine_busy_seconds_total")
                i1 = daemon.counter("catserve_scheduler_iteration_seconds_total")
                share = 1 - (e1 - e0) / (i1 - i0) if i1 > i0 else float("nan")
                base = base or (r["tok_s"] if l == 2 else None)
                ratio = f"{r['tok_s'] / base:.2f}x" if base else "n/a"
                ms = lambda v: 1e3 * v  # noqa: E731
                print(f"| {c} | {l} | {r['tok_s']:.1f} | {ratio} | "
                      f"{ms(percentile(r['ttft'], 50)):.1f} | {ms(percentile(r['ttft'], 99)):.1f} | "
                      f"{ms(percentile(r['tpot'], 50)):.2f} | {ms(percentile(r['tpot'], 99)):.2f} | "
                      f"{r['kv']:.0f} | {100 * share:.1f}% |", flush=True)
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
