"""Plain PyTorch reference of the Compress & Attend Transformer (CAT), interleaved view.

Written from docs/CAT_MODEL.md (the shared design doc), not from any other implementation. Everything
is fp32 and uses plain torch ops with explicit boolean masks, so it reads top to bottom and serves as
the oracle the C++ engine is tested against (tests/fixtures, see docs/FIXTURES.md).

Conventions used throughout:
  * `l` is the chunk size, `M` = max_chunk_size, `K` = number of chunks after padding.
  * The decoder input is the interleaved sequence: block j = [F_j, S, t_{jl}, ..., t_{jl+l-1}]
    for j = 0..K-1, then the trailing pair [F_K, S] (F_0 = adaptive_token[l], F_j = fx_{j-1}).
  * Logit row i (i = 0..N) is the prediction of token t_i: the S of block i//l when i % l == 0
    (block K is the trailing pair), else the output at token t_{i-1}.

Tensor names match docs/CAT_MODEL.md (model.compressor.*, model.layers.i.attn.*, lm_head.weight, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TORCH_DTYPE_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class CatConfig:
    """HF-style CAT config; field names and defaults as in docs/CAT_MODEL.md's table."""

    vocab_size: int = 32000
    hidden_size: int = 2048
    num_hidden_layers: int = 24
    num_heads: int = 32
    num_kv_heads: Optional[int] = None  # None -> num_heads
    compressor_hidden_size: Optional[int] = None  # None -> hidden_size // 2
    compressor_num_layers: Optional[int] = None  # None -> max(1, num_hidden_layers // 4)
    compressor_num_heads: Optional[int] = None  # None -> max(1, num_heads // 2)
    max_chunk_size: int = 16
    min_train_chunk_size: int = 2
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    hidden_ratio: float = 4
    intermediate_size: Optional[int] = None  # None -> per-MLP rule, see mlp_width()
    qk_norm: bool = False
    qkv_bias: bool = False
    pad_token_id: Optional[int] = None  # None -> 0
    bos_token_id: int = 1
    eos_token_id: int = 2
    tie_word_embeddings: bool = False
    dim_fx: Optional[int] = None  # must equal hidden_size
    qk_norm_eps: float = 1e-5  # per-head q/k RMSNorm epsilon of the decoder
    # The compressor's own block settings (engine/config.h). None -> what a compressor had before
    # these keys: no GQA, the decoder's MLP width rule, norm_eps, qk_norm_eps; no q/k norm or bias.
    compressor_num_kv_heads: Optional[int] = None  # None -> compressor_num_heads
    compressor_intermediate_size: Optional[int] = None  # None -> mlp_width(Dc) rule
    compressor_norm_eps: Optional[float] = None  # None -> norm_eps
    compressor_qk_norm: bool = False
    compressor_qk_norm_eps: Optional[float] = None  # None -> qk_norm_eps
    compressor_qkv_bias: bool = False

    def __post_init__(self):
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.compressor_hidden_size is None:
            self.compressor_hidden_size = self.hidden_size // 2
        if self.compressor_num_layers is None:
            self.compressor_num_layers = max(1, self.num_hidden_layers // 4)
        if self.compressor_num_heads is None:
            self.compressor_num_heads = max(1, self.num_heads // 2)
        if self.compressor_num_kv_heads is None:
            self.compressor_num_kv_heads = self.compressor_num_heads
        if self.compressor_norm_eps is None:
            self.compressor_norm_eps = self.norm_eps
        if self.compressor_qk_norm_eps is None:
            self.compressor_qk_norm_eps = self.qk_norm_eps
        if self.pad_token_id is None:
            self.pad_token_id = 0
        if self.dim_fx is None:
            self.dim_fx = self.hidden_size
        if self.dim_fx != self.hidden_size:
            raise ValueError(f"dim_fx ({self.dim_fx}) must equal hidden_size ({self.hidden_size})")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size % num_heads and num_heads % num_kv_heads must be 0")
        if (self.compressor_hidden_size % self.compressor_num_heads
                or self.compressor_num_heads % self.compressor_num_kv_heads):
            raise ValueError("compressor_hidden_size % compressor_num_heads and "
                             "compressor_num_heads % compressor_num_kv_heads must be 0")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def mlp_width(self, width: int) -> int:
        """SwiGLU hidden width of an MLP whose model width is `width` (D or Dc)."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        return 256 * math.ceil(int(width * self.hidden_ratio * 2 / 3) / 256)

    def compressor_mlp_width(self) -> int:
        if self.compressor_intermediate_size is not None:
            return self.compressor_intermediate_size
        return self.mlp_width(self.compressor_hidden_size)

    def train_chunk_sizes(self) -> list[int]:
        sizes, l = [], self.min_train_chunk_size
        while l <= self.max_chunk_size:
            sizes.append(l)
            l *= 2
        return sizes

    @classmethod
    def from_dict(cls, d: dict) -> "CatConfig":
        if d.get("model_type", "cat") != "cat":
            raise ValueError(f"model_type must be 'cat', got {d.get('model_type')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self, torch_dtype: str = "float32") -> dict:
        """Every key written explicitly (resolved defaults); intermediate_size stays null if unset."""
        d = {"model_type": "cat", "architectures": ["CATForCausalLM"]}
        d.update(dataclasses.asdict(self))
        d["hidden_act"] = "swish"
        d["torch_dtype"] = torch_dtype
        return d


# ----------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.promote_types(x.dtype, torch.float32))  # fp32 (fp64 in self-checks)
        return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float):
    """cos/sin tables [T, head_dim/2] for the given integer positions (angles in float64)."""
    k = torch.arange(head_dim // 2, dtype=torch.float64)
    inv_freq = float(theta) ** (-2.0 * k / head_dim)
    angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on x [..., T, head_dim]: pairs (x[k], x[k + head_dim/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def masked_attention(q, k, v, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """q [B,H,T,hd], k/v [B,Hkv,S,hd], mask [T,S] bool (True = may attend) or None (full)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, width: int, num_heads: int, num_kv_heads: int, bias: bool, qk_norm: bool,
                 qk_norm_eps: float):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = width // num_heads
        self.q_proj = nn.Linear(width, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, width, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, qk_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [B,T,W] (already normed) -> q [B,H,T,hd], k/v [B,Hkv,T,hd]; q/k normed then roped."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def output(self, attended: torch.Tensor) -> torch.Tensor:
        """attended [B,H,T,hd] -> [B,T,W]."""
        B, _, T, _ = attended.shape
        return self.o_proj(attended.transpose(1, 2).reshape(B, T, -1))

    def forward(self, x, cos, sin, mask):
        q, k, v = self.qkv(x, cos, sin)
        return self.output(masked_attention(q, k, v, mask))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm block: h = x + Attn(RMSNorm(x)); out = h + MLP(RMSNorm(h))."""

    def __init__(self, width, num_heads, num_kv_heads, mlp_hidden, eps, bias=False, qk_norm=False,
                 qk_norm_eps=1e-5):
        super().__init__()
        self.attn_norm = RMSNorm(width, eps)
        self.attn = Attention(width, num_heads, num_kv_heads, bias, qk_norm, qk_norm_eps)
        self.mlp_norm = RMSNorm(width, eps)
        self.mlp = SwiGLU(width, mlp_hidden)

    def forward(self, x, cos, sin, mask):
        h = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return h + self.mlp(self.mlp_norm(h))


def resized_proj_fx(proj_fx: torch.Tensor, l: int, max_chunk_size: int) -> torch.Tensor:
    """W_l [D, l*Dc]: proj_fx [D, M*Dc] itself when l == M, else its bilinear resize
    (align_corners=False; rows keep their size so only columns interpolate)."""
    if l == max_chunk_size:
        return proj_fx
    D, MDc = proj_fx.shape
    Dc = MDc // max_chunk_size
    resized = F.interpolate(proj_fx[None, None], size=(D, l * Dc), mode="bilinear",
                            align_corners=False)
    return resized[0, 0]


# ----------------------------------------------------------------------------------------------
# Compressor and decoder


class Compressor(nn.Module):
    """One chunk of l tokens -> one vector fx of width D (bidirectional over l+2 positions)."""

    def __init__(self, c: CatConfig):
        super().__init__()
        self.config = c
        Dc = c.compressor_hidden_size
        self.wte = nn.Embedding(c.vocab_size, Dc)
        self.pos_tokens = nn.Embedding(c.max_position_embeddings, Dc)
        self.adaptive_tokens = nn.Embedding(c.max_chunk_size + 1, Dc)
        self.layers = nn.ModuleList(
            Block(Dc, c.compressor_num_heads, c.compressor_num_kv_heads, c.compressor_mlp_width(),
                  c.compressor_norm_eps, bias=c.compressor_qkv_bias, qk_norm=c.compressor_qk_norm,
                  qk_norm_eps=c.compressor_qk_norm_eps)
            for _ in range(c.compressor_num_layers))
        self.norm = RMSNorm(Dc, c.compressor_norm_eps)
        self.proj_fx = nn.Linear(c.max_chunk_size * Dc, c.hidden_size, bias=False)

    def forward(self, chunks: torch.Tensor, chunk_indices: torch.Tensor) -> torch.Tensor:
        """chunks [B,K,l] token ids, chunk_indices [K] (index k of each chunk in its sequence)
        -> fx [B,K,D]."""
        B, K, l = chunks.shape
        Dc = self.config.compressor_hidden_size
        adaptive = self.adaptive_tokens.weight[l].expand(B, K, 1, Dc)
        pos = self.pos_tokens.weight[chunk_indices][None, :, None, :].expand(B, K, 1, Dc)
        x = torch.cat([adaptive, pos, self.wte(chunks)], dim=2).reshape(B * K, l + 2, Dc)
        cos, sin = rope_cos_sin(torch.arange(l + 2), Dc // self.config.compressor_num_heads,
                                self.config.rope_theta)
        for layer in self.layers:
            x = layer(x, cos, sin, mask=None)  # bidirectional within the chunk
        v = self.norm(x)[:, 2:, :].reshape(B, K, l * Dc)
        return v @ self.resized_proj_fx(l).T

    def resized_proj_fx(self, l: int) -> torch.Tensor:
        return resized_proj_fx(self.proj_fx.weight, l, self.config.max_chunk_size)


class CatModel(nn.Module):
    def __init__(self, c: CatConfig):
        super().__init__()
        self.config = c
        D = c.hidden_size
        self.compressor = Compressor(c)
        self.embeddings = nn.Embedding(c.vocab_size, D)
        self.separator = nn.Embedding(1, D)
        self.adaptive_token = nn.Embedding(c.max_chunk_size + 1, D)
        self.layers = nn.ModuleList(
            Block(D, c.num_heads, c.num_kv_heads, c.mlp_width(D), c.norm_eps,
                  bias=c.qkv_bias, qk_norm=c.qk_norm, qk_norm_eps=c.qk_norm_eps)
            for _ in range(c.num_hidden_layers))
        self.norm = RMSNorm(D, c.norm_eps)


def interleaved_mask(T: int, l: int) -> torch.Tensor:
    """[T,T] bool: query q sees key k iff k <= q and (k is an F position or in q's block)."""
    p = torch.arange(T)
    q, k = p[:, None], p[None, :]
    block = l + 2
    return (k <= q) & ((k % block == 0) | (k // block == q // block))


def interleaved_positions(K: int, l: int) -> torch.Tensor:
    """RoPE positions: 0..l+1 restarting in every block, then 0, 1 for the trailing pair."""
    return torch.cat([torch.arange(l + 2).repeat(K), torch.arange(2)])


def prediction_positions(n: int, l: int) -> torch.Tensor:
    """Index into the interleaved sequence of logit row i = 0..n (row i predicts t_i)."""
    idx = []
    for i in range(n + 1):
        if i % l == 0:
            idx.append((i // l) * (l + 2) + 1)  # S of block i//l (block K = trailing pair)
        else:
            j, r = divmod(i - 1, l)
            idx.append(j * (l + 2) + 2 + r)  # token t_{i-1}
    return torch.tensor(idx, dtype=torch.long)


class CatForCausalLM(nn.Module):
    def __init__(self, config: CatConfig):
        super().__init__()
        self.config = config
        self.model = CatModel(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    @property
    def lm_head_weight(self) -> torch.Tensor:
        if self.config.tie_word_embeddings:
            return self.model.embeddings.weight
        return self.lm_head.weight

    def resized_proj_fx(self, l: int) -> torch.Tensor:
        return self.model.compressor.resized_proj_fx(l)

    def _check_chunk_size(self, l: int):
        M = self.config.max_chunk_size
        if not 1 <= l <= M:
            raise ValueError(f"chunk size {l} must be in [1, {M}]")

    def hidden_rows(self, input_ids: torch.Tensor, l: int,
                    pad_id: Optional[int] = None) -> torch.Tensor:
        """input_ids [B,N] -> final-normed hidden states [B,N+1,D], row i predicting t_i."""
        self._check_chunk_size(l)
        B, N = input_ids.shape
        if N > self.config.max_position_embeddings:
            raise ValueError(f"{N} tokens exceed max_position_embeddings")
        m = self.model
        pad = self.config.pad_token_id if pad_id is None else pad_id
        K = -(-N // l)
        ids = F.pad(input_ids, (0, K * l - N), value=pad).view(B, K, l)
        D = self.config.hidden_size

        first_f = m.adaptive_token.weight[l].expand(B, 1, D)
        if K > 0:
            fx = m.compressor(ids, torch.arange(K))  # [B,K,D]
            f_in = torch.cat([first_f, fx], dim=1)  # F_0..F_K
        else:
            f_in = first_f
        sep = m.separator.weight[0].expand(B, K + 1, 1, D)
        blocks = torch.cat([f_in[:, :K, None, :], sep[:, :K], m.embeddings(ids)], dim=2)
        trailing = torch.cat([f_in[:, K:K + 1, :], sep[:, K]], dim=1)  # [F_K, S]
        x = torch.cat([blocks.reshape(B, K * (l + 2), D), trailing], dim=1)

        T = x.shape[1]
        cos, sin = rope_cos_sin(interleaved_positions(K, l), self.config.head_dim,
                                self.config.rope_theta)
        mask = interleaved_mask(T, l)
        for layer in m.layers:
            x = layer(x, cos, sin, mask)
        return m.norm(x[:, prediction_positions(N, l), :])

    def forward(self, input_ids: torch.Tensor, chunk_size: int,
                targets: Optional[torch.Tensor] = None, pad_id: Optional[int] = None):
        """input_ids [B,N] (one chunk size for the batch) -> logits [B,N+1,V].

        With targets [B,N] (targets[:, i] is what row i should predict, usually input_ids
        itself; -100 = ignore) returns (logits, mean cross-entropy over rows 0..N-1)."""
        logits = self.hidden_rows(input_ids, chunk_size, pad_id) @ self.lm_head_weight.T
        if targets is None:
            return logits
        N = input_ids.shape[1]
        loss = F.cross_entropy(logits[:, :N].reshape(-1, logits.shape[-1]),
                               targets.reshape(-1), ignore_index=-100)
        return logits, loss

    @torch.no_grad()
    def logits_all(self, tokens: Sequence[int], l: int,
                   pad_id: Optional[int] = None) -> torch.Tensor:
        """[N+1,V] fp32: row i is the prediction of token i (see module docstring)."""
        ids = torch.tensor([list(tokens)], dtype=torch.long).view(1, -1)
        return self.forward(ids, l, pad_id=pad_id)[0]


# ----------------------------------------------------------------------------------------------
# Random init, save, load


def _is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


def _is_embedding(name: str) -> bool:
    return any(name.endswith(s) for s in (
        "wte.weight", "pos_tokens.weight", "adaptive_tokens.weight", "embeddings.weight",
        "separator.weight", "adaptive_token.weight"))


@torch.no_grad()
def random_model(config: CatConfig, seed: int, dtype: str = "f32") -> CatForCausalLM:
    """Deterministic random weights that make every part of the model matter:
    linear weights ~ N(0, 1/fan_in) (attention scores O(1)), embeddings ~ N(0, 0.1^2),
    norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2). With dtype f16/bf16 the weights are
    rounded to that dtype (and kept as the rounded values, in fp32)."""
    model = CatForCausalLM(config)
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
        if _is_norm(name):
            p.copy_(1.0 + 0.1 * noise)
        elif name.endswith(".bias"):
            p.copy_(0.1 * noise)
        elif _is_embedding(name):
            p.copy_(0.1 * noise)
        else:
            p.copy_(noise / math.sqrt(p.shape[1]))
        p.copy_(p.to(DTYPES[dtype]).float())
    return model.eval()


def save_model(model: CatForCausalLM, directory: str, dtype: str = "f32") -> None:
    """Writes config.json and model.safetensors (weights cast to dtype)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(model.config.to_dict(TORCH_DTYPE_NAMES[dtype]), f, indent=2)
        f.write("\n")
    tensors = {name: p.detach().to(DTYPES[dtype]).contiguous()
               for name, p in model.named_parameters()}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def load_model(directory: str) -> CatForCausalLM:
    """Reads config.json + model.safetensors (any float dtype, upcast to fp32)."""
    from safetensors.torch import load_file

    with open(os.path.join(directory, "config.json")) as f:
        config = CatConfig.from_dict(json.load(f))
    model = CatForCausalLM(config)
    tensors = {k: v.float() for k, v in load_file(os.path.join(directory, "model.safetensors")).items()}
    model.load_state_dict(tensors, strict=True)
    return model.eval()
