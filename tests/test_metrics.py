"""The metric registry: each metric's traits, the two added as single entries (Kaggle's quadratic
weighted kappa with cut points tuned on the OOF, MAP@k with a ranked submission), each checked
against a reference computation and run end to end on a tiny competition."""

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FILL, run_stage
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from pipeline import runtime
from pipeline.core.config import DataConfig
from pipeline.core.contract import Schema, load_competition
from pipeline.core.files import DataError
from pipeline.core.metrics import (
    LABEL_DECISIONS,
    LABEL_PROBABILITIES,
    METRICS,
    ORDINAL,
    POSITIVE,
    READS_PROBABILITIES,
    binary_auc,
    metric_of,
    quadratic_weighted_kappa,
    score,
)
from pipeline.core.submission import SubmissionError, SubmissionValidator, submission_proba

ROOT = Path(__file__).resolve().parents[1]
LEVELS = [["dreadful", "broken", "useless"], ["weak", "thin", "patchy"], ["solid", "clear", "decent"],
          ["brilliant", "superb", "masterful"]]
GENRES = {"jazz": ["saxophone", "swing"], "rock": ["guitar", "riff"], "folk": ["banjo", "ballad"],
          "opera": ["aria", "soprano"], "techno": ["synth", "bassline"]}


# -- the registry -------------------------------------------------------------------------------
def test_every_metric_declares_what_the_callers_ask():
    for name, m in METRICS.items():
        assert m.name == name and m.about and m.submission in runtime.SUBMISSION_KINDS
        assert m.one or m.many, name
        DataConfig(metric=name).validate()  # config's list is the registry's
        if m.many:
            assert m.many.scores in (LABEL_DECISIONS, LABEL_PROBABILITIES) and m.per_label in METRICS, name
        if m.submission == "proba":
            assert all(f.scores in READS_PROBABILITIES for f in (m.one, m.many) if f), name
    documented = (ROOT / "docs" / "data.md").read_text()
    assert all(f"`{name}`" in documented for name in METRICS), "docs/data.md lists every metric"


def test_directions_thresholds_and_refusals_come_from_the_entry():
    assert metric_of("logloss").better(0.3, 0.4) and metric_of("f1").better(0.4, 0.3)
    assert metric_of("logloss").best([0.5, 0.2, 0.9]) == 1 and metric_of("qwk").best([0.5, 0.2, 0.9]) == 2
    assert metric_of("f1").tunes(False) == POSITIVE and metric_of("qwk").tunes(False) == ORDINAL
    assert metric_of("macro_f1").tunes(False) is None and metric_of("macro_f1").tunes(True) is not None
    assert metric_of("mean_auc").refusal(["a", "b"], "y", "proba", False).endswith("use roc_auc")
    assert metric_of("f1").refusal(["t", "u", "v"], "y", "label", True).endswith("use macro_f1 or micro_f1")
    assert "needs a binary label" in metric_of("roc_auc").refusal(["a", "b", "c"], "y", "proba", False)
    assert "scores ordered labels" in metric_of("qwk").refusal(["bad", "good"], "y", "label", False)
    assert metric_of("qwk").refusal(["1", "2", "3"], "y", "label", False) is None
    assert "set data.submission=ranked" in metric_of("map@3").refusal(list("abcd"), "y", "label", False)
    assert "does not score" in metric_of("accuracy").refusal(list("abcd"), "y", "ranked", False)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metric_of("auc")


def test_runtime_decisions_read_a_number_as_a_threshold_and_a_list_as_ordinal_cuts():
    p = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert runtime.decisions(p).tolist() == [0, 1] and runtime.decisions(p, 0.25).tolist() == [1, 1]
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.1, 0.2, 0.7]])  # expected class 0.5, 1.5, 1.6
    assert runtime.decisions(q, [0.5, 1.5]).tolist() == [1, 2, 2]
    assert runtime.decisions(q, [0.6, 1.55]).tolist() == [0, 1, 2]
    assert runtime.decisions(np.array([[0.2, 0.8]]), [0.3, 0.9], multilabel=True).tolist() == [[0, 0]]


