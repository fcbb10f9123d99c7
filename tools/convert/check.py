"""Every tensor a catserve config implies, by name and shape, and the check that a converted
checkpoint holds exactly those: run by both converters before anything is written.

The rules are docs/CAT_MODEL.md's ("A model directory", "Tensors"), the same ones the engine applies
at load (engine/model/config.cc, engine/model/weights.cc), so a checkpoint that passes here loads
there; a failure is one ConversionError line that names the tensor or key and what to fix.
"""

from __future__ import annotations

import math
from typing import Callable

from .errors import ConversionError
from .safetensors_io import Tensor


def _int(config: dict, key: str, default) -> int:
    value = config.get(key)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConversionError(f"config key {key} is {value!r}; it must be a positive integer")
    return value


def _mlp_rule(width: int, hidden_ratio) -> int:
    """SwiGLU width of the hidden_ratio rule (ModelConfig::decoder_intermediate_size)."""
    return 256 * math.ceil(int(width * float(hidden_ratio) * 2 / 3) / 256)


def _block(prefix: str, width: int, heads: int, kv_heads: int, mlp: int, bias: bool,
           qk_norm: bool, what: str) -> dict[str, tuple[int, ...]]:
    if width % heads:
        raise ConversionError(f"{what}: {heads} heads do not divide the width {width}; fix the "
                              "head count in the config (or the converter's --n-head flags)")
    if heads % kv_heads:
        raise ConversionError(f"{what}: {kv_heads} kv heads do not divide {heads} heads")
    d = width // heads
    if d % 2:
        raise ConversionError(f"{what}: head size {width} / {heads} = {d} is odd; RoPE needs an "
                              "even head size")
    shapes = {
        "attn_norm.weight": (width,),
        "attn.q_proj.weight": (heads * d, width),
        "attn.k_proj.weight": (kv_heads * d, width),
        "attn.v_proj.weight": (kv_heads * d, width),
        "attn.o_proj.weight": (width, heads * d),
        "mlp_norm.weight": (width,),
        "mlp.gate_proj.weight": (mlp, width),
        "mlp.up_proj.weight": (mlp, width),
        "mlp.down_proj.weight": (width, mlp),
    }
    if bias:
        shapes.update({"attn.q_proj.bias": (heads * d,), "attn.k_proj.bias": (kv_heads * d,),
                       "attn.v_proj.bias": (kv_heads * d,)})
    if qk_norm:
        shapes.update({"attn.q_norm.weight": (d,), "attn.k_norm.weight": (d,)})
    return {prefix + k: v for k, v in shapes.items()}


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a catserve config.json implies (defaults as the engine's)."""
    V = _int(config, "vocab_size", 32000)
    D = _int(config, "hidden_size", 2048)
    L = _int(config, "num_hidden_layers", 24)
    H = _int(config, "num_heads", 32)
    Hkv = _int(config, "num_kv_heads", H)
    Dc = _int(config, "compressor_hidden_size", D // 2)
    Lc = _int(config, "compressor_num_layers", max(1, L // 4))
    Hc = _int(config, "compressor_num_heads", max(1, H // 2))
    Hckv = _int(config, "compressor_num_kv_heads", Hc)
    M = _int(config, "max_chunk_size", 16)
    P = _int(config, "max_position_embeddings", 2048)
    if M & (M - 1):
        raise ConversionError(f"max_chunk_size {M} is not a power of two")
    if P < M:
        raise ConversionError(f"max_position_embeddings {P} is below max_chunk_size {M}")
    ratio = config.get("hidden_ratio")
    ratio = 4 if ratio is None else ratio
    inter = config.get("intermediate_size")
    mlp = _int(config, "intermediate_size", 1) if inter is not None else _mlp_rule(D, ratio)
    if config.get("compressor_intermediate_size") is not None:
        cmlp = _int(config, "compressor_intermediate_size", 1)
    else:
        cmlp = mlp if inter is not None else _mlp_rule(Dc, ratio)
    if mlp < 1 or cmlp < 1:
        raise ConversionError(f"hidden_ratio {ratio!r} gives an MLP width below 1; set "
                              "intermediate_size")

    shapes: dict[str, tuple[int, ...]] = {
        "model.compressor.wte.weight": (V, Dc),
        "model.compressor.pos_tokens.weight": (P, Dc),
        "model.compressor.adaptive_tokens.weight": (M + 1, Dc),
        "model.compressor.norm.weight": (Dc,),
        "model.compressor.proj_fx.weight": (D, M * Dc),
        "model.embeddings.weight": (V, D),
        "model.separator.weight": (1, D),
        "model.adaptive_token.weight": (M + 1, D),
        "model.norm.weight": (D,),
    }
    for i in range(Lc):
        shapes.update(_block(f"model.compressor.layers.{i}.", Dc, Hc, Hckv, cmlp,
                             bool(config.get("compressor_qkv_bias", False)),
                             bool(config.get("compressor_qk_norm", False)), "compressor"))
    for i in range(L):
        shapes.update(_block(f"model.layers.{i}.", D, H, Hkv, mlp,
                             bool(config.get("qkv_bias", False)), bool(config.get("qk_norm", False)),
                             "decoder"))
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (V, D)
    return shapes


# Which config keys a tensor's shape comes from, for the message of a wrong shape.
_SHAPE_SOURCES = (
    ("proj_fx", "[hidden_size, max_chunk_size * compressor_hidden_size]"),
    ("pos_tokens", "[max_position_embeddings, compressor_hidden_size]"),
    ("adaptive_token", "[max_chunk_size + 1, width]"),
    ("wte", "[vocab_size, compressor_hidden_size]"),
    ("embeddings", "[vocab_size, hidden_size]"),
    ("lm_head", "[vocab_size, hidden_size]"),
    ("mlp.", "the MLP width (intermediate_size / hidden_ratio) and the block width"),
    ("attn.", "the block width, its head counts and head size"),
)


def _source(name: str) -> str:
    for needle, keys in _SHAPE_SOURCES:
        if needle in name:
            return keys
    return "the block width"


def check_tensors(config: dict, tensors: dict[str, Tensor], source: str,
                  source_name: Callable[[str], str] = lambda name: name) -> None:
    """Raises ConversionError (one line) unless `tensors` are exactly what `config` implies.
    `source` names the checkpoint in the message (e.g. "the fla checkpoint"); `source_name` turns
    a catserve tensor name into the checkpoint's own, so the message names what the user has."""
    want = expected_shapes(config)
    missing = [source_name(n) for n in want if n not in tensors]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise ConversionError(f"{source} has no {', '.join(missing[:4])}{more}, which its config "
                              "implies: pass the complete checkpoint (every shard) or fix config.json")
    extra = sorted(source_name(n) for n in tensors if n not in want)
    if extra:
        more = f" and {len(extra) - 4} more" if len(extra) > 4 else ""
        raise ConversionError(f"{source} has tensors its config does not explain: "
                              f"{', '.join(extra[:4])}{more}; check the config's layer counts, "
                              "qkv_bias, qk_norm and tie_word_embeddings")
    for name, shape in want.items():
        got = tensors[name].shape
        if got != shape:
            raise ConversionError(f"{source_name(name)} has shape {list(got)} but the config implies "
                                  f"{list(shape)} ({_source(name)}): the checkpoint and its config "
                                  "disagree; fix config.json or use the matching checkpoint")
