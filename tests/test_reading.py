"""How a model reads its inputs: a long text by its head, head + tail, or whole in windows pooled
per text; a pair with both sides kept under every cut. The cuts are checked token by token on
a tiny tokenizer, the pools on numbers, and the settings' errors on their one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import NEG, POS, synthetic_texts

from pipeline.core.config import ConfigError, TrainConfig
from pipeline.runtime import _pair_specials, _specials, encode_texts, pair_shares, per_row, untruncated


@pytest.fixture(scope="module")
def tok(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


def _doc(n: int, seed: int = 0) -> str:
    """A text of n words the tiny tokenizer reads as one token each (its vocabulary's words), in
    a random order: any run of a few of its tokens occurs once."""
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(POS + NEG, n))


def _body(tok, text: str) -> list[int]:
    return untruncated(tok, [text], add_special_tokens=False)[0]


def test_head_tail_keeps_the_set_head_and_the_rest_from_the_end(tok):
    text = _doc(80)
    body = _body(tok, text)
    assert len(body) == 80
    prefix, suffix = _specials(tok)
    room = 32 - len(prefix) - len(suffix)
    ids = encode_texts(tok, [text], 32, truncation="head_tail", head_tokens=5)[0][0]
    assert ids == prefix + body[:5] + body[-(room - 5):] + suffix  # 5 from the start, 25 from the end
    # unset: a quarter of the room (Sun et al. 2019's 128 of BERT's 510)
    quarter = encode_texts(tok, [text], 32, truncation="head_tail")[0][0]
    assert quarter == prefix + body[:8] + body[-(room - 8):] + suffix
    tail = encode_texts(tok, [text], 32, truncation="tail")[0][0]
    assert tail == prefix + body[-room:] + suffix
    short = _doc(10)  # a text that fits is read as it is, whatever the cut
    assert encode_texts(tok, [short], 32, truncation="head_tail")[0] == encode_texts(tok, [short], 32)[0]


def test_the_settings_that_cannot_work_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"train.head_tokens \(128\) leaves no tail at train.max_len=64"):
        TrainConfig(truncation="head_tail", head_tokens=128, max_len=64).validate()
    TrainConfig(truncation="head_tail", max_len=64).validate()  # unset: a quarter of the room
    with pytest.raises(ConfigError, match="train.max_chunks must be >= 2"):
        TrainConfig(chunks=True, max_chunks=1).validate()
    with pytest.raises(ConfigError, match="train.chunk_pool must be one of mean, max; got 'median'"):
        TrainConfig(chunk_pool="median").validate()


def test_chunks_read_every_token_and_a_limit_is_logged_with_the_texts_it_cuts(tok, caplog):
    texts = [_doc(100), _doc(12), _doc(60, 3)]
    prefix, suffix = _specials(tok)
    ids, types, owner = encode_texts(tok, texts, 24, chunks=True, stride=6)
    assert types is None and owner.tolist()[:1] == [0] and sorted(set(owner.tolist())) == [0, 1, 2]
    for row, text in enumerate(texts):  # the windows of a row cover its whole body, in order
        body = _body(tok, text)
        windows = [w[len(prefix):len(w) - len(suffix)] for w, o in zip(ids, owner) if o == row]
        covered = set()
        for w in windows:
            start = next(i for i in range(len(body) - len(w) + 1) if body[i:i + len(w)] == w)
            covered |= set(range(start, start + len(w)))
        assert covered == set(range(len(body))), row
    with caplog.at_level(logging.WARNING):
        capped, _, cap_owner = encode_texts(tok, texts, 24, chunks=True, stride=6, max_chunks=3)
    assert np.bincount(cap_owner).tolist() == [3, 1, 3]
    assert "train.max_chunks=3: 2 of 3 texts need more windows" in caplog.text
    assert capped[2] == [w for w, o in zip(ids, owner) if o == 0][-1]  # the end is always read


def test_a_texts_windows_are_pooled_by_mean_or_max():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0]])
    owner = np.array([0, 0, 1])
    assert per_row(logits, owner, 2).tolist() == [[2.0, -1.0], [5.0, 5.0]]
    assert per_row(logits, owner, 2, "max").tolist() == [[3.0, 0.0], [5.0, 5.0]]
    with pytest.raises(ValueError, match="train.chunk_pool must be one of mean, max"):
        per_row(logits, owner, 2, "tokens")
    assert per_row(logits, None, 3, "max") is logits  # no windows: the rows as they are


def test_a_pair_shares_the_room_as_longest_first_does(tok):
    assert pair_shares(10, 5, 30) == (10, 5)  # both fit
    assert pair_shares(50, 5, 30) == (25, 5)  # the longer is cut
    assert pair_shares(5, 50, 30) == (5, 25)
    assert pair_shares(40, 50, 30) == (15, 15)  # both at half
    a, b = _doc(30), _doc(9, 5)
    head = encode_texts(tok, [a], 24, [[b]])[0][0]  # the tokenizer's own longest_first cut
    prefix, middle, suffix, _ = _pair_specials(tok)
    sa, sb = pair_shares(30, 9, 24 - len(prefix) - len(middle) - len(suffix))
    assert head == prefix + _body(tok, a)[:sa] + middle + _body(tok, b)[:sb] + suffix


@pytest.mark.parametrize("cut", [{"truncation": "tail"}, {"truncation": "head_tail"}, {"chunks": True, "stride": 6}])
def test_a_pair_keeps_both_sides_under_every_cut(tok, cut):
    a, b = _doc(60), _doc(40, 7)
    ida, idb = _body(tok, a), _body(tok, b)
    prefix, middle, suffix, _ = _pair_specials(tok)
    ids, types, owner = encode_texts(tok, [a, "fire"], 24, [[b, "flood"]], **cut)
    assert all(len(x) <= 24 for x in ids) and (owner is None) == (not cut.get("chunks"))
    first_rows = [0] if owner is None else [i for i in range(len(ids)) if owner[i] == 0]
    for i in first_rows:
        x, t = ids[i], types[i]
        assert x[:len(prefix)] == prefix and x[len(x) - len(suffix):] == suffix
        inner = x[len(prefix):len(x) - len(suffix)]
        j = next(k for k in range(len(inner)) if inner[k:k + len(middle)] == middle)
        pa, pb = inner[:j], inner[j + len(middle):]
        assert pa and pb and len(pa) + len(pb) == 24 - len(prefix) - len(middle) - len(suffix)
        assert t == [0] * (len(prefix) + len(pa) + len(middle)) + [1] * (len(pb) + len(suffix))  # segment types
        for side, full in ((pa, ida), (pb, idb)):  # each side's tokens come from its own text, in order
            if cut.get("truncation") == "tail":
                assert side == full[-len(side):]
            elif cut.get("truncation") == "head_tail":
                h = next(k for k in range(len(side) + 1) if side[k:] == full[len(full) - len(side) + k:])
                assert side[:h] == full[:h] and 0 < h < len(side)  # a head and a tail of each side
    if cut.get("chunks"):  # the windows pair the sides at the same relative place: first with first, last with last
        windows = [ids[i] for i in first_rows]
        assert len(windows) > 2
        inner0 = windows[0][len(prefix):]
        assert inner0[:3] == ida[:3] and windows[-1][len(windows[-1]) - len(suffix) - 3:len(windows[-1]) - len(suffix)] \
            == idb[-3:]
    assert encode_texts(tok, ["fire"], 24, [["flood"]], **cut)[0] == encode_texts(tok, ["fire"], 24, [["flood"]])[0]


def test_a_pair_too_long_for_its_specials_is_one_config_error(tok):
    from pipeline.modeling.data import Encoded

    with pytest.raises(ConfigError, match=r"train.max_len=4 leaves no room for the two texts of a pair"):
        Encoded.from_texts(tok, ["fire near"], 4, pairs=[["flood"]], encoding={"truncation": "tail"})


def test_chunk_training_gives_each_window_its_documents_label_and_no_other_rows_tokens(tok):
    """A document's windows are rows of that document only: they carry its label, hold its
    tokens, and a fold's windows come from that fold's documents (the OOF has one row each)."""
    from pipeline.modeling.data import Encoded
    from pipeline.modeling.transformer import encoding

    texts = [_doc(70, 1), _doc(8, 2), _doc(45, 3)]
    labels = np.array([1, 0, 1])
    cfg = TrainConfig(max_len=24, stride=6, chunks=True)
    ds = Encoded.from_texts(tok, texts, 24, labels, encoding=encoding(cfg, True))
    assert ds.n_rows == 3 and len(ds) > 6 and (ds.labels == labels[ds.owner]).all()
    for w, o in zip(ds.input_ids, ds.owner):
        body = _body(tok, texts[o])
        inner = w[1:-1]
        assert any(body[i:i + len(inner)] == inner for i in range(len(body) - len(inner) + 1))


def test_chunked_training_and_prediction_pool_to_one_row_per_document(tiny_bert):
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.transformer import FoldTrainer, load_tokenizer

    texts, y = synthetic_texts(48, [NEG, POS], 2)
    long = [t + " " + _doc(40, i) for i, t in enumerate(texts)]
    data = FoldData(long[:32], np.array(y[:32]), long[32:], np.array(y[32:]), long[40:44])
    cfg = TrainConfig(backbone=str(tiny_bert), max_len=24, stride=6, chunks=True, epochs=1, batch_size=16,
                      eval_batch_size=32, save_checkpoints=False, precision="fp32")  # (max: test_host_syncs)
    cfg.validate()
    out = FoldTrainer(cfg, 2, "accuracy", 0).fit(data, load_tokenizer(cfg))
    assert out.val_proba.shape == (16, 2) and out.test_proba.shape == (4, 2)
    assert np.allclose(out.val_proba.sum(1), 1)
    assert out.optimizer_steps > 2  # 32 documents made more windows than two batches of 16
