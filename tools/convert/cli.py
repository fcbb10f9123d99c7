"""Command line of the converters.

    python3 tools/convert official --state-dict state_dict.pt --n-head 24 --compressor-n-head 12 \
        --tokenizer tokenizer.model --out models/my-cat
    python3 tools/convert fla --src path/to/hf_checkpoint_dir --out models/my-cat

Needs numpy only (plus PyTorch to read a torch.save file: .pt / .bin). See docs/MODELS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import fla, official
from .model_dir import write_model_dir
from .errors import ConversionError
from .safetensors_io import Tensor, load_torch_file, read


def load_state(path: str) -> dict[str, Tensor]:
    if path.endswith(".safetensors"):
        return read(path)
    return load_torch_file(path)


def load_fla_dir(src: str) -> tuple[dict, dict[str, Tensor]]:
    """config.json and the weights of a Hugging Face style directory (one file or shards)."""
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(src, "model.safetensors.index.json")
    single = os.path.join(src, "model.safetensors")
    if os.path.exists(single):
        return config, read(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(read(os.path.join(src, shard)))
        return config, state
    bin_path = os.path.join(src, "pytorch_model.bin")
    if os.path.exists(bin_path):
        return config, load_torch_file(bin_path)
    raise ConversionError(f"{src} has no model.safetensors, model.safetensors.index.json or "
                          "pytorch_model.bin")


def tokenizer_path(explicit: str | None, src_dir: str | None) -> str | None:
    if explicit is not None:
        return explicit
    if src_dir is not None and os.path.exists(os.path.join(src_dir, "tokenizer.model")):
        return os.path.join(src_dir, "tokenizer.model")
    return None


def one_line(e: BaseException) -> str:
    """The error's message on one line (KeyError quotes its key; multi-line texts are joined)."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 tools/convert",
                                     description="CAT checkpoint -> catserve model directory")
    sub = parser.add_subparsers(dest="layout", required=True)
    o = sub.add_parser("official", help="rajesh-lab/cat-transformer state dict "
                                        "(cat_transformer_adaptive.py)")
    o.add_argument("--state-dict", required=True, help="state_dict.pt or a .safetensors file")
    o.add_argument("--n-head", type=int, required=True, help="decoder n_head (model.n_head)")
    o.add_argument("--compressor-n-head", type=int, required=True,
                   help="compressor n_head (model.compressor_n_head)")
    o.add_argument("--norm-eps", type=float, default=1e-5, help="decoder norm_eps (default 1e-5)")
    o.add_argument("--compressor-norm-eps", type=float, default=None,
                   help="compressor norm_eps (default: --norm-eps)")
    o.add_argument("--rope-base", type=float, default=10000.0)
    o.add_argument("--min-chunk-size", type=int, default=1,
                   help="smallest chunk size the model was trained with (default 1)")
    o.add_argument("--pad-token-id", type=int, default=0)
    o.add_argument("--bos-token-id", type=int, default=1)
    o.add_argument("--eos-token-id", type=int, default=2)
    o.add_argument("--tokenizer", help="SentencePiece tokenizer.model to copy")
    o.add_argument("--out", required=True, help="catserve model directory to write")
    f = sub.add_parser("fla", help="fla-org/flash-linear-attention CAT port (model_type 'cat')")
    f.add_argument("--src", required=True, help="directory with config.json and weights")
    f.add_argument("--tokenizer", help="SentencePiece tokenizer.model (default: the one in --src)")
    f.add_argument("--out", required=True, help="catserve model directory to write")
    args = parser.parse_args(argv)

    try:
        if args.layout == "official":
            opt = official.OfficialOptions(
                n_head=args.n_head, compressor_n_head=args.compressor_n_head,
                norm_eps=args.norm_eps, compressor_norm_eps=args.compressor_norm_eps,
                rope_base=args.rope_base, min_chunk_size=args.min_chunk_size,
                pad_token_id=args.pad_token_id, bos_token_id=args.bos_token_id,
                eos_token_id=args.eos_token_id)
            config, tensors = official.convert(load_state(args.state_dict), opt)
            tokenizer = tokenizer_path(args.tokenizer, None)
        else:
            config, tensors = fla.convert(*load_fla_dir(args.src))
            tokenizer = tokenizer_path(args.tokenizer, args.src)
        write_model_dir(args.out, config, tensors, tokenizer)
    except (ConversionError, OSError, ValueError, KeyError) as e:
        print(f"convert: {one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001: still one line, never a traceback
        print(f"convert: unexpected {type(e).__name__}: {one_line(e)} (a converter bug: please "
              "report it with the checkpoint's config)", file=sys.stderr)
        return 1
    print(f"convert: wrote {args.out} ({len(tensors)} tensors"
          + ("" if tokenizer else "; no tokenizer.model: the server needs one, pass --tokenizer")
          + ")")
    return 0
