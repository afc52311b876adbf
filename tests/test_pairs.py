"""Text pairs: the features that read their relation, folds that group a pair in either order and
by folds.group_cols, augmentation that keeps a pair's two texts together, every text column
named once, and the cuts of long pairs end to end (or one line naming the setting)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FILL, NEG, POS, build_tiny_bert, run_stage, synthetic_texts, write_pair_competition

from pipeline.cv.splits import FoldMaker
from pipeline.runtime import PAIR_FEATURES, pair_features


@pytest.fixture(scope="module")
def pair_bert(tmp_path_factory) -> Path:
    """A tiny BERT whose vocabulary knows the pair competition's words."""
    texts, _ = synthetic_texts(300, [NEG, POS], 3)
    texts += ["what is the tell me about like " + " ".join(FILL)] * 20
    return build_tiny_bert(tmp_path_factory.mktemp("pair_bert"), texts)


def test_pair_features_measure_how_alike_two_texts_are():
    from sklearn.feature_extraction.text import TfidfVectorizer

    a = ["the storm hit the coast", "fire near the city", "abc"]
    b = ["The storm hit the coast!", "a fiery cityscape", ""]
    word = TfidfVectorizer().fit(a + b)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(a + b)
    f = pair_features(a, b, word, char)
    assert f.shape == (3, len(PAIR_FEATURES)) and PAIR_FEATURES[3] == "char3_jaccard"
    assert f[0].min() > 0.9 and f[0, 0] == 1.0 and f[0, 2] == pytest.approx(1.0)  # the same words
    assert f[1, 0] == 0.0 and f[1, 2] == 0.0 and 0 < f[1, 3] < 0.3  # no shared word, a few shared trigrams
    assert f[2].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0]  # an empty side
    assert pair_features(a, b, word, char, version=1).tolist() == f[:, :3].tolist()  # models trained before


def test_the_similarity_features_alone_learn_a_relation_and_the_runtime_reloads_them(tmp_path):
    """Duplicate = both questions on one topic: the similarity member (train.tfidf_blocks=false)
    reads only how alike the two texts are, and that alone learns it. A pair's TF-IDF is one
    bag of words over both texts (train.pair_tfidf=joint), or one per column where set."""
    comp, work = write_pair_competition(tmp_path / "pair"), tmp_path / "work"
    work.mkdir()
    for stage in ("clean", "folds"):
        assert run_stage(stage, work, comp, "folds.n_splits=2") == 0
    assert run_stage("train", work, comp, "folds.n_splits=2", "train.run=sim", "train.family=classical",
                     "train.tfidf_blocks=false") == 0
    assert json.loads((work / "models/sim/cv.json").read_text())["cv"] < 0.5  # log loss; chance 0.69
    spec = json.loads((work / "models/sim/fold0/model/model.json").read_text())
    assert spec["tfidf_blocks"] is False and spec["pair_features"] == 2
    from pipeline.runtime import LinearTfidfModel

    model = LinearTfidfModel.load(work / "models/sim/fold0/model")
    assert model.features(["what is the fire like"], [["tell me about fire"]]).shape == (1, len(PAIR_FEATURES))
    for name, sets, columns in (("joint", [], [-1, -1]), ("cols", ["train.pair_tfidf=per_column"], [0, 0, 1, 1])):
        assert run_stage("train", work, comp, "folds.n_splits=2", f"train.run={name}", "train.family=classical",
                         "train.folds=[0]", *sets) == 0
        spec = json.loads((work / f"models/{name}/fold0/model/model.json").read_text())
        assert [v["column"] for v in spec["vectorizers"]] == columns


def test_a_swapped_pair_is_one_group_and_group_cols_tie_rows_by_any_of_their_ids():
    rng = np.random.default_rng(0)
    a = [f"question number {i} about fire" for i in range(60)]
    b = [f"another question {i} about floods" for i in range(60)]
    pairs = list(zip(a, b)) + list(zip(b[:20], a[:20]))  # rows 60..79: rows 0..19 swapped
    y = rng.integers(0, 2, 80)
    maker = FoldMaker(4, 0).fit(pairs, y)
    assert (maker.folds_[:20] == maker.folds_[60:]).all()
    assert len(set(maker.groups_)) == 60
    # Quora's qid1/qid2: one namespace, so question 7 as qid1 in one row and as qid2 in another ties them
    texts = [f"pair text {i}" for i in range(80)]
    qid1 = pd.Series([str(i) for i in range(80)])
    qid2 = pd.Series([str((i + 1) % 40 + 100) if i % 2 else str(i - 1) for i in range(80)])
    grouped = FoldMaker(4, 0).fit(texts, y, [qid1, qid2])
    for q in set(qid1) | set(qid2):
        rows = np.flatnonzero((qid1 == q).to_numpy() | (qid2 == q).to_numpy())
        assert len(set(grouped.folds_[rows])) == 1, q
    plain = FoldMaker(4, 0).fit(texts, y).folds_
    assert any(plain[i] != plain[i - 1] for i in range(1, 80, 2) if qid2[i - 1] != qid2[i])  # without: apart


