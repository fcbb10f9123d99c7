"""Writes a catserve model directory: config.json, model.safetensors, tokenizer.model."""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile

from .errors import ConversionError
from .safetensors_io import FLOAT_DTYPES, TORCH_DTYPE_NAMES, Tensor, write


def write_model_dir(directory: str, config: dict, tensors: dict[str, Tensor],
                    tokenizer: str | None) -> None:
    """Writes the directory (created if needed). `tokenizer` is a SentencePiece model file to copy
    as tokenizer.model, or None to write none (the engine loads without it; the server needs it).
    Every check runs before the first byte is written; a failure writes nothing."""
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
    if tokenizer is not None and not os.path.isfile(tokenizer):
        raise ConversionError(f"tokenizer {tokenizer} is not a file; pass a SentencePiece "
                              "tokenizer.model with --tokenizer")
    # Written into a scratch directory beside the target and moved into place only when every
    # file is complete, so a failure (disk full, a kill) leaves no half-written model behind.
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".convert-", dir=parent)
    try:
        with open(os.path.join(scratch, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        write(os.path.join(scratch, "model.safetensors"), tensors, metadata={"format": "pt"})
        if tokenizer is not None:
            shutil.copyfile(tokenizer, os.path.join(scratch, "tokenizer.model"))
        if not os.path.exists(directory):
            os.rename(scratch, directory)
            return
        for name in os.listdir(scratch):
            os.replace(os.path.join(scratch, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
