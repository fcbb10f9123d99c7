"""Checks of the recall task generator and its tokenizer (no PyTorch):

    python3 -m pytest -q tests/recall
"""

from __future__ import annotations

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(REPO, "tools", "recall")
sys.path.insert(0, HERE)
import task as rt  # noqa: E402


@pytest.mark.parametrize("vocab, base", [(256, 4), (4096, 260), (64, 4)])
def test_layout_ranges_are_disjoint_and_inside_the_vocabulary(vocab, base):
    lay = rt.Layout(vocab, base)
    ids = [lay.sep, *lay.filler, *lay.keys, *lay.values]
    assert len(ids) == len(set(ids))
    assert min(ids) == base and max(ids) < vocab
    assert len(lay.keys) == len(lay.values) >= 1


def test_layout_of_the_shipped_text_model_skips_its_byte_pieces():
    lay = rt.layout_for(os.path.join(REPO, "models", "cat-small-en"))
    assert (lay.vocab_size, lay.base) == (4096, 260)


@pytest.mark.parametrize("task", [rt.Task("mqar", 16, 128), rt.Task("mqar", 1, 8),
                                  rt.Task("niah", 1, 128), rt.Task("niah", 3, 40, 5),
                                  rt.Task("mqar", 4, 64, 9)])
def test_sequences_have_their_length_and_answers(task):
    lay = rt.Layout(256)
    for seq in rt.heldout_sequences(lay, task, 2, 50):
        assert len(seq.tokens) == task.seq_len and seq.tokens[0] == rt.BOS
        assert len(seq.answer_positions) == task.n_queries
        assert seq.tokens.count(lay.sep) == 1
        for p in seq.answer_positions:
            assert seq.tokens[p] in lay.values
            assert rt.oracle_answer(lay, seq.tokens[:p]) == seq.tokens[p]
        sep = seq.tokens.index(lay.sep)
        context = seq.tokens[:sep]
        assert sum(t in lay.keys for t in context) == task.pairs
        assert len({t for t in context if t in lay.values}) == task.pairs


def test_cases_are_deterministic_by_seed_and_streams_differ():
    lay, task = rt.Layout(256), rt.Task()
    a = rt.heldout_cases(lay, task, 1000, 20)
    assert a == rt.heldout_cases(lay, task, 1000, 20)
    assert a != rt.heldout_cases(lay, task, 1001, 20)
    train = rt.batch_rows(1000, 0, 20, lay, (16, 16), 128, 0.0)
    held = rt.heldout_sequences(lay, task, 1000, 20)
    assert {tuple(s.tokens) for s in train}.isdisjoint({tuple(s.tokens) for s in held})


def test_a_task_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="more than seq_len"):
        rt.Task("mqar", 16, 64).check(rt.Layout(256))


def test_tokenizer_round_trips_with_sentencepiece(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    lay = rt.Layout(256)
    path = str(tmp_path / "tokenizer.model")
    rt.write_tokenizer(lay, path)
    sp = spm.SentencePieceProcessor(model_file=path)
    assert sp.get_piece_size() == 256
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    seq = rt.heldout_sequences(lay, rt.Task("mqar", 4, 32), 2, 1)[0].tokens[1:]
    text = sp.decode(seq)
    assert sp.encode(text) == seq
    assert rt.tokenizer_piece_types(path)[:5] == [rt.CONTROL, rt.CONTROL, rt.CONTROL,
                                                  rt.UNKNOWN, rt.NORMAL]