def test_the_folds_stage_keeps_group_cols_and_swapped_pairs_together(tmp_path):
    comp = write_pair_competition(tmp_path / "pair")
    train = pd.read_csv(comp / "train.csv")
    train.loc[100:119, ["question1", "question2"]] = train.loc[0:19, ["question2", "question1"]].to_numpy()
    train["qid"] = [str(i // 4) for i in range(len(train))]  # rows in fours share an id
    test = pd.read_csv(comp / "test.csv").assign(qid="t")
    train.to_csv(comp / "train.csv", index=False)
    test.to_csv(comp / "test.csv", index=False)
    work = tmp_path / "work"
    work.mkdir()
    assert run_stage("clean", work, comp) == 0
    assert run_stage("folds", work, comp, "folds.group_cols=[qid]") == 0
    folds = pd.read_csv(work / "data/processed/folds.csv", dtype={"id": str}).set_index("id")["fold"]
    ids = train["id"].astype(str)
    for q, rows in train.groupby("qid").groups.items():
        assert folds.loc[ids[rows]].nunique() == 1, q
    assert (folds.loc[ids[:20]].to_numpy() == folds.loc[ids[100:120]].to_numpy()).all()


def test_pair_augmentation_changes_both_texts_together_and_never_reaches_validation(tmp_path, monkeypatch):
    import pipeline.modeling.classical as classical

    comp, work = write_pair_competition(tmp_path / "pair"), tmp_path / "work"
    work.mkdir()
    for stage in ("clean", "folds"):
        assert run_stage(stage, work, comp, "folds.n_splits=2") == 0
    assert run_stage("augment", work, comp, "augment.methods=[random_swap]", "augment.aug_p=0.5") == 0
    aug = pd.read_parquet(work / "data/interim/augmented/random_swap.parquet")
    train = pd.read_parquet(work / "data/interim/train_clean.parquet")
    assert {"text", "text_1", "source_id", "label"} <= set(aug.columns)
    src = train.set_index("id").loc[aug["source_id"]]
    assert (aug["label"].to_numpy() == src["label"].to_numpy()).all()
    changed = (aug["text"].to_numpy() != src["text"].to_numpy()) | (aug["text_1"].to_numpy() != src["text_1"].to_numpy())
    assert changed.all()  # a copy differs from its source in one text or both
    # a copy's two texts are its own source's words, swapped: never another row's second text
    assert all(sorted(x.lower().split()) == sorted(s.lower().split()) for x, s in zip(aug["text_1"], src["text_1"]))
    seen = {}
    fit = classical.fit_classical_fold

    def spy(cfg, data, metric, k):
        seen[k] = (list(zip(data.train_texts, data.train_pairs[0])), list(zip(data.val_texts, data.val_pairs[0])))
        return fit(cfg, data, metric, k)

    monkeypatch.setattr(classical, "fit_classical_fold", spy)
    assert run_stage("train", work, comp, "folds.n_splits=2", "train.family=classical", "train.run=aug",
                     "train.augment=[random_swap]") == 0
    folds = pd.read_csv(work / "data/processed/folds.csv", dtype={"id": str})
    train = train.merge(folds, on="id")
    aug = aug.merge(folds.rename(columns={"id": "source_id"}), on="source_id")
    originals = set(zip(train["text"], train["text_1"]))
    for k, (trained, validated) in seen.items():
        assert sorted(validated) == sorted(zip(train.loc[train["fold"] == k, "text"], train.loc[train["fold"] == k,
                                                                                                "text_1"]))
        own = set(zip(aug.loc[aug["fold"] != k, "text"], aug.loc[aug["fold"] != k, "text_1"])) - originals
        held = set(zip(aug.loc[aug["fold"] == k, "text"], aug.loc[aug["fold"] == k, "text_1"])) - originals - own
        assert own and own <= set(trained) and not held & set(trained)


def test_three_text_columns_are_each_named_once(tmp_path):
    from pipeline.runtime import model_inputs, other_texts

    df = pd.DataFrame({"text": ["a title"], "text_1": ["a body"], "text_2": ["a note"], "kw": ["fire"]})
    names = ["title", "body", "note"]
    assert model_inputs(df, [], "{col}: {value}", " | ", names) == ["title: a title"]
    assert model_inputs(df, ["kw"], "{col}: {value}", " | ", names) == ["kw: fire | title: a title"]
    assert other_texts(df, names) == [["body: a body"], ["note: a note"]]
    pair = df.drop(columns="text_2")
    assert model_inputs(pair, [], "{col}: {value}", " | ", names[:2]) == ["a title"]  # a pair: as it was


def test_the_embedding_family_reads_a_pairs_relation(tmp_path):
    """[|u - v|, u * v, cos] and the products of the two texts' principal components: the
    relation a logistic regression can read; the pair's columns come in the documented order."""
    from pipeline.runtime import EmbeddingHead, embedding_features, fit_pair_relation

    rng = np.random.default_rng(0)
    u = rng.normal(size=(400, 8))
    v = rng.normal(size=(400, 8))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    plain = embedding_features([u, v])
    cos = (u * v).sum(1)
    assert plain.shape == (400, 8 * 4 + 1)
    assert np.allclose(plain[:, :8], u) and np.allclose(plain[:, 16:24], np.abs(u - v))
    assert np.allclose(plain[:, 24:32], u * v) and np.allclose(plain[:, -1], cos)
    relation = fit_pair_relation(u, v, 4)
    X = embedding_features([u, v], relation)
    assert X.shape[1] == plain.shape[1] - 16 + 10  # no u and v; 4 components: 10 products
    assert np.allclose(X[:, :8] / relation["weight"], np.abs(u - v))
    assert embedding_features([u, v], fit_pair_relation(u, v, 4, sides=True)).shape[1] == plain.shape[1] + 10
    # the label: whether both texts fall on the same side of a direction; neither vector alone tells
    y = ((u[:, 0] > 0) == (v[:, 0] > 0)).astype(int)
    from sklearn.linear_model import LogisticRegression

    def fit_score(features):
        lr = LogisticRegression(C=4.0, max_iter=3000).fit(features[:300], y[:300])
        return lr.score(features[300:], y[300:])

    assert fit_score(np.hstack([u, v])) < 0.65 < 0.8 < fit_score(X)
    from pipeline.modeling.classical import save_model_files

    head = EmbeddingHead(np.zeros((1, X.shape[1])), np.zeros(1), relation=relation)
    save_model_files(tmp_path / "head", *head.to_arrays())
    loaded = EmbeddingHead.load(tmp_path / "head")
    assert np.allclose(loaded.features([u, v]), X)


def test_a_long_pair_runs_end_to_end_under_each_cut_and_the_bundle_reproduces_it(tmp_path, pair_bert):
    """Pairs longer than max_len, read by head + tail of each side (a fine-tune) and in windows
    (a fine-tune and a frozen encoder), through train, ensemble, submit and the offline bundle."""
    comp, work = write_pair_competition(tmp_path / "pair", n_train=60, n_test=16), tmp_path / "work"
    work.mkdir()
    for stage in ("clean", "folds"):
        assert run_stage(stage, work, comp, "folds.n_splits=2") == 0
    tr = [f"train.backbone={pair_bert}", "train.max_len=12", "train.epochs=1", "train.batch_size=16",
          "train.precision=fp32"]
    runs = {"ht": ["train.run=ht", *tr, "train.truncation=head_tail"],
            "ch": ["train.run=ch", *tr, "train.chunks=true", "train.stride=4"],
            "emb": ["train.run=emb", "train.family=embedding", f"train.backbone={pair_bert}", "train.max_len=12",
                    "train.chunks=true", "train.stride=4"]}
    for s in runs.values():
        assert run_stage("train", work, comp, "folds.n_splits=2", *s) == 0
    for stage in ("ensemble", "submit", "package"):
        assert run_stage(stage, work, comp, "folds.n_splits=2", "ensemble.method=mean") == 0, stage
    bundle = next(p for p in (work / "dist").iterdir() if p.is_dir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["rows"] == 16 and manifest["verification"].get("max_abs_diff", 0.0) <= 1e-5
    members = {m["run"]: m for m in manifest["predict"]["members"]}
    assert set(members) == {"ht", "ch", "emb"}
    assert members["ht"]["encoding"]["truncation"] == "head_tail" and members["ch"]["encoding"]["chunks"]
    assert members["emb"]["encoding"]["chunks"] and all(m["max_abs_diff_vs_run"] < 1e-5 for m in members.values())


def test_a_pair_whose_cut_cannot_fit_stops_with_one_line_naming_the_setting(tmp_path, pair_bert, capsys):
    comp, work = write_pair_competition(tmp_path / "pair", n_train=60, n_test=10), tmp_path / "work"
    work.mkdir()
    for stage in ("clean", "folds"):
        assert run_stage(stage, work, comp, "folds.n_splits=2") == 0
    capsys.readouterr()
    rc = run_stage("train", work, comp, "folds.n_splits=2", "train.run=tr", f"train.backbone={pair_bert}",
                   "train.max_len=4", "train.truncation=tail", "train.epochs=1")
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "train.max_len=4 leaves no room for the two texts of a pair" in err[0]
