"""Writes a catserve model directory: config.json, model.safetensors, tokenizer.model."""

from __future__ import annotations

import collections
import json
import os
import shutil

from .errors import ConversionError
from .safetensors_io import FLOAT_DTYPES, TORCH_DTYPE_NAMES, Tensor, write


def write_model_dir(directory: str, config: dict, tensors: dict[str, Tensor],
                    tokenizer: str | None) -> None:
    """Writes the directory (created if needed). `tokenizer` is a SentencePiece model file to copy
    as tokenizer.model, or None to write none (the engine loads without it; the server needs it)."""
    not_float = sorted(n for n, t in tensors.items() if t.dtype not in FLOAT_DTYPES)
    if not_float:
        raise ConversionError(f"tensors that are not f32/f16/bf16: {', '.join(not_float[:8])}")
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = config.get(key)
        if value is not None and not 0 <= value < config["vocab_size"]:
            raise ConversionError(f"{key} {value} is outside the vocabulary [0, "
                                  f"{config['vocab_size']})")
    counts = collections.Counter(t.dtype for t in tensors.values())
    config = dict(config, torch_dtype=TORCH_DTYPE_NAMES[counts.most_common(1)[0][0]])
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write(os.path.join(directory, "model.safetensors"), tensors, metadata={"format": "pt"})
    if tokenizer is not None:
        shutil.copyfile(tokenizer, os.path.join(directory, "tokenizer.model"))
