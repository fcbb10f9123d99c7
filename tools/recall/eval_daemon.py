#!/usr/bin/env python3
"""Recall measured through a running catserve: held-out cases of tools/recall/task.py sent over
gRPC at every served chunk size and every tier, greedy, scored by exact match; plus decode
throughput per chunk size, and a memory-pressure run.

    # against a daemon that is already running (the model directory gives the token layout)
    python3 tools/recall/eval_daemon.py --addr 127.0.0.1:50051 --model_dir models/cat-recall \
        --json recall.json

    # start the daemon itself (any catserve flags after --daemon_flag)
    python3 tools/recall/eval_daemon.py --start --model_dir models/cat-recall --json recall.json

    # memory pressure: the daemon started with a small pool and --pressure_policy=degrade,
    # many concurrent requests of a tier that may degrade; then the same load under
    # --pressure_policy=queue (same pool, nobody degraded) for the throughput it gains
    python3 tools/recall/eval_daemon.py --pressure --model_dir models/cat-recall \
        --kv_pool_mb 1 --tier balanced --json pressure.json

Prints markdown tables and writes everything (per case too) as JSON with --json; plot.py draws
recall against KV bytes per sequence from that file. The task, its layout and the held-out seed
are in the JSON; the defaults are the model's recall_task.json eval_task (mqar, 16 pairs, 128
tokens for models train.py writes) and held-out seed 1 (seeds >= 1000 are never used by this
repository: pass one for an independent check).

Needs grpcio and grpcio-tools (deploy/install-deps.sh installs them); the gRPC stubs are
compiled from proto/ into a temporary directory, as tests/common/catserve_daemon.py does.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import task as rt  # noqa: E402


def compile_stubs(out_dir: str):
    from grpc_tools import protoc

    root = os.path.join(REPO, "proto")
    protos = sorted(os.path.join(root, "catserve", "v1", p)
                    for p in os.listdir(os.path.join(root, "catserve", "v1")) if p.endswith(".proto"))
    args = ["protoc", f"-I{root}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + protos) != 0:
        raise SystemExit("grpc_tools.protoc failed on proto/catserve/v1")
    sys.path.insert(0, out_dir)
    from catserve.v1 import generation_pb2, generation_pb2_grpc

    return generation_pb2, generation_pb2_grpc


class Daemon:
    """build/server/catserve on 127.0.0.1 port 0, started and stopped here."""

    def __init__(self, binary: str, model_dir: str, flags: list[str], log_path: str | None = None):
        cmd = [binary, f"--model_dir={model_dir}", "--listen=127.0.0.1:0",
               "--http_listen=127.0.0.1:0", "--openai_listen=127.0.0.1:0", *flags]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log, self._ready = "", threading.Event()
        self._log_file = open(log_path, "w") if log_path else None
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(120) or "catserve: ready" not in self.log:
            self.stop()
            raise SystemExit(f"catserve did not start: {' '.join(cmd)}\n{self.log}")
        port = re.search(r"catserve: listening on \S+:(\d+)", self.log).group(1)
        self.address = f"127.0.0.1:{port}"

    def _read(self):
        for line in self.proc.stderr:
            self.log += line
            if self._log_file:
                self._log_file.write(line)
                self._log_file.flush()
            if line.startswith("catserve: ready"):
                self._ready.set()
        self._ready.set()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file:
            self._log_file.close()


class Client:
    def __init__(self, address: str, pb2, pb2_grpc):
        import grpc

        self.grpc, self.pb2 = grpc, pb2
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)])
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb2_grpc.GenerationStub(self.channel)

    def info(self):
        return self.stub.GetModelInfo(self.pb2.GetModelInfoRequest(), timeout=30)

    def generate(self, prompt: list[int], max_tokens: int, chunk_size: int = 0, tier: str = "",
                 timeout: float = 600) -> dict:
        pb2 = self.pb2
        req = pb2.GenerateRequest(token_ids=pb2.TokenIds(ids=prompt), max_tokens=max_tokens,
                                  sampling=pb2.SamplingParams(temperature=0.0),
                                  ignore_eos=True, chunk_size=chunk_size, tier=tier)
        out, usage, t0 = [], None, time.time()
        try:
            for msg in self.stub.Generate(req, timeout=timeout):
                out.extend(msg.token_ids)
                if msg.HasField("usage"):
                    usage = msg.usage
        except self.grpc.RpcError as e:
            return {"error": f"{e.code().name}: {e.details()}", "tokens": out}
        return {"tokens": list(out), "seconds": time.time() - t0,
                "chunk_size": usage.chunk_size if usage else None,
                "kv_bytes": usage.kv_bytes if usage else None,
                "degraded": bool(usage.degraded) if usage else None,
                "preempted": bool(usage.preempted) if usage else None,
                "prompt_tokens": usage.prompt_tokens if usage else len(prompt),
                "generated_tokens": usage.generated_tokens if usage else len(out)}


def run_cases(client: Client, cases: list[dict], concurrency: int, extra_tokens: int = 0,
              **kw) -> tuple[list[dict], float]:
    """Sends every case (greedy, max_tokens = answer + extra_tokens); returns per-case results
    (correct = the first answer-length tokens equal the answer) and the wall time."""
    bg_size = kw.pop("background_chunk_size", 0)

    def one(case):
        args = dict(kw)
        if case.get("background") and bg_size:  # the tier's size, never coarser
            args.update(tier="", chunk_size=bg_size)
        r = client.generate(case["prompt"], case.get("max_tokens", len(case["answer"]) +
                                                     extra_tokens), **args)
        r["correct"] = r.get("tokens", [])[:len(case["answer"])] == case["answer"]
        r["index"] = case["index"]
        return r

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, cases))
    return results, time.time() - t0


def summarize(results: list[dict], wall: float) -> dict:
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    gen = sum(r["generated_tokens"] for r in ok)
    prompt = sum(r["prompt_tokens"] for r in ok)
    kv = [r["kv_bytes"] for r in ok if r["kv_bytes"] is not None]
    return {"n": len(results), "correct": sum(r["correct"] for r in ok),
            "accuracy": round(sum(r["correct"] for r in ok) / max(1, len(results)), 4),
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 3), "generated_tokens": gen, "prompt_tokens": prompt,
            "generated_tokens_per_s": round(gen / wall, 1) if wall else None,
            "all_tokens_per_s": round((gen + prompt) / wall, 1) if wall else None,
            "kv_bytes_usage_mean": round(sum(kv) / len(kv), 1) if kv else None,
            "finished_chunk_sizes": sorted({r["chunk_size"] for r in ok}),
            "degraded": sum(bool(r["degraded"]) for r in ok),
            "preempted": sum(bool(r["preempted"]) for r in ok),
            "cases": [{k: r.get(k) for k in ("index", "tokens", "correct", "chunk_size",
                                             "degraded", "kv_bytes", "error")} for r in results]}


def kv_bytes_per_sequence(config: dict, n_tokens: int, l: int, bytes_per_value: float) -> int:
    """docs/CAT_MODEL.md "The KV cache": (1 + n // l) compressed + (1 + n % l) local entries,
    each L * 2 * Hkv * head_dim values."""
    L = config["num_hidden_layers"]
    H = config["num_heads"]
    hkv = config.get("num_kv_heads") or H
    hd = config["hidden_size"] // H
    entries = (1 + n_tokens // l) + (1 + n_tokens % l)
    return int(entries * L * 2 * hkv * hd * bytes_per_value)


def throughput_cases(cases: list[dict], max_context: int, tokens: int, count: int) -> list[dict]:
    """`count` prompts (the cases', cut so prompt + tokens fits the context)."""
    out = []
    for i in range(count):
        c = cases[i % len(cases)]
        keep = max(1, min(len(c["prompt"]), max_context - tokens))
        out.append({"index": c["index"], "prompt": c["prompt"][:keep], "answer": []})
    return out


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def sweep(client, info, cases, args, config) -> dict:
    """Every chunk size, then every tier: recall; then decode throughput per chunk size."""
    bytes_per_value = info.kv_bytes_per_entry / (
        config["num_hidden_layers"] * 2 * (config.get("num_kv_heads") or config["num_heads"])
        * (config["hidden_size"] // config["num_heads"]))
    n_tokens = max(len(c["prompt"]) + len(c["answer"]) for c in cases)
    out = {"chunk_sizes": [], "tiers": []}
    for l in info.chunk_sizes:
        res, wall = run_cases(client, cases, args.concurrency, chunk_size=l)
        s = summarize(res, wall)
        s["chunk_size"] = l
        s["kv_bytes_per_sequence"] = kv_bytes_per_sequence(config, n_tokens, l, bytes_per_value)
        if args.throughput_tokens:
            tc = throughput_cases(cases, info.limits.max_context, args.throughput_tokens,
                                  args.throughput_requests)
            tres, twall = run_cases(client, tc, args.throughput_requests,
                                    extra_tokens=args.throughput_tokens, chunk_size=l)
            t = summarize(tres, twall)
            s["throughput"] = {k: t[k] for k in ("n", "errors", "wall_s", "generated_tokens",
                                                 "generated_tokens_per_s", "all_tokens_per_s")}
            s["throughput"]["max_tokens"] = args.throughput_tokens
        out["chunk_sizes"].append(s)
        print(f"chunk {l:2d}: {pct(s['accuracy'])} ({s['correct']}/{s['n']}, errors "
              f"{s['errors']})" + (f", decode {s['throughput']['generated_tokens_per_s']} tok/s"
                                   if args.throughput_tokens else ""), flush=True)
        if s["errors"]:
            print(f"  first error: {s['first_error']}", flush=True)
    for name in sorted(info.tiers):
        res, wall = run_cases(client, cases, args.concurrency, tier=name)
        s = summarize(res, wall)
        s.update({"tier": name, "chunk_size": info.tiers[name],
                  "coarsest_chunk_size": info.tier_coarsest_chunk_sizes.get(name, info.tiers[name])})
        out["tiers"].append(s)
        print(f"tier {name}: {pct(s['accuracy'])} ({s['correct']}/{s['n']})", flush=True)
    out["kv_tokens"] = n_tokens
    return out


def pressure(binary, args, model_dir, cases, pb2, pb2_grpc) -> dict:
    """One load, two daemons on the same small pool: --pressure_policy=degrade, then =queue
    (nobody is degraded; requests wait for memory instead).

    The load is the scored cases (max_tokens = the answer: each is answered in its prefill step,
    so a degraded one was switched at admission and its answer came from the coarser size) mixed
    with as many unscored background requests that generate --background_tokens tokens each and
    keep the pool full. The scored requests name --tier, so the scheduler may degrade them
    within it; the background ones ask for the tier's chunk size and allow nothing coarser (with
    --background_may_degrade they name the tier too, and the scheduler then degrades them first,
    being the running ones). Recall is reported for degraded and not degraded scored requests
    apart; throughput over all requests."""
    out = {"kv_pool_mb": args.kv_pool_mb, "tier": args.tier,
           "concurrency": args.pressure_concurrency, "requests": len(cases),
           "background_requests": args.background, "background_tokens": args.background_tokens,
           "background_may_degrade": args.background_may_degrade}
    background = throughput_cases(cases, 10**9, 0, args.background)
    for b in background:
        b["max_tokens"], b["background"] = args.background_tokens, True
    load: list[dict] = []
    for i in range(max(len(cases), len(background))):  # interleaved: both through the whole run
        load += background[i:i + 1] + cases[i:i + 1]
    for policy in ("degrade", "queue"):
        d = Daemon(binary, model_dir, [f"--kv_pool_mb={args.kv_pool_mb}",
                                       f"--pressure_policy={policy}", *args.daemon_flag])
        try:
            client = Client(d.address, pb2, pb2_grpc)
            info = client.info()
            for b in background:  # fit the context
                b["prompt"] = b["prompt"][:max(1, info.limits.max_context - b["max_tokens"])]
            bg_size = 0 if args.background_may_degrade else info.tiers[args.tier]
            res, wall = run_cases(client, load, args.pressure_concurrency, tier=args.tier,
                                  background_chunk_size=bg_size)
        finally:
            d.stop()
        s = summarize(res, wall)
        s.pop("cases")  # the scored ones are kept below; the background's are not worth keeping
        s["pool_pages"] = info.kv_pool.total_pages
        scored = [r for r, c in zip(res, load) if not c.get("background")]
        s["scored"] = summarize(scored, wall)
        s["background_degraded"] = sum(bool(r.get("degraded")) for r, c in zip(res, load)
                                       if c.get("background"))
        for label, sel in (("degraded", [r for r in scored if r.get("degraded")]),
                           ("not_degraded", [r for r in scored if "error" not in r
                                             and not r.get("degraded")])):
            s[label] = {"n": len(sel), "correct": sum(r["correct"] for r in sel),
                        "accuracy": round(sum(r["correct"] for r in sel) / len(sel), 4)
                        if sel else None,
                        "finished_chunk_sizes": sorted({r["chunk_size"] for r in sel})}
        out[policy] = s
        print(f"pressure {policy}: scored {s['degraded']['n']}/{len(scored)} degraded (background "
              f"{s['background_degraded']}/{len(background)}); recall degraded "
              f"{pct(s['degraded']['accuracy'])} at {s['degraded']['finished_chunk_sizes']}, not "
              f"degraded {pct(s['not_degraded']['accuracy'])} at "
              f"{s['not_degraded']['finished_chunk_sizes']}; {s['generated_tokens_per_s']} "
              f"generated tok/s, {s['all_tokens_per_s']} prompt+generated tok/s, "
              f"{s['errors']} errors", flush=True)
    return out


def offline_check(model_dir: str, cases: list[dict], report: dict) -> dict:
    """The same prompts through tools/catref (PyTorch, fp32): how often its argmax equals the
    daemon's greedy token at each chunk size (the daemon stores KV in bf16 by default, so a
    near-tie may differ), and catref's own accuracy."""
    sys.path.insert(0, os.path.dirname(HERE))
    import torch
    from catref.model import load_model

    model = load_model(model_dir)
    out = {}
    for s in report["chunk_sizes"]:
        l, agree, right = s["chunk_size"], 0, 0
        for case, res in zip(cases, s["cases"]):
            with torch.no_grad():
                pred = int(model.logits_all(case["prompt"], l)[-1].argmax())
            agree += bool(res["tokens"]) and pred == res["tokens"][0]
            right += pred == case["answer"][0]
        out[l] = {"agree": agree, "n": len(cases), "catref_accuracy": round(right / len(cases), 4)}
        print(f"offline check, chunk {l:2d}: catref agrees with the daemon on {agree}/{len(cases)}; "
              f"catref accuracy {pct(right / len(cases))}", flush=True)
    return out


def markdown(report: dict) -> str:
    parts = []
    t = report["task"]
    parts.append(f"Model `{report['model']}` ({report['backend']}), task {t['kind']} "
                 f"{t['pairs']} pairs in {t['seq_len']} tokens, {report['n']} held-out cases "
                 f"(seed {report['seed']}), greedy, exact match; chance {pct(report['chance'])}, "
                 f"copying any context value {pct(report['copy_baseline'])}.")
    if report.get("chunk_sizes"):
        rows = []
        for s in report["chunk_sizes"]:
            tp = s.get("throughput", {})
            rows.append([s["chunk_size"], pct(s["accuracy"]), f"{s['correct']}/{s['n']}",
                         f"{s['kv_bytes_per_sequence']:,}",
                         f"{s['kv_bytes_usage_mean']:,.0f}" if s["kv_bytes_usage_mean"] else "-",
                         tp.get("generated_tokens_per_s", "-"), s["errors"]])
        parts.append(table(rows, ["chunk size", "recall", "correct", "KV bytes / sequence "
                                  f"({report['kv_tokens']} tokens)", "Usage.kv_bytes (mean)",
                                  "decode tokens/s", "errors"]))
    if report.get("tiers"):
        rows = [[s["tier"], f"{s['chunk_size']}:{s['coarsest_chunk_size']}", pct(s["accuracy"]),
                 f"{s['correct']}/{s['n']}", ",".join(map(str, s["finished_chunk_sizes"])),
                 s["degraded"]] for s in report["tiers"]]
        parts.append(table(rows, ["tier", "size:coarsest", "recall", "correct",
                                  "finished at", "degraded"]))
    p = report.get("pressure")
    if p:
        rows = []
        for policy in ("degrade", "queue"):
            s = p[policy]
            dg, nd = s["degraded"], s["not_degraded"]
            rows.append([policy, s["pool_pages"], f"{dg['n']}/{dg['n'] + nd['n']}",
                         f"{pct(dg['accuracy'])} (l={','.join(map(str, dg['finished_chunk_sizes']))})",
                         f"{pct(nd['accuracy'])} (l={','.join(map(str, nd['finished_chunk_sizes']))})",
                         f"{s['background_degraded']}/{p['background_requests']}",
                         s["generated_tokens_per_s"], s["all_tokens_per_s"], s["wall_s"],
                         s["errors"]])
        parts.append(f"Memory pressure: `--kv_pool_mb={p['kv_pool_mb']}`, tier `{p['tier']}`, "
                     f"{p['requests']} scored requests (max_tokens = the answer) mixed with "
                     f"{p['background_requests']} background requests of "
                     f"{p['background_tokens']} tokens, {p['concurrency']} at a time.\n\n"
                     + table(rows, ["policy", "pool pages", "scored degraded",
                                    "recall, degraded", "recall, not degraded",
                                    "background degraded", "generated tok/s",
                                    "prompt+generated tok/s", "wall s", "errors"]))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model_dir", required=True,
                    help="the served model's directory: token layout, config.json")
    ap.add_argument("--addr", help="a running daemon (host:port)")
    ap.add_argument("--start", action="store_true", help="start build/server/catserve here")
    ap.add_argument("--pressure", action="store_true",
                    help="also (or, without --addr/--start, only) the memory-pressure run")
    ap.add_argument("--catserve", default=os.path.join(REPO, "build", "server", "catserve"))
    ap.add_argument("--daemon_flag", action="append", default=[],
                    help="extra catserve flag for daemons started here (repeatable)")
    ap.add_argument("--task", help="KIND:PAIRS:LEN (default: the model's recall_task.json)")
    ap.add_argument("--seed", type=int, default=1, help="held-out seed (>= 1000: never used here)")
    ap.add_argument("--n", type=int, default=100, help="held-out cases per chunk size and tier")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--throughput_tokens", type=int, default=32,
                    help="decode throughput phase: tokens per request (0: skip)")
    ap.add_argument("--throughput_requests", type=int, default=64)
    ap.add_argument("--kv_pool_mb", type=int, default=1)
    ap.add_argument("--tier", default="balanced", help="pressure run: a tier that may degrade")
    ap.add_argument("--pressure_n", type=int, default=256)
    ap.add_argument("--pressure_concurrency", type=int, default=128)
    ap.add_argument("--background", type=int, default=256,
                    help="pressure run: unscored requests that keep the pool full")
    ap.add_argument("--background_may_degrade", action="store_true",
                    help="pressure run: background requests name the tier too")
    ap.add_argument("--background_tokens", type=int, default=64,
                    help="pressure run: tokens each background request generates")
    ap.add_argument("--offline_check", action="store_true",
                    help="also run the cases through tools/catref (needs PyTorch) and count how "
                         "often its argmax equals the daemon's answer")
    ap.add_argument("--json", help="write the report (with every case's result) here")
    args = ap.parse_args(argv)
    if not (args.addr or args.start or args.pressure):
        ap.error("give --addr, --start or --pressure")

    layout = rt.layout_for(args.model_dir)
    task = rt.default_task(args.model_dir)
    if args.task:
        kind, pairs, length = args.task.split(":")
        task = rt.Task(kind, int(pairs), int(length))
    cases = rt.heldout_cases(layout, task, args.seed, max(args.n, args.pressure_n))
    for c in cases:
        assert rt.oracle_answer(layout, c["prompt"]) == c["answer"][0]
    with open(os.path.join(args.model_dir, "config.json")) as f:
        config = json.load(f)

    tmp = tempfile.mkdtemp(prefix="catserve-stubs-")
    pb2, pb2_grpc = compile_stubs(tmp)
    report = {"model_dir": os.path.abspath(args.model_dir), "task": task.to_dict(),
              "layout": layout.to_dict(), "seed": args.seed, "n": args.n,
              "chance": round(1 / layout.n_keys, 5), "copy_baseline": round(1 / task.pairs, 5),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "config": config}
    daemon = None
    if args.start:
        daemon = Daemon(args.catserve, args.model_dir, args.daemon_flag)
        args.addr = daemon.address
    try:
        if args.addr:
            client = Client(args.addr, pb2, pb2_grpc)
            info = client.info()
            report.update({"model": info.model, "backend": info.backend,
                           "kv_bytes_per_entry": info.kv_bytes_per_entry,
                           "served_chunk_sizes": list(info.chunk_sizes),
                           "tiers_served": dict(info.tiers), "max_context": info.limits.max_context,
                           "addr": args.addr, "daemon_flags": args.daemon_flag if daemon else None})
            if len(cases[0]["prompt"]) + 1 > info.limits.max_context:
                raise SystemExit(f"cases of {task.seq_len} tokens exceed the daemon's context "
                                 f"{info.limits.max_context}")
            report.update(sweep(client, info, cases[:args.n], args, config))
    finally:
        if daemon:
            daemon.stop()
    if args.offline_check and report.get("chunk_sizes"):
        report["offline_check"] = offline_check(args.model_dir, cases[:args.n], report)
    if args.pressure:
        report.setdefault("model", os.path.basename(os.path.abspath(args.model_dir)))
        report.setdefault("backend", "cpu")
        report["pressure"] = pressure(args.catserve, args, args.model_dir,
                                      cases[:args.pressure_n], pb2, pb2_grpc)
    text = markdown(report)
    print()
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, separators=(",", ":"))
            f.write("\n")
        with open(os.path.splitext(args.json)[0] + ".md", "w") as f:
            f.write(text)
        print(f"wrote {args.json} and {os.path.splitext(args.json)[0]}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
