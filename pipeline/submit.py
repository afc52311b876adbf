"""submit: write submission.csv in exactly sample_submission.csv's shape, validated first.

Usage: python -m pipeline submit [--set submit.source=run:tfidf]
Reads:  ensembles/<name>/{test.parquet, weights.json} (or models/<run>/), sample_submission.csv,
        data/interim/schema.json; data/holdout/test_labels.csv when the embedded default runs
Writes: submissions/submission.csv, submissions/submission.json (validation, source, CV table)
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline import runtime
from pipeline.config import Config
from pipeline.contract import Schema, encode_labels
from pipeline.embedded import resolve_raw
from pipeline.io import DataError, read_competition_csv, read_json, write_json
from pipeline.metrics import score
from pipeline.paths import Paths
from pipeline.train import proba_cols
from pipeline.transaction import inputs_of, publish, published, require

log = logging.getLogger(__name__)


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
        if values.shape[1] > 1:
            sums = values.sum(1)
            if np.abs(sums - 1).max() > self.atol:
                i = int(np.argmax(np.abs(sums - 1)))
                raise SubmissionError(f"submission row {i + 1}: probabilities sum to {sums[i]:.6f}, not 1")


@dataclass
class SubmitResult:
    submission: pd.DataFrame
    source: str
    holdout_score: float | None


def _source_stage(cfg: Config) -> str:
    if cfg.submit.source.startswith("run:"):
        return f"train-{cfg.submit.source.split(':', 1)[1]}"
    return f"ensemble-{cfg.ensemble.name}"


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    raw = resolve_raw(paths, cfg.data)
    return inputs_of(paths, [_source_stage(cfg)], files={"sample": raw / "sample_submission.csv"},
                     config={"submit": asdict(cfg.submit)})


def _source(cfg: Config, paths: Paths) -> tuple[str, pd.DataFrame, float | None, dict[str, Any]]:
    """(description, test predictions, threshold, CV summary, manifest stage) of what gets submitted:
    only the project's own runs and ensembles, each complete and current (its manifest)."""
    if cfg.submit.source.startswith("run:"):
        run = cfg.submit.source.split(":", 1)[1]
        d = paths.run_dir(run)
        require(paths, _source_stage(cfg))
        cv = read_json(d / "cv.json")
        thr = cv.get("threshold", {}).get("value")
        return f"run {run}", pd.read_parquet(d / "test.parquet"), thr, {"cv": cv["cv"], "metric": cv["metric"]}
    d = paths.ensemble_dir(cfg.ensemble.name)
    require(paths, _source_stage(cfg))
    weights, cv = read_json(d / "weights.json"), read_json(d / "cv.json")
    return (f"ensemble {cfg.ensemble.name} ({weights['method']})", pd.read_parquet(d / "test.parquet"),
            weights.get("threshold"), cv)


def build_submission(sample: pd.DataFrame, schema: Schema, test: pd.DataFrame, threshold: float | None,
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
                                    threshold=threshold, clip=clip)


def holdout_score(paths: Paths, raw: object, schema: Schema, sub: pd.DataFrame) -> float | None:
    """Score against the embedded default's held-back labels (never read by training)."""
    if raw != paths.embedded or not paths.holdout_labels.exists():
        return None
    held = read_competition_csv(paths.holdout_labels)
    merged = sub.merge(held, on=schema.id_col, suffixes=("_pred", ""))
    y = encode_labels(merged[schema.label_col], schema.classes)
    if schema.submission == "label":
        pred = encode_labels(merged[f"{schema.label_col}_pred"], schema.classes)
        return score(schema.metric, y, np.eye(schema.n_classes)[pred])
    probs = merged[[str(c) for c in schema.pred_cols]].to_numpy()
    return score(schema.metric, y, probs if probs.shape[1] > 1 else np.column_stack([1 - probs[:, 0], probs[:, 0]]))


def cv_table(paths: Paths, ens: dict[str, Any] | None) -> str:
    """Runs and ensemble methods, with the CV over the folds that select/tune never validated
    on beside the all-folds CV (the searched folds' OOF is optimistic)."""
    rows = []
    for run in published(paths, "train"):  # runs published whole
        cv = read_json(paths.run_dir(run) / "cv.json")
        thr = cv.get("threshold")
        untouched = f"{cv['cv_untouched']:.4f}" if "cv_untouched" in cv else "= all"
        rows.append((f"run {cv['run']} ({cv['family']})", f"{cv['cv']:.4f}", untouched,
                     f"{thr['f1']:.4f} @ {thr['value']}" if thr else "-", "-"))
    if ens and "methods" in ens:
        scope = "untouched folds" if ens.get("searched_folds") else "all folds"
        for m in ens["methods"]:
            mark = "  <- chosen" if m["method"] == ens["chosen"] else ""
            cells = ("-", f"{m['in_sample']:.4f}") if ens.get("searched_folds") else (f"{m['in_sample']:.4f}", "= all")
            rows.append((f"ensemble {m['method']}{mark}", *cells, "-", f"{m['nested']:.4f} ({scope})"))
    header = ("model", "CV (OOF, all folds)", "CV (folds select/tune never saw)", "tuned threshold", "nested CV")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *[fmt.format(*r) for r in rows]])


def run(cfg: Config, paths: Paths, force: bool = False) -> SubmitResult:
    schema = Schema.load(paths.schema_json)
    raw = resolve_raw(paths, cfg.data)
    sample = read_competition_csv(raw / "sample_submission.csv")
    inputs = stage_inputs(cfg, paths)
    desc, test, threshold, cv = _source(cfg, paths)
    sub = build_submission(sample, schema, test, threshold, cfg.submit.clip)
    SubmissionValidator().fit(sample, schema).validate(sub)
    held = holdout_score(paths, raw, schema, sub)
    table = cv_table(paths, cv if "methods" in cv else None)
    with publish(paths, "submit", inputs) as tx:  # the CSV and the JSON that describes it, together
        staged = tx.path(paths.submission)
        sub.to_csv(staged, index=False, lineterminator="\n")
        SubmissionValidator().fit(sample, schema).validate(read_competition_csv(staged))  # as written
        write_json(tx.path(paths.submission_json), {
            "source": desc, "threshold": threshold, "rows": len(sub), "columns": list(sub.columns), "valid": True,
            "metric": schema.metric, "cv": cv.get("nested", cv.get("cv")), "holdout_score": held, "table": table})
    sys.stdout.write(f"\nFinal CV table ({schema.metric}):\n{table}\n")
    if held is not None:
        sys.stdout.write(f"Held-back test labels of the embedded default: {schema.metric} {held:.4f}\n")
    log.info("submit: %s -> %s (%d rows, validated)", desc, paths.submission, len(sub))
    return SubmitResult(submission=sub, source=desc, holdout_score=held)


def kaggle_submit(env: dict[str, str] | None = None) -> int:
    """`make kaggle-submit`: the official CLI with the CV in the message; values from the
    environment (TEXTCOMP_COMPETITION, TEXTCOMP_MESSAGE) go in as single arguments."""
    import os
    import subprocess

    env = dict(os.environ if env is None else env)
    paths = Paths.make(env.get("TEXTCOMP_WORKDIR") or ".")
    cv = read_json(paths.submission_json)["cv"]
    cmd = ["kaggle", "competitions", "submit", "-c", env["TEXTCOMP_COMPETITION"], "-f", str(paths.submission),
           "-m", f"{env.get('TEXTCOMP_MESSAGE', '')} (CV {cv:.4f})"]
    return subprocess.call(cmd)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("submit", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
