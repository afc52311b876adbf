"""The submission's shape and source: what submit writes and what package must reproduce.

``SubmissionValidator`` learns sample_submission.csv's shape and rejects any file that does
not match it; ``build_submission`` shapes test probabilities into it (through
pipeline/runtime.py, the code the inference bundle runs); ``source`` is the run or ensemble a
submission comes from, complete and current.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import runtime
from pipeline.core.config import Config
from pipeline.core.contract import Schema, encode_labels, proba_cols
from pipeline.core.files import DataError, read_competition_csv, read_json
from pipeline.core.metrics import metric_of, score
from pipeline.core.paths import Paths
from pipeline.core.sources import competition_files, resolve_raw
from pipeline.core.transaction import inputs_of, require


class SubmissionError(DataError):
    """A submission that does not match sample_submission.csv."""


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


class SubmissionValidator:
    """``fit(sample, schema)`` learns the expected shape; ``validate(df)`` raises on any mismatch."""

    def __init__(self, atol: float = 1e-4) -> None:
        self.atol = atol

    def fit(self, sample: pd.DataFrame, schema: Schema) -> SubmissionValidator:
        self.columns_ = list(sample.columns)
        self.ids_ = sample[schema.id_col].astype(str).tolist()
        self.id_col_ = schema.id_col
        self.kind_ = schema.submission
        self.classes_ = {str(c) for c in schema.classes}
        self.multilabel_ = schema.multilabel
        self.values_ = {str(c): {str(v) for v in vals} for c, vals in zip(schema.classes, schema.label_values)}
        self.top_k_ = metric_of(schema.metric).top_k or len(schema.classes)
        return self

    def validate(self, sub: pd.DataFrame) -> None:
        if list(sub.columns) != self.columns_:
            raise SubmissionError(f"submission columns {list(sub.columns)} differ from sample_submission's "
                                  f"{self.columns_}")
        if len(sub) != len(self.ids_):
            raise SubmissionError(f"submission has {len(sub)} rows; sample_submission has {len(self.ids_)}")
        ids = sub[self.id_col_].astype(str).tolist()
        if ids != self.ids_:
            i = next(i for i, (a, b) in enumerate(zip(ids, self.ids_)) if a != b)
            what = "missing from" if ids[i] not in set(self.ids_) else "out of order against"
            raise SubmissionError(f"submission row {i + 1}, column {self.id_col_!r}: id {ids[i]!r} is {what} "
                                  f"sample_submission (expected {self.ids_[i]!r})")
        preds = sub[self.columns_[1:]]
        if preds.isna().any().any():
            i = int(np.flatnonzero(preds.isna().any(axis=1).to_numpy())[0])
            raise SubmissionError(f"submission row {i + 1}: empty prediction")
        if self.kind_ == "label" and self.multilabel_:  # each label column: one of its two values
            for col in self.columns_[1:]:
                bad = ~preds[col].astype(str).isin(self.values_[str(col)])
                if bad.any():
                    i = int(np.flatnonzero(bad.to_numpy())[0])
                    raise SubmissionError(f"submission row {i + 1}, column {col!r}: {_plain(preds[col].iloc[i])!r} is "
                                          f"not one of its values ({', '.join(sorted(self.values_[str(col)]))})")
            return
        if self.kind_ == "ranked":  # the top labels of each row, space-separated, each a class once
            for i, v in enumerate(preds.iloc[:, 0].astype(str)):
                listed = v.split()
                wrong = next((t for t in listed if t not in self.classes_), None)
                if wrong is not None or not listed or len(set(listed)) != len(listed) or len(listed) > self.top_k_:
                    why = (f"{wrong!r} is not a label" if wrong is not None else
                           f"lists {len(listed)} labels (at most {self.top_k_}, each once)")
                    raise SubmissionError(f"submission row {i + 1}, column {self.columns_[1]!r}: {why} "
                                          f"(labels: {sorted(self.classes_)})")
            return
        if self.kind_ == "label":
            bad = ~preds.iloc[:, 0].astype(str).isin(self.classes_)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise SubmissionError(f"submission row {i + 1}, column {self.columns_[1]!r}: "
                                      f"{_plain(preds.iloc[i, 0])!r} is not a label (labels: {sorted(self.classes_)})")
            return
        values = preds.to_numpy(dtype=np.float64)
        if (values < 0).any() or (values > 1).any():
            raise SubmissionError("submission: probabilities outside [0, 1]")
        if values.shape[1] > 1 and not self.multilabel_:  # one probability per class: they sum to 1
            sums = values.sum(1)
            if np.abs(sums - 1).max() > self.atol:
                i = int(np.argmax(np.abs(sums - 1)))
                raise SubmissionError(f"submission row {i + 1}: probabilities sum to {sums[i]:.6f}, not 1")


def source_stage(cfg: Config) -> str:
    """The manifest of what ``submit.source`` names: train-<run> or ensemble-<name>."""
    if cfg.submit.source.startswith("run:"):
        return f"train-{cfg.submit.source.split(':', 1)[1]}"
    return f"ensemble-{cfg.ensemble.name}"


def submit_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    """What submit reads: its source's manifest, sample_submission.csv, the submit settings."""
    raw = resolve_raw(paths, cfg.data)
    return inputs_of(paths, [source_stage(cfg)], files={"sample": competition_files(raw)["sample"]},
                     config={"submit": asdict(cfg.submit)})


