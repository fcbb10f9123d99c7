"""fla-org/flash-linear-attention CAT port (pull request 1017, `model_type: "cat"`) -> catserve.

Read from the authors' port (never copied), repository fla-org/flash-linear-attention:
  * fla/models/cat/modeling_cat.py (commit 244a7648): `CATForCausalLM` = `model` (`CATModel`) +
    `lm_head` (listed in `_tied_weights_keys`). `CATModel` holds `compressor` (`CATCompressor`:
    `wte`, `pos_tokens` [max_position_embeddings rows], `adaptive_tokens` [max_chunk_size + 1,
    row = l], `layers`, `norm`, `proj_fx`), `embeddings`, `separator`, `adaptive_token` [row = l],
    `layers`, `norm`, and a persistent buffer `_train_chunk_size_step` (training schedule state,
    no weight). A `CATCompressorBlock` has `attn_norm`, `q_proj`/`k_proj`/`v_proj` (width ->
    width, no GQA, `bias=config.qkv_bias`), `o_proj`, `mlp_norm`, `mlp` (GatedMLP: gate_proj,
    up_proj, down_proj) directly on the layer: no `attn.` infix, no q/k norm. A decoder `CATBlock`
    has `attn.{q,k,v,o}_proj` (GQA by num_kv_heads, biases with qkv_bias) and, with qk_norm,
    `attn.{q,k}_norm` built as `RMSNorm(head_dim, dtype=float32)`: fla's RMSNorm default
    epsilon 1e-5, not norm_eps. Every other norm uses norm_eps.
  * fla/modules/mlp.py (commit 20ceee52): `GatedMLP` = `gate_proj`, `up_proj`, `down_proj`, no
    biases, width 256 * ceil(int(hidden * hidden_ratio * 2 / 3) / 256) unless intermediate_size
    is set (catserve's rule), swish only.
  * fla/models/cat/configuration_cat.py (same pull request; our search index holds it as file id
    59808574011 without its commit id): the keys and defaults of `CATConfig`, among them `train_chunk_size_schedule`
    ("power_of_2" trains min_train_chunk_size..max_chunk_size; None, "none" or "fixed" train
    max_chunk_size only) and `hidden_act` (SwiGLU with "swish").
"""

from __future__ import annotations

import json
import re

from .check import check_tensors
from .errors import ConversionError
from .safetensors_io import Tensor

FLA_QK_NORM_EPS = 1e-5  # fla.modules.RMSNorm's default epsilon
DROPPED_BUFFERS = ("model._train_chunk_size_step",)
COMPRESSOR_ATTN = re.compile(r"^(model\.compressor\.layers\.\d+\.)([qkvo]_proj\.(weight|bias))$")

# Keys with the same name and meaning in both configs -> CATConfig's default for them.
SAME_KEYS = {
    "vocab_size": 32000, "hidden_size": 2048, "num_hidden_layers": 24, "num_heads": 32,
    "num_kv_heads": None, "compressor_hidden_size": None, "compressor_num_layers": None,
    "compressor_num_heads": None, "max_chunk_size": 16, "max_position_embeddings": 2048,
    "rope_theta": 10000.0, "norm_eps": 1e-6, "hidden_ratio": 4, "intermediate_size": None,
    "qk_norm": False, "qkv_bias": False, "pad_token_id": None, "bos_token_id": 1,
    "eos_token_id": 2, "tie_word_embeddings": False, "dim_fx": None,
}


def convert_config(src: dict) -> dict:
    if src.get("model_type") != "cat":
        raise ConversionError(f"config.json model_type is {src.get('model_type')!r}, not 'cat'")
    affine = src.get("elementwise_affine")
    if affine not in (None, True):  # fla's default is true
        raise ConversionError(
            f"config.json sets elementwise_affine: {json.dumps(affine)}, so the port's RMSNorms "
            "have no weights, and catserve's RMSNorm needs one; convert a checkpoint trained "
            "with elementwise_affine: true")
    act = src.get("hidden_act", "swish")
    if act not in ("swish", "silu"):
        raise ConversionError(f"hidden_act {act!r}: catserve's MLP is SwiGLU (swish/silu) only")
    out = {"model_type": "cat", "architectures": ["CATForCausalLM"]}
    for key, default in SAME_KEYS.items():
        out[key] = src.get(key, default)
    if out["rope_theta"] is None:
        raise ConversionError("rope_theta is null: the port's RotaryEmbedding needs a base")
    schedule = src.get("train_chunk_size_schedule", "power_of_2")
    if schedule == "power_of_2":
        out["min_train_chunk_size"] = src.get("min_train_chunk_size", 2)
    elif schedule in (None, "none", "fixed"):
        out["min_train_chunk_size"] = out["max_chunk_size"]  # only max_chunk_size was trained
    else:
        raise ConversionError(f"unknown train_chunk_size_schedule {schedule!r}")
    out["qk_norm_eps"] = FLA_QK_NORM_EPS
    # The compressor block: no GQA, no q/k norm, the decoder's eps and MLP rule, and q/k/v
    # biases exactly when the decoder has them (CATCompressorBlock uses config.qkv_bias).
    out["compressor_qkv_bias"] = bool(out["qkv_bias"])
    out["compressor_qk_norm"] = False
    out["hidden_act"] = "swish"
    return out


def convert_tensors(config: dict, state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for name, t in state.items():
        if name in DROPPED_BUFFERS:
            continue
        m = COMPRESSOR_ATTN.match(name)
        out[m.group(1) + "attn." + m.group(2) if m else name] = t
    if config["tie_word_embeddings"]:
        # Tied: the head is the embedding table; a saved copy (if any) is redundant.
        out.pop("lm_head.weight", None)
    elif "lm_head.weight" not in out:
        raise ConversionError("tie_word_embeddings is false but the weights have no lm_head.weight")
    return out


def source_name(name: str) -> str:
    """The port's name of a catserve tensor name (the compressor has no `attn.` infix there)."""
    m = re.match(r"^(model\.compressor\.layers\.\d+\.)attn\.([qkvo]_proj\.(weight|bias))$", name)
    return m.group(1) + m.group(2) if m else name


def convert(config: dict, state: dict[str, Tensor]) -> tuple[dict, dict[str, Tensor]]:
    """Returns (catserve config.json dict, catserve tensors); every tensor is checked against
    the config (name and shape) before anything is returned."""
    out_config = convert_config(config)
    out = convert_tensors(out_config, state)
    check_tensors(out_config, out, "the fla checkpoint", source_name)
    return out_config, out