# -- ROC AUC --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_binary_auc_is_sklearns_roc_auc_with_ties_and_imbalance(seed):
    rng = np.random.default_rng(seed)
    for n, share, decimals in [(7, 0.4, 1), (300, 0.05, 2), (2000, 0.5, 8), (2000, 0.3, 1)]:
        y = (rng.uniform(size=n) < share).astype(int)
        y[:2] = [0, 1]  # both classes
        p = np.round(np.clip(0.3 * y + rng.uniform(size=n), 0, 1), decimals)  # rounding makes ties
        assert binary_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert score("roc_auc", y, np.column_stack([1 - p, p])) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    Y = (rng.uniform(size=(500, 3)) < 0.3).astype(int)
    P = rng.uniform(size=(500, 3))
    want = np.mean([roc_auc_score(Y[:, j], P[:, j]) for j in range(3)])
    assert score("mean_auc", Y, P) == pytest.approx(want, abs=1e-12)


def test_binary_auc_refuses_one_class_and_non_finite_scores():
    with pytest.raises(ValueError, match="one class"):
        binary_auc(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="NaN"):
        binary_auc(np.array([0, 1, 0]), np.array([0.1, np.nan, 0.3]))


# -- quadratic weighted kappa ---------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 4, 6])
def test_qwk_is_sklearns_quadratic_kappa(k):
    rng = np.random.default_rng(k)
    for _ in range(25):
        y = rng.integers(0, k, 300)
        pred = np.clip(y + rng.integers(-1, 2, 300), 0, k - 1)
        want = cohen_kappa_score(y, pred, weights="quadratic", labels=list(range(k)))
        assert quadratic_weighted_kappa(y, pred, k) == pytest.approx(want, abs=1e-12)
        # the metric cuts the expected class at the halves: a one-hot row is its class
        assert score("qwk", y, np.eye(k)[pred]) == pytest.approx(want, abs=1e-12)


def test_qwk_cut_points_tuned_on_the_oof_beat_rounding_and_stay_in_order():
    """A regressor that under-predicts the top scores (as essay models shrink to the mean):
    tuned cut points win back what rounding the expected class loses."""
    rng = np.random.default_rng(0)
    k, n = 5, 4000
    y = rng.integers(0, k, n)
    shrunk = np.clip(0.6 * y + 0.8 + rng.normal(0, 0.45, n), 0, k - 1)  # the expected class, biased
    lo = np.floor(shrunk).astype(int).clip(0, k - 2)
    frac = shrunk - lo
    proba = np.zeros((n, k))
    proba[np.arange(n), lo], proba[np.arange(n), lo + 1] = 1 - frac, frac  # mean exactly `shrunk`
    m = metric_of("qwk")
    cuts, tuned = m.tune(y, proba)
    assert len(cuts) == k - 1 and np.all(np.diff(cuts) > 0)
    assert tuned == pytest.approx(m.score(y, proba, cuts))
    assert tuned > m.score(y, proba) + 0.02  # rounding at the halves
    fresh = rng.integers(0, k, n)  # cuts from one half hold on the other: not fitted to the noise
    other = np.clip(0.6 * fresh + 0.8 + rng.normal(0, 0.45, n), 0, k - 1)
    lo2 = np.floor(other).astype(int).clip(0, k - 2)
    p2 = np.zeros((n, k))
    p2[np.arange(n), lo2], p2[np.arange(n), lo2 + 1] = 1 - (other - lo2), other - lo2
    assert m.score(fresh, p2, cuts) > m.score(fresh, p2) + 0.02


