"""rajesh-lab/cat-transformer (official, adaptive) state dict -> catserve tensors and config.

Read from the authors' code (never copied), repository rajesh-lab/cat-transformer:
  * cat_transformer_adaptive.py at its HEAD (the version with `seperator`; our search index
    holds it as file id 42607679748 without its commit id; the commits we could pin, 48175c7 and
    8f615e8, are older and have no separator):
    `CAT_Transformer` holds the compressor as `f` (class `Compressor`: `wte`, `pos_tokens`
    [block_size rows], `adaptive_token` [log2(chunk_size) + 1 rows, row = log2(l)], `layers`,
    `norm`, `proj_fx` [dim_fx, chunk_size * dim]) and the decoder as `dummy_fx` [log2(chunk_size)
    + 1 rows, row = log2(l)], `wte`, `layers`, `seperator` [1 row], `norm`, `output` (untied).
    Embedding rows are `padded_vocab_size`. A decoder block is [F, S, tokens], F at RoPE 0, S at 1
    (same as docs/CAT_MODEL.md); proj_fx is resized with bilinear interpolation, align_corners unset
    (= false), also for l == chunk_size, where it is the identity.
  * transformer.py (commit 94e3c2a9): `TransformerBlock` = `attention` (`wqkv` [(n_head +
    2 * n_local_heads) * head_dim, dim], split q, k, v in that order; `wo`; with use_qk_norm
    `q_norm`/`k_norm` [head_dim], RMSNorm with eps = norm_eps, applied before RoPE),
    `attention_norm`, `ffn_norm`, `feed_forward` (`fc_1` gate, `fc_2` up, `proj` down; silu(fc_1)
    * fc_2); no biases anywhere; `padded_vocab_size` = vocab_size rounded up to a multiple of 256;
    norm_eps defaults to 1e-5; head_dim = dim / n_head and RoPE covers the whole head.
  * utils.py `get_model` (commit 07c66fab): the compressor and the decoder are two CAT_Config
    objects, so the compressor's heads, kv heads, MLP width and eps are its own.
  * train.py (commit 07c66fab): the checkpoint is `accelerate.save(model.state_dict(), ...)`,
    a torch.save'd flat state dict (`state_dict.pt`).

Head counts are not recoverable from the shapes alone (wqkv rows = (H + 2 Hkv) * D / H), so the
caller passes n_head and compressor n_head; the kv head counts, widths, layer counts, MLP widths,
max chunk size, vocabulary and context length are read from the tensor shapes.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from .check import check_tensors
from .errors import ConversionError
from .safetensors_io import Tensor

# Prefixes that wrappers add to every key: torch.compile and DistributedDataParallel.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
# Buffers that setup_kv_cache registers; they hold generation scratch, not weights.
KV_CACHE_BUFFER = re.compile(r"(^|\.)kv_cache\.[kv]_cache$")

BLOCK_RENAMES = {
    "attention_norm.weight": "attn_norm.weight",
    "ffn_norm.weight": "mlp_norm.weight",
    "attention.wo.weight": "attn.o_proj.weight",
    "attention.q_norm.weight": "attn.q_norm.weight",
    "attention.k_norm.weight": "attn.k_norm.weight",
    "feed_forward.fc_1.weight": "mlp.gate_proj.weight",
    "feed_forward.fc_2.weight": "mlp.up_proj.weight",
    "feed_forward.proj.weight": "mlp.down_proj.weight",
}


@dataclasses.dataclass
class OfficialOptions:
    """What the state dict does not say (the training config's values)."""

    n_head: int
    compressor_n_head: int
    norm_eps: float = 1e-5  # TransformerConfig's default; get_model passes none to CAT_Config
    compressor_norm_eps: float | None = None  # None -> norm_eps
    rope_base: float = 10000.0
    min_chunk_size: int = 1  # smallest trained chunk size; adaptive rows exist for 1..max
    pad_token_id: int = 0  # the official forward pads with 0
    bos_token_id: int = 1
    eos_token_id: int = 2


def strip_wrappers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for name, t in state.items():
        stripped = True
        while stripped:
            stripped = False
            for p in WRAPPER_PREFIXES:
                if name.startswith(p):
                    name, stripped = name[len(p):], True
        if not KV_CACHE_BUFFER.search(name):
            out[name] = t
    return out


class _Taker:
    """Takes tensors out of the source by name, so leftovers can be reported."""

    def __init__(self, state: dict[str, Tensor]):
        self.state = dict(state)

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> Tensor:
        if name not in self.state:
            raise ConversionError(f"the state dict has no {name}")
        t = self.state.pop(name)
        if shape is not None and t.shape != tuple(shape):
            raise ConversionError(f"{name} has shape {list(t.shape)}, expected {list(shape)}")
        return t

    def has(self, name: str) -> bool:
        return name in self.state

    def check_empty(self) -> None:
        if self.state:
            left = sorted(self.state)
            more = f" and {len(left) - 8} more" if len(left) > 8 else ""
            raise ConversionError("tensors the official layout does not explain: "
                                  + ", ".join(left[:8]) + more)


def _count_layers(state: dict[str, Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for n in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", n))}
    if indices != set(range(len(indices))):
        raise ConversionError(f"{prefix}N layer indices are not 0..n-1: {sorted(indices)}")
    return len(indices)


def _heads(qkv_rows: int, width: int, heads: int, what: str) -> tuple[int, int]:
    """(head_dim, kv_heads) from wqkv's row count, which is (heads + 2 * kv_heads) * head_dim."""
    if width % heads:
        raise ConversionError(f"{what}: n_head {heads} does not divide the width {width}")
    hd = width // heads
    kv2 = qkv_rows // hd - heads
    if qkv_rows % hd or kv2 <= 0 or kv2 % 2 or heads % (kv2 // 2):
        raise ConversionError(f"{what}: wqkv has {qkv_rows} rows, which is not (n_head + 2 * "
                              f"n_local_heads) * head_dim for n_head {heads}, head_dim {hd}")
    return hd, kv2 // 2


def _block(take: _Taker, src: str, dst: str, width: int, heads: int, out: dict) -> dict:
    """Moves one TransformerBlock; returns its shape facts (kv heads, MLP width, qk_norm)."""
    wqkv = take.take(src + "attention.wqkv.weight")
    if wqkv.shape[1:] != (width,):
        raise ConversionError(f"{src}attention.wqkv.weight has shape {list(wqkv.shape)}, expected "
                              f"[*, {width}]")
    hd, kv_heads = _heads(wqkv.shape[0], width, heads, src.rstrip("."))
    q, k = heads * hd, kv_heads * hd
    # transformer.py: q, k, v = wqkv(x).split([dim, kv_size, kv_size]).
    out[dst + "attn.q_proj.weight"] = Tensor(wqkv.dtype, wqkv.array[:q].copy())
    out[dst + "attn.k_proj.weight"] = Tensor(wqkv.dtype, wqkv.array[q:q + k].copy())
    out[dst + "attn.v_proj.weight"] = Tensor(wqkv.dtype, wqkv.array[q + k:].copy())
    qk_norm = take.has(src + "attention.q_norm.weight")
    inter = take.state.get(src + "feed_forward.fc_1.weight")
    if inter is None:
        raise ConversionError(f"the state dict has no {src}feed_forward.fc_1.weight")
    inter = inter.shape[0]
    shapes = {
        "attention_norm.weight": (width,), "ffn_norm.weight": (width,),
        "attention.wo.weight": (width, heads * hd),
        "feed_forward.fc_1.weight": (inter, width), "feed_forward.fc_2.weight": (inter, width),
        "feed_forward.proj.weight": (width, inter),
    }
    if qk_norm:
        shapes["attention.q_norm.weight"] = (hd,)
        shapes["attention.k_norm.weight"] = (hd,)
    for name, shape in shapes.items():
        out[dst + BLOCK_RENAMES[name]] = take.take(src + name, shape)
    return {"kv_heads": kv_heads, "intermediate": inter, "qk_norm": qk_norm}


def _by_chunk_size(t: Tensor, name: str, max_chunk: int) -> Tensor:
    """[log2(M) + 1, W] indexed by log2(l) -> [M + 1, W] indexed by l; rows of non-powers of
    two are never read and left zero."""
    rows = int(math.log2(max_chunk)) + 1
    if t.shape[0] != rows:
        raise ConversionError(f"{name} has {t.shape[0]} rows; a model whose largest chunk is "
                              f"{max_chunk} has log2({max_chunk}) + 1 = {rows}")
    out = np.zeros((max_chunk + 1,) + t.shape[1:], dtype=t.array.dtype)
    for p in range(rows):
        out[2 ** p] = t.array[p]
    return Tensor(t.dtype, out)


def convert(state: dict[str, Tensor], opt: OfficialOptions) -> tuple[dict, dict[str, Tensor]]:
    """Returns (catserve config.json dict, catserve tensors)."""
    state = strip_wrappers(state)
    if "seperator.weight" not in state:
        raise ConversionError(
            "the state dict has no seperator.weight: it comes from an older "
            "cat_transformer_adaptive.py (e.g. commits 8f615e8, 48175c7) whose decoder blocks are "
            "[F, tokens] without a separator; catserve serves the [F, S, tokens] layout of its "
            "HEAD and of the fla port only")
    take = _Taker(state)
    for name in ("wte.weight", "f.wte.weight", "f.proj_fx.weight", "f.pos_tokens.weight"):
        if not take.has(name):
            raise ConversionError(f"the state dict has no {name}: not an official CAT checkpoint")
    V, D = state["wte.weight"].shape
    Dc = state["f.wte.weight"].shape[1]
    P = state["f.pos_tokens.weight"].shape[0]
    proj_fx = state["f.proj_fx.weight"]
    if proj_fx.shape[0] != D or proj_fx.shape[1] % Dc:
        raise ConversionError(f"f.proj_fx.weight has shape {list(proj_fx.shape)}; expected "
                              f"[{D}, chunk_size * {Dc}]")
    M = proj_fx.shape[1] // Dc
    if M & (M - 1):
        raise ConversionError(f"the largest chunk size {M} (from f.proj_fx) is not a power of two")
    if not (1 <= opt.min_chunk_size <= M) or opt.min_chunk_size & (opt.min_chunk_size - 1):
        raise ConversionError(f"min chunk size {opt.min_chunk_size} must be a power of two in "
                              f"[1, {M}]")
    L = _count_layers(state, "layers.")
    Lc = _count_layers(state, "f.layers.")
    if L == 0 or Lc == 0:
        raise ConversionError("the state dict has no decoder or no compressor layers")

    out: dict[str, Tensor] = {}
    out["model.compressor.wte.weight"] = take.take("f.wte.weight", (V, Dc))
    out["model.compressor.pos_tokens.weight"] = take.take("f.pos_tokens.weight", (P, Dc))
    out["model.compressor.adaptive_tokens.weight"] = _by_chunk_size(
        take.take("f.adaptive_token.weight"), "f.adaptive_token.weight", M)
    comp = [_block(take, f"f.layers.{i}.", f"model.compressor.layers.{i}.", Dc,
                   opt.compressor_n_head, out) for i in range(Lc)]
    out["model.compressor.norm.weight"] = take.take("f.norm.weight", (Dc,))
    out["model.compressor.proj_fx.weight"] = take.take("f.proj_fx.weight", (D, M * Dc))

    out["model.embeddings.weight"] = take.take("wte.weight", (V, D))
    out["model.separator.weight"] = take.take("seperator.weight", (1, D))
    out["model.adaptive_token.weight"] = _by_chunk_size(take.take("dummy_fx.weight"),
                                                        "dummy_fx.weight", M)
    dec = [_block(take, f"layers.{i}.", f"model.layers.{i}.", D, opt.n_head, out)
           for i in range(L)]
    out["model.norm.weight"] = take.take("norm.weight", (D,))
    out["lm_head.weight"] = take.take("output.weight", (V, D))
    take.check_empty()

    for name, blocks in (("decoder", dec), ("compressor", comp)):
        for key in ("kv_heads", "intermediate", "qk_norm"):
            if len({b[key] for b in blocks}) != 1:
                raise ConversionError(f"{name} layers disagree on {key}: {[b[key] for b in blocks]}")
    compressor_eps = opt.norm_eps if opt.compressor_norm_eps is None else opt.compressor_norm_eps
    config = {
        "model_type": "cat",
        "architectures": ["CATForCausalLM"],
        "vocab_size": V,  # padded_vocab_size: the softmax runs over every row, as in the source
        "hidden_size": D,
        "num_hidden_layers": L,
        "num_heads": opt.n_head,
        "num_kv_heads": dec[0]["kv_heads"],
        "compressor_hidden_size": Dc,
        "compressor_num_layers": Lc,
        "compressor_num_heads": opt.compressor_n_head,
        "compressor_num_kv_heads": comp[0]["kv_heads"],
        "max_chunk_size": M,
        "min_train_chunk_size": opt.min_chunk_size,
        "max_position_embeddings": P,
        "rope_theta": float(opt.rope_base),
        "norm_eps": opt.norm_eps,
        "hidden_ratio": 4,
        "intermediate_size": dec[0]["intermediate"],
        "compressor_intermediate_size": comp[0]["intermediate"],
        "compressor_norm_eps": compressor_eps,
        "qk_norm": dec[0]["qk_norm"],
        "qk_norm_eps": opt.norm_eps,  # transformer.py: q_norm/k_norm use norm_eps
        "compressor_qk_norm": comp[0]["qk_norm"],
        "compressor_qk_norm_eps": compressor_eps,
        "qkv_bias": False,
        "compressor_qkv_bias": False,
        "tie_word_embeddings": False,
        "pad_token_id": opt.pad_token_id,
        "bos_token_id": opt.bos_token_id,
        "eos_token_id": opt.eos_token_id,
        "dim_fx": D,
        "hidden_act": "swish",
    }
    # Every tensor against the config it produced, as the engine will check them at load.
    check_tensors(config, out, "the converted state dict")
    return config, out
