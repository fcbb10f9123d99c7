#!/usr/bin/env python3
"""Fault and load test of a catserve daemon: what a hostile week in production does to it.

Phase 1 drives --requests Generate calls at --concurrency through a deliberately tiny KV pool
with a mix of faults: clients that cancel before or during the stream, deadlines that expire
while queued or generating, invalid requests, requests that fill the whole context at chunk size
1, and normal ones at every chunk size. Then it waits for the server to go idle and reads /metrics. Phase 2 loads it
again and sends SIGTERM in the middle. It prints (and with --json writes) the figures
docs/RELIABILITY.md records:

  lost        calls that ended without a gRPC status the client expects (or hung)
  accounting  the server's catserve_requests_finished_total against the calls it was sent
  pages       catserve_kv_pages_used once idle (a leak is > 0), requests running/waiting
  rss         process_resident_memory_bytes before the load, after it, after a second round
  drain       in-flight calls when SIGTERM came, how each ended, the exit code, seconds to exit

    python3 tools/bench/fault_load.py [--catserve=build/server/catserve] [--requests=3000] \\
        [--concurrency=128] [--kv_pool_mb=1] [--seed=1] [--json=out.json]

The daemon serves tests/fixtures/tiny (tests/common/catserve_daemon.py starts it).
"""

import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import random
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "common"))
from catserve_daemon import CatserveDaemon, compile_stubs  # noqa: E402

import grpc  # noqa: E402

# Codes a client of a healthy server may see under this mix. Anything else is a lost request.
EXPECTED = {"OK", "CANCELLED", "DEADLINE_EXCEEDED", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}


def scrape(daemon):
    text = urllib.request.urlopen(daemon.metrics_url, timeout=10).read().decode()
    values = collections.defaultdict(float)
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        name = series.split("{", 1)[0]
        values[name] += float(value)
        m = re.search(r'outcome="(\w+)"', series)
        if name == "catserve_requests_finished_total" and m:
            values[f"finished:{m.group(1)}"] += float(value)
    return values


def wait_idle(daemon, timeout=60):
    give_up = time.monotonic() + timeout
    while True:
        v = scrape(daemon)
        if (v["catserve_requests_running"] == 0 and v["catserve_requests_waiting"] == 0) \
                or time.monotonic() > give_up:
            return v
        time.sleep(0.2)


class Mix:
    """The request mix: each call gets a kind, a request and how the client treats it."""

    KINDS = [("normal", 0.45), ("cancel_mid_stream", 0.25), ("short_deadline", 0.15),
             ("invalid", 0.05), ("full_context_chunk1", 0.05), ("cancel_before_first", 0.05)]

    def __init__(self, pb2, rng):
        self.pb2 = pb2
        self.rng = rng

    def draw(self):
        r, acc = self.rng.random(), 0.0
        for kind, share in self.KINDS:
            acc += share
            if r < acc:
                return kind
        return "normal"

    def request(self, kind):
        pb2, rng = self.pb2, self.rng
        prompt = [5 + rng.randrange(300) for _ in range(rng.randrange(4, 60))]
        req = pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=prompt),
                                  max_tokens=rng.randrange(1, 60),
                                  chunk_size=rng.choice([1, 2, 4, 8, 16]), ignore_eos=True)
        req.sampling.temperature = rng.choice([0.0, 0.8])
        req.sampling.seed = rng.randrange(1 << 30)
        if kind == "invalid":
            rng.choice([lambda: req.ClearField("token_ids"),
                        lambda: setattr(req, "max_tokens", -1),
                        lambda: setattr(req, "chunk_size", 3),
                        lambda: setattr(req.sampling, "top_p", 2.0)])()
        if kind == "full_context_chunk1":  # the largest KV footprint the model allows
            req.token_ids.ids[:] = [7] * 100
            req.max_tokens = 27
            req.chunk_size = 1
        return req


def run_call(stub, mix, kind, request, timeout):
    """One Generate call; returns the final code name and the tokens received."""
    deadline = 0.05 if kind == "short_deadline" else timeout
    tokens = 0
    call = stub.Generate(request, timeout=deadline)
    try:
        if kind == "cancel_before_first":
            call.cancel()
        for response in call:
            tokens += len(response.token_ids)
            if kind == "cancel_mid_stream" and tokens >= 2:
                call.cancel()
        return "OK", tokens
    except grpc.RpcError as e:
        return e.code().name, tokens


