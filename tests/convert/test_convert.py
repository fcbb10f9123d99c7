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


# ---------------------------------------------------------------------------------------------
# Broken checkpoints, as a new user would hand them to the command line: each one exits with
# status 1, says what to fix in one line (no traceback) and writes nothing (docs/MODELS.md).


def assert_refused(result: subprocess.CompletedProcess, out: str, message: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("convert: "), lines[0]
    assert message in lines[0], lines[0]
    assert not os.path.exists(out), f"{out} was written"
    parent = os.path.dirname(out)
    assert not [n for n in os.listdir(parent) if n.startswith(".convert-")], os.listdir(parent)


def broken_fla_dir(tmp_path, edit_config=None, edit_state=None) -> str:
    """A copy of the committed fla source checkpoint with its config or tensors edited."""
    config, state = fla_source()
    if edit_config:
        edit_config(config)
    if edit_state:
        edit_state(state)
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "config.json", "w") as f:
        json.dump(config, f)
    write(str(src / "model.safetensors"), state)
    return str(src)


def narrower(name: str, columns: int):
    def edit(state):
        state[name] = Tensor(state[name].dtype, state[name].array[:, :columns].copy())
    return edit


@pytest.mark.parametrize("edit_config, edit_state, message", [
    (None, lambda s: s.pop("model.layers.1.attn.k_proj.weight"),
     "has no model.layers.1.attn.k_proj.weight"),
    # The compressor's names are the port's own (no attn. infix) in the message.
    (None, lambda s: s.pop("model.compressor.layers.0.q_proj.bias"),
     "has no model.compressor.layers.0.q_proj.bias"),
    (None, narrower("model.compressor.proj_fx.weight", 256),
     "model.compressor.proj_fx.weight has shape [64, 256] but the config implies [64, 512]"),
    (None, lambda s: s.update({"model.layers.0.mlp.up_proj.weight": Tensor(
        "BF16", s["model.layers.0.mlp.up_proj.weight"].array[:128].copy())}),
     "model.layers.0.mlp.up_proj.weight has shape [128, 64]"),
    (None, lambda s: s.update({"model.layers.2.attn_norm.weight": s["model.norm.weight"]}),
     "does not explain: model.layers.2.attn_norm.weight"),
    (lambda c: c.update({"elementwise_affine": False}), None, "elementwise_affine: false"),
    (lambda c: c.update({"num_hidden_layers": 3}), None, "has no model.layers.2."),
    (lambda c: c.update({"qk_norm": False}), None,
     "does not explain: model.layers.0.attn.k_norm.weight"),
])
def test_fla_broken_checkpoint_writes_nothing(tmp_path, edit_config, edit_state, message):
    src = broken_fla_dir(tmp_path, edit_config, edit_state)
    out = str(tmp_path / "out")
    result = run_cli(["fla", "--src", src, "--tokenizer", TOKENIZER, "--out", out])
    assert_refused(result, out, message)


def test_fla_missing_tensor_is_refused_before_writing(tmp_path):
    config, state = fla_source()
    state.pop("model.compressor.norm.weight")
    with pytest.raises(ConversionError, match="has no model.compressor.norm.weight"):
        fla.convert(config, state)


def test_official_wrong_shape_is_refused_by_the_cli(tmp_path):
    src = official_source()
    src["f.proj_fx.weight"] = Tensor("F32", src["f.proj_fx.weight"].array[:, :100].copy())
    path = tmp_path / "state_dict.safetensors"
    write(str(path), src)
    out = str(tmp_path / "out")
    result = run_cli(["official", "--state-dict", str(path), "--n-head", "4",
                      "--compressor-n-head", "4", "--out", out])
    assert_refused(result, out, "f.proj_fx.weight has shape [64, 100]")


def write_truncated_pt(path) -> bool:
    """Half of a torch.save'd copy of the committed official source; True when PyTorch wrote it.
    Without PyTorch, a truncated zip archive (what torch.save writes) of the same size."""
    try:
        import torch
    except ImportError:
        torch = None
    src = official_source()
    full = str(path) + ".full"
    if torch is not None:
        torch.save({k: torch.from_numpy(v.array.copy()) for k, v in src.items()}, full)
    else:
        import zipfile
        with zipfile.ZipFile(full, "w") as z:
            for k, v in src.items():
                z.writestr(f"state_dict/data/{k}", v.array.tobytes())
    with open(full, "rb") as f:
        data = f.read()
    os.remove(full)
    path.write_bytes(data[:len(data) // 2])
    return torch is not None


def test_official_truncated_pt_is_one_line(tmp_path):
    path = tmp_path / "state_dict.pt"
    with_torch = write_truncated_pt(path)
    out = str(tmp_path / "out")
    result = run_cli(["official", "--state-dict", str(path), "--n-head", "4",
                      "--compressor-n-head", "4", "--out", out])
    if with_torch:
        assert_refused(result, out, "probably truncated")
    else:  # the converter cannot read .pt without PyTorch, and says so in one line
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "needs PyTorch" in result.stderr and not os.path.exists(out)


def test_every_committed_model_passes_the_tensor_check():
    """The check's rules are the engine's: every model the engine's tests load passes it."""
    from convert.check import check_tensors

    for directory in [os.path.join(FIXTURES, n) for n in ("official_tiny", "fla_tiny", "tiny",
                                                            "tiny_gqa")] + [
            os.path.join(REPO, "models", "cat-small-en")]:
        name = os.path.basename(directory)
        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        check_tensors(config, read(os.path.join(directory, "model.safetensors")), name)
