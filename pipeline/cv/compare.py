"""The levers against what they replace, on the same folds: a distilled student against its
teacher and against the same settings trained on labels only, a fine-tune from the pretrained
encoder against the plain one.

Each comparison is CV on the concatenated OOF (the metric at its default decision, as cv.json's
``cv``), the fold-wise differences and their standard error (the noise a gain must beat), and
the seconds each cost: a run's folds (cv.json), a pretrained encoder's build (paid once by every
run that starts from it), an ensemble teacher's members. A "twin" is a published run whose
training settings equal the lever's in everything but the lever (and the run's name). The report
shows them; benchmarks/levers.py writes them to benchmarks/results/levers.json.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.core.contract import labels_of, proba_cols
from pipeline.core.files import DataError, read_json
from pipeline.core.metrics import metric_of, paired_se, score
from pipeline.core.paths import Paths
from pipeline.core.transaction import published
from pipeline.cv import distill
from pipeline.cv.data import NOT_IN_FINGERPRINT

log = logging.getLogger(__name__)
DISTILL_KEYS = {"teacher", "distill_temperature", "distill_alpha"}
PRETRAIN_KEYS = {"pretrain_steps", "pretrain_lr", "pretrain_batch_size", "pretrain_mask"}


@dataclass
class Side:
    """One side of a comparison: a run or an ensemble's OOF, scored."""

    name: str  # "run student", "ensemble blend"
    cv: float
    folds: list[float]
    seconds: float
    extra_seconds: float = 0.0  # a pretrained encoder's build


@dataclass
class Comparison:
    lever: str  # "distillation", "pretraining"
    against: str  # "teacher", "labels only", "plain"
    new: Side
    reference: Side
    metric: str
    gain: float  # new - reference, in the metric's better direction
    fold_gains: list[float] = field(default_factory=list)
    se: float = 0.0
    beyond_noise: bool = False  # the gain exceeds one SE of the fold-wise differences

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _train_settings(paths: Paths, run: str) -> dict[str, Any]:
    return (yaml.safe_load(paths.run(run).config.read_text()) or {}).get("train") or {}


def _side(paths: Paths, name: str, oof: pd.DataFrame, metric: str, n_outputs: int, seconds: float,
          extra: float = 0.0) -> Side:
    y, p, folds = labels_of(oof), oof[proba_cols(n_outputs)].to_numpy(np.float64), oof["fold"].to_numpy()
    per_fold = [score(metric, y[folds == k], p[folds == k]) for k in np.unique(folds)]
    return Side(name, score(metric, y, p), per_fold, round(seconds, 1), round(extra, 1))


def _run_side(paths: Paths, run: str, metric: str, n_outputs: int) -> tuple[Side, pd.DataFrame]:
    cv = read_json(paths.run(run).cv)
    oof = pd.read_parquet(paths.run(run).oof)
    extra = float((cv.get("pretrain") or {}).get("seconds") or 0.0)
    return _side(paths, f"run {run}", oof, metric, n_outputs, float(cv.get("seconds", 0.0)), extra), oof


def _compare(lever: str, against: str, new: tuple[Side, pd.DataFrame], ref: tuple[Side, pd.DataFrame],
             metric: str) -> Comparison | None:
    (a, a_oof), (b, b_oof) = new, ref
    folds = a_oof.set_index("id")["fold"]
    other = b_oof.set_index("id")["fold"].reindex(folds.index)
    if other.isna().any() or not (other.to_numpy() == folds.to_numpy()).all():
        log.info("compare: %s and %s were not made on the same folds: not compared", a.name, b.name)
        return None
    sign = metric_of(metric).sign
    d = sign * (np.array(a.folds) - np.array(b.folds))
    gain = float(sign * (a.cv - b.cv))
    se = paired_se(d)
    return Comparison(lever, against, a, b, metric, round(gain, 5), [round(float(x), 5) for x in d], round(se, 5),
                      bool(gain > se))


def twins(paths: Paths, run: str, keys: set[str], switch: str, runs: list[str]) -> list[str]:
    """Published runs whose training settings equal ``run``'s but for ``keys`` (and the run name,
    and what changes speed, not results), with the lever (``switch``) off."""
    ignore = keys | NOT_IN_FINGERPRINT | {"searched_folds"}
    mine = {k: v for k, v in _train_settings(paths, run).items() if k not in ignore}
    out = []
    for other in runs:
        theirs = _train_settings(paths, other)
        if other != run and not theirs.get(switch) and {k: v for k, v in theirs.items() if k not in ignore} == mine:
            out.append(other)
    return out


def comparisons(paths: Paths, metric: str, n_outputs: int) -> list[Comparison]:
    """Every lever in the work directory against what it replaces, where both exist."""
    runs = [r for r in published(paths, "train") if paths.run(r).cv.exists()]
    out: list[Comparison] = []
    for run in runs:
        tc = _train_settings(paths, run)
        if tc.get("teacher"):
            new = _run_side(paths, run, metric, n_outputs)
            teacher = _teacher_side(paths, tc["teacher"], metric, n_outputs)
            if teacher is not None:
                out.append(_compare("distillation", "teacher", new, teacher, metric))
            out += [_compare("distillation", "labels only", new, _run_side(paths, t, metric, n_outputs), metric)
                    for t in twins(paths, run, DISTILL_KEYS, "teacher", runs)]
        if tc.get("pretrain_steps"):
            new = _run_side(paths, run, metric, n_outputs)
            out += [_compare("pretraining", "plain", new, _run_side(paths, t, metric, n_outputs), metric)
                    for t in twins(paths, run, PRETRAIN_KEYS, "pretrain_steps", runs)]
    return [c for c in out if c is not None]


def _teacher_side(paths: Paths, teacher: str, metric: str, n_outputs: int) -> tuple[Side, pd.DataFrame] | None:
    """The teacher as the student saw it: a run's OOF, or an ensemble's nested OOF (each fold
    blended by weights fitted on the others: its honest score), and what it cost."""
    try:
        kind, name = distill.resolve(paths, teacher)
    except DataError as e:  # a teacher gone since: the comparison is left out, said why
        log.info("compare: teacher %s: %s", teacher, e)
        return None
    if kind == "run":
        return _run_side(paths, name, metric, n_outputs)
    path = paths.ensemble(name).oof_nested
    if not path.exists():
        return None
    members = read_json(paths.ensemble(name).weights)["runs"]
    seconds = sum(float(read_json(paths.run(r).cv).get("seconds", 0.0)) for r in members if paths.run(r).cv.exists())
    return _side(paths, f"ensemble {name}", pd.read_parquet(path), metric, n_outputs, seconds), pd.read_parquet(path)
