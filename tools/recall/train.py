#!/usr/bin/env python3
"""Trains a small adaptive CAT model on the synthetic recall tasks of tools/recall/task.py and
writes it as a catserve model directory (config.json, model.safetensors, tokenizer.model, plus
recall_task.json and training.json).

One command on a GPU machine (PyTorch only: no numpy, safetensors or sentencepiece needed, no
download; about 8 minutes of training, then export):

    python3 tools/recall/train.py --out "$OUT/cat-recall" --minutes 8

CPU smoke test (a few steps, seconds):

    python3 tools/recall/train.py --out /tmp/cat-recall-smoke --steps=5 --device=cpu

Resume an interrupted or finished run (the checkpoint is <out>.ckpt.pt unless --ckpt):

    python3 tools/recall/train.py --out "$OUT/cat-recall" --minutes 8 --resume

The model is tools/catref (the PyTorch reference of docs/CAT_MODEL.md) with tools/train's
initialisation, attention (scaled_dot_product_attention) and learning-rate schedule; its
position, RoPE and mask tables are cached on the training device. One set of weights is trained
on chunk sizes 1, 2, 4, 8 and 16 (one size per step, drawn by weight). The loss is on the answers
only (the values after the separator).

Curriculum (--curriculum): stages "PAIRS_LO-PAIRS_HI@LEN[/LEN...]:SHARE", run in order, each for
its share of the steps; every row draws its number of pairs in [lo, hi] (capped to fit LEN), a
share --niah_frac of rows are needle-in-a-haystack rows (1-4 needles). The batch holds
--batch_tokens tokens (rows = batch_tokens / LEN).

Steps. With --steps the schedule has that many steps. Without it, the run first times a few
steps of every stage and chunk size on a throwaway copy of the model and picks the number of
steps that fits --minutes; it prints and records that number, and `--steps N` with it repeats
the run. Either way training stops (and exports) when --minutes is spent.

Deterministic given --seed and --steps: the batch, its length and its chunk size at step s depend
only on (seed, s, steps); the checkpoint holds model, optimizer and step, so --resume continues
the same schedule. (On a GPU, some kernels are nondeterministic in their last bits; add
--deterministic to ask PyTorch for deterministic ones.)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import importlib.util
import json
import math
import os
import random
import struct
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, TOOLS)
import catref.model as catref  # noqa: E402
from catref.model import CatForCausalLM  # noqa: E402
import task as rt  # noqa: E402  (tools/recall/task.py)

CHUNK_SIZES = (1, 2, 4, 8, 16)


def _load_tools_train():
    """tools/train/train.py, whose module name `train` is this file's too, so loaded by path. It
    needs numpy only for the text corpus, which this script does not read."""
    spec = importlib.util.spec_from_file_location("catserve_tools_train",
                                                  os.path.join(TOOLS, "train", "train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TT = _load_tools_train()


# ---------------------------------------------------------------------------------------------
# catref on any device: its tables are built on the CPU per call; cache them on the device


def install_device_tables(device: torch.device) -> None:
    rope, mask, pred = catref.rope_cos_sin, catref.interleaved_mask, catref.prediction_positions
    rope_cache: dict = {}

    def rope_cos_sin(positions, head_dim, theta):
        key = (tuple(positions.tolist()), head_dim, float(theta))
        if key not in rope_cache:
            rope_cache[key] = tuple(t.to(device) for t in rope(positions, head_dim, theta))
        return rope_cache[key]

    catref.rope_cos_sin = rope_cos_sin
    catref.interleaved_mask = functools.lru_cache(maxsize=None)(
        lambda T, l: mask(T, l).to(device))
    catref.prediction_positions = functools.lru_cache(maxsize=None)(
        lambda n, l: pred(n, l).to(device))
    catref.masked_attention = TT.sdpa_attention


# ---------------------------------------------------------------------------------------------
# Plan: which stage, length and chunk size each step has


@dataclasses.dataclass
class Stage:
    pairs: tuple[int, int]
    lengths: tuple[int, ...]
    share: float


def parse_curriculum(spec: str) -> list[Stage]:
    stages = []
    for part in spec.split(","):
        body, share = part.rsplit(":", 1)
        pairs, lengths = body.split("@")
        lo, _, hi = pairs.partition("-")
        stages.append(Stage((int(lo), int(hi or lo)), tuple(int(x) for x in lengths.split("/")),
                            float(share)))
    total = sum(s.share for s in stages)
    for s in stages:
        s.share /= total
    return stages


def parse_weights(spec: str) -> dict[int, float]:
    out = {}
    for part in spec.split(","):
        l, w = part.split(":")
        if int(l) not in CHUNK_SIZES:
            raise SystemExit(f"chunk size {l} in --chunk_weights: one of {CHUNK_SIZES}")
        out[int(l)] = float(w)
    return out


class Plan:
    def __init__(self, args, total_steps: int):
        self.seed, self.total = args.seed, total_steps
        self.stages = parse_curriculum(args.curriculum)
        self.weights = parse_weights(args.chunk_weights)
        self.warm_weights = parse_weights(args.warm_chunk_weights or args.chunk_weights)
        self.batch_tokens = args.batch_tokens
        bounds, acc = [], 0.0
        for s in self.stages:
            acc += s.share
            bounds.append(acc)
        self.bounds = bounds

    def stage_index(self, step: int) -> int:
        t = step / max(1, self.total)
        for i, b in enumerate(self.bounds):
            if t < b:
                return i
        return len(self.stages) - 1

    def at(self, step: int) -> tuple[int, int, int, Stage]:
        """(stage index, chunk size, length) of a step."""
        i = self.stage_index(step)
        stage = self.stages[i]
        rng = random.Random(f"catserve-recall/plan/{self.seed}/{step}")
        w = self.warm_weights if i == 0 else self.weights
        l = rng.choices(list(w), weights=list(w.values()))[0]
        T = rng.choice(stage.lengths)
        return i, l, T, stage

    def rows(self, T: int) -> int:
        return max(1, self.batch_tokens // T)


class StepBatches(torch.utils.data.Dataset):
    """Item s = the batch of step s: (chunk size, ids [B,T], targets [B,T] with -100 off the
    answers). Deterministic in (seed, s, plan)."""

    def __init__(self, plan: Plan, layout: rt.Layout, niah_frac: float):
        self.plan, self.layout, self.niah_frac = plan, layout, niah_frac

    def __len__(self):
        return self.plan.total

    def __getitem__(self, step: int):
        _, l, T, stage = self.plan.at(step)
        return (l,) + to_tensors(rt.batch_rows(self.plan.seed, step, self.plan.rows(T),
                                               self.layout, stage.pairs, T, self.niah_frac))


def to_tensors(rows: list[rt.Sequence]):
    ids = torch.tensor([r.tokens for r in rows], dtype=torch.long)
    targets = torch.full_like(ids, -100)
    bs = [b for b, r in enumerate(rows) for _ in r.answer_positions]
    ps = [p for r in rows for p in r.answer_positions]
    targets[bs, ps] = ids[bs, ps]
    return ids, targets


# ---------------------------------------------------------------------------------------------
# Held-out accuracy (every query of every held-out sequence, teacher-forced: the same number a
# daemon gets when each case's prompt ends at that query)


@torch.no_grad()
def heldout_accuracy(model, layout, tasks, n, device, amp, chunk_sizes=CHUNK_SIZES,
                     batch=64) -> dict:
    was_training = model.training
    model.eval()
    out = {}
    for task in tasks:
        seqs = rt.heldout_sequences(layout, task, 0, n)
        acc = {}
        for l in chunk_sizes:
            right = total = 0
            for i in range(0, n, batch):
                ids, targets = to_tensors(seqs[i:i + batch])
                ids, targets = ids.to(device), targets.to(device)
                with autocast(device, amp):
                    logits = model(ids, l)
                pred = logits[:, :ids.shape[1]].argmax(-1)
                m = targets != -100
                right += int((pred[m] == targets[m]).sum())
                total += int(m.sum())
            acc[l] = round(right / total, 4)
        out[task.name()] = acc
    model.train(was_training)
    return out


def autocast(device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


# ---------------------------------------------------------------------------------------------
# Export: catserve's layout without the safetensors or sentencepiece packages

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    try:
        return flat.numpy().tobytes()
    except (ImportError, RuntimeError):
        return bytes(flat.tolist())


def write_safetensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        blob = tensor_bytes(t)
        header[name] = {"dtype": SAFETENSORS_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def export(model, out: str, dtype: str, layout: rt.Layout, meta: dict, training: dict) -> None:
    os.makedirs(out, exist_ok=True)
    torch_dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dtype]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(model.config.to_dict(torch_dtype), f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(out, "model.safetensors"),
                      {n: p.detach().to(DTYPES[dtype]) for n, p in model.named_parameters()})
    rt.write_tokenizer(layout, os.path.join(out, "tokenizer.model"))
    for name, obj in (("recall_task.json", meta), ("training.json", training)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


# ---------------------------------------------------------------------------------------------


def make_optimizer(model, args):
    groups = {"decay": [], "no_decay": [], "fx": []}
    for name, p in model.named_parameters():
        if name.endswith("proj_fx.weight"):
            groups["fx"].append(p)
        elif p.dim() >= 2:
            groups["decay"].append(p)
        else:
            groups["no_decay"].append(p)
    return torch.optim.AdamW(
        [{"params": groups["decay"], "weight_decay": args.weight_decay, "lr_mult": 1.0},
         {"params": groups["no_decay"], "weight_decay": 0.0, "lr_mult": 1.0},
         {"params": groups["fx"], "weight_decay": args.weight_decay,
          "lr_mult": args.proj_fx_lr_mult}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8)


def train_step(model, opt, batch, device, amp):
    l, ids, targets = batch
    ids = ids.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    with autocast(device, amp):
        logits, loss = model(ids, l, targets=targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return l, logits, loss, targets


def calibrate(model, args, layout, device, amp) -> dict:
    """Seconds per step of every stage (its longest length, weighted over chunk sizes), timed on
    a throwaway copy of the model and optimizer."""
    probe = copy.deepcopy(model)
    opt = make_optimizer(probe, args)
    plan = Plan(args, 1)
    out = {}
    for si, stage in enumerate(plan.stages):
        T = max(stage.lengths)
        w = plan.warm_weights if si == 0 else plan.weights
        per_l = {}
        for l in w:
            batch = (l,) + to_tensors(rt.batch_rows(-1, si * 100 + l, plan.rows(T), layout,
                                                    stage.pairs, T, args.niah_frac))
            train_step(probe, opt, batch, device, amp)  # warm-up (allocations, kernels)
            sync(device)
            t0 = time.time()
            for _ in range(2):
                train_step(probe, opt, batch, device, amp)
            sync(device)
            per_l[l] = (time.time() - t0) / 2
        out[si] = sum(per_l[l] * w[l] for l in w) / sum(w.values())
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True, help="catserve model directory to write")
    ap.add_argument("--ckpt", help="checkpoint file (default: <out>.ckpt.pt)")
    ap.add_argument("--resume", action="store_true", help="continue from --ckpt if it exists")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=0,
                    help="schedule length; 0 = as many as fit --minutes (timed at the start)")
    ap.add_argument("--minutes", type=float, default=8.0,
                    help="wall-clock budget of this process's training; it stops and exports then")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    ap.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's)")
    ap.add_argument("--amp", choices=["auto", "on", "off"], default="auto",
                    help="bf16 autocast on CUDA (auto: on for cuda)")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--workers", type=int, default=-1,
                    help="data loader processes (-1: 8 on cuda, 0 on cpu)")
    # task
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--curriculum",
                    default="1-2@16:0.05,1-4@32:0.1,2-8@64:0.2,4-16@128:0.35,8-16@128/256:0.3")
    ap.add_argument("--niah_frac", type=float, default=0.2)
    ap.add_argument("--eval_task", default="mqar:16:128",
                    help="the model card's task, KIND:PAIRS:LEN (recall_task.json's eval_task)")
    ap.add_argument("--eval_n", type=int, default=0,
                    help="held-out sequences per task at the end (0: 256 on cuda, 32 on cpu)")
    ap.add_argument("--chunk_weights", default="1:2,2:2,4:1,8:1,16:1")
    ap.add_argument("--warm_chunk_weights", default="1:1,2:1",
                    help="chunk-size weights of the first stage: chunks 1 and 2 only, so the "
                         "compressed path forms before large chunks can copy locally")
    # optimisation
    ap.add_argument("--batch_tokens", type=int, default=0,
                    help="tokens per batch (rows = this / length); 0: 32768 on cuda, 1024 on cpu")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min_lr_frac", type=float, default=0.1)
    ap.add_argument("--warmup_frac", type=float, default=0.03)
    ap.add_argument("--weight_decay", type=float, default=0.1)
    ap.add_argument("--proj_fx_lr_mult", type=float, default=1.0,
                    help="learning-rate multiplier of the compressor's proj_fx")
    ap.add_argument("--proj_fx_init_std", type=float, default=0.0,
                    help="init std of proj_fx (0: tools/train's 0.02)")
    # model
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--chidden", type=int, default=64)
    ap.add_argument("--clayers", type=int, default=2)
    ap.add_argument("--cheads", type=int, default=2)
    ap.add_argument("--max_positions", type=int, default=256)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"],
                    help="weights' dtype in model.safetensors")
    ap.add_argument("--log_every", type=int, default=50)
    ap.add_argument("--ckpt_every_s", type=float, default=60.0)
    ap.add_argument("--stop_after", type=int, default=0,
                    help="stop (checkpoint, export) after this many steps of this process, as an "
                         "interruption would; --resume continues the same schedule")
    ap.add_argument("--eval_at_stages", action="store_true",
                    help="held-out accuracy at every stage boundary too (costs a few seconds)")
    args = ap.parse_args(argv)

    t_start = time.time()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")
    workers = args.workers if args.workers >= 0 else (8 if device.type == "cuda" else 0)
    if not args.eval_n:
        args.eval_n = 256 if device.type == "cuda" else 32
    if not args.batch_tokens:
        args.batch_tokens = 32768 if device.type == "cuda" else 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it then
        torch.use_deterministic_algorithms(True)
    ckpt_path = args.ckpt or args.out.rstrip("/") + ".ckpt.pt"
    torch.manual_seed(args.seed)
    install_device_tables(device)

    layout = rt.Layout(args.vocab, 4)
    kind, pairs, length = args.eval_task.split(":")
    eval_task = rt.Task(kind, int(pairs), int(length))
    eval_tasks = [eval_task, rt.Task("niah", 1, int(length))]
    for t in eval_tasks:
        t.check(layout)
    for s in parse_curriculum(args.curriculum):
        if max(s.lengths) > args.max_positions:
            raise SystemExit(f"curriculum length {max(s.lengths)} > --max_positions")

    config = TT.model_config(args, layout.vocab_size)
    model = CatForCausalLM(config)
    TT.init_weights(model, args.seed, args.layers)
    if args.proj_fx_init_std:
        g = torch.Generator().manual_seed(args.seed + 1)
        w = model.model.compressor.proj_fx.weight
        with torch.no_grad():
            w.copy_(torch.randn(w.shape, generator=g) * args.proj_fx_init_std)
    model.to(device)
    opt = make_optimizer(model, args)
    n_params = sum(p.numel() for p in model.parameters())
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {dev_name}, amp {amp}, workers {workers}, torch {torch.__version__}", flush=True)
    print(f"parameters: {n_params / 1e6:.3f}M; layout {json.dumps(layout.to_dict())}", flush=True)

    step, history, elapsed_before, total, calib = 0, [], 0.0, args.steps, None
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, history, elapsed_before = ck["step"], ck["history"], ck["elapsed"]
        total = args.steps or ck["total_steps"]
        calib = ck.get("calibration")
        print(f"resumed from {ckpt_path} at step {step} of {total}", flush=True)
    if not total:
        calib = calibrate(model, args, layout, device, amp)
        plan = Plan(args, 1)
        per_step = sum(calib[i] * s.share for i, s in enumerate(plan.stages))
        reserve = 20.0 + 0.01 * args.eval_n  # final held-out evaluation and export
        budget = args.minutes * 60 - (time.time() - t_start) - reserve
        total = max(1, int(0.95 * budget / per_step))
        print(f"timed {', '.join(f'stage {i}: {1e3 * t:.1f} ms' for i, t in calib.items())} "
              f"per step -> --steps {total} fit {args.minutes} min", flush=True)

    plan = Plan(args, total)
    sched = argparse.Namespace(lr=1.0, warmup=max(1, int(args.warmup_frac * total)), steps=total,
                               min_lr_frac=args.min_lr_frac)
    loader = torch.utils.data.DataLoader(
        StepBatches(plan, layout, args.niah_frac), batch_size=None,
        sampler=range(step, total), num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=8 if workers else None)

    def save_ckpt():
        tmp = ckpt_path + ".tmp"
        os.makedirs(os.path.dirname(os.path.abspath(ckpt_path)), exist_ok=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "total_steps": total, "history": history, "calibration": calib,
                    "elapsed": elapsed_before + time.time() - t0, "args": vars(args)}, tmp)
        os.replace(tmp, ckpt_path)

    model.train()
    t0 = t_last_ckpt = time.time()
    deadline = t_start + args.minutes * 60 - (20.0 + 0.01 * args.eval_n)
    seqs = tokens = 0
    start_step = step
    stage_now = plan.stage_index(step)
    stopped = "schedule done"
    for batch in loader:
        scale = TT.lr_at(step, sched)
        for group in opt.param_groups:
            group["lr"] = args.lr * scale * group["lr_mult"]
        l, logits, loss, targets = train_step(model, opt, batch, device, amp)
        step += 1
        seqs += targets.shape[0]
        tokens += targets.numel()
        if step % args.log_every == 0 or step == total:
            m = targets != -100
            acc = float((logits[:, :targets.shape[1]].argmax(-1)[m] == targets[m]).float().mean())
            lv = float(loss.detach())
            history.append([step, l, round(lv, 4), round(acc, 4)])
            dt = time.time() - t0
            si, _, T, stage = plan.at(step - 1)
            print(f"step {step}/{total} stage {si} pairs {stage.pairs[0]}-{stage.pairs[1]} "
                  f"len {T} l={l:2d} loss {lv:.3f} answer acc {acc:.3f} lr {args.lr * scale:.2e} "
                  f"{seqs / dt:.0f} seq/s {tokens / dt:.0f} tok/s elapsed {dt / 60:.1f}m",
                  flush=True)
        if plan.stage_index(min(step, total - 1)) != stage_now:
            stage_now = plan.stage_index(min(step, total - 1))
            if args.eval_at_stages:
                print(f"held-out at step {step}: "
                      f"{heldout_accuracy(model, layout, eval_tasks, 64, device, amp)}", flush=True)
        if time.time() - t_last_ckpt > args.ckpt_every_s:
            save_ckpt()
            t_last_ckpt = time.time()
        if time.time() > deadline and step < total:
            stopped = f"--minutes {args.minutes} spent"
            break
        if args.stop_after and step - start_step >= args.stop_after and step < total:
            stopped = f"--stop_after {args.stop_after}"
            break
    save_ckpt()
    wall = elapsed_before + time.time() - t0
    print(f"stopped at step {step}/{total} ({stopped}); training wall time {wall / 60:.2f} min, "
          f"{seqs} sequences in this process", flush=True)

    t_eval = time.time()
    acc = heldout_accuracy(model, layout, eval_tasks, args.eval_n, device, amp)
    print(f"held-out accuracy (heldout seed 0, {args.eval_n} sequences, every query), per chunk "
          f"size: {json.dumps(acc)} ({time.time() - t_eval:.1f} s)", flush=True)
    meta = {"layout": layout.to_dict(), "eval_task": eval_task.to_dict(),
            "tasks": ["mqar", "niah"], "curriculum": args.curriculum,
            "niah_frac": args.niah_frac, "heldout_seeds_used": list(rt.HELDOUT_SEEDS_USED),
            "first_unused_heldout_seed": rt.FIRST_UNUSED_HELDOUT_SEED,
            "offline_heldout_accuracy": acc}
    training = {"args": vars(args), "parameters": n_params, "steps": step, "total_steps": total,
                "stopped": stopped, "wall_time_s": round(wall, 1), "device": dev_name,
                "torch": torch.__version__, "calibration_s_per_step": calib,
                "sequences_this_process": seqs, "history_tail": history[-20:],
                "offline_heldout_accuracy": acc,
                "command": "python3 tools/recall/train.py " + " ".join(
                    sys.argv[1:] if argv is None else argv)}
    export(model, args.out, args.dtype, layout, meta, training)
    print(f"exported to {args.out} ({time.time() - t_start:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
