#!/usr/bin/env python3
"""Writes a random-weight CAT model directory for load tests (needs PyTorch):

    python3 tools/bench/make_random_model.py OUT_DIR [--hidden 512 --layers 8 ...]

The tokenizer of the shipped model is copied beside it so text prompts work; the weights are
noise, so only speed and memory figures mean anything.
"""

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from catref.model import CatConfig, random_model, save_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out")
    p.add_argument("--tokenizer_from", default="models/cat-small-en")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--compressor_hidden", type=int, default=256)
    p.add_argument("--compressor_layers", type=int, default=2)
    p.add_argument("--context", type=int, default=2048)
    args = p.parse_args()
    tokenizer = os.path.join(args.tokenizer_from, "tokenizer.model")
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=tokenizer).get_piece_size()
    config = CatConfig(vocab_size=vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                       num_heads=args.heads, compressor_hidden_size=args.compressor_hidden,
                       compressor_num_layers=args.compressor_layers,
                       compressor_num_heads=max(1, args.heads // 2), max_chunk_size=16,
                       min_train_chunk_size=1, max_position_embeddings=args.context)
    save_model(random_model(config, seed=1, dtype="bf16"), args.out, dtype="bf16")
    shutil.copy(tokenizer, os.path.join(args.out, "tokenizer.model"))
    print(f"wrote {args.out}: vocab {vocab}, hidden {args.hidden}, {args.layers} layers")


if __name__ == "__main__":
    main()
