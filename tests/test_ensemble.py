import json

import numpy as np
import pandas as pd
import pytest
from conftest import run_stage

from pipeline.core.metrics import f1_curve, score, tune_threshold
from pipeline.cv.blend import MethodScore, WeightedBlender, evaluate, fit_stacker, member_coefs, rank_mean, vote


def _two_col(p):
    return np.column_stack([1 - p, p])


def test_blender_recovers_known_weights():
    rng = np.random.default_rng(0)
    n = 20000
    pa, pb, pc = rng.uniform(0.02, 0.98, (3, n))
    y = rng.binomial(1, 0.7 * pa + 0.3 * pb)  # the truth is this mixture; pc is noise
    probas = np.stack([_two_col(pa), _two_col(pb), _two_col(pc)])
    w = WeightedBlender("logloss", "logloss").fit(probas, y).weights_
    assert np.all(w >= 0) and w.sum() == pytest.approx(1)
    assert w == pytest.approx([0.7, 0.3, 0.0], abs=0.05)


def test_blender_metric_objective_beats_or_equals_best_single_in_sample():
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 * y + rng.uniform(0, 0.6, n), 0, 1)
    other = np.clip(0.4 * y + rng.uniform(0, 0.7, n), 0, 1)
    probas = np.stack([_two_col(good), _two_col(other)])
    blender = WeightedBlender("f1", "metric").fit(probas, y)
    assert np.all(blender.weights_ >= 0) and blender.weights_.sum() == pytest.approx(1)
    blended = tune_threshold(y, blender.predict_proba(probas)[:, 1])[1]
    singles = [tune_threshold(y, p[:, 1])[1] for p in probas]
    assert blended >= max(singles) - 1e-12


def test_threshold_tuning_matches_sklearn_and_finds_the_best():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 800)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 800), 0, 1)
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
    curve = f1_curve(y, p, grid)
    assert np.allclose(curve, [f1_score(y, (p >= t).astype(int)) for t in grid])
    t, f1 = tune_threshold(y, p)
    assert f1 == pytest.approx(curve.max()) and f1 >= score("f1", y, _two_col(p), 0.5)


def test_rank_and_vote():
    a = _two_col(np.array([0.1, 0.2, 0.9]))
    b = _two_col(np.array([0.3, 0.6, 0.7]))
    r = rank_mean(np.stack([a, b]))
    assert np.allclose(r.sum(1), 1) and r[:, 1].argmax() == 2
    v = vote(np.stack([a, b]))
    assert v[:, 1].tolist() == [0.0, 0.5, 1.0]


def test_nested_estimate_is_not_in_sample():
    rng = np.random.default_rng(3)
    n = 600
    y = rng.integers(0, 2, n)
    folds = np.arange(n) % 5
    probas = np.stack([_two_col(np.clip(0.2 * y + rng.uniform(0, 0.8, n), 0, 1)) for _ in range(3)])
    r = evaluate("weighted", probas, y, folds, "f1", "metric", True)
    assert r.nested <= r.in_sample + 1e-9  # fitted and scored on the same rows is optimistic


def test_best_single_is_picked_at_its_tuned_threshold_under_f1():
    """Under F1 the threshold is tuned after the pick, so the pick is made at it too: a run that
    ranks perfectly but sits below 0.5 is the best single run, not the one that is right at 0.5."""
    from pipeline.cv.blend import fit_blend

    rng = np.random.default_rng(0)
    n = 1000
    y = rng.integers(0, 2, n)
    shy = 0.10 + 0.25 * y + rng.uniform(0, 0.1, n)  # perfect order, every p below 0.5
    plain = np.clip(0.5 + (2 * y - 1) * 0.2 + rng.normal(0, 0.2, n), 0, 1)  # right ~84% of the time at 0.5
    probas = np.stack([_two_col(plain), _two_col(shy)])
    assert score("f1", y, probas[0]) > score("f1", y, probas[1])  # at 0.5 the plain one wins
    b = fit_blend("best_single", probas, y, "f1", "metric", tune_thr=True)
    assert b.weights.tolist() == [0.0, 1.0] and 0.2 <= b.threshold <= 0.35
    assert fit_blend("best_single", probas, y, "f1", "metric", tune_thr=False).weights.tolist() == [1.0, 0.0]


