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

Transports: with --transports=grpc,openai, the same closed-loop load (same prompts, greedy,
ignore_eos) runs through gRPC and through the OpenAI API's streamed /v1/completions (server-sent
events, one keep-alive HTTP/1.1 connection per client, read with raw asyncio sockets) on one
daemon, after one uncounted run of each, alternated --repeat times (grpc, openai, grpc, openai,
...). The table gives each run's generated tokens/s, TTFT and TPOT, and the CPU seconds of the
daemon, of this client, and of the rest of the machine meanwhile (/proc); then the ratio of
tokens/s to the first transport per alternation, their median over every alternation and over
the quiet ones (the rest of the machine under --quiet_share of a core), and the daemon's CPU per
generated token by transport. On a small machine the client's own CPU competes with the daemon:
the daemon's CPU per token is the transport's cost to the server.

    python3 tools/bench/loadgen.py --model_dir=models/cat-small-en --transports=grpc,openai \\
        --concurrency=128 --chunk_sizes=8 [--repeat=3] [--requests=512]
"""

import argparse
import asyncio
import collections
import json
import math
import os
import pathlib
import random
import re
import statistics
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
               f"--device={args.device}", "--openai_listen=127.0.0.1:0"]
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
        openai = re.search(r"openai api on http://\S+:(\d+)/v1", self.log)
        self.openai_port = int(openai.group(1)) if openai else None

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


class OpenAiConnection:
    """One keep-alive HTTP/1.1 connection to the OpenAI API, sending streamed /v1/completions one
    after another. Raw asyncio: the client's CPU is shared with the daemon it measures, so each
    event costs a chunk-size line and a bytes search, and only the usage event is parsed."""

    def __init__(self, port, local_host):
        self.port, self.local_host = port, local_host
        self.reader = self.writer = None

    async def stream(self, body):
        """Sends one completion; returns (arrival time of each content event, usage dict)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=(self.local_host, 0))
        payload = json.dumps(body).encode()
        self.writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(payload) + payload)
        reader = self.reader
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 200:
            raise RuntimeError(f"HTTP {status}: "
                               f"{await reader.read(int(headers.get('content-length', 0)))}")
        closing = headers.get("connection", "").lower() == "close"
        arrivals, usage = [], None
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                if closing:
                    self.close()
                return arrivals, usage
            data = await reader.readexactly(size + 2)
            now = time.perf_counter()
            if b'"text":' in data:
                arrivals.append(now)
            if b'"usage":{' in data:  # the last event before [DONE] (include_usage)
                at = data.index(b'"usage":{')
                start = data.rindex(b"data: ", 0, at) + 6
                usage = json.loads(data[start:data.index(b"\n", at)])["usage"]

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def run_cell(pb2, pb2_grpc, address, vocab, chunk, concurrency, args, tier="",
                   transport="grpc", openai_port=None, run=0):
    import grpc

    total = args.requests or max(2 * concurrency, 8)
    # `run` draws other prompts for each run on one daemon, so that none is served from the
    # prefix cache of an earlier run.
    rng = random.Random(chunk * 1000 + concurrency if run == 0 else
                        f"{chunk * 1000 + concurrency}/{run}")
    finished_at = collections.Counter()  # chunk size each request finished with
    switched = collections.Counter()  # "degraded" / "preempted" from the last messages
    prompts = [[rng.randrange(4, vocab) for _ in range(args.prompt_tokens)] for _ in range(total)]
    queue = list(range(total))
    ttft, tpot, kv_bytes = [], [], []
    tokens = 0

    def account(start, first, last, n, usage_kv, usage_chunk, degraded, preempted):
        nonlocal tokens
        kv_bytes.append(usage_kv)
        finished_at[usage_chunk] += 1
        switched["degraded"] += degraded
        switched["preempted"] += preempted
        tokens += n
        ttft.append(first - start)
        if n > 1:
            tpot.append((last - first) / (n - 1))

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb2_grpc.GenerationStub(channel)

        async def grpc_worker(_):
            while queue:
                i = queue.pop()
                req = pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=prompts[i]),
                                          max_tokens=args.max_tokens, ignore_eos=True,
                                          chunk_size=0 if tier else chunk, tier=tier)
                req.sampling.temperature = 0.0
                start = time.perf_counter()
                first = last = usage = None
                n = 0
                async for msg in stub.Generate(req):
                    if msg.token_ids:
                        last = time.perf_counter()
                        first = first or last
                        n += len(msg.token_ids)
                    if msg.HasField("usage"):
                        usage = msg.usage
                account(start, first, last, n, usage.kv_bytes, usage.chunk_size, usage.degraded,
                        usage.preempted)

        async def openai_worker(k):
            # 100 clients per loopback address: the API port takes at most 128 connections from
            # one address.
            connection = OpenAiConnection(openai_port, f"127.0.0.{1 + k // 100}")
            try:
                while queue:
                    i = queue.pop()
                    body = {"prompt": prompts[i], "max_tokens": args.max_tokens,
                            "ignore_eos": True, "temperature": 0.0, "stream": True,
                            "stream_options": {"include_usage": True}}
                    if tier:
                        body["tier"] = tier
                    else:
                        body["chunk_size"] = chunk
                    start = time.perf_counter()
                    arrivals, usage = await connection.stream(body)
                    account(start, arrivals[0], arrivals[-1], usage["completion_tokens"],
                            usage["kv_bytes"], usage["chunk_size"], usage["degraded"],
                            usage["preempted"])
            finally:
                connection.close()

        worker = grpc_worker if transport == "grpc" else openai_worker
        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"tok_s": tokens / wall, "ttft": ttft, "tpot": tpot,
            "kv": sum(kv_bytes) / max(1, len(kv_bytes)), "finished_at": finished_at,
            "switched": switched, "requests": total, "tokens": tokens, "wall": wall,
            "client_cpu": cpu}


