"""Loop-based incremental CAT decoding, written from docs/CAT_MODEL.md "Incremental decoding".

Independent of the interleaved forward in model.py: no interleaved sequence, no mask. Per decoder
layer it keeps a compressed cache (K/V of F_0, fx_0, ..., all at RoPE position 0) and a local cache
(K/V of the current chunk's S at position 1 and its tokens at 2, 3, ...), cleared at every chunk
boundary. It shares only the weights and the per-layer projections with model.py. make_fixtures.py
checks that its logits equal logits_all rows, which is what the C++ server's decode loop must do.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .model import CatForCausalLM, masked_attention, rope_cos_sin


class IncrementalDecoder:
    def __init__(self, model: CatForCausalLM, chunk_size: int):
        self.model = model
        self.l = chunk_size
        layers = len(model.model.layers)
        self.compressed = [([], []) for _ in range(layers)]  # per layer: K list, V list
        self.local = [([], []) for _ in range(layers)]
        self.chunk: list[int] = []  # tokens of the current chunk known so far
        self.completed_chunks = 0

    def _feed(self, x: torch.Tensor, position: int, is_f: bool) -> torch.Tensor:
        """Runs one decoder position x [D]; returns its logits [V]."""
        c = self.model.config
        cos, sin = rope_cos_sin(torch.tensor([position]), c.head_dim, c.rope_theta)
        h = x.view(1, 1, -1)
        for layer, (ck, cv), (lk, lv) in zip(self.model.model.layers, self.compressed, self.local):
            q, k, v = layer.attn.qkv(layer.attn_norm(h), cos, sin)
            if is_f:  # an F attends to all earlier Fs and itself
                ck.append(k)
                cv.append(v)
                keys, values = ck, cv
            else:  # S and tokens attend to all Fs so far and the local cache
                lk.append(k)
                lv.append(v)
                keys, values = ck + lk, cv + lv
            attended = masked_attention(q, torch.cat(keys, dim=2), torch.cat(values, dim=2), None)
            h = h + layer.attn.output(attended)
            h = h + layer.mlp(layer.mlp_norm(h))
        return (self.model.model.norm(h) @ self.model.lm_head_weight.T)[0, 0]

    def _clear_local(self):
        for lk, lv in self.local:
            lk.clear()
            lv.clear()

    def _feed_separator(self) -> torch.Tensor:
        return self._feed(self.model.model.separator.weight[0], 1, is_f=False)

    def _feed_token(self, token: int) -> torch.Tensor:
        r = len(self.chunk) - 1  # index of this token inside its chunk
        return self._feed(self.model.model.embeddings.weight[token], r + 2, is_f=False)

    @torch.no_grad()
    def prefill(self, tokens: Sequence[int]) -> torch.Tensor:
        """Prompt of n = m*l + r tokens -> logits predicting t_n."""
        l, m = self.l, len(tokens) // self.l
        f = [self.model.model.adaptive_token.weight[l]]
        if m:
            chunks = torch.tensor(list(tokens[:m * l]), dtype=torch.long).view(1, m, l)
            f += list(self.model.model.compressor(chunks, torch.arange(m))[0])
        for fx in f:  # causal F-only sequence, all at position 0
            self._feed(fx, 0, is_f=True)
        self.completed_chunks = m
        logits = self._feed_separator()
        for token in tokens[m * l:]:
            self.chunk.append(token)
            logits = self._feed_token(token)
        return logits

    @torch.no_grad()
    def step(self, token: int) -> torch.Tensor:
        """Appends the next token; returns the logits predicting the one after it."""
        self.chunk.append(token)
        if len(self.chunk) < self.l:
            return self._feed_token(token)
        chunk = torch.tensor(self.chunk, dtype=torch.long).view(1, 1, self.l)
        fx = self.model.model.compressor(chunk, torch.tensor([self.completed_chunks]))[0, 0]
        self.completed_chunks += 1
        self.chunk = []
        self._clear_local()
        self._feed(fx, 0, is_f=True)
        return self._feed_separator()

    def cache_entries(self) -> tuple[int, int]:
        """(compressed, local) entries per layer, for the memory formula in docs/CAT_MODEL.md."""
        return len(self.compressed[0][0]), len(self.local[0][0])
