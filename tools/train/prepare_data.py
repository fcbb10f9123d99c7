#!/usr/bin/env python3
"""Data for models/cat-small-en: English text from Debian's `fortunes` package plus a synthetic
in-context recall task, tokenized with a SentencePiece model trained here.

    apt-get install fortunes            # Debian package: text in /usr/share/games/fortunes
    python3 tools/train/prepare_data.py [--out tools/train/runs/data] [--seed 1234]

Deterministic given the seed (and the package version). Writes into --out:
  tokenizer.model / tokenizer.vocab   SentencePiece BPE, vocab 4096, pad/bos/eos/unk = 0/1/2/3,
                                      byte_fallback, identity normalization, split_digits
  text_train.npy, text_val.npy        int32 token streams; fortunes joined by EOS (2)
  recall_train.npz                    recall documents for training (flat ids + offsets)
  recall_val_<n>.jsonl                held-out recall cases of about n tokens of context (n = 128, 352):
                                      {"prompt": [...], "answer": [...], "text": ..., "key": ...}
  val_fortunes.txt, stats.json
Held-out split: 5% of the fortunes (chosen by the seed) never appear in training, neither as text
nor as recall filler; recall cases use fresh key/value draws.

Recall document (the prompt ends at "Answer:", the answer is the digits that follow):
    Remember these numbers.
    Ruth: 482.
    <filler: fortune lines>
    Omar: 915.
    <filler>
    Question: what is Ruth?
    Answer: 482
Training documents ask 1 to 3 questions in a row; held-out cases ask one.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re

import numpy as np
import sentencepiece as spm

FORTUNE_DIR = "/usr/share/games/fortunes"
# Left out: ascii-art (pictures, not prose), translate-me (mostly not English) and art (quotes
# about art and celebrities: prose, in fact; it was dropped by an early mix-up with ascii-art and
# stays out so that the shipped model's data and tokenizer are reproduced exactly).
SKIP = {"art", "ascii-art", "translate-me"}

NAMES = """Ada Alan Alice Amy Anna Ben Beth Bill Bob Carl Clara Dan Dave Diana Ed Ella Emma Eric
Eva Frank Fred Gary George Grace Hank Harry Helen Henry Ian Ivan Jack Jake Jane Jean Jim Joe John
Judy Julia Kate Ken Kim Kurt Larry Laura Leo Lisa Lucy Luke Mark Mary Max Mike Nancy Ned Nick
Nina Noah Olga Omar Oscar Pam Paul Pete Phil Ray Rita Rob Rose Ruth Sam Sara Sean Simon Sue Ted
Tina Tom Tony Uma Vera Walt Will Zoe""".split()

# Held-out recall context lengths (prompt tokens, within 10%). Every prompt + answer fits in the
# 384-token training window, so no position is one the model never trained on.
RECALL_LENGTHS = (128, 352)
MAX_CASE_TOKENS = 384


def read_fortunes() -> list[str]:
    out = []
    for path in sorted(glob.glob(os.path.join(FORTUNE_DIR, "*"))):
        name = os.path.basename(path)
        if "." in name or name in SKIP or os.path.islink(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            raw = f.read()
        for item in re.split(r"^%\s*$", raw, flags=re.M):
            lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in item.strip("\n").split("\n")]
            text = "\n".join(ln for ln in lines).strip()
            if len(text) >= 20:
                out.append(text)
    return out


def train_tokenizer(sentences: list[str], out: str, vocab: int, seed: int) -> None:
    path = os.path.join(out, "spm_input.txt")
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(s + "\n")
    if hasattr(spm, "set_random_generator_seed"):
        spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=os.path.join(out, "tokenizer"), model_type="bpe",
        vocab_size=vocab, pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="<pad>",
        bos_piece="<s>", eos_piece="</s>", unk_piece="<unk>", byte_fallback=True,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, character_coverage=0.9995,
        input_sentence_size=0, shuffle_input_sentence=False, num_threads=2,
        minloglevel=2)
    os.remove(path)


def recall_doc(rng: random.Random, fillers: list[str], target_chars: int, questions: int):
    """Returns (prompt_text_pieces, answers): pieces[i] is the text before answer i."""
    k = rng.randint(2, 6)
    names = rng.sample(NAMES, k)
    values = [rng.randint(100, 999) for _ in names]
    per_gap = max(0, target_chars // (k + 1))
    parts = ["Remember these numbers.\n"]
    for name, value in zip(names, values):
        parts.append(f"{name}: {value}.\n")
        filler = ""
        while len(filler) < per_gap * rng.uniform(0.5, 1.5):
            filler += rng.choice(fillers) + "\n"
        parts.append(filler)
    asked = rng.sample(range(k), min(questions, k))
    pieces, answers = [], []
    head = "".join(parts)
    for q in asked:
        pieces.append(head + f"Question: what is {names[q]}?\nAnswer:")
        answers.append(str(values[q]))
        head = "\n"
    return pieces, answers, [names[q] for q in asked]


def encode_doc(sp, pieces, answers):
    ids, answer_spans = [], []
    for p, a in zip(pieces, answers):
        ids += sp.encode(p)
        a_ids = sp.encode(a)
        answer_spans.append((len(ids), len(a_ids)))
        ids += a_ids
    return ids, answer_spans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tools/train/runs/data")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--recall_train_docs", type=int, default=30000)
    ap.add_argument("--recall_val_cases", type=int, default=200)
    ap.add_argument("--max_doc_tokens", type=int, default=384)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(args.seed)

    fortunes = read_fortunes()
    rng.shuffle(fortunes)
    n_val = len(fortunes) // 20
    val, train = fortunes[:n_val], fortunes[n_val:]
    with open(os.path.join(args.out, "val_fortunes.txt"), "w", encoding="utf-8") as f:
        f.write("\n%\n".join(val) + "\n")

    # Tokenizer: trained on the training fortunes' lines plus a few recall documents (so that the
    # names and the question template get pieces of their own).
    train_lines = [ln for t in train for ln in t.split("\n") if ln]
    short_fill = [ln for t in train for ln in t.split("\n") if 20 <= len(ln) <= 80]
    extra = []
    for _ in range(2000):
        pieces, answers, _ = recall_doc(rng, short_fill, 200, 1)
        extra += [ln for ln in (pieces[0] + " " + answers[0]).split("\n") if ln]
    train_tokenizer(train_lines + extra, args.out, args.vocab, args.seed)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.out, "tokenizer.model"))

    def stream(texts):
        ids = []
        for t in texts:
            ids += sp.encode(t)
            ids.append(2)
        return np.asarray(ids, dtype=np.int32)

    text_train, text_val = stream(train), stream(val)
    np.save(os.path.join(args.out, "text_train.npy"), text_train)
    np.save(os.path.join(args.out, "text_val.npy"), text_val)

    # Recall training documents: 1-3 questions, about 60..max_doc_tokens tokens.
    val_fill = [ln for t in val for ln in t.split("\n") if 20 <= len(ln) <= 80]
    flat, offsets = [], [0]
    made = 0
    while made < args.recall_train_docs:
        target = rng.randint(100, args.max_doc_tokens * 4 - 250)  # ~3.3 chars a token
        pieces, answers, _ = recall_doc(rng, short_fill, target, rng.randint(1, 3))
        ids, _ = encode_doc(sp, pieces, answers)
        if len(ids) > args.max_doc_tokens - 1:
            continue
        flat += ids + [2]
        offsets.append(len(flat))
        made += 1
    np.savez(os.path.join(args.out, "recall_train.npz"), ids=np.asarray(flat, np.int32),
             offsets=np.asarray(offsets, np.int64))

    # Held-out recall cases at each context length.
    stats = {"fortunes_train": len(train), "fortunes_val": len(val),
             "text_train_tokens": int(text_train.size), "text_val_tokens": int(text_val.size),
             "recall_train_docs": made, "recall_train_tokens": len(flat)}
    for n in RECALL_LENGTHS:
        cases = []
        while len(cases) < args.recall_val_cases:
            pieces, answers, keys = recall_doc(rng, val_fill, int(n * 3.3) - 90, 1)
            ids, spans = encode_doc(sp, pieces, answers)
            start, alen = spans[0]
            if abs(start - n) > 0.10 * n or start + alen > MAX_CASE_TOKENS:
                continue
            cases.append({"prompt": ids[:start], "answer": ids[start:start + alen],
                          "key": keys[0], "text": pieces[0] + " " + answers[0]})
        with open(os.path.join(args.out, f"recall_val_{n}.jsonl"), "w") as f:
            for c in cases:
                f.write(json.dumps(c) + "\n")
        stats[f"recall_val_{n}_mean_prompt_tokens"] = float(np.mean([len(c["prompt"]) for c in cases]))
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump(stats, f, indent=2)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