def test_ensemble_and_submit_stages_binary(prepared, workdir):
    data, workdir = prepared
    for model in ("lr", "nbsvm"):
        assert run_stage("train", workdir, data, "train.family=classical", f"train.classical_model={model}",
                         f"train.run={model}") == 0
    assert run_stage("ensemble", workdir, data) == 0
    cv = json.loads((workdir / "ensembles/blend/cv.json").read_text())
    assert {m["method"] for m in cv["methods"]} == {"best_single", "mean", "rank", "vote", "weighted", "stack"}
    # each run alone, scored as the blends are (threshold from the other folds), beside its in-sample score
    assert set(cv["runs_nested"]) == set(cv["runs"]) == {"lr", "nbsvm"}
    assert all(0 < v <= 1 for v in cv["runs_nested"].values())
    # F1 scores decisions: the rule read the calibrated log loss, and the table shows it per method
    assert "calibrated log loss" in cv["choice_rule"]
    assert all(0 < m["calibrated_logloss"] < np.log(2) + 0.05 for m in cv["methods"])
    chosen = next(m for m in cv["methods"] if m["method"] == cv["chosen"])
    assert chosen["within_1se"] and chosen["within_1se_calibrated"] and chosen["calibrated_behind"] >= 0
    w = json.loads((workdir / "ensembles/blend/weights.json").read_text())
    assert sum(w["weights"].values()) == pytest.approx(1) and 0 < w["threshold"] < 1
    assert run_stage("submit", workdir, data) == 0
    sub = pd.read_csv(workdir / "submissions/submission.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    assert set(sub["target"]) <= {0, 1}
    # a stack shows its coefficients on each run's logit, never the equal weights it keeps for the
    # bundle's fallback mean
    stack_row = next(m for m in cv["methods"] if m["method"] == "stack")
    assert stack_row["weights"].startswith("coef lr=")
    assert run_stage("ensemble", workdir, data, "ensemble.method=stack") == 0
    w = json.loads((workdir / "ensembles/blend/weights.json").read_text())
    assert w["method"] == "stack" and w["weights"] == {"lr": 0.5, "nbsvm": 0.5}
    assert w["stack_coefs"] == pytest.approx(dict(zip(w["runs"], np.ravel(w["stacker"]["coef"]))))
    assert stack_row["weights"] == "coef " + " ".join(f"{r}={c:.3f}" for r, c in w["stack_coefs"].items())
    from pipeline.core.paths import Paths
    from pipeline.reporting.pages import ensemble_section
    section = "".join(ensemble_section(Paths.make(workdir, data)))
    assert "Stacker coefficients on each run's logit" in section and "Weights:" not in section


def test_submit_probabilities_multiclass_string_labels(multiclass_comp, workdir):
    assert run_stage("clean", workdir, multiclass_comp) == 0
    assert run_stage("folds", workdir, multiclass_comp, "folds.n_splits=3") == 0
    assert run_stage("train", workdir, multiclass_comp, "train.family=classical", "train.run=lr") == 0
    assert run_stage("submit", workdir, multiclass_comp, "submit.source=run:lr") == 0
    sub = pd.read_csv(workdir / "submissions/submission.csv")
    assert list(sub.columns) == ["review_id", "negative", "neutral", "positive"]
    assert np.allclose(sub[["negative", "neutral", "positive"]].sum(1), 1, atol=1e-6)
    assert sub["review_id"].tolist() == pd.read_csv(multiclass_comp / "sample_submission.csv")["review_id"].tolist()


def _result(method, fold_scores):
    fold_scores = np.asarray(fold_scores, dtype=float)
    return MethodScore(method, float(fold_scores.mean()), float(fold_scores.mean()), fold_scores, None)


def test_one_se_rule_keeps_the_simpler_method_when_the_gain_is_noise():
    from pipeline.cv.blend import one_se_choice

    # weighted is ahead on average (+0.004) but the folds disagree (+0.02 ... -0.02): within one SE
    single = _result("best_single", [0.80, 0.82, 0.79, 0.81, 0.80])
    weighted = _result("weighted", np.array([0.80, 0.82, 0.79, 0.81, 0.80]) + [0.02, 0.01, -0.02, 0.01, 0.0])
    chosen, ses, _ = one_se_choice([single, weighted], "f1")
    assert weighted.nested > single.nested and chosen is single
    assert weighted.nested - single.nested <= ses["best_single"]


def test_one_se_rule_takes_the_complex_method_when_it_wins_on_every_fold():
    from pipeline.cv.blend import one_se_choice

    single = _result("best_single", [0.80, 0.82, 0.79, 0.81, 0.80])
    mean = _result("mean", [0.81, 0.83, 0.80, 0.82, 0.81])
    weighted = _result("weighted", [0.83, 0.85, 0.82, 0.84, 0.83])  # +0.03 on every fold: SE ~ 0
    chosen, _, _ = one_se_choice([single, mean, weighted], "f1")
    assert chosen is weighted
    # for a loss (lower is better) the same logic with the sign turned
    a = _result("best_single", [0.50, 0.52, 0.49, 0.51, 0.50])
    b = _result("mean", [0.45, 0.47, 0.44, 0.46, 0.45])
    assert one_se_choice([a, b], "logloss")[0] is b


def _views(seed: int, second: str, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two members over a latent z that sets y: the first reads z through noise, under-confident
    (its logits x0.4); the second reads z through independent noise (``second="view"``) or is
    pure noise (``"noise"``)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * z))).astype(int)
    a = 0.4 * (z + rng.normal(size=n))
    b = z + rng.normal(size=n) if second == "view" else rng.normal(size=n)
    return np.stack([_two_col(1 / (1 + np.exp(-a))), _two_col(1 / (1 + np.exp(-b)))]), y, np.arange(n) % 5


