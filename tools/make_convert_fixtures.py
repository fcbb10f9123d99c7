#!/usr/bin/env python3
"""Fixtures for the checkpoint converters (tools/convert): one tiny model per source layout.

    python3 tools/make_convert_fixtures.py           # rewrite the files below, then self-check
    python3 tools/make_convert_fixtures.py --verify  # recompute everything in memory, compare

For each layout (`official`: rajesh-lab/cat-transformer cat_transformer_adaptive.py; `fla`: the
fla-org/flash-linear-attention port) it
  1. builds a random checkpoint BY THE SOURCE'S TENSOR NAMES (written here from reading the
     authors' code, cited in tools/convert/{official,fla}.py; nothing imported from them) and
     writes it to tests/fixtures/sources/<layout>_tiny/ (with convert_args.json, the converter's
     command line arguments);
  2. runs the converter into tests/fixtures/<layout>_tiny/ (config.json, model.safetensors, the
     tiny fixture's tokenizer) and writes golden.safetensors there with tools/catref, configured
     by that config.json, in the format of tools/make_fixtures.py (docs/FIXTURES.md);
  3. self-checks: a forward written from the SOURCE layout (source names, log2(l)-indexed
     adaptive rows, fused wqkv, the source's epsilons) gives the same logits as catref on the
     converted model for every chunk size, and reading the source as a torch.save file converts
     to the same bits.

The configurations make every converter decision visible in the logits: large, distinct
epsilons (decoder 0.1, compressor 0.3; fla's q/k norm keeps its fixed 1e-5), GQA in the decoder
and (official) in the compressor, a compressor MLP width and head count of its own, compressor
q/k/v biases (fla), a padded vocabulary (official) and an untied head.
Needs torch, numpy, safetensors.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
from catref.model import load_model  # noqa: E402
from convert import cli  # noqa: E402
from convert.safetensors_io import Tensor, read, write  # noqa: E402
import make_fixtures  # noqa: E402

REPO = os.path.dirname(TOOLS)
FIXTURES = os.path.join(REPO, "tests", "fixtures")
TOKENIZER_DIR = os.path.join(FIXTURES, "tiny")
P = 64  # max_position_embeddings: keeps golden.safetensors under 2 MB with a 512-row vocabulary
SEQUENCES = [("short", 5), ("odd", 37), ("exact", 48), ("max", P - 1)]
TOKEN_RANGE = 384  # the tiny tokenizer's size; ids drawn from [4, 384)

OFFICIAL = dict(vocab=384, D=64, H=4, L=2, I=256, Dc=32, Hc=4, Lc=2, Ic=96, M=16, kv=2, kvc=2,
                qk_norm=True, norm_eps=0.1, compressor_norm_eps=0.3, rope=10000.0, seed=2001)
OFFICIAL_ARGS = ["--n-head", "4", "--compressor-n-head", "4", "--norm-eps", "0.1",
                 "--compressor-norm-eps", "0.3", "--min-chunk-size", "1"]
FLA_CONFIG = {
    "model_type": "cat", "architectures": ["CATForCausalLM"], "vocab_size": 384,
    "hidden_size": 64, "num_hidden_layers": 2, "num_heads": 4, "num_kv_heads": 2,
    "max_chunk_size": 16, "dim_fx": 64, "compressor_hidden_size": 32, "compressor_num_layers": 2,
    "compressor_num_heads": 2, "qkv_bias": True, "qk_norm": True, "rope_theta": 10000.0,
    "max_position_embeddings": P, "pad_to_multiple_of": 512, "hidden_ratio": 4,
    "intermediate_size": None, "hidden_act": "swish", "initializer_range": 0.02,
    "elementwise_affine": True, "norm_eps": 0.1, "use_cache": False, "pad_token_id": 0,
    "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False, "fuse_norm": True,
    "fuse_swiglu": True, "fuse_cross_entropy": True, "fuse_linear_cross_entropy": False,
    "train_chunk_size_schedule": "power_of_2", "min_train_chunk_size": 1,
    "torch_dtype": "bfloat16", "transformers_version": "4.57.0",
}
FLA_SEED = 2002


# ----------------------------------------------------------------------------------------------
# Random checkpoints by the sources' names


class Rng:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, shape, std):
        return torch.randn(shape, generator=self.g) * std

    def linear(self, out, inp):
        return self.normal((out, inp), 1 / math.sqrt(inp))

    def norm(self, n):
        return 1 + self.normal((n,), 0.1)


def official_state(c: dict) -> dict[str, torch.Tensor]:
    """cat_transformer_adaptive.py (HEAD) + transformer.py names, f32."""
    r = Rng(c["seed"])
    V = 256 * math.ceil(c["vocab"] / 256)  # padded_vocab_size
    s = {}

    def block(prefix, width, heads, kv, inter):
        hd = width // heads
        s[prefix + "attention.wqkv.weight"] = r.linear((heads + 2 * kv) * hd, width)
        s[prefix + "attention.wo.weight"] = r.linear(width, heads * hd)
        if c["qk_norm"]:
            s[prefix + "attention.q_norm.weight"] = r.norm(hd)
            s[prefix + "attention.k_norm.weight"] = r.norm(hd)
        s[prefix + "feed_forward.fc_1.weight"] = r.linear(inter, width)
        s[prefix + "feed_forward.fc_2.weight"] = r.linear(inter, width)
        s[prefix + "feed_forward.proj.weight"] = r.linear(width, inter)
        s[prefix + "attention_norm.weight"] = r.norm(width)
        s[prefix + "ffn_norm.weight"] = r.norm(width)

    Dc, D, M = c["Dc"], c["D"], c["M"]
    powers = int(math.log2(M)) + 1
    s["f.wte.weight"] = r.normal((V, Dc), 0.1)
    s["f.pos_tokens.weight"] = r.normal((P, Dc), 0.1)
    s["f.adaptive_token.weight"] = r.normal((powers, Dc), 0.1)
    for i in range(c["Lc"]):
        block(f"f.layers.{i}.", Dc, c["Hc"], c["kvc"], c["Ic"])
    s["f.norm.weight"] = r.norm(Dc)
    s["f.proj_fx.weight"] = r.linear(D, M * Dc)
    s["dummy_fx.weight"] = r.normal((powers, D), 0.1)
    s["wte.weight"] = r.normal((V, D), 0.1)
    for i in range(c["L"]):
        block(f"layers.{i}.", D, c["H"], c["kv"], c["I"])
    s["output.weight"] = r.linear(V, D)
    s["seperator.weight"] = r.normal((1, D), 0.1)
    s["norm.weight"] = r.norm(D)
    return s


def fla_state(c: dict, seed: int) -> dict[str, torch.Tensor]:
    """modeling_cat.py names; bf16 weights, the decoder's q/k norms f32 (built with
    dtype=float32), plus the schedule buffer."""
    r = Rng(seed)
    V, D, Dc, M = c["vocab_size"], c["hidden_size"], c["compressor_hidden_size"], c["max_chunk_size"]
    H, kv, Hc = c["num_heads"], c["num_kv_heads"], c["compressor_num_heads"]
    hd = D // H
    mlp = lambda w: 256 * math.ceil(int(w * c["hidden_ratio"] * 2 / 3) / 256)  # noqa: E731
    s = {}

    def gated_mlp(prefix, width):
        s[prefix + "mlp.gate_proj.weight"] = r.linear(mlp(width), width)
        s[prefix + "mlp.up_proj.weight"] = r.linear(mlp(width), width)
        s[prefix + "mlp.down_proj.weight"] = r.linear(width, mlp(width))

    s["model.compressor.wte.weight"] = r.normal((V, Dc), 0.1)
    s["model.compressor.pos_tokens.weight"] = r.normal((P, Dc), 0.1)
    s["model.compressor.adaptive_tokens.weight"] = r.normal((M + 1, Dc), 0.1)
    for i in range(c["compressor_num_layers"]):
        p = f"model.compressor.layers.{i}."
        s[p + "attn_norm.weight"] = r.norm(Dc)
        for n in "qkv":
            s[p + f"{n}_proj.weight"] = r.linear(Dc, Dc)
            s[p + f"{n}_proj.bias"] = r.normal((Dc,), 0.1)
        s[p + "o_proj.weight"] = r.linear(Dc, Dc)
        s[p + "mlp_norm.weight"] = r.norm(Dc)
        gated_mlp(p, Dc)
    s["model.compressor.norm.weight"] = r.norm(Dc)
    s["model.compressor.proj_fx.weight"] = r.linear(D, M * Dc)
    s["model.embeddings.weight"] = r.normal((V, D), 0.1)
    s["model.separator.weight"] = r.normal((1, D), 0.1)
    s["model.adaptive_token.weight"] = r.normal((M + 1, D), 0.1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        s[p + "attn_norm.weight"] = r.norm(D)
        s[p + "attn.q_proj.weight"] = r.linear(H * hd, D)
        s[p + "attn.k_proj.weight"] = r.linear(kv * hd, D)
        s[p + "attn.v_proj.weight"] = r.linear(kv * hd, D)
        for n, rows in (("q", H * hd), ("k", kv * hd), ("v", kv * hd)):
            s[p + f"attn.{n}_proj.bias"] = r.normal((rows,), 0.1)
        s[p + "attn.o_proj.weight"] = r.linear(D, H * hd)
        s[p + "attn.q_norm.weight"] = r.norm(hd)
        s[p + "attn.k_norm.weight"] = r.norm(hd)
        s[p + "mlp_norm.weight"] = r.norm(D)
        gated_mlp(p, D)
    s["model.norm.weight"] = r.norm(D)
    s["lm_head.weight"] = r.linear(V, D)
    out = {k: (v if k.endswith(("q_norm.weight", "k_norm.weight")) and ".layers." in k
               and "compressor" not in k else v.to(torch.bfloat16)) for k, v in s.items()}
    out["model._train_chunk_size_step"] = torch.tensor(7, dtype=torch.long)
    return out


# ----------------------------------------------------------------------------------------------
# Forwards written from the source layouts (self-check only)


def rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, pos, theta):
    """Rotate-half RoPE over the whole head (transformer.py build_rope_cache / fla rotary)."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = pos.double()[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()
    rot = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)
    return x * cos + rot * sin


