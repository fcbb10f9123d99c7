#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers (tools/fuzz/corpus/TARGET/), deterministically.

    python3 tools/fuzz/make_corpus.py

Seeds are small valid inputs of every shape the parsers accept plus a few near misses, so the
fuzzers start deep in the code instead of rediscovering the formats. Standard library only.
"""
import json
import pathlib
import shutil
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


# --- safetensors_fuzzer: whole files ---------------------------------------------------------

def safetensors(tensors, metadata=None, pad=0):
    """tensors: [(name, dtype, shape, raw bytes)], laid out back to back."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1.0, -2.5, 0.0, 3.25)
    f16 = struct.pack("<4H", 0x3C00, 0xC000, 0x0001, 0x7BFF)
    bf16 = struct.pack("<4H", 0x3F80, 0xC020, 0x0000, 0x7F80)
    i32 = struct.pack("<3i", 1, -7, 2**31 - 1)
    i64 = struct.pack("<2q", 5, -(2**40))
    write("safetensors_fuzzer", "every_dtype", safetensors(
        [("a", "F32", [2, 2], f32), ("b", "F16", [4], f16), ("c", "BF16", [1, 4], bf16),
         ("d", "I32", [3], i32), ("e", "I64", [2], i64)], metadata={"format": "pt"}))
    write("safetensors_fuzzer", "padded_header", safetensors([("w", "F32", [4], f32)], pad=7))
    write("safetensors_fuzzer", "empty_and_scalar", safetensors(
        [("empty", "F32", [0, 3], b""), ("scalar", "F32", [], f32[:4])]))
    write("safetensors_fuzzer", "no_tensors", safetensors([], metadata={"k": "v"}))
    write("safetensors_fuzzer", "model_like", safetensors(
        [("model.norm.weight", "BF16", [4], bf16), ("lm_head.weight", "F32", [1, 4], f32)]))
    # Near misses: one byte short header, trailing byte, overlap, truncated.
    good = safetensors([("w", "F32", [4], f32)], pad=3)
    short = bytearray(good)
    short[0] -= 1
    write("safetensors_fuzzer", "header_one_short", bytes(short))
    write("safetensors_fuzzer", "trailing_byte", good + b"\0")
    write("safetensors_fuzzer", "truncated", good[:-2])
    overlap = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
    write("safetensors_fuzzer", "overlap", struct.pack("<Q", len(overlap)) + overlap + bytes(12))


# --- config_fuzzer: config.json text ----------------------------------------------------------

def config_seeds():
    for fixture in ("tiny", "tiny_gqa"):
        write("config_fuzzer", fixture, (ROOT / "tests/fixtures" / fixture / "config.json").read_text())
    write("config_fuzzer", "defaults", '{"model_type": "cat"}')
    write("config_fuzzer", "every_key", json.dumps({
        "model_type": "cat", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 4,
        "num_heads": 4, "num_kv_heads": 2, "compressor_hidden_size": 48,
        "compressor_num_layers": 3, "compressor_num_heads": 3, "dim_fx": 64,
        "max_chunk_size": 8, "min_train_chunk_size": 2, "max_position_embeddings": 128,
        "rope_theta": 500000, "norm_eps": 1e-5, "hidden_ratio": 2.5, "intermediate_size": None,
        "qk_norm": True, "qkv_bias": True, "tie_word_embeddings": True, "pad_token_id": None,
        "bos_token_id": 4, "eos_token_id": 99}))
    write("config_fuzzer", "largest", json.dumps({
        "model_type": "cat", "vocab_size": 4194304, "hidden_size": 65536,
        "num_hidden_layers": 1024, "num_heads": 1024, "num_kv_heads": 1024,
        "compressor_hidden_size": 65536, "compressor_num_layers": 1024,
        "compressor_num_heads": 1024, "max_chunk_size": 1024, "min_train_chunk_size": 1024,
        "max_position_embeddings": 1048576, "intermediate_size": 1048576}))
    write("config_fuzzer", "absurd", '{"model_type": "cat", "num_hidden_layers": 1e9, "norm_eps": 1e300}')


# --- generate_request_fuzzer: serialized catserve.v1.GenerateRequest ---------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, wire_type, payload):
    key = varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + varint(payload)
    if wire_type == 2:
        return key + varint(len(payload)) + payload
    if wire_type == 5:
        return key + payload
    raise ValueError(wire_type)


def f32(number, value):
    return field(number, 5, struct.pack("<f", value))


def request_seeds():
    token_ids = field(2, 2, field(1, 2, b"".join(varint(i) for i in (1, 17, 42, 200))))
    sampling = field(4, 2, f32(1, 0.7) + field(2, 0, 40) + f32(3, 0.9) + f32(4, 0.05)
                     + f32(5, 1.1) + field(6, 0, 1234))
    write("generate_request_fuzzer", "text", field(1, 2, b"Hello, world") + field(3, 0, 16))
    write("generate_request_fuzzer", "token_ids_sampling", token_ids + field(3, 0, 8) + sampling)
    write("generate_request_fuzzer", "stops_tier", field(1, 2, "caf\u00e9 \u2603".encode())
          + field(3, 0, 32) + field(5, 2, b"\n\n") + field(5, 2, b"END") + field(6, 0, 2)
          + field(7, 0, 1) + field(9, 2, b"quality") + field(10, 0, 3) + field(11, 0, 1))
    write("generate_request_fuzzer", "chunk_size", token_ids + field(3, 0, 4) + field(8, 0, 16))
    write("generate_request_fuzzer", "limits", field(1, 2, b"x" * 100) + field(3, 0, 100))
    write("generate_request_fuzzer", "negative", field(3, 0, -1) + field(8, 0, -16)
          + field(6, 0, -5))


# --- stream_text_fuzzer: stop strings then pieces (FuzzedDataProvider) -------------------------

def stream_seeds():
    # ConsumeRandomLengthString: a backslash followed by anything but a backslash ends a string.
    write("stream_text_fuzzer", "ascii", b"\x02END\\ Hello wo\\ rld EN\\ D more")
    write("stream_text_fuzzer", "multibyte", "\x01\u2603\u2603\\ snow \u2603\\ \u2603 man".encode())
    write("stream_text_fuzzer", "invalid_utf8", b"\x01ab\\ \xe2\x98\\ \x83 \xc0\xaf \xed\xa0\x80 a\\ b")
    write("stream_text_fuzzer", "overlapping_stops", b"\x03aab\\ ab\\ b\\ aaab")


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    safetensors_seeds()
    config_seeds()
    request_seeds()
    stream_seeds()
    for target in sorted(CORPUS.iterdir()):
        print(f"{target.name}: {len(list(target.iterdir()))} seeds")


if __name__ == "__main__":
    main()