# -- MAP@k ------------------------------------------------------------------------------------------
def test_map_at_3_by_hand_and_its_ranked_submission_scores_the_same():
    proba = np.array([[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25], [0.4, 0.3, 0.2, 0.1]])
    y = np.array([0, 2, 1, 3])  # rank 1, rank 2, rank 2 (ties: the lower index first), absent
    assert score("map@3", y, proba) == pytest.approx((1 + 1 / 2 + 1 / 2 + 0) / 4)
    classes = ["A", "B", "C", "D"]
    sub = runtime.build_submission(pd.Series([1, 2, 3, 4]), proba, id_col="id", pred_cols=["y"], classes=classes,
                                   kind="ranked", threshold=None, clip=0.0, top_k=3)
    assert sub["y"].tolist() == ["A B C", "D C B", "A B C", "A B C"]
    schema = Schema(id_col="id", label_col="y", text_col="t", extra_cols=[], classes=classes, submission="ranked",
                    pred_cols=["y"], metric="map@3")
    SubmissionValidator().fit(sub, schema).validate(sub)
    assert score("map@3", y, submission_proba(sub, schema)) == pytest.approx(score("map@3", y, proba))
    for bad, said in (("A B E", "'E' is not a label"), ("A A B", "each once"), ("A B C D", "at most 3")):
        with pytest.raises(SubmissionError, match=said):
            SubmissionValidator().fit(sub, schema).validate(sub.assign(y=[bad, "A", "B", "C"]))


def test_a_ranked_sample_is_detected_and_a_label_with_a_space_refused(tmp_path):
    comp = _write_genre_competition(tmp_path / "genre")
    s = load_competition(comp, DataConfig()).schema
    assert s.submission == "ranked" and s.metric == "map@3"
    assert any("lists 3 labels per row" in n for n in s.notes)
    train = pd.read_csv(comp / "train.csv")
    train.loc[0, "genre"] = "free jazz"
    train.to_csv(comp / "train.csv", index=False)
    with pytest.raises(DataError, match="label 'free jazz' holds a space"):
        load_competition(comp, DataConfig(metric="map@3"))


# -- end to end -------------------------------------------------------------------------------------
def _write_essay_competition(folder: Path, n_train: int = 240, n_test: int = 60, seed: int = 11) -> Path:
    """Essay-scoring-shaped: scores 1-4, a label submission, QWK; a score's words mostly say it,
    and one row in four is scored a point off (raters disagree)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n_train + n_test):
        level = i % 4
        words = rng.sample(LEVELS[level], 2) + [rng.choice(LEVELS[max(0, min(3, level + rng.choice((-1, 1))))])]
        words += rng.sample(FILL, 2)
        rng.shuffle(words)
        noisy = min(3, max(0, level + rng.choice((-1, 1)))) if rng.random() < 0.25 else level
        rows.append({"essay_id": f"e{i:04d}", "full_text": " ".join(words) + f" {i % 9}", "score": noisy + 1})
    df = pd.DataFrame(rows)
    df.iloc[:n_train].to_csv(folder / "train.csv", index=False)
    df.iloc[n_train:][["essay_id", "full_text"]].to_csv(folder / "test.csv", index=False)
    df.iloc[n_train:][["essay_id"]].assign(score=3).to_csv(folder / "sample_submission.csv", index=False)
    return folder


def _write_genre_competition(folder: Path, n_train: int = 250, n_test: int = 50, seed: int = 12) -> Path:
    """MAP@3-shaped: five genres, the sample lists three per row, space-separated; a text names
    its genre's words and one other genre's, so the first guess is often wrong, the top three
    seldom."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(GENRES)
    rows = []
    for i in range(n_train + n_test):
        genre = names[i % len(names)]
        other = rng.choice([g for g in names if g != genre])
        words = [rng.choice(GENRES[genre]), rng.choice(GENRES[other])] + rng.sample(FILL, 2)
        rng.shuffle(words)
        rows.append({"id": i + 1, "text": " ".join(words), "genre": genre})
    df = pd.DataFrame(rows)
    df.iloc[:n_train].to_csv(folder / "train.csv", index=False)
    df.iloc[n_train:][["id", "text"]].to_csv(folder / "test.csv", index=False)
    df.iloc[n_train:][["id"]].assign(genre="jazz rock folk").to_csv(folder / "sample_submission.csv", index=False)
    return folder


