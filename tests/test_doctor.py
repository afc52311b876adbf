"""Each rule on synthetic histories that should and should not trigger it."""

import numpy as np
import pandas as pd

from pipeline.core.config import ReportConfig
from pipeline.reporting.doctor import (
    diagnose,
    fold_instability,
    lr_health,
    mismatch,
    overfitting,
    separation,
    underfitting,
)

CFG = ReportConfig()


def history(train_loss, val_loss=None, confidence=None, update_ratio=1e-3, fold=0):
    rows = []
    n = len(train_loss)
    for i, loss in enumerate(train_loss):
        rows.append({"fold": fold, "kind": "train", "epoch": (i + 1) / n * 4, "step": i + 1, "lr": 1e-4,
                     "train_loss": loss, "update_ratio": update_ratio})
    for j, vl in enumerate(val_loss or []):
        rows.append({"fold": fold, "kind": "eval", "epoch": float(j + 1), "step": (j + 1) * n // 4, "val_loss": vl,
                     "metric": 0.8, "confidence": (confidence or [0.9] * 4)[j]})
    return pd.DataFrame(rows)


def falling(n=40, start=0.7, end=0.1):
    return list(np.linspace(start, end, n))


def test_overfitting_fires_on_rising_val_loss_and_names_best_epoch():
    f = overfitting(history(falling(), [0.45, 0.40, 0.48, 0.55]), CFG, 0)
    assert len(f) == 1 and f[0].evidence["best_epoch"] == 2.0 and "weight decay in 0.01-0.1" in f[0].advice
    assert "0.4000 -> 0.5500" in f[0].message
    assert overfitting(history(falling(), [0.5, 0.45, 0.42, 0.40]), CFG, 0) == []
    assert overfitting(history(falling(), [0.45, 0.40, 0.41, 0.39]), CFG, 0) == []  # one rise is noise


def test_underfitting_fires_when_loss_stays_high_and_flat():
    flat = list(np.linspace(0.69, 0.66, 40))
    f = underfitting(history(flat), CFG, 0, lr=1e-6, lr_suggestion=3e-5)
    assert len(f) == 1 and "lr-find suggests 3.00e-05" in f[0].advice
    assert underfitting(history(falling()), CFG, 0, 1e-6, None) == []
    steep_but_high = list(np.linspace(0.69, 0.60, 30)) + list(np.linspace(0.60, 0.58, 10)) * 0 + \
        list(np.linspace(0.60, 0.45, 10))
    assert underfitting(history(steep_but_high), CFG, 0, 1e-5, None) == []  # still falling fast: not yet


def test_lr_too_high_on_spikes_nan_or_update_ratio():
    spiky = falling()
    spiky[25] = 2.5
    assert lr_health(history(spiky), CFG, 0, 1e-3, None)[0].rule == "lr_too_high"
    nan = falling()
    nan[30] = float("nan")
    assert "non-finite" in lr_health(history(nan), CFG, 0, 1e-3, None)[0].message
    big = lr_health(history(falling(), update_ratio=0.05), CFG, 0, 1e-3, None)
    assert [f.rule for f in big] == ["lr_too_high"] and "3.33e-04" in big[0].advice
    small = lr_health(history(falling(), update_ratio=1e-7), CFG, 0, 1e-6, None)
    assert [f.rule for f in small] == ["lr_too_low"]
    assert lr_health(history(falling()), CFG, 0, 1e-4, None) == []


def test_confidence_not_separating():
    f = separation(history(falling(), [0.69] * 4, confidence=[0.52, 0.53, 0.54, 0.55]), CFG, 0, 2)
    assert len(f) == 1 and f[0].evidence["chance"] == 0.5
    assert separation(history(falling(), [0.4] * 4, confidence=[0.6, 0.7, 0.8, 0.85]), CFG, 0, 2) == []
    assert separation(history(falling(), [0.4] * 4, confidence=[0.5] * 4), CFG, 0, 3) == []  # 3 classes: chance 1/3


def test_fold_instability_and_mismatch():
    cv = {"folds": [{"fold": k, "score": s} for k, s in enumerate([0.80, 0.81, 0.79, 0.70, 0.80])]}
    f = fold_instability(cv, CFG)
    assert [x.evidence["fold"] for x in f] == [3]
    assert fold_instability({"folds": [{"fold": k, "score": 0.8 + k * 0.001} for k in range(5)]}, CFG) == []
    assert mismatch({"shift": {"adversarial_auc": 0.82}}, CFG)[0].rule == "mismatch"
    assert mismatch({"shift": {"adversarial_auc": 0.51}}, CFG) == []


def test_diagnose_runs_every_rule_per_fold():
    h = pd.concat([history(falling(), [0.45, 0.40, 0.48, 0.55], fold=0),
                   history(falling(), [0.5, 0.45, 0.42, 0.40], fold=1)])
    found = diagnose(h, {"folds": []}, CFG, 2, lr=1e-4, inspect={"shift": {"adversarial_auc": 0.9}})
    assert sorted(f.rule for f in found) == ["mismatch", "overfitting"]
    assert found[0].evidence["fold"] == 0