def attend(q, k, v, mask):
    """q [T,H,hd], k/v [T,Hkv,hd]; query head h reads kv head h // group (SDPA enable_gqa)."""
    g = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hts,shd->thd", s.softmax(-1), v)


def source_forward(layout: str, s: dict, hp: dict, tokens: list[int], l: int) -> torch.Tensor:
    """Logits [N, V]; row i predicts t_{i+1} (the sources' convention)."""
    s = {k: v.float() for k, v in s.items()}
    if layout == "official":
        D, Dc, M, theta = hp["D"], hp["Dc"], hp["M"], hp["rope"]
        cfg = {"dec": (hp["H"], hp["norm_eps"], hp["norm_eps"]),
               "comp": (hp["Hc"], hp["compressor_norm_eps"], hp["compressor_norm_eps"])}

        def block(x, prefix, kind, pos, mask):
            H, eps, qk_eps = cfg[kind]
            hd = x.shape[1] // H
            y = rms(x, s[prefix + "attention_norm.weight"], eps)
            qkv = y @ s[prefix + "attention.wqkv.weight"].T
            kv = (qkv.shape[1] - H * hd) // 2
            q, k, v = qkv.split([H * hd, kv, kv], -1)
            q, k, v = q.view(len(x), H, hd), k.view(len(x), -1, hd), v.view(len(x), -1, hd)
            if prefix + "attention.q_norm.weight" in s:
                q = rms(q, s[prefix + "attention.q_norm.weight"], qk_eps)
                k = rms(k, s[prefix + "attention.k_norm.weight"], qk_eps)
            q, k = rope(q.transpose(0, 1), pos, theta), rope(k.transpose(0, 1), pos, theta)
            a = attend(q.transpose(0, 1), k.transpose(0, 1), v, mask).reshape(len(x), -1)
            h = x + a @ s[prefix + "attention.wo.weight"].T
            y = rms(h, s[prefix + "ffn_norm.weight"], eps)
            f = F.silu(y @ s[prefix + "feed_forward.fc_1.weight"].T) * (
                y @ s[prefix + "feed_forward.fc_2.weight"].T)
            return h + f @ s[prefix + "feed_forward.proj.weight"].T

        n_comp = len({k.split(".")[2] for k in s if k.startswith("f.layers.")})
        n_dec = len({k.split(".")[1] for k in s if k.startswith("layers.")})
        p2 = int(math.log2(l))

        def compress(ids, k):
            x = torch.cat([s["f.adaptive_token.weight"][p2:p2 + 1],
                           s["f.pos_tokens.weight"][k:k + 1], s["f.wte.weight"][ids]])
            for i in range(n_comp):
                x = block(x, f"f.layers.{i}.", "comp", torch.arange(l + 2), None)
            x = rms(x, s["f.norm.weight"], hp["compressor_norm_eps"])[2:].reshape(-1)
            w = F.interpolate(s["f.proj_fx.weight"][None, None], size=(D, l * Dc),
                              mode="bilinear")[0, 0]
            return w @ x

        first, sep, emb = s["dummy_fx.weight"][p2], s["seperator.weight"][0], s["wte.weight"]
        head, final_eps, final_norm = s["output.weight"], hp["norm_eps"], s["norm.weight"]
        dec_block = lambda x, i, pos, mask: block(x, f"layers.{i}.", "dec", pos, mask)  # noqa
    else:
        c = hp
        theta, D, Dc, M = c["rope_theta"], c["hidden_size"], c["compressor_hidden_size"], c[
            "max_chunk_size"]
        eps = c["norm_eps"]

        def attn_mlp(x, p, attn, H, qk_norm, pos, mask):
            hd = x.shape[1] // H
            y = rms(x, s[p + "attn_norm.weight"], eps)
            q, k, v = ((y @ s[p + f"{attn}{n}_proj.weight"].T + s[p + f"{attn}{n}_proj.bias"])
                       .view(len(x), -1, hd) for n in "qkv")
            if qk_norm:
                q = rms(q, s[p + "attn.q_norm.weight"], 1e-5)  # fla RMSNorm default eps
                k = rms(k, s[p + "attn.k_norm.weight"], 1e-5)
            q, k = rope(q.transpose(0, 1), pos, theta), rope(k.transpose(0, 1), pos, theta)
            a = attend(q.transpose(0, 1), k.transpose(0, 1), v, mask).reshape(len(x), -1)
            h = x + a @ s[p + f"{attn}o_proj.weight"].T
            y = rms(h, s[p + "mlp_norm.weight"], eps)
            f = F.silu(y @ s[p + "mlp.gate_proj.weight"].T) * (y @ s[p + "mlp.up_proj.weight"].T)
            return h + f @ s[p + "mlp.down_proj.weight"].T

        def compress(ids, k):
            pre = "model.compressor."
            x = torch.cat([s[pre + "adaptive_tokens.weight"][l:l + 1],
                           s[pre + "pos_tokens.weight"][k:k + 1], s[pre + "wte.weight"][ids]])
            for i in range(c["compressor_num_layers"]):
                x = attn_mlp(x, f"{pre}layers.{i}.", "", c["compressor_num_heads"], False,
                             torch.arange(l + 2), None)
            x = rms(x, s[pre + "norm.weight"], eps)[2:].reshape(-1)
            w = s[pre + "proj_fx.weight"]
            if l != M:
                w = F.interpolate(w[None, None], size=(D, l * Dc), mode="bilinear",
                                  align_corners=False)[0, 0]
            return w @ x

        first = s["model.adaptive_token.weight"][l]
        sep, emb = s["model.separator.weight"][0], s["model.embeddings.weight"]
        head, final_eps, final_norm = s["lm_head.weight"], eps, s["model.norm.weight"]
        n_dec = c["num_hidden_layers"]
        dec_block = lambda x, i, pos, mask: attn_mlp(  # noqa: E731
            x, f"model.layers.{i}.", "attn.", c["num_heads"], c["qk_norm"], pos, mask)

    N = len(tokens)
    K = -(-N // l)
    ids = torch.tensor(tokens + [0] * (K * l - N))
    fx = [compress(ids[j * l:(j + 1) * l], j) for j in range(K)]
    rows, pos = [], []
    for j in range(K):
        rows += [first if j == 0 else fx[j - 1], sep] + list(emb[ids[j * l:(j + 1) * l]])
        pos += list(range(l + 2))
    rows += [fx[-1], sep]
    pos += [0, 1]
    x, T, B = torch.stack(rows), len(rows), l + 2
    qi, ki = torch.arange(T)[:, None], torch.arange(T)[None]
    mask = (ki <= qi) & ((ki % B == 0) | (ki // B == qi // B))
    for i in range(n_dec):
        x = dec_block(x, i, torch.tensor(pos), mask)
    x = rms(x, final_norm, final_eps)
    # Outputs: block 0's tokens but its last, S and tokens but the last of blocks 1.., final S.
    idx = [2 + r for r in range(l - 1)]
    idx += [j * B + 1 + r for j in range(1, K) for r in range(l)]
    idx.append(T - 1)
    return (x[idx] @ head.T)[:N]


# ----------------------------------------------------------------------------------------------
# Main


def sources() -> dict:
    return {
        "official": dict(state=official_state(OFFICIAL), hp=OFFICIAL,
                         args=["official", "--state-dict", "{src}/state_dict.safetensors"]
                         + OFFICIAL_ARGS + ["--tokenizer", "{tokenizer}", "--out", "{out}"]),
        "fla": dict(state=fla_state(FLA_CONFIG, FLA_SEED), hp=FLA_CONFIG,
                    args=["fla", "--src", "{src}", "--tokenizer", "{tokenizer}", "--out", "{out}"]),
    }


def write_source(layout: str, spec: dict, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    state = {k: v.contiguous() for k, v in spec["state"].items()}
    if layout == "official":
        save_file(state, os.path.join(directory, "state_dict.safetensors"))
    else:
        save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        make_fixtures.write_json(os.path.join(directory, "config.json"), spec["hp"])
    make_fixtures.write_json(os.path.join(directory, "convert_args.json"), spec["args"])


def run_converter(args: list[str], src: str, out: str) -> None:
    tokenizer = os.path.join(TOKENIZER_DIR, "tokenizer.model")
    argv = [a.format(src=src, out=out, tokenizer=tokenizer) for a in args]
    if cli.main(argv) != 0:
        raise SystemExit(f"converter failed: {argv}")


def tokens_for(seed: int) -> dict[str, list[int]]:
    out = {}
    for index, (name, n) in enumerate(SEQUENCES):
        rng = random.Random(seed * 100 + index)
        out[name] = [rng.randrange(4, TOKEN_RANGE) for _ in range(n)]
    return out


def self_check(layout: str, spec: dict, model, seqs, src_dir: str, out_dir: str) -> list[str]:
    failures = []
    worst = 0.0
    for name, tokens in seqs.items():
        for l in make_fixtures.CHUNK_SIZES:
            ours = model.logits_all(tokens, l)[1:]
            theirs = source_forward(layout, spec["state"], spec["hp"], tokens, l)
            err = (ours - theirs).abs().max().item()
            worst = max(worst, err)
            if not err <= 1e-4:
                failures.append(f"{layout} {name} l={l}: source forward differs by {err:.3g}")
    print(f"    {layout}: source-layout forward vs catref on the converted model: "
          f"max |diff| {worst:.2g}")
    if layout == "official":
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(spec["state"], os.path.join(tmp, "state_dict.pt"))
            args = [a.replace("state_dict.safetensors", "state_dict.pt") for a in spec["args"]]
            run_converter(args, tmp, os.path.join(tmp, "out"))
            a, b = read(os.path.join(tmp, "out", "model.safetensors")), read(
                os.path.join(out_dir, "model.safetensors"))
            same = sorted(a) == sorted(b) and all(
                a[k].dtype == b[k].dtype and np.array_equal(a[k].array, b[k].array) for k in a)
            if not same:
                failures.append("official: the torch.save source converts differently")
    return failures


def build(layout: str, spec: dict, root: str) -> tuple[str, str]:
    src = os.path.join(root, "sources", f"{layout}_tiny")
    out = os.path.join(root, f"{layout}_tiny")
    write_source(layout, spec, src)
    run_converter(spec["args"], src, out)
    shutil.copyfile(os.path.join(TOKENIZER_DIR, "tokenizer_golden.json"),
                    os.path.join(out, "tokenizer_golden.json"))
    model = load_model(out)
    seed = spec["hp"]["seed"] if layout == "official" else FLA_SEED
    seqs = tokens_for(seed)
    save_file(make_fixtures.golden_tensors(model, seqs), os.path.join(out, "golden.safetensors"),
              metadata=make_fixtures.golden_metadata(f"{layout}_tiny", model, seqs))
    for d in (src, out):
        for f in os.listdir(d):
            os.chmod(os.path.join(d, f), 0o644)
    return src, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verify", action="store_true",
                        help="rebuild in a temporary directory and compare with the committed files")
    args = parser.parse_args()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = tmp if args.verify else FIXTURES
        for layout, spec in sources().items():
            print(f"{layout}: writing {os.path.relpath(os.path.join(root, layout + '_tiny'), tmp if args.verify else REPO)}")
            src, out = build(layout, spec, root)
            failures += self_check(layout, spec, load_model(out), tokens_for(
                spec["hp"]["seed"] if layout == "official" else FLA_SEED), src, out)
            if args.verify:
                for rel in (f"sources/{layout}_tiny", f"{layout}_tiny"):
                    for f in sorted(os.listdir(os.path.join(tmp, rel))):
                        fresh = open(os.path.join(tmp, rel, f), "rb").read()
                        committed_path = os.path.join(FIXTURES, rel, f)
                        if not os.path.exists(committed_path):
                            failures.append(f"{rel}/{f} is not committed")
                        elif f == "golden.safetensors":
                            g, h = load_file(committed_path), load_file(os.path.join(tmp, rel, f))
                            err = max((g[k] - h[k]).abs().max().item() for k in g if k in h)
                            if sorted(g) != sorted(h) or err > 1e-5:
                                failures.append(f"{rel}/{f} differs (max |diff| {err:.3g})")
                        elif open(committed_path, "rb").read() != fresh:
                            failures.append(f"{rel}/{f} differs from a fresh build")
    return make_fixtures.report(failures)


if __name__ == "__main__":
    sys.exit(main())
