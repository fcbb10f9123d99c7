#!/usr/bin/env python3
"""Regenerates every file in tests/fixtures/ deterministically, then self-checks the reference.

    python3 tools/make_fixtures.py            # rewrite tests/fixtures/{tiny,tiny_gqa}/ + self-check
    python3 tools/make_fixtures.py --verify   # recompute golden from the committed files, compare,
                                              # write nothing (exit 1 on any mismatch)
    python3 tools/make_fixtures.py --skip-checks   # regenerate only

Needs torch, numpy, safetensors and sentencepiece (pip). What the files contain, their tensor names
and the logit row convention are documented in docs/FIXTURES.md.

The self-check proves, before the C++ engine relies on it, that:
  * a loop-based incremental decoder (tools/catref/incremental.py, following docs/CAT_MODEL.md's
    "Incremental decoding" rules: compressed + local cache, prefill of m*l + r tokens, then one
    token at a time) reproduces every logits_all row, for every chunk size and several prefill
    lengths: to 1e-5 in fp32 and to 1e-9 in fp64;
  * padding never changes real rows (prefixes, and a different pad id);
  * the batched training forward equals per-sequence logits_all, and its loss backpropagates;
  * torch's bilinear resize of proj_fx equals docs/CAT_MODEL.md's explicit column formula;
  * the fixtures are sensitive: changing one early token moves later rows through fx;
  * the tokenizer round-trips every test string (byte fallback included).
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import sys

import numpy as np
import sentencepiece as spm
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from catref.incremental import IncrementalDecoder  # noqa: E402
from catref.model import CatConfig, load_model, random_model, save_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")

VOCAB_SIZE = 384
CHUNK_SIZES = [1, 2, 4, 8, 16]
SEQUENCES = [("short", 5), ("odd", 37), ("exact", 48), ("max", 127)]

MODELS = {
    "tiny": dict(
        seed=1001, dtype="f32",
        config=CatConfig(
            vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_heads=4,
            num_kv_heads=4, compressor_hidden_size=32, compressor_num_layers=1,
            compressor_num_heads=2, max_chunk_size=16, min_train_chunk_size=1,
            max_position_embeddings=128, rope_theta=10000.0, norm_eps=1e-6, hidden_ratio=4,
            intermediate_size=None, qk_norm=False, qkv_bias=False, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)),
    "tiny_gqa": dict(
        seed=1002, dtype="bf16",
        config=CatConfig(
            vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_heads=4,
            num_kv_heads=2, compressor_hidden_size=32, compressor_num_layers=2,
            compressor_num_heads=2, max_chunk_size=16, min_train_chunk_size=1,
            max_position_embeddings=128, rope_theta=500000.0, norm_eps=1e-5, hidden_ratio=4,
            intermediate_size=96, qk_norm=True, qkv_bias=True, pad_token_id=0,
            bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)),
}

TOKENIZER_STRINGS = [
    "Hello, world!",
    "The cat compresses the chunk and the decoder attends.",
    "naïve café — 東京",
    "🐈 cats 😺 🚀",
    "  two  spaces ",
    " leading space",
    "line1\nline2\ttab",
    "12345 67.89",
    "日本語のモデル",
    "Ünïcödé ÀÉÎ",
    "<s> is plain text here </s>",
    "a",
    "",
]

ROW_CONVENTION = (
    "logits.<seq>.l<l> has N+1 rows; row i is the prediction of token i (i = 0..N): when i % l == 0 "
    "it is the decoder output at the separator S of block i//l (block N/l = the trailing [fx, S] "
    "pair when i == N and N % l == 0), otherwise the output at token t_{i-1}. Row 0 predicts t_0 "
    "from F_0 = adaptive_token[l] alone; row N predicts the token after the sequence.")


# ----------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_corpus() -> list[str]:
    """A small deterministic corpus: English-ish sentences, some accents, CJK, digits."""
    words = (
        "the a cat cats dog model chunk token tokens compress attend transformer server request "
        "memory cache page pages batch step decode prefill sample stream reply query key value "
        "head layer norm weight bias rope position block separator vector width size small large "
        "fast slow recall quality throughput latency kernel thread queue policy preempt degrade "
        "admit running waiting finished cancel deadline error status metric counter histogram "
        "gauge label scrape and or not with without over under into from to of in on at by for "
        "is are was were be been has have had will would can could should may might must this "
        "that these those it its they them their we our you your he she his her one two three "
        "four five six seven eight nine ten").split()
    foreign = ("naïve café résumé über straße Ärger façade niño señor déjà vu crème brûlée "
               "東京 日本語 猫 モデル").split()
    rng = random.Random(1234)
    lines = []
    for _ in range(4000):
        ws = [rng.choice(foreign) if rng.random() < 0.06 else rng.choice(words)
              for _ in range(rng.randint(4, 14))]
        if rng.random() < 0.3:
            ws[0] = ws[0].capitalize()
        s = " ".join(ws)
        r = rng.random()
        if r < 0.15:
            s += f" {rng.randint(0, 99999)}"
        if r > 0.9:
            s = f'"{s}"'
        s += rng.choice([".", ".", ".", "!", "?", ",", ";", ":"])
        if rng.random() < 0.05:
            s += " (" + rng.choice(words) + ")"
        if rng.random() < 0.05:
            s += " — " + rng.choice(words)
        lines.append(s)
    return lines


def train_tokenizer() -> bytes:
    """SentencePiece BPE, Llama-style: identity normalization, dummy prefix, byte fallback."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=buf, vocab_size=VOCAB_SIZE,
        model_type="bpe", byte_fallback=True, pad_id=0, bos_id=1, eos_id=2, unk_id=3,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, character_coverage=0.995,
        num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    return buf.getvalue()