def source(cfg: Config, paths: Paths) -> tuple[str, pd.DataFrame, float | None, dict[str, Any]]:
    """(description, test predictions, threshold, CV summary) of what gets submitted: only the
    project's own runs and ensembles, each complete and current (its manifest)."""
    if cfg.submit.source.startswith("run:"):
        run = cfg.submit.source.split(":", 1)[1]
        r = paths.run(run)
        require(paths, source_stage(cfg))
        cv = read_json(r.cv)
        thr = cv.get("threshold", {}).get("value")
        return f"run {run}", pd.read_parquet(r.test), thr, {"cv": cv["cv"], "metric": cv["metric"]}
    e = paths.ensemble(cfg.ensemble.name)
    require(paths, source_stage(cfg))
    weights, cv = read_json(e.weights), read_json(e.cv)
    return f"ensemble {cfg.ensemble.name} ({weights['method']})", pd.read_parquet(e.test), weights.get("threshold"), cv


def build_submission(sample: pd.DataFrame, schema: Schema, test: pd.DataFrame, threshold: float | list[float] | None,
                     clip: float) -> pd.DataFrame:
    """The submission in sample_submission's id order (pipeline/runtime.py shapes it, the
    same code the inference bundle runs)."""
    cols = proba_cols(schema.n_classes)
    by_id = test.assign(_key=test["id"].astype(str)).set_index("_key")
    keys = sample[schema.id_col].astype(str)
    missing = ~keys.isin(by_id.index)
    if missing.any():
        raise SubmissionError(f"test predictions lack id {keys[missing].iloc[0]!r} of sample_submission")
    proba = by_id.loc[keys, cols].to_numpy(np.float64)
    return runtime.build_submission(sample[schema.id_col], proba, id_col=schema.id_col, pred_cols=schema.pred_cols,
                                    classes=[str(c) for c in schema.classes], kind=schema.submission,
                                    threshold=threshold, clip=clip, multilabel=schema.multilabel,
                                    label_values=schema.label_values, top_k=metric_of(schema.metric).top_k)


def submission_proba(sub: pd.DataFrame, schema: Schema) -> np.ndarray:
    """A one-label submission read back as scores per class (n, k) that score as the file does:
    a label row one-hot, a ranked row its labels' ranks (k, k - 1, ... over the sum),
    probabilities as written (one column: the second class's)."""
    index = {str(c): i for i, c in enumerate(schema.classes)}
    if schema.submission == "proba":
        probs = sub[[str(c) for c in schema.pred_cols]].to_numpy(np.float64)
        return probs if probs.shape[1] > 1 else np.column_stack([1 - probs[:, 0], probs[:, 0]])
    out = np.zeros((len(sub), schema.n_classes))
    for i, v in enumerate(sub[schema.pred_cols[0]].astype(str)):
        listed = v.split() if schema.submission == "ranked" else [v]
        for r, label in enumerate(listed):
            out[i, index[label]] = len(listed) - r
    return out / out.sum(1, keepdims=True)


def holdout_score(paths: Paths, raw: Path, schema: Schema, sub: pd.DataFrame) -> float | None:
    """Score against the embedded default's held-back labels (never read by training)."""
    if raw != paths.embedded or not paths.holdout_labels.exists() or schema.multilabel:
        return None
    held = read_competition_csv(paths.holdout_labels)
    merged = sub.merge(held, on=schema.id_col, suffixes=("", "_true"))
    true_col = f"{schema.label_col}_true" if schema.label_col in sub.columns else schema.label_col
    y = encode_labels(merged[true_col], schema.classes)
    return score(schema.metric, y, submission_proba(merged, schema))