def load(daemon, stub, mix, n, concurrency, timeout, stop_after=None):
    """Runs n calls at `concurrency`; returns Counter of (kind, code) and the lost ones."""
    results = collections.Counter()
    lost = []
    lock = threading.Lock()
    kinds = [mix.draw() for _ in range(n)]
    requests = [mix.request(k) for k in kinds]

    def one(i):
        try:
            code, _ = run_call(stub, mix, kinds[i], requests[i], timeout)
        except Exception as e:  # noqa: BLE001 - anything unexpected is a lost request
            code = f"exception:{type(e).__name__}"
        with lock:
            results[(kinds[i], code)] += 1
            if code not in EXPECTED and not (stop_after and code == "UNAVAILABLE"):
                lost.append((kinds[i], code))

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        if stop_after is not None:
            stop_after(futures)
        for f in futures:
            f.result()
    return results, lost


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--catserve", default=str(REPO / "build" / "server" / "catserve"))
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--kv_pool_mb", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--call_timeout", type=float, default=120)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    os.environ["CATSERVE_BIN"] = args.catserve

    pb2, pb2_grpc = compile_stubs(tempfile.mkdtemp(prefix="catserve-stubs-"))
    rng = random.Random(args.seed)
    mix = Mix(pb2, rng)
    report = {"requests": args.requests, "concurrency": args.concurrency,
              "kv_pool_mb": args.kv_pool_mb, "seed": args.seed}

    # Phase 1: faults under load, twice, then idle accounting.
    daemon = CatserveDaemon(f"--kv_pool_mb={args.kv_pool_mb}", "--max_queued=4096",
                            "--max_running=64", "--threads=2")
    try:
        channel = grpc.insecure_channel(daemon.address)
        stub = pb2_grpc.GenerationStub(channel)
        report["rss_before"] = scrape(daemon)["process_resident_memory_bytes"]
        report["kv_pages_capacity"] = scrape(daemon)["catserve_kv_pages_capacity"]
        rounds = []
        for r in range(2):
            start = time.monotonic()
            results, lost = load(daemon, stub, mix, args.requests, args.concurrency,
                                 args.call_timeout)
            seconds = time.monotonic() - start
            idle = wait_idle(daemon)
            finished = idle["catserve_requests_finished_total"]
            rounds.append({
                "seconds": round(seconds, 1),
                "by_kind_and_code": {f"{k}/{c}": n for (k, c), n in sorted(results.items())},
                "lost": len(lost),
                "lost_examples": lost[:5],
                "server_finished_total": finished,
                "server_finished_by_outcome": {k.split(":", 1)[1]: v for k, v in idle.items()
                                               if k.startswith("finished:")},
                "kv_pages_used_idle": idle["catserve_kv_pages_used"],
                "requests_running_idle": idle["catserve_requests_running"],
                "requests_waiting_idle": idle["catserve_requests_waiting"],
                "rss_after": idle["process_resident_memory_bytes"],
            })
        report["rounds"] = rounds
        channel.close()
    finally:
        report["phase1_exit_code"] = daemon.stop()

    # Phase 2: SIGTERM in the middle of a load.
    daemon = CatserveDaemon(f"--kv_pool_mb={args.kv_pool_mb}", "--max_queued=4096",
                            "--max_running=64", "--threads=2", "--drain_grace_seconds=20")
    channel = grpc.insecure_channel(daemon.address)
    stub = pb2_grpc.GenerationStub(channel)
    drain = {}

    def sigterm_mid_load(futures):
        while sum(f.done() for f in futures) < len(futures) // 4:
            time.sleep(0.01)
        v = scrape(daemon)
        drain["in_flight_at_sigterm"] = v["catserve_requests_running"] + \
            v["catserve_requests_waiting"]
        drain["done_before_sigterm"] = sum(f.done() for f in futures)
        drain["t0"] = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)

    results, lost = load(daemon, stub, mix, args.requests, args.concurrency, args.call_timeout,
                         stop_after=sigterm_mid_load)
    code = daemon.proc.wait(60)
    drain["exit_code"] = code
    drain["seconds_to_exit"] = round(time.monotonic() - drain.pop("t0"), 2)
    drain["by_code"] = dict(collections.Counter(c for (_, c), n in results.items()
                                                for _ in range(n)))
    drain["lost"] = len(lost)
    drain["lost_examples"] = lost[:5]
    report["drain"] = drain
    channel.close()

    print(json.dumps(report, indent=2))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    bad = any(r["lost"] or r["kv_pages_used_idle"] for r in rounds) or drain["lost"] or code != 0
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