def busy_cpu_seconds():
    """CPU seconds the whole machine has been busy (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    """utime + stime of a process, all its threads, in seconds (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_transports(args, pb2, pb2_grpc):
    """The same load through each of --transports on one daemon, alternated --repeat times."""
    import grpc

    transports = args.transports.split(",")
    unknown = set(transports) - {"grpc", "openai"}
    if unknown:
        sys.exit(f"--transports: unknown {', '.join(sorted(unknown))} (grpc, openai)")
    daemon = Daemon(args)
    try:
        if daemon.openai_port is None:
            sys.exit("the daemon serves no OpenAI API (a catserve without --openai_listen?)")
        with grpc.insecure_channel(daemon.address) as ch:
            info = pb2_grpc.GenerationStub(ch).GetModelInfo(pb2.GetModelInfoRequest())
        print(f"model {info.model} ({args.model_dir}), backend {info.backend}, prompt "
              f"{args.prompt_tokens} token ids, {args.max_tokens} generated (ignore_eos), greedy; "
              f"one daemon, {os.cpu_count()} CPUs shared with this client\n")
        for c in [int(x) for x in args.concurrency.split(",")]:
            for l in [int(x) for x in args.chunk_sizes.split(",")]:
                total = args.requests or max(2 * c, 8)
                print(f"concurrency {c}, chunk size {l}, {total} requests per run, "
                      f"{args.repeat} alternations\n")
                # Not counted: one run of each first (the daemon's first touch of its pool, the
                # clients' first connections).
                run = 0
                for t in transports:
                    run += 1
                    asyncio.run(run_cell(pb2, pb2_grpc, daemon.address, info.vocab_size, l, c,
                                         args, transport=t, openai_port=daemon.openai_port,
                                         run=run))
                print("| run | transport | gen tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | "
                      "TPOT p99 ms | daemon CPU s | client CPU s | other CPU s |")
                print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
                runs = collections.defaultdict(list)
                for rep in range(args.repeat):
                    for t in transports:
                        run += 1
                        busy0, daemon0 = busy_cpu_seconds(), process_cpu_seconds(daemon.proc.pid)
                        r = asyncio.run(run_cell(pb2, pb2_grpc, daemon.address, info.vocab_size,
                                                 l, c, args, transport=t,
                                                 openai_port=daemon.openai_port, run=run))
                        busy1, daemon1 = busy_cpu_seconds(), process_cpu_seconds(daemon.proc.pid)
                        assert r["tokens"] == total * args.max_tokens, r["tokens"]
                        r["daemon_cpu"] = daemon1 - daemon0
                        # What the rest of the machine did meanwhile (a build, another test):
                        # a run with much of it measured a shared machine, not the transport.
                        r["other_cpu"] = (busy1 - busy0 - r["daemon_cpu"] - r["client_cpu"]
                                          if busy0 is not None else float("nan"))
                        runs[t].append(r)
                        ms = lambda v: 1e3 * v  # noqa: E731
                        print(f"| {rep + 1} | {t} | {r['tok_s']:.1f} | "
                              f"{ms(percentile(r['ttft'], 50)):.1f} | "
                              f"{ms(percentile(r['ttft'], 99)):.1f} | "
                              f"{ms(percentile(r['tpot'], 50)):.2f} | "
                              f"{ms(percentile(r['tpot'], 99)):.2f} | {r['daemon_cpu']:.2f} | "
                              f"{r['client_cpu']:.2f} | {r['other_cpu']:.2f} |", flush=True)
                base = transports[0]
                print()
                for t in transports[1:]:
                    # Each run against the run of `base` just before it.
                    pairs = [(b, r) for b, r in zip(runs[base], runs[t])]
                    ratios = [r["tok_s"] / b["tok_s"] for b, r in pairs]
                    quiet = [r["tok_s"] / b["tok_s"] for b, r in pairs
                             if max(b["other_cpu"], r["other_cpu"])
                             <= args.quiet_share * min(b["wall"], r["wall"])]
                    med = {k: percentile([r["tok_s"] for r in runs[k]], 50) for k in (base, t)}
                    print(f"{t}/{base}: median tokens/s {med[t]:.1f} / {med[base]:.1f} = "
                          f"{med[t] / med[base]:.3f}; per alternation "
                          f"{', '.join(f'{x:.3f}' for x in ratios)} (median "
                          f"{statistics.median(ratios):.3f}); alternations on a quiet machine "
                          f"(other CPU <= {args.quiet_share:.0%} of a core): "
                          + (f"{len(quiet)}, median {statistics.median(quiet):.3f}" if quiet
                             else "none"))
                    d_cpu = {k: sum(r["daemon_cpu"] for r in runs[k])
                             / sum(r["tokens"] for r in runs[k]) * 1e6 for k in (base, t)}
                    print(f"daemon CPU per generated token: {t} {d_cpu[t]:.1f} us, {base} "
                          f"{d_cpu[base]:.1f} us ({d_cpu[t] / d_cpu[base]:.3f}x)")
                print(flush=True)
    finally:
        daemon.stop()


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
                   help="pressure runs: repetitions per policy (the table shows medians); "
                        "transport runs: alternations")
    p.add_argument("--transports", default="",
                   help="e.g. grpc,openai: the same load through each, alternated on one daemon")
    p.add_argument("--quiet_share", type=float, default=0.05,
                   help="transport runs: an alternation counts as quiet when the rest of the "
                        "machine used at most this share of one core during both runs")
    p.add_argument("--requests", type=int, default=0,
                   help="requests per cell (default: twice the concurrency, at least 8)")
    args = p.parse_args()
    pb2, pb2_grpc = load_stubs()
    if args.transports:
        run_transports(args, pb2, pb2_grpc)
        return
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