def tokenizer_golden(model_proto: bytes) -> dict:
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    cases = []
    for text in TOKENIZER_STRINGS:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "pieces": [sp.id_to_piece(i) for i in ids],
                      "decoded": sp.decode(ids)})
    return {
        "description": "Token ids from the python sentencepiece library for tokenizer.model "
                       "(encode without BOS/EOS), and decode(ids).",
        "sentencepiece_version": spm.__version__,
        "vocab_size": sp.get_piece_size(),
        "special_ids": {"pad": sp.pad_id(), "bos": sp.bos_id(), "eos": sp.eos_id(),
                        "unk": sp.unk_id()},
        "options": {"model_type": "bpe", "byte_fallback": True, "normalization": "identity",
                    "add_dummy_prefix": True, "remove_extra_whitespaces": False,
                    "split_digits": True},
        "cases": cases,
    }


# ----------------------------------------------------------------------------------------------
# Golden logits


def sequence_tokens(model_seed: int) -> dict[str, list[int]]:
    out = {}
    for index, (name, n) in enumerate(SEQUENCES):
        rng = random.Random(model_seed * 100 + index)
        out[name] = [rng.randrange(4, VOCAB_SIZE) for _ in range(n)]
    return out


def golden_tensors(model, seqs: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, tokens in seqs.items():
        tensors[f"tokens.{name}"] = torch.tensor(tokens, dtype=torch.int32)
        for l in CHUNK_SIZES:
            tensors[f"logits.{name}.l{l}"] = model.logits_all(tokens, l).float().contiguous()
    with torch.no_grad():
        for l in CHUNK_SIZES:
            tensors[f"proj_fx.l{l}"] = model.resized_proj_fx(l).float().contiguous()
    return tensors


def golden_metadata(model_name: str, model, seqs) -> dict[str, str]:
    c = model.config
    description = {
        "schema": "catserve-golden-v1",
        "generator": "tools/make_fixtures.py",
        "model": model_name,
        "row_convention": ROW_CONVENTION,
        "chunk_sizes": CHUNK_SIZES,
        "sequences": {name: len(t) for name, t in seqs.items()},
        "tensors": {
            "tokens.<seq>": "int32 [N], token ids in [4, vocab_size)",
            "logits.<seq>.l<l>": f"float32 [N+1, {c.vocab_size}]",
            "proj_fx.l<l>": f"float32 [{c.hidden_size}, l*{c.compressor_hidden_size}], "
                            "bilinear resize of proj_fx (align_corners=False); l == "
                            f"{c.max_chunk_size} is proj_fx itself",
        },
        "weights": "computed from model.safetensors upcast to float32",
        "padding": "pad_token_id appended up to a multiple of l; never changes real rows",
        "torch_version": torch.__version__,
    }
    return {"catserve": json.dumps(description)}


# ----------------------------------------------------------------------------------------------
# Self-checks


class Checks:
    def __init__(self):
        self.failures = []

    def close(self, what: str, got: torch.Tensor, want: torch.Tensor, tol: float):
        err = (got - want).abs().max().item() if got.numel() else 0.0
        if not (got.shape == want.shape and err <= tol):
            self.failures.append(f"{what}: max |diff| {err:.3g} > {tol:g} (shapes "
                                 f"{tuple(got.shape)} vs {tuple(want.shape)})")
        return err

    def true(self, what: str, ok: bool):
        if not ok:
            self.failures.append(what)


def prefill_lengths(n: int, l: int) -> list[int]:
    """Empty prompt, one chunk plus one token, a middle split, one short of and exactly n."""
    return sorted({p for p in (0, l + 1, n // 2, n - 1, n) if 0 <= p <= n})


def check_incremental(checks: Checks, model, seqs, tol: float, label: str) -> float:
    worst = 0.0
    for name, tokens in seqs.items():
        for l in CHUNK_SIZES:
            full = model.logits_all(tokens, l)
            for p in prefill_lengths(len(tokens), l):
                decoder = IncrementalDecoder(model, l)
                rows = [decoder.prefill(tokens[:p])]
                rows += [decoder.step(t) for t in tokens[p:]]
                err = checks.close(f"{label} incremental {name} l={l} prefill={p}",
                                   torch.stack(rows), full[p:], tol)
                worst = max(worst, err)
                n = len(tokens)
                want_cache = (1 + n // l, 1 + n % l)
                checks.true(f"{label} cache entries {name} l={l}: {decoder.cache_entries()} "
                            f"!= {want_cache}", decoder.cache_entries() == want_cache)
    return worst


def check_padding(checks: Checks, model, seqs) -> None:
    tokens = seqs["max"]
    for l in CHUNK_SIZES:
        full = model.logits_all(tokens, l)
        for n in (1, 3, l - 1, l + 1, 37, 50, 126):
            if 0 < n <= len(tokens):
                checks.close(f"prefix n={n} l={l}", model.logits_all(tokens[:n], l),
                             full[:n + 1], 1e-5)
        odd = seqs["odd"]
        checks.close(f"pad id l={l}", model.logits_all(odd, l, pad_id=VOCAB_SIZE - 1),
                     model.logits_all(odd, l), 1e-5)


def check_batched_forward(checks: Checks, model, seqs) -> None:
    rng = random.Random(7)
    batch = [seqs["exact"]] + [[rng.randrange(4, VOCAB_SIZE) for _ in range(48)] for _ in range(2)]
    ids = torch.tensor(batch, dtype=torch.long)
    for l in CHUNK_SIZES:
        with torch.no_grad():
            logits = model(ids, l)
        for b, tokens in enumerate(batch):
            checks.close(f"batched row b={b} l={l}", logits[b], model.logits_all(tokens, l), 1e-5)
    model.zero_grad()
    _, loss = model(ids, 4, targets=ids)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    checks.true("loss is finite", bool(torch.isfinite(loss)))
    checks.true("every parameter gets a gradient",
                all(g is not None and g.abs().sum() > 0 for g in grads))
    model.zero_grad(set_to_none=True)


def check_proj_fx_formula(checks: Checks, model) -> None:
    """docs/CAT_MODEL.md: column x reads s = (x+0.5)*(M/l) - 0.5 clamped at 0, x0 = floor(s),
    x1 = min(x0+1, M*Dc-1), weight s - x0."""
    c = model.config
    w = model.model.compressor.proj_fx.weight.detach().double().numpy()
    for l in CHUNK_SIZES:
        width = l * c.compressor_hidden_size
        s = np.maximum((np.arange(width) + 0.5) * (c.max_chunk_size / l) - 0.5, 0.0)
        x0 = np.floor(s).astype(np.int64)
        x1 = np.minimum(x0 + 1, w.shape[1] - 1)
        lam = s - x0
        want = w[:, x0] * (1 - lam) + w[:, x1] * lam
        checks.close(f"proj_fx formula l={l}", model.resized_proj_fx(l).detach().double(),
                     torch.from_numpy(want), 1e-6)


def check_sensitivity(checks: Checks, model, seqs) -> None:
    """Changing t_0 must move rows of later chunks (which see t_0 only through fx) clearly."""
    tokens = seqs["exact"]
    changed = [tokens[0] % (VOCAB_SIZE - 5) + 5] + tokens[1:]
    for l in CHUNK_SIZES:
        a, b = model.logits_all(tokens, l), model.logits_all(changed, l)
        later = (a[l + 1:] - b[l + 1:]).abs().max().item()
        checks.true(f"sensitivity l={l}: later rows moved only {later:.3g}", later > 1e-2)
        checks.true(f"row 0 must not depend on tokens (l={l})", torch.equal(a[0], b[0]))


def check_tokenizer(checks: Checks, model_proto: bytes) -> None:
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    checks.true("tokenizer vocab size", sp.get_piece_size() == VOCAB_SIZE)
    for text in TOKENIZER_STRINGS:
        checks.true(f"tokenizer round trip {text!r}", sp.decode(sp.encode(text)) == text)
    checks.true("emoji uses byte fallback",
                any(sp.is_byte(i) for i in sp.encode("🐈")))


def self_check(model, seqs, model_proto: bytes) -> list[str]:
    checks = Checks()
    worst32 = check_incremental(checks, model, seqs, 1e-5, "fp32")
    model64 = copy.deepcopy(model).double()
    subset = {k: seqs[k] for k in ("short", "odd")}
    worst64 = check_incremental(checks, model64, subset, 1e-9, "fp64")
    check_padding(checks, model, seqs)
    check_batched_forward(checks, model, seqs)
    check_proj_fx_formula(checks, model)
    check_sensitivity(checks, model, seqs)
    check_tokenizer(checks, model_proto)
    print(f"    incremental vs logits_all: max |diff| fp32 {worst32:.2g}, fp64 {worst64:.2g}")
    return checks.failures


# ----------------------------------------------------------------------------------------------
# Main


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def regenerate(skip_checks: bool) -> int:
    torch.manual_seed(0)
    model_proto = train_tokenizer()
    failures = []
    for name, spec in MODELS.items():
        directory = os.path.join(FIXTURES, name)
        print(f"{name}: writing {os.path.relpath(directory, REPO)}")
        save_model(random_model(spec["config"], spec["seed"], spec["dtype"]), directory,
                   spec["dtype"])
        model = load_model(directory)  # golden comes from the files as committed
        with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
            f.write(model_proto)
        write_json(os.path.join(directory, "tokenizer_golden.json"), tokenizer_golden(model_proto))
        seqs = sequence_tokens(spec["seed"])
        save_file(golden_tensors(model, seqs), os.path.join(directory, "golden.safetensors"),
                  metadata=golden_metadata(name, model, seqs))
        for file in os.listdir(directory):
            os.chmod(os.path.join(directory, file), 0o644)  # safetensors writes 0600
        if not skip_checks:
            failures += [f"{name}: {f}" for f in self_check(model, seqs, model_proto)]
    return report(failures)


def verify() -> int:
    failures = []
    for name in MODELS:
        directory = os.path.join(FIXTURES, name)
        model = load_model(directory)
        golden = load_file(os.path.join(directory, "golden.safetensors"))
        seqs = {k[len("tokens."):]: v.tolist() for k, v in golden.items() if k.startswith("tokens.")}
        fresh = golden_tensors(model, seqs)
        checks = Checks()
        checks.true(f"{name}: tensor names differ", sorted(fresh) == sorted(golden))
        for key, want in golden.items():
            if key in fresh:
                checks.close(f"{name}: {key}", fresh[key].double(), want.double(), 1e-5)
        with open(os.path.join(directory, "tokenizer.model"), "rb") as f:
            proto = f.read()
        with open(os.path.join(directory, "tokenizer_golden.json"), encoding="utf-8") as f:
            checks.true(f"{name}: tokenizer_golden.json differs",
                        json.load(f)["cases"] == tokenizer_golden(proto)["cases"])
        failures += checks.failures
        print(f"{name}: verified {len(golden)} tensors")
    return report(failures)


def report(failures: list[str]) -> int:
    for f in failures:
        print("FAIL", f)
    print("self-check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--verify", action="store_true",
                        help="recompute golden from committed files and compare; write nothing")
    parser.add_argument("--skip-checks", action="store_true", help="regenerate without self-check")
    args = parser.parse_args()
    return verify() if args.verify else regenerate(args.skip_checks)


if __name__ == "__main__":
    sys.exit(main())