RUNS = {"lr": ["train.run=lr", "train.family=classical"],
        "nb": ["train.run=nb", "train.family=classical", "train.classical_model=nbsvm"]}


def _stages(comp: Path, work: Path, *sets: str) -> None:
    sets = ("folds.n_splits=3", *sets)
    for stage in ("clean", "folds"):
        assert run_stage(stage, work, comp, *sets) == 0, stage
    for name, s in RUNS.items():
        assert run_stage("train", work, comp, *sets, *s) == 0, name
    for stage in ("ensemble", "submit", "report", "package"):
        assert run_stage(stage, work, comp, *sets) == 0, stage


def test_qwk_end_to_end_cut_points_tuned_on_the_oof_reach_the_submission_and_the_bundle(tmp_path):
    comp, work = _write_essay_competition(tmp_path / "essays"), tmp_path / "work"
    _stages(comp, work, "data.metric=qwk")
    cv = json.loads((work / "models/lr/cv.json").read_text())
    cuts = cv["threshold"]["value"]
    assert cv["metric"] == "qwk" and cv["threshold"]["how"] == ORDINAL and len(cuts) == 3
    assert np.all(np.diff(cuts) > 0) and cv["threshold"]["score"] >= cv["cv"] - 1e-12 and cv["cv"] > 0.5
    ens = json.loads((work / "ensembles/blend/cv.json").read_text())
    weights = json.loads((work / "ensembles/blend/weights.json").read_text())
    assert ens["metric"] == "qwk" and len(weights["threshold"]) == 3 and ens["nested"] > 0.5
    sub = pd.read_csv(work / "submissions/submission.csv", dtype=str)
    test = pd.read_parquet(work / "ensembles/blend/test.parquet")
    test = test.set_index(test["id"].astype(str)).loc[sub["essay_id"]]
    want = runtime.decisions(test[["p_0", "p_1", "p_2", "p_3"]].to_numpy(), weights["threshold"]) + 1
    assert sub["score"].astype(int).tolist() == want.tolist()  # the blend's cut points made the labels
    bundle = next(p for p in (work / "dist").iterdir() if p.is_dir())
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verification"]["labels_differing"] == 0  # predict.py applies the same cut points
    page = (work / "reports/runs/lr.md").read_text()
    assert "at the OOF-tuned cut points" in page


def test_map_at_3_end_to_end_a_ranked_submission_from_the_sample_alone(tmp_path):
    comp, work = _write_genre_competition(tmp_path / "genres"), tmp_path / "work"
    _stages(comp, work)
    schema = Schema.load(work / "data/interim/schema.json")
    assert schema.metric == "map@3" and schema.submission == "ranked"
    cv = json.loads((work / "models/lr/cv.json").read_text())
    assert "threshold" not in cv and cv["cv"] > cv["accuracy"] + 0.05  # the 2nd and 3rd guesses count
    assert json.loads((work / "ensembles/blend/cv.json").read_text())["metric"] == "map@3"
    sub = pd.read_csv(work / "submissions/submission.csv", dtype=str)
    listed = sub["genre"].str.split()
    assert listed.str.len().eq(3).all() and all(len(set(r)) == 3 and set(r) <= set(GENRES) for r in listed)
    test = pd.read_parquet(work / "ensembles/blend/test.parquet")
    test = test.set_index(test["id"].astype(str)).loc[sub["id"]]
    top = runtime.top_classes(test[[f"p_{i}" for i in range(5)]].to_numpy(), 3)
    assert listed.tolist() == [[sorted(GENRES)[i] for i in row] for row in top]
    bundle = next(p for p in (work / "dist").iterdir() if p.is_dir())
    assert json.loads((bundle / "manifest.json").read_text())["verification"]["labels_differing"] == 0
