#!/usr/bin/env python3
"""Synthetic recall tasks for CAT models, in token ids of a model directory's vocabulary.

Pure Python (no numpy, no PyTorch): the same code makes training rows (tools/recall/train.py),
held-out cases (tools/recall/eval_daemon.py) and the files a checker sends.

    python3 tools/recall/task.py layout --model_dir models/cat-recall
    python3 tools/recall/task.py cases --model_dir models/cat-recall --kind mqar --pairs 16 \
        --seq_len 128 --n 200 --seed 1000 > cases.jsonl
    python3 tools/recall/task.py show --model_dir models/cat-recall --kind niah --seq_len 48

Token layout (class Layout). Ids below `base` are the tokenizer's own (pad 0, bos 1, eos 2,
unk 3, and byte pieces where it has them); the task never emits them except BOS at position 0.
From `base` on, with A = vocab_size - base - 1 ids left after the separator:

    base                         SEP    "|": the questions start here
    base+1 ... base+F            filler "f00".. (F = max(1, A // 8))
    next K ids                   keys   "k000".. (K = (A - F) // 2)
    next K ids                   values "v000"..
    any id left over             unused (never emitted)

For the model train.py writes (vocab 256, base 4): SEP 4, filler 5-35 (31), keys 36-145 (110),
values 146-255 (110). For a model directory without recall_task.json, `base` is the first id
after the tokenizer's leading control, unknown and byte pieces (260 for models/cat-small-en:
SEP 260, filler 261-739, keys 740-2417, values 2418-4095).

Tasks (class Task; every sequence is exactly seq_len tokens, BOS first):

  mqar (multi-query associative recall, Zoology style): P distinct keys with P distinct values,
      written as pairs k1 v1 k2 v2 ... after a random 0-15 filler tokens (so pairs sit at every
      alignment to the chunk boundaries), then filler up to the questions, then SEP and Q
      queries "k v": the keys asked, each followed by its value.
          <s> f f k1 v1 k2 v2 ... kP vP f f ... f | k3 v3 k1 v1 ...
  niah (needle in a haystack): filler with P key-value needles at random places (P = 1: one
      needle), then SEP and Q queries, as above.
          <s> f f f ... k1 v1 f f ... f | k1 v1

  Q = P by default (each key asked once, in random order); Q > P asks keys again (rounds of
  shuffled keys). The loss is on the values after the SEP only ("answers"). A held-out case is
  a sequence cut just before one answer: the prompt ends with the asked key, the answer is one
  token, compared exactly (greedy). Chance: 1 / K; copying any value seen: 1 / P.

Seeds. Training rows come from the stream "train" (seeded by train.py's --seed, the step and
the row); held-out cases from the stream "heldout" (its seed, the case index). The streams are
separate sha512 seeds of Python's random.Random, so no training row is a held-out case except
by chance (a repeat of a whole random sequence). Held-out seeds the repository uses: 0
(train.py's own evaluation), 1 (eval_daemon.py's default) and 2 (the smoke tests); seeds 1000
and above are never used in this repository: use them for an independent check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import struct
import sys
from typing import Optional

PAD, BOS, EOS, UNK = 0, 1, 2, 3
MAX_OFFSET = 15  # mqar: 0..15 filler tokens before the pairs: every alignment up to chunk 16
HELDOUT_SEEDS_USED = (0, 1, 2)
FIRST_UNUSED_HELDOUT_SEED = 1000


# ---------------------------------------------------------------------------------------------
# Layout


@dataclasses.dataclass(frozen=True)
class Layout:
    vocab_size: int
    base: int = 4

    def __post_init__(self):
        if self.base < 4 or self.vocab_size - self.base < 8:
            raise ValueError(f"vocab {self.vocab_size} with base {self.base} leaves too few ids")

    @property
    def sep(self) -> int:
        return self.base

    @property
    def n_filler(self) -> int:
        return max(1, (self.vocab_size - self.base - 1) // 8)

    @property
    def n_keys(self) -> int:
        return (self.vocab_size - self.base - 1 - self.n_filler) // 2

    @property
    def filler(self) -> range:
        return range(self.base + 1, self.base + 1 + self.n_filler)

    @property
    def keys(self) -> range:
        return range(self.filler.stop, self.filler.stop + self.n_keys)

    @property
    def values(self) -> range:
        return range(self.keys.stop, self.keys.stop + self.n_keys)

    def piece(self, i: int) -> str:
        """The text of id i in the tokenizer train.py writes."""
        special = {PAD: "<pad>", BOS: "<s>", EOS: "</s>", UNK: "<unk>"}
        if i in special:
            return special[i]
        if i == self.sep:
            return "|"
        for prefix, r, width in (("f", self.filler, 2), ("k", self.keys, 3), ("v", self.values, 3)):
            if i in r:
                return f"{prefix}{i - r.start:0{width}d}"
        return f"u{i}"

    def to_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "base": self.base, "sep": self.sep,
                "filler": [self.filler.start, self.filler.stop - 1],
                "keys": [self.keys.start, self.keys.stop - 1],
                "values": [self.values.start, self.values.stop - 1]}


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass(frozen=True)
class Task:
    kind: str = "mqar"  # "mqar" or "niah"
    pairs: int = 16
    seq_len: int = 128
    queries: Optional[int] = None  # None -> pairs

    @property
    def n_queries(self) -> int:
        return self.pairs if self.queries is None else self.queries

    def check(self, layout: Layout) -> None:
        if self.kind not in ("mqar", "niah"):
            raise ValueError(f"task kind {self.kind!r}: mqar or niah")
        if not 1 <= self.pairs <= layout.n_keys or self.n_queries < 1:
            raise ValueError(f"{self.pairs} pairs / {self.n_queries} queries: need 1 <= pairs <= "
                             f"{layout.n_keys} (the layout's keys) and queries >= 1")
        if fixed_tokens(self) > self.seq_len:
            raise ValueError(f"{self.pairs} pairs and {self.n_queries} queries need "
                             f"{fixed_tokens(self)} tokens, more than seq_len {self.seq_len}")

    def name(self) -> str:
        q = "" if self.queries is None else f"q{self.queries}"
        return f"{self.kind}-p{self.pairs}{q}-t{self.seq_len}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pairs": self.pairs, "seq_len": self.seq_len,
                "queries": self.n_queries}


def fixed_tokens(task: Task) -> int:
    """BOS, the pairs, SEP and the answered queries: what is not filler."""
    return 1 + 2 * task.pairs + 1 + 2 * task.n_queries


@dataclasses.dataclass
class Sequence:
    tokens: list[int]
    answer_positions: list[int]  # tokens[p] is an answer (a value after SEP)


def make_sequence(rng: random.Random, layout: Layout, task: Task) -> Sequence:
    """One sequence of exactly task.seq_len tokens (see the module docstring)."""
    P, Q = task.pairs, task.n_queries
    keys = rng.sample(layout.keys, P)
    values = rng.sample(layout.values, P)
    spare = task.seq_len - fixed_tokens(task)
    if spare < 0:
        task.check(layout)
    f0, nf = layout.filler.start, layout.n_filler

    def filler(n: int) -> list[int]:
        return [f0 + int(rng.random() * nf) for _ in range(n)]

    tokens = [BOS]
    if task.kind == "mqar":
        offset = rng.randint(0, min(spare, MAX_OFFSET))
        tokens += filler(offset)
        for k, v in zip(keys, values):
            tokens += (k, v)
        tokens += filler(spare - offset)
    elif task.kind == "niah":
        # Needle i goes into gap slots[i] of the filler (0..spare; equal slots stay in order).
        slots = sorted(rng.randint(0, spare) for _ in range(P))
        hay = filler(spare)
        at = 0
        for i, (k, v) in enumerate(zip(keys, values)):
            tokens += hay[at:slots[i]]
            at = slots[i]
            tokens += (k, v)
        tokens += hay[at:]
    else:
        raise ValueError(f"task kind {task.kind!r}: mqar or niah")
    tokens.append(layout.sep)
    order: list[int] = []
    while len(order) < Q:
        order += rng.sample(range(P), P)
    answers = []
    for i in order[:Q]:
        tokens.append(keys[i])
        answers.append(len(tokens))
        tokens.append(values[i])
    assert len(tokens) == task.seq_len, (len(tokens), task)
    return Sequence(tokens, answers)


def train_rng(seed: int, step: int, row: int) -> random.Random:
    return random.Random(f"catserve-recall/train/{seed}/{step}/{row}")


def heldout_rng(seed: int, index: int) -> random.Random:
    return random.Random(f"catserve-recall/heldout/{seed}/{index}")


def heldout_sequences(layout: Layout, task: Task, seed: int, n: int) -> list[Sequence]:
    task.check(layout)
    return [make_sequence(heldout_rng(seed, i), layout, task) for i in range(n)]


def heldout_cases(layout: Layout, task: Task, seed: int, n: int) -> list[dict]:
    """n held-out cases: the prompt ends with an asked key (which one: drawn per case), the
    answer is its value (one token)."""
    task.check(layout)
    cases = []
    for i in range(n):
        rng = heldout_rng(seed, i)
        seq = make_sequence(rng, layout, task)
        q = rng.randrange(len(seq.answer_positions))
        pos = seq.answer_positions[q]
        cases.append({"task": task.name(), "seed": seed, "index": i, "query": q,
                      "prompt": seq.tokens[:pos], "answer": [seq.tokens[pos]]})
    return cases


def oracle_answer(layout: Layout, prompt: list[int]) -> int:
    """The right answer of a prompt that ends with an asked key, read from the prompt itself
    (a check of the generator: every case's answer must equal it)."""
    key = prompt[-1]
    sep = prompt.index(layout.sep)
    for i in range(sep - 1):
        if prompt[i] == key and prompt[i + 1] in layout.values:
            return prompt[i + 1]
    raise ValueError("the asked key is not in the context")


# ---------------------------------------------------------------------------------------------
# Training batches: rows of one length, pairs drawn per row in [lo, hi], a share of niah rows


def batch_rows(seed: int, step: int, batch: int, layout: Layout, pairs: tuple[int, int],
               seq_len: int, niah_frac: float) -> list[Sequence]:
    rows = []
    for r in range(batch):
        rng = train_rng(seed, step, r)
        lo, hi = pairs
        hi = min(hi, max_pairs(seq_len))
        if rng.random() < niah_frac:
            task = Task("niah", rng.randint(1, max(1, min(hi, 4))), seq_len)
        else:
            task = Task("mqar", rng.randint(min(lo, hi), hi), seq_len)
        rows.append(make_sequence(rng, layout, task))
    return rows


def max_pairs(seq_len: int) -> int:
    """Most pairs (asked once each) that fit seq_len: 1 + 2P + 1 + 2P <= seq_len."""
    return max(1, (seq_len - 2) // 4)


# ---------------------------------------------------------------------------------------------
# A SentencePiece tokenizer for the layout, written without the sentencepiece package
# (ModelProto by hand: a WORD model whose pieces are the layout's names)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


def _string(number: int, s: str) -> bytes:
    return _field(number, 2, s.encode())


def _int(number: int, n: int) -> bytes:
    return _field(number, 0, _varint(n & 0xFFFFFFFFFFFFFFFF))


# sentencepiece_model.proto: SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def tokenizer_bytes(layout: Layout) -> bytes:
    """A serialized sentencepiece ModelProto: WORD model, one piece per id ("▁k012" for key 12),
    pad/bos/eos/unk = 0/1/2/3. Text "k012 v034" encodes to those two ids and back."""
    pieces = b""
    for i in range(layout.vocab_size):
        name = layout.piece(i)
        kind = {PAD: CONTROL, BOS: CONTROL, EOS: CONTROL, UNK: UNKNOWN}.get(i, NORMAL)
        text = name if kind != NORMAL else "\u2581" + name
        body = _string(1, text) + _field(2, 5, struct.pack("<f", 0.0)) + _int(3, kind)
        pieces += _field(1, 2, body)
    trainer = (_int(3, 3)  # model_type WORD
               + _int(4, layout.vocab_size) + _int(40, UNK) + _int(41, BOS) + _int(42, EOS)
               + _int(43, PAD) + _string(45, "<unk>") + _string(46, "<s>")
               + _string(47, "</s>") + _string(48, "<pad>"))
    normalizer = (_string(1, "identity") + _int(3, 1) + _int(4, 1) + _int(5, 1))
    return pieces + _field(2, 2, trainer) + _field(3, 2, normalizer)


def write_tokenizer(layout: Layout, path: str) -> None:
    with open(path, "wb") as f:
        f.write(tokenizer_bytes(layout))


def _read_fields(data: bytes):
    """(field number, wire type, value) of one protobuf message; value is bytes or int."""
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def tokenizer_piece_types(path: str) -> list[int]:
    """The type of every piece of a SentencePiece model file (NORMAL, CONTROL, BYTE, ...)."""
    with open(path, "rb") as f:
        data = f.read()
    types = []
    for number, wire, value in _read_fields(data):
        if number == 1 and wire == 2:
            kind = NORMAL
            for n2, w2, v2 in _read_fields(value):
                if n2 == 3 and w2 == 0:
                    kind = v2
            types.append(kind)
    return types


# ---------------------------------------------------------------------------------------------
# A model directory's layout


def layout_for(model_dir: str) -> Layout:
    """recall_task.json's layout when the directory has one (train.py writes it); else the
    vocabulary of config.json from the first id after the tokenizer's leading special and byte
    pieces."""
    meta = os.path.join(model_dir, "recall_task.json")
    if os.path.exists(meta):
        with open(meta) as f:
            lay = json.load(f)["layout"]
        return Layout(lay["vocab_size"], lay["base"])
    with open(os.path.join(model_dir, "config.json")) as f:
        vocab = int(json.load(f)["vocab_size"])
    base = 4
    tok = os.path.join(model_dir, "tokenizer.model")
    if os.path.exists(tok):
        types = tokenizer_piece_types(tok)
        base = 0
        while base < len(types) and types[base] in (UNKNOWN, CONTROL, BYTE, UNUSED):
            base += 1
        base = max(base, 4)
    return Layout(vocab, base)


def default_task(model_dir: str) -> Task:
    """The task a model was trained for (recall_task.json's "eval_task"), else mqar 16 / 128."""
    meta = os.path.join(model_dir, "recall_task.json")
    if os.path.exists(meta):
        with open(meta) as f:
            t = json.load(f)["eval_task"]
        return Task(t["kind"], t["pairs"], t["seq_len"], t.get("queries"))
    return Task()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["layout", "cases", "show"])
    ap.add_argument("--model_dir", help="the layout and default task come from here")
    ap.add_argument("--vocab", type=int, help="without --model_dir: the vocabulary size")
    ap.add_argument("--base", type=int, default=4, help="without --model_dir: first task id")
    ap.add_argument("--kind", choices=["mqar", "niah"])
    ap.add_argument("--pairs", type=int)
    ap.add_argument("--seq_len", type=int)
    ap.add_argument("--queries", type=int)
    ap.add_argument("--seed", type=int, default=FIRST_UNUSED_HELDOUT_SEED)
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args(argv)
    if args.model_dir:
        layout, task = layout_for(args.model_dir), default_task(args.model_dir)
    elif args.vocab:
        layout, task = Layout(args.vocab, args.base), Task()
    else:
        ap.error("--model_dir or --vocab")
    task = Task(args.kind or task.kind, args.pairs or task.pairs, args.seq_len or task.seq_len,
                args.queries if args.queries is not None else
                (task.queries if (args.pairs is None) else None))
    if args.command == "layout":
        print(json.dumps({"layout": layout.to_dict(), "task": task.to_dict()}, indent=2))
    elif args.command == "cases":
        for case in heldout_cases(layout, task, args.seed, args.n):
            assert oracle_answer(layout, case["prompt"]) == case["answer"][0]
            print(json.dumps(case))
    else:
        seq = heldout_sequences(layout, task, args.seed, 1)[0]
        marks = set(seq.answer_positions)
        print(" ".join(("[" + layout.piece(t) + "]") if i in marks else layout.piece(t)
                       for i, t in enumerate(seq.tokens)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
