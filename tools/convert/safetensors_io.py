"""Reads and writes safetensors files with numpy alone, bf16 included.

numpy has no bfloat16, and the converters only rename, split and re-index rows, so a tensor is
kept as the raw array of its stored dtype: bf16 as uint16 bit patterns, f16 and f32 as themselves.
Nothing here does arithmetic on values, so every converted weight is bit-identical to its source.
"""

from __future__ import annotations

import dataclasses
import json
import struct

import numpy as np

# safetensors dtype name -> the numpy dtype that holds its bits.
DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}
FLOAT_DTYPES = ("F32", "F16", "BF16")
TORCH_DTYPE_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclasses.dataclass
class Tensor:
    """A tensor as stored: its safetensors dtype name and an array of the matching bits."""

    dtype: str
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)


def read(path: str) -> dict[str, Tensor]:
    """Every tensor of one safetensors file. Raises ValueError on a malformed file."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"{path}: header length {header_len} runs past the end of the file")
    header = json.loads(data[8:8 + header_len])
    body = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in DTYPES:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        np_dtype = np.dtype(DTYPES[dtype]).newbyteorder("<")
        if not 0 <= begin <= end <= len(body) or end - begin != np_dtype.itemsize * int(
                np.prod(shape, dtype=np.int64)):
            raise ValueError(f"{path}: tensor {name} has data offsets {begin}..{end} that do not "
                             f"fit its shape {list(shape)} and dtype {dtype}")
        array = np.frombuffer(body[begin:end], dtype=np_dtype).reshape(shape)
        tensors[name] = Tensor(dtype, array.astype(np_dtype.newbyteorder("="), copy=True))
    return tensors


def write(path: str, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Writes tensors in name order, little-endian, header padded to 8 bytes with spaces."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = metadata
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        blob = np.ascontiguousarray(t.array, dtype=np.dtype(DTYPES[t.dtype]).newbyteorder("<"))
        blob = blob.tobytes()
        header[name] = {"dtype": t.dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def from_torch(tensors: dict) -> dict[str, Tensor]:
    """A torch state dict (name -> torch.Tensor) as Tensors; bf16 bits are kept as uint16."""
    import torch

    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL"}
    out = {}
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"state dict entry {name} is a {type(t).__name__}, not a tensor")
        if t.dtype not in names:
            raise ValueError(f"tensor {name} has unsupported dtype {t.dtype}")
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            array = t.view(torch.int16).numpy().view(np.uint16)
        else:
            array = t.numpy()
        out[name] = Tensor(names[t.dtype], array.copy())
    return out


def load_torch_file(path: str) -> dict[str, Tensor]:
    """A state dict saved with torch.save (needs PyTorch; weights only, nothing is executed)."""
    try:
        import torch
    except ImportError as e:
        raise SystemExit(f"{path}: reading a torch.save file needs PyTorch "
                         "(deploy/install-deps.sh --torch), or convert it to safetensors first") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001: torch raises RuntimeError, EOFError, pickle errors...
        # The first sentence of the first line: torch's own texts run on for several sentences.
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        raise ValueError(f"{path}: cannot be read as a torch.save state dict ({reason}); it is "
                         "probably truncated or not a checkpoint: copy or save it again, or pass "
                         "the state dict as .safetensors") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return from_torch(state)
