"""tools/convert without PyTorch: the committed sources convert to the committed fixture models
bit for bit, and every refusal names its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
SOURCES = os.path.join(FIXTURES, "sources")
TOKENIZER = os.path.join(FIXTURES, "tiny", "tokenizer.model")
sys.path.insert(0, os.path.join(REPO, "tools"))

from convert import fla, official  # noqa: E402
from convert.errors import ConversionError  # noqa: E402
from convert.official import OfficialOptions  # noqa: E402
from convert.safetensors_io import Tensor, read, write  # noqa: E402


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "convert")] + args,
                          capture_output=True, text=True, timeout=60)


def committed_args(layout: str, out: str) -> list[str]:
    src = os.path.join(SOURCES, f"{layout}_tiny")
    with open(os.path.join(src, "convert_args.json")) as f:
        args = json.load(f)
    return [a.format(src=src, out=out, tokenizer=TOKENIZER) for a in args]


@pytest.mark.parametrize("layout", ["official", "fla"])
def test_source_converts_to_the_committed_model(layout, tmp_path):
    out = str(tmp_path / "out")
    result = run_cli(committed_args(layout, out))
    assert result.returncode == 0, result.stderr
    want_dir = os.path.join(FIXTURES, f"{layout}_tiny")
    for name in ("config.json", "model.safetensors", "tokenizer.model"):
        with open(os.path.join(out, name), "rb") as a, open(os.path.join(want_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    # Not a tautology of the file compare: the model really is the source, renamed.
    got = read(os.path.join(out, "model.safetensors"))
    assert all(t.dtype in ("F32", "BF16") for t in got.values())


def official_source():
    return read(os.path.join(SOURCES, "official_tiny", "state_dict.safetensors"))


OPTIONS = OfficialOptions(n_head=4, compressor_n_head=4, norm_eps=0.1, compressor_norm_eps=0.3)


def test_official_mapping_by_name():
    src = official_source()
    config, out = official.convert(src, OPTIONS)
    wqkv = src["layers.1.attention.wqkv.weight"].array  # (4 + 2 * 2) * 16 rows: q 64, k 32, v 32
    np.testing.assert_array_equal(out["model.layers.1.attn.q_proj.weight"].array, wqkv[:64])
    np.testing.assert_array_equal(out["model.layers.1.attn.k_proj.weight"].array, wqkv[64:96])
    np.testing.assert_array_equal(out["model.layers.1.attn.v_proj.weight"].array, wqkv[96:])
    np.testing.assert_array_equal(out["model.separator.weight"].array, src["seperator.weight"].array)
    np.testing.assert_array_equal(out["lm_head.weight"].array, src["output.weight"].array)
    np.testing.assert_array_equal(out["model.layers.0.mlp.gate_proj.weight"].array,
                                  src["layers.0.feed_forward.fc_1.weight"].array)
    np.testing.assert_array_equal(out["model.layers.0.mlp.up_proj.weight"].array,
                                  src["layers.0.feed_forward.fc_2.weight"].array)
    for ours, theirs in (("model.adaptive_token.weight", "dummy_fx.weight"),
                         ("model.compressor.adaptive_tokens.weight", "f.adaptive_token.weight")):
        table, rows = out[ours].array, src[theirs].array
        assert table.shape[0] == 17 and rows.shape[0] == 5
        for l in range(17):  # row l here = row log2(l) there; other rows are never read
            want = rows[int(np.log2(l))] if l and l & (l - 1) == 0 else np.zeros_like(rows[0])
            np.testing.assert_array_equal(table[l], want)
    assert config["vocab_size"] == 512 and config["num_kv_heads"] == 2
    assert config["compressor_num_kv_heads"] == 2 and config["compressor_intermediate_size"] == 96
    assert config["qk_norm_eps"] == 0.1 and config["compressor_qk_norm_eps"] == 0.3
    assert config["tie_word_embeddings"] is False and config["max_chunk_size"] == 16


def test_official_wrappers_and_kv_cache_buffers_are_ignored():
    src = official_source()
    wrapped = {"module._orig_mod." + k: v for k, v in src.items()}
    wrapped["module._orig_mod.layers.0.attention.kv_cache.k_cache"] = Tensor(
        "F32", np.zeros((1, 2, 4, 16), np.float32))
    _, plain = official.convert(src, OPTIONS)
    _, out = official.convert(wrapped, OPTIONS)
    assert sorted(out) == sorted(plain)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("seperator.weight"), "8f615e8"),
    (lambda s: s.update({"layers.0.attention.extra.weight": s["norm.weight"]}),
     "does not explain: layers.0.attention.extra.weight"),
    (lambda s: s.pop("layers.1.attention.q_norm.weight"), "does not explain"),
    (lambda s: s.update({"dummy_fx.weight": Tensor("F32", s["dummy_fx.weight"].array[:4])}),
     "dummy_fx.weight has 4 rows"),
    (lambda s: s.pop("f.layers.1.feed_forward.proj.weight"),
     "no f.layers.1.feed_forward.proj.weight"),
])
def test_official_refusals(edit, message):
    src = official_source()
    edit(src)
    with pytest.raises(ConversionError, match=message.replace(".", r"\.")):
        official.convert(src, OPTIONS)


def test_official_wrong_head_count_is_refused_by_the_cli(tmp_path):
    args = committed_args("official", str(tmp_path / "out"))
    args[args.index("--n-head") + 1] = "3"
    result = run_cli(args)
    assert result.returncode == 1
    assert "n_head 3 does not divide the width 64" in result.stderr
    assert not os.path.exists(tmp_path / "out")


def fla_source():
    src = os.path.join(SOURCES, "fla_tiny")
    with open(os.path.join(src, "config.json")) as f:
        return json.load(f), read(os.path.join(src, "model.safetensors"))


def test_fla_mapping():
    config, state = fla_source()
    out_config, out = fla.convert(config, state)
    np.testing.assert_array_equal(out["model.compressor.layers.1.attn.v_proj.bias"].array,
                                  state["model.compressor.layers.1.v_proj.bias"].array)
    assert "model.compressor.layers.1.v_proj.bias" not in out
    assert "model._train_chunk_size_step" not in out
    assert out["model.layers.0.attn.q_norm.weight"].dtype == "F32"  # kept as stored
    assert out["model.layers.0.attn.q_proj.weight"].dtype == "BF16"
    assert out_config["compressor_qkv_bias"] is True and out_config["compressor_qk_norm"] is False
    assert out_config["qk_norm_eps"] == 1e-5 and out_config["norm_eps"] == 0.1
    assert out_config["min_train_chunk_size"] == 1


def test_fla_tied_head_and_fixed_schedule():
    config, state = fla_source()
    tied = dict(config, tie_word_embeddings=True, train_chunk_size_schedule="fixed")
    out_config, out = fla.convert(tied, state)
    assert "lm_head.weight" not in out
    assert out_config["min_train_chunk_size"] == out_config["max_chunk_size"] == 16
    state.pop("lm_head.weight")
    with pytest.raises(ConversionError, match="no lm_head.weight"):
        fla.convert(config, state)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "not 'cat'"),
    ({"hidden_act": "gelu"}, "SwiGLU"),
    ({"train_chunk_size_schedule": "random"}, "unknown train_chunk_size_schedule"),
])
def test_fla_config_refusals(change, message):
    config, state = fla_source()
    with pytest.raises(ConversionError, match=message):
        fla.convert(dict(config, **change), state)


def test_safetensors_round_trip_keeps_bits(tmp_path):
    _, state = fla_source()
    path = str(tmp_path / "x.safetensors")
    write(path, state)
    again = read(path)
    assert sorted(again) == sorted(state)
    for k in state:
        assert again[k].dtype == state[k].dtype
        np.testing.assert_array_equal(again[k].array, state[k].array)


def test_truncated_safetensors_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    with open(os.path.join(SOURCES, "fla_tiny", "model.safetensors"), "rb") as f:
        path.write_bytes(f.read()[:20000])
    with pytest.raises(ValueError, match="data offsets"):
        read(str(path))