def _choices(probas, y, folds, metric="accuracy"):
    """(the rule's choice on the metric's fold-wise differences, its choice on the calibrated log loss)"""
    import dataclasses

    from pipeline.cv.blend import METHODS, applicable, one_se_choice

    results = [evaluate(m, probas, y, folds, metric, "metric", False) for m in applicable(list(METHODS), metric)[0]]
    by_metric = one_se_choice([dataclasses.replace(r, fold_calibrated=None) for r in results], metric)[0]
    return by_metric.method, one_se_choice(results, metric)[0].method


def test_calibrated_logloss_reads_what_a_member_knows_not_its_scale():
    from sklearn.metrics import log_loss

    from pipeline.cv.blend import calibrated_logloss

    rng = np.random.default_rng(8)
    n = 2000
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * z))).astype(int)
    folds = np.arange(n) % 5
    logit = z + 0.5 * rng.normal(size=n)
    scaled = {s: _two_col(1 / (1 + np.exp(-s * logit))) for s in (0.2, 1.0, 5.0)}
    raw = {s: log_loss(y, p) for s, p in scaled.items()}
    cal = {s: calibrated_logloss(p, y, folds).mean() for s, p in scaled.items()}
    assert max(raw.values()) - min(raw.values()) > 0.1  # the raw log loss punishes the scale
    assert max(cal.values()) - min(cal.values()) < 0.002  # the calibrated one does not
    noise = calibrated_logloss(_two_col(rng.uniform(0.01, 0.99, n)), y, folds).mean()
    assert noise > np.log(2) - 0.01 and noise > cal[1.0] + 0.1  # and knowing nothing scores the constant


def test_a_decision_metric_takes_a_second_view_the_metric_alone_misses():
    """Seed 4: the second member reads the latent signal independently, yet on accuracy's
    fold-wise differences the combination ties with the best single run; its calibrated log loss
    shows the gain beyond the noise. Seeds 0-5: every choice on that basis is a combination."""
    assert _choices(*_views(4, "view")) == ("best_single", "rank")
    assert all(_choices(*_views(seed, "view"))[1] != "best_single" for seed in range(6))


def test_a_decision_metric_adds_no_blend_for_a_noise_member():
    """A second member that knows nothing: the calibrated log loss never moves the choice away
    from the single run where the metric keeps it (7 of seeds 8-15; on seed 12 the stack wins on
    accuracy by more than one SE, and a tie on the metric is what the second step reads)."""
    picks = {seed: _choices(*_views(seed, "noise")) for seed in range(8, 16)}
    assert sum(old == "best_single" for old, _ in picks.values()) == 7
    assert all(new == old for old, new in picks.values())


def test_the_rule_reads_probabilities_only_where_the_metric_scores_decisions():
    from pipeline.cv.blend import reads_probabilities

    probas, y, folds = _views(0, "view", 300)
    results = [evaluate(m, probas, y, folds, "roc_auc", "metric", False) for m in ("best_single", "mean")]
    assert all(r.fold_calibrated is not None for r in results)
    assert [reads_probabilities(results, m) for m in ("accuracy", "f1", "logloss", "roc_auc", "qwk")] == \
        [True, True, False, False, False]
    assert not reads_probabilities([_result("best_single", [0.8, 0.7])], "accuracy")  # multi-label: none to read


