"""Distillation's teacher: a run or an ensemble whose out-of-fold probabilities become a
student's soft targets (``train.teacher``), checked to be leakage-safe before any is used.

A row's soft target is the teacher's probability for it from the fold models that never trained
on it: a run's OOF, or an ensemble's ``oof_nested.parquet`` (each fold's rows blended by the
blend fitted on the other folds). That holds only when the teacher's folds are the student's:
a teacher made on another folds.csv, or whose OOF does not cover every training row, or whose
labels differ, is refused with a one-line error. (What the OOF cannot remove: the teacher's
fold-i model, whose prediction is row r's target, trained on fold j's rows, so a student's
fold-j score can carry a trace of fold j's labels through its training targets; it is the same
second-order effect that stacking on OOF predictions has. The held-back labels of the embedded
default are the check that has none: docs/training.md.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.contract import labels_of, proba_cols
from pipeline.core.files import DataError, read_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import load_manifest

log = logging.getLogger(__name__)


def resolve(paths: Paths, teacher: str) -> tuple[str, str]:
    """("run" | "ensemble", name) of ``train.teacher``: ``run:<name>``, ``ensemble:<name>``, or a
    name that only one published run or ensemble has."""
    kind, _, name = teacher.rpartition(":")
    if kind:
        return kind, name
    found = [k for k, stage in (("run", f"train-{name}"), ("ensemble", f"ensemble-{name}"))
             if paths.manifest(stage).exists()]
    if len(found) == 2:
        raise DataError(f"train.teacher={teacher!r}: both a run and an ensemble are called {name!r}; "
                        f"say which (train.teacher=run:{name} or ensemble:{name})")
    if not found:
        raise DataError(f"train.teacher={teacher!r}: no published run or ensemble of that name; "
                        "run `make train` or `make ensemble` for it first")
    return found[0], name


def stage_of(kind: str, name: str) -> str:
    """The manifest that publishes the teacher's OOF."""
    return f"train-{name}" if kind == "run" else f"ensemble-{name}"


def oof_path(paths: Paths, kind: str, name: str) -> Path:
    return paths.run(name).oof if kind == "run" else paths.ensemble(name).oof_nested


def soft_targets(paths: Paths, teacher: str, train: pd.DataFrame, n_outputs: int, student: str) -> np.ndarray:
    """The teacher's OOF probabilities for ``train``'s rows (id, label, fold), in its order:
    refused where a row's target could come from a model that trained on it."""
    kind, name = resolve(paths, teacher)
    if kind == "ensemble":
        members = read_json(paths.ensemble(name).weights)["runs"]
        if student in members:
            raise DataError(f"train.teacher={teacher!r}: ensemble {name!r} blends {student!r} itself; a student "
                            "cannot learn from a blend of its own predictions (blend without it: ensemble.runs)")
    path = oof_path(paths, kind, name)
    if not path.exists():
        raise DataError(f"{path}: not found; run `make ensemble SET=ensemble.name={name}` again (an ensemble "
                        "published before distillation existed lacks its nested OOF)")
    oof = pd.read_parquet(path)
    missing = ~train["id"].isin(set(oof["id"]))
    if missing.any():
        raise DataError(f"{path}: the teacher's OOF has no row for train id {train['id'][missing].tolist()[0]!r} "
                        f"({int(missing.sum())} of {len(train)} rows missing): it was made on other data; "
                        "train the teacher again")
    by_id = oof.drop_duplicates("id").set_index("id").loc[train["id"]]
    moved = by_id["fold"].to_numpy() != train["fold"].to_numpy()
    if moved.any():
        i = int(np.flatnonzero(moved)[0])
        raise DataError(f"{path}: train id {train['id'].tolist()[i]!r} is in fold {int(by_id['fold'].iloc[i])} there and "
                        f"in fold {int(train['fold'].iloc[i])} of folds.csv: the teacher was made on another "
                        "folds.csv, so its OOF is not out-of-fold for this student; train it again on these folds")
    theirs, ours = labels_of(by_id.reset_index()), labels_of(train)
    differ = (theirs != ours).reshape(len(train), -1).any(axis=1)
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise DataError(f"{path}: train id {train['id'].tolist()[i]!r} has another label there than in the cleaned "
                        "train: the teacher was made on other data; train it again")
    cols = proba_cols(n_outputs)
    if any(c not in by_id.columns for c in cols):
        raise DataError(f"{path}: has no columns {cols}: not this competition's predictions")
    log.info("distillation: soft targets for %d train rows from %s %s's out-of-fold probabilities (%s)", len(train),
             kind, name, path.name)
    return by_id[cols].to_numpy(np.float64)


def teacher_digest(paths: Paths, teacher: str) -> tuple[str, str]:
    """(manifest stage, its digest) of the teacher: part of the student's fingerprint and
    inputs, so a changed teacher retrains the student and a stale one stops it."""
    kind, name = resolve(paths, teacher)
    stage = stage_of(kind, name)
    m = load_manifest(paths, stage)
    if m is None:
        raise DataError(f"train.teacher={teacher!r}: {paths.manifest(stage)} not found; run its stage first")
    return stage, m.digest


def teacher_of(config: dict) -> str | None:
    """``train.teacher`` of a published run's config.yaml (as a dict)."""
    return (config.get("train") or {}).get("teacher")


def _config(paths: Paths, run: str) -> dict:
    import yaml

    f = paths.run(run).config
    return (yaml.safe_load(f.read_text()) or {}) if f.exists() else {}


def teacher_stages(paths: Paths, runs: list[str]) -> list[str]:
    """The manifests of the teachers that ``runs`` were distilled from (those still there)."""
    out = []
    for run in runs:
        teacher = teacher_of(_config(paths, run))
        if teacher:
            try:
                out.append(stage_of(*resolve(paths, teacher)))
            except DataError:
                continue
    return [s for s in dict.fromkeys(out) if paths.manifest(s).exists()]


def students_of(paths: Paths, runs: list[str]) -> list[str]:
    """The runs among ``runs`` distilled from a teacher (``train.teacher``). An ensemble leaves
    them out unless ``ensemble.runs`` names them: a student's OOF leans its own way (above), and
    a blend weighs its members by their OOF. On the embedded default the student scored its
    labels-only twin's held-back accuracy exactly (0.7500 each, 1,500 rows) while its CV said
    +0.0173 (SE 0.0032); on the disaster tweets its CV said +0.0299 (benchmarks/levers.py)."""
    return [run for run in runs if teacher_of(_config(paths, run))]
