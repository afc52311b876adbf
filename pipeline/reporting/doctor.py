"""The tuning doctor: the notes' rules for reading a training run, as findings with numbers.

Each rule is a pure function of a run's history (and CV / inspect figures) returning
Findings; thresholds live in ``report.*`` of the config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import ReportConfig


@dataclass
class Finding:
    rule: str  # overfitting, underfitting, lr_too_high, lr_too_low, not_separating, fold_instability, mismatch
    severity: str  # warning or info
    message: str  # what the numbers say
    advice: str  # what to change
    evidence: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _evals(h: pd.DataFrame) -> pd.DataFrame:
    return h[h["kind"] == "eval"].sort_values("epoch")


def _trains(h: pd.DataFrame) -> pd.DataFrame:
    t = h[h["kind"] == "train"]
    return t.sort_values("step") if "train_loss" in t else t.iloc[0:0]


def overfitting(h: pd.DataFrame, cfg: ReportConfig, fold: int) -> list[Finding]:
    """Validation loss rising for k evaluations in a row while training loss falls."""
    ev, tr = _evals(h), _trains(h)
    if len(ev) < cfg.overfit_evals + 1 or tr.empty:
        return []
    vl = ev["val_loss"].to_numpy()
    rising = 0
    for i in range(len(vl) - 1, 0, -1):
        if vl[i] > vl[i - 1]:
            rising += 1
        else:
            break
    if rising < cfg.overfit_evals:
        return []
    start_epoch = float(ev["epoch"].iloc[-rising - 1])
    tr_before = tr[tr["epoch"] <= start_epoch]["train_loss"]
    tr_after = tr[tr["epoch"] > start_epoch]["train_loss"]
    if tr_before.empty or tr_after.empty or tr_after.mean() >= tr_before.iloc[-1]:
        return []
    best = ev.loc[ev["val_loss"].idxmin()]
    return [Finding("overfitting", "warning",
                    f"fold {fold}: validation loss rose for {rising} evaluations in a row "
                    f"({vl[-rising - 1]:.4f} -> {vl[-1]:.4f}) while training loss fell "
                    f"({tr_before.iloc[-1]:.4f} -> {tr_after.iloc[-1]:.4f}); lowest validation loss at epoch "
                    f"{best['epoch']:.2f}",
                    "regularise: weight decay in 0.01-0.1, more dropout, label smoothing 0.1, fewer epochs "
                    f"(about {math.ceil(best['epoch'])}), or augmentation",
                    {"fold": fold, "rising_evals": rising, "val_loss": vl.tolist(), "best_epoch": float(best["epoch"])})]


def underfitting(h: pd.DataFrame, cfg: ReportConfig, fold: int, lr: float | None,
                 lr_suggestion: float | None) -> list[Finding]:
    """Training loss still high and falling slowly at the end."""
    tr = _trains(h)
    if len(tr) < 4:
        return []
    loss = tr["train_loss"].to_numpy()
    first, last = loss[0], loss[-1]
    q = max(1, len(loss) // 4)
    tail_drop = (loss[-q - 1] - last) / max(abs(loss[-q - 1]), 1e-12)
    if last <= cfg.underfit_ratio * first or tail_drop >= cfg.underfit_slope:
        return []
    advice = "train longer (more epochs) or raise the learning rate"
    if lr_suggestion:
        advice += f"; lr-find suggests {lr_suggestion:.2e}" + (f" (now {lr:.2e})" if lr else "")
    elif lr:
        advice += f" (now {lr:.2e}; try {lr * 3:.2e}, or run `make lr-find`)"
    return [Finding("underfitting", "warning",
                    f"fold {fold}: training loss is still {last:.4f}, {last / first:.0%} of its start ({first:.4f}), "
                    f"and fell only {tail_drop:.1%} over the last quarter of training",
                    advice, {"fold": fold, "first": float(first), "last": float(last), "tail_drop": float(tail_drop)})]


def lr_health(h: pd.DataFrame, cfg: ReportConfig, fold: int, lr: float | None,
              lr_suggestion: float | None) -> list[Finding]:
    """Spikes, non-finite losses and the update/weight ratio against the ~1e-3 rule of thumb."""
    tr = _trains(h)
    out: list[Finding] = []
    if tr.empty:
        return out
    loss = tr["train_loss"].to_numpy(dtype=float)
    try_lr = lr_suggestion or (lr / 3 if lr else None)
    hint = f"; try {try_lr:.2e}" if try_lr else ""
    nonfinite = ~np.isfinite(loss)
    running_min = np.minimum.accumulate(np.where(nonfinite, np.inf, loss))
    spikes = np.flatnonzero((loss > cfg.spike_factor * running_min) & np.isfinite(running_min))
    if nonfinite.any() or len(spikes):
        where = int(tr["step"].iloc[int(np.flatnonzero(nonfinite)[0] if nonfinite.any() else spikes[0])])
        out.append(Finding("lr_too_high", "warning",
                           f"fold {fold}: training loss {'became non-finite' if nonfinite.any() else 'spiked'} "
                           f"({len(spikes)} points above {cfg.spike_factor}x the running minimum), first at step {where}",
                           "lower the learning rate, warm up longer, or clip gradients" + hint,
                           {"fold": fold, "spikes": len(spikes), "first_step": where}))
    if "update_ratio" in tr and tr["update_ratio"].notna().any():
        med = float(tr["update_ratio"].median())
        if med > cfg.update_ratio_high:
            out.append(Finding("lr_too_high", "warning",
                               f"fold {fold}: median update/weight ratio {med:.1e}, far above the ~1e-3 the notes "
                               "call healthy", "lower the learning rate" + hint,
                               {"fold": fold, "median_update_ratio": med}))
        elif med < cfg.update_ratio_low:
            out.append(Finding("lr_too_low", "warning",
                               f"fold {fold}: median update/weight ratio {med:.1e}, far below ~1e-3: weights barely move",
                               "raise the learning rate" + (f" (try {lr * 3:.2e})" if lr else ""),
                               {"fold": fold, "median_update_ratio": med}))
    return out


def separation(h: pd.DataFrame, cfg: ReportConfig, fold: int, n_classes: int) -> list[Finding]:
    """A classifier that learned pushes its confidence from chance toward 1."""
    ev = _evals(h)
    if ev.empty or "confidence" not in ev:
        return []
    conf = float(ev["confidence"].iloc[-1])
    chance = 1 / n_classes
    if conf - chance >= cfg.confidence_margin:
        return []
    return [Finding("not_separating", "warning",
                    f"fold {fold}: mean validation confidence {conf:.3f} is still near chance ({chance:.3f})",
                    "the classifier has not learned the boundary: check labels and inputs (two decoded samples are "
                    "in the log), raise the LR or train longer", {"fold": fold, "confidence": conf, "chance": chance})]


def fold_instability(cv: dict[str, Any], cfg: ReportConfig) -> list[Finding]:
    scores = {f["fold"]: f["score"] for f in cv.get("folds", [])}
    if len(scores) < 3:
        return []
    out = []
    for k, s in scores.items():
        others = [v for j, v in scores.items() if j != k]
        ref = float(np.median(others))  # the median: one bad fold must not drag its neighbours' reference
        dev = s - ref
        if abs(dev) > cfg.fold_deviation:
            out.append(Finding("fold_instability", "warning",
                               f"fold {k} scores {s:.4f}, {dev:+.4f} from the other folds' median {ref:.4f}",
                               f"look at fold {k}'s rows: label noise, duplicates or a different slice of the data "
                               "(and trust single-fold decisions less)", {"fold": k, "score": s, "deviation": dev}))
    return out


def mismatch(inspect: dict[str, Any] | None, cfg: ReportConfig) -> list[Finding]:
    auc = (inspect or {}).get("shift", {}).get("adversarial_auc")
    if auc is None or auc <= cfg.adversarial_auc:
        return []
    return [Finding("mismatch", "warning",
                    f"a classifier tells train from test with AUC {auc:.3f} (threshold {cfg.adversarial_auc})",
                    "train and test differ: more training data of the same kind will not fix it; weight or select "
                    "train rows that look like test, and trust CV less", {"adversarial_auc": auc})]


def diagnose(history: pd.DataFrame, cv: dict[str, Any], cfg: ReportConfig, n_classes: int, lr: float | None = None,
             lr_suggestion: float | None = None, inspect: dict[str, Any] | None = None) -> list[Finding]:
    """Every rule over every fold of a run, then the run-level ones."""
    findings: list[Finding] = []
    for fold, h in history.groupby("fold"):
        fold = int(fold)
        findings += overfitting(h, cfg, fold)
        findings += underfitting(h, cfg, fold, lr, lr_suggestion)
        findings += lr_health(h, cfg, fold, lr, lr_suggestion)
        findings += separation(h, cfg, fold, n_classes)
    findings += fold_instability(cv, cfg)
    findings += mismatch(inspect, cfg)
    return findings