def test_logloss_skips_methods_that_are_not_probabilities(multiclass_comp, workdir):
    sets = ("data.metric=logloss",)
    assert run_stage("clean", workdir, multiclass_comp, *sets) == 0
    assert run_stage("folds", workdir, multiclass_comp, *sets, "folds.n_splits=3") == 0
    for model in ("lr", "nbsvm"):
        assert run_stage("train", workdir, multiclass_comp, *sets, "train.family=classical",
                         f"train.classical_model={model}", f"train.run={model}") == 0
    assert run_stage("ensemble", workdir, multiclass_comp, *sets) == 0
    cv = json.loads((workdir / "ensembles/blend/cv.json").read_text())
    assert {m["method"] for m in cv["methods"]} == {"best_single", "mean", "weighted", "stack"}
    assert set(cv["skipped"]) == {"rank", "vote"} and "not probabilities" in cv["skipped"]["vote"]
    assert run_stage("ensemble", workdir, multiclass_comp, *sets, "ensemble.method=vote") == 2


def test_stacking_beats_averaging_when_members_are_complementary():
    """Member A knows classes 0/1 apart, member B knows 1/2 apart; each is uniform elsewhere.
    Averaging blurs them; a logistic regression over their log-probabilities combines them."""
    rng = np.random.default_rng(5)
    n = 3000
    y = rng.integers(0, 3, n)
    folds = np.arange(n) % 5

    def member(sep: tuple[int, int]) -> np.ndarray:
        p = np.full((n, 3), 1 / 3)
        for i in range(n):
            if y[i] in sep:
                q = rng.uniform(0.6, 0.9)
                p[i] = 0.1
                p[i, y[i]] = q
                p[i, sep[1] if y[i] == sep[0] else sep[0]] = 0.9 - q
            else:
                p[i] = [0.34, 0.33, 0.33] if sep == (1, 2) else [0.33, 0.33, 0.34]
        return p / p.sum(1, keepdims=True)

    probas = np.stack([member((0, 1)), member((1, 2))])
    stack = evaluate("stack", probas, y, folds, "logloss", "metric", False)
    mean = evaluate("mean", probas, y, folds, "logloss", "metric", False)
    assert stack.nested < mean.nested - 0.05


@pytest.mark.parametrize("shape", ["binary", "multiclass", "multilabel"])
def test_member_coefs_say_which_member_the_stacker_leans_on(shape):
    """One member is the truth's log-odds plus noise, the other is noise: the stacker's
    coefficient for the first is large and the second's near zero, in every layout of its coef."""
    rng = np.random.default_rng(3)
    n, k = 4000, {"binary": 2, "multiclass": 3, "multilabel": 2}[shape]
    if shape == "multilabel":
        y = rng.integers(0, 2, (n, k))
        good = np.clip(0.25 + 0.5 * y + rng.normal(0, 0.1, (n, k)), 0.01, 0.99)
        noise = rng.uniform(0.01, 0.99, (n, k))
    else:
        y = rng.integers(0, k, n)
        logits = 2.0 * np.eye(k)[y] + rng.normal(0, 1, (n, k))
        good = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        noise = rng.dirichlet(np.ones(k), n)
    coefs = member_coefs(fit_stacker(np.stack([good, noise]), y, C=1.0), 2)
    assert coefs.shape == (2,)
    assert coefs[0] > 0.5 and abs(coefs[1]) < 0.2 * coefs[0]


def test_stacking_never_uses_the_scored_folds_labels():
    """Nested stacking predictions for fold k do not move when fold k's labels change."""
    rng = np.random.default_rng(6)
    n = 500
    y = rng.integers(0, 2, n)
    folds = np.arange(n) % 5
    probas = np.stack([_two_col(np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0.01, 0.99)) for _ in range(2)])
    from pipeline.cv.blend import apply_blend, fit_blend

    def nested_fold0(labels):
        tr = folds != 0
        b = fit_blend("stack", probas[:, tr], labels[tr], "logloss", "metric", False)
        return apply_blend(b, probas[:, folds == 0])

    y2 = y.copy()
    y2[folds == 0] = 1 - y2[folds == 0]  # every label of fold 0 flipped
    assert np.array_equal(nested_fold0(y), nested_fold0(y2))
    y3 = y.copy()
    y3[folds == 1] = 1 - y3[folds == 1]  # a training fold's labels do matter
    assert not np.allclose(nested_fold0(y), nested_fold0(y3))
