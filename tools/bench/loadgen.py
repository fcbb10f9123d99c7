#!/usr/bin/env python3
"""Load generator for catserve: closed-loop streams at several concurrencies and chunk sizes.

Starts the daemon on a model, drives it with grpcio (asyncio) and prints a markdown table:
generated tokens/s (and its ratio to chunk size 2 at the same concurrency), time to first token
and time per output token (p50/p99), compressed-KV bytes per sequence at its end, and the serving
layer's own share of the scheduler loop (1 - engine seconds / iteration seconds, read from
/metrics before and after each cell).

    python3 tools/bench/loadgen.py --model_dir=models/cat-small-en \\
        [--catserve=build/server/catserve] [--concurrency=1,8,32,128] [--chunk_sizes=2,8,16] \\
        [--prompt_tokens=128] [--max_tokens=64] [--threads=0] [--kv_pool_mb=2048] [--device=cpu]
"""

import argparse
import asyncio
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
    def __init__(self, args):
        cmd = [args.catserve, f"--model_dir={args.model_dir}", "--listen=127.0.0.1:0",
               "--http_listen=127.0.0.1:0", f"--threads={args.threads}",
               f"--kv_pool_mb={args.kv_pool_mb}", "--max_running=256", "--max_queued=4096",
               f"--max_tokens_per_step={args.max_tokens_per_step}", f"--device={args.device}"]
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

    def counter(self, name):
        text = urllib.request.urlopen(self.metrics, timeout=10).read().decode()
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def run_cell(pb2, pb2_grpc, address, vocab, chunk, concurrency, args):
    import grpc

    total = max(2 * concurrency, 8)
    rng = random.Random(chunk * 1000 + concurrency)
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
                                          chunk_size=chunk)
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
                tokens += n
                ttft.append(first - start)
                if n > 1:
                    tpot.append((last - first) / (n - 1))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"tok_s": tokens / wall, "ttft": ttft, "tpot": tpot,
            "kv": sum(kv_bytes) / max(1, len(kv_bytes))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--catserve", default=str(REPO / "build" / "server" / "catserve"))
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--chunk_sizes", default="2,8,16")
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--kv_pool_mb", type=int, default=2048)
    p.add_argument("--device", default="cpu", help="the daemon's --device: cpu or cuda")
    p.add_argument("--max_tokens_per_step", type=int, default=2048)
    args = p.parse_args()
    pb2, pb2_grpc = load_stubs()
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
