"""submit: write submission.csv in exactly sample_submission.csv's shape, validated first.

Usage: python -m pipeline submit [--set submit.source=run:tfidf]
Reads:  ensembles/<name>/{test.parquet, weights.json} (or models/<run>/), sample_submission.csv,
        data/interim/schema.json; data/holdout/test_labels.csv when the embedded default runs
Writes: submissions/submission.csv, submissions/submission.json (validation, source, CV table);
        submissions/archive/<UTC>-<sha8>.csv and a row of submissions/ledger.jsonl (pipeline/core/ledger.py)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.config import Config
from pipeline.core.contract import Schema
from pipeline.core.files import read_competition_csv, read_json, write_json
from pipeline.core.metrics import tuned
from pipeline.core.paths import Paths
from pipeline.core.sources import competition_files, resolve_raw
from pipeline.core.submission import SubmissionValidator, build_submission, holdout_score, source, submit_inputs
from pipeline.core.transaction import publish, published

log = logging.getLogger(__name__)


@dataclass
class SubmitResult:
    submission: pd.DataFrame
    source: str
    holdout_score: float | None


def cv_table(paths: Paths, ens: dict[str, Any] | None) -> str:
    """Runs and ensemble methods, with the CV over the folds that select/tune never validated
    on beside the all-folds CV (the searched folds' OOF is optimistic)."""
    rows = []
    for run in published(paths, "train"):  # runs published whole
        cv = read_json(paths.run(run).cv)
        untouched = f"{cv['cv_untouched']:.4f}" if "cv_untouched" in cv else "= all"
        at = tuned(cv["threshold"]) if cv.get("threshold") else None
        rows.append((f"run {cv['run']} ({cv['family']})", f"{cv['cv']:.4f}", untouched,
                     f"{at[0]:.4f} @ {at[1]}" if at else "-", "-"))
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


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    return submit_inputs(cfg, paths)


def run(cfg: Config, paths: Paths, force: bool = False) -> SubmitResult:
    schema = Schema.load(paths.schema_json)
    raw = resolve_raw(paths, cfg.data)
    sample = read_competition_csv(competition_files(raw)["sample"])
    inputs = stage_inputs(cfg, paths)
    desc, test, threshold, cv = source(cfg, paths)
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
    _ledger(cfg, paths, raw, desc, cv, schema, held)
    log.info("CV table (%s):\n%s", schema.metric, table)  # printed again, last, by the report
    if held is not None:
        log.info("held-back test labels of the embedded default: %s %.4f", schema.metric, held)
    log.info("submit: %s -> %s (%d rows, validated)", desc, paths.submission, len(sub))
    return SubmitResult(submission=sub, source=desc, holdout_score=held)


def _ledger(cfg: Config, paths: Paths, raw: Path, desc: str, cv: dict[str, Any], schema: Schema,
            held: float | None) -> None:
    """The published submission archived, with its ledger row, and logged to the tracker; a
    failure here costs a warning, never the submission."""
    from dataclasses import asdict

    from pipeline.core import ledger, tracking
    from pipeline.core.config import diff_dict
    from pipeline.core.environment import git_diff_digest
    from pipeline.core.transaction import value_digest

    try:
        weights = None
        if not cfg.submit.source.startswith("run:"):
            w = read_json(paths.ensemble(cfg.ensemble.name).weights)
            weights = w.get("weights")
        competition = tracking.competition_of(paths)
        row = ledger.record(paths, {
            "competition": competition, "source": desc, "weights": weights,
            "metric": schema.metric, "cv": cv.get("in_sample", cv.get("cv")), "cv_untouched": cv.get("nested"),
            "holdout_score": held, "config": value_digest({k: v for k, v in asdict(cfg).items()})[:12],
            "settings": diff_dict(cfg), "invocation": ledger.invocation(), "data_digest": ledger.data_digest(raw),
            "diff_digest": git_diff_digest()})
    except Exception as e:  # noqa: BLE001 - the ledger is a record, not a gate
        log.warning("ledger: not recorded (%s: %s); the submission itself is written", type(e).__name__, e)
        return
    if row.get("again"):
        return  # logged when it was first recorded
    rid = tracking.log_run(cfg, paths, "submission", f"submission {row['sha8']}", competition=competition, metrics={
        "cv": row["cv"], "cv_untouched": row["cv_untouched"], "holdout_score": held},
        params={"source": desc, **{f"weight.{r}": f"{v:.4f}" for r, v in (weights or {}).items()}},
        tags={"textcomp.sha8": row["sha8"], "textcomp.metric": schema.metric, "textcomp.archive": row["file"]},
        artifacts=[paths.submission_json, paths.root / row["file"]])
    if rid:
        try:
            ledger.update(paths, row["sha256"], tracker_run=rid)
        except OSError as e:
            log.warning("ledger: the tracker run id not recorded (%s); the submission itself is written", e)


def kaggle_submit(env: dict[str, str] | None = None) -> int:
    """`make kaggle-submit`: the official CLI with the CV and the file's sha8 in the message
    (how `make lb` finds it again); values from the environment (TEXTCOMP_COMPETITION,
    TEXTCOMP_MESSAGE) go in as single arguments. The ledger row gets the message, and the
    Kaggle ref where the CLI lists it."""
    import os
    import subprocess

    from pipeline.core import ledger
    from pipeline.core.transaction import file_digest

    env = dict(os.environ if env is None else env)
    paths = Paths.make(env.get("TEXTCOMP_WORKDIR") or ".")
    cv = read_json(paths.submission_json)["cv"]
    digest = file_digest(paths.submission)
    slug = env["TEXTCOMP_COMPETITION"]
    message = f"{env.get('TEXTCOMP_MESSAGE', '')} (CV {cv:.4f}, sub {digest[:8]})".strip()
    rc = subprocess.call(["kaggle", "competitions", "submit", "-c", slug, "-f", str(paths.submission), "-m", message],
                         env=env)
    if rc != 0:
        return rc
    ledger.update(paths, digest, message=message, kaggle_competition=slug)
    try:
        ledger.fill_public_scores(paths, slug, kaggle_listing(slug, env))
    except ValueError as e:
        log.warning("%s; the ref and score come with `make lb`", e)
    return 0


def kaggle_listing(slug: str, env: dict[str, str]) -> str:
    """``kaggle competitions submissions -c <slug> --csv``'s output, or a ValueError whose text
    is the one line to print (the CLI missing, failing, or unable to reach Kaggle)."""
    import subprocess

    cmd = ["kaggle", "competitions", "submissions", "-c", slug, "--csv"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except (OSError, subprocess.SubprocessError) as e:
        raise ValueError(f"kaggle competitions submissions -c {slug}: {e}") from None
    if out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()
        raise ValueError(f"kaggle competitions submissions -c {slug} failed (exit {out.returncode}): "
                         f"{why[-1] if why else 'no output'}")
    return out.stdout


def kaggle_lb(env: dict[str, str] | None = None) -> int:
    """`make lb`: each archived submission's public score from ``kaggle competitions
    submissions``, then the ledger with the CV / public LB correlation. One line where the CLI
    cannot reach Kaggle."""
    import os
    import sys

    from pipeline.core import ledger

    env = dict(os.environ if env is None else env)
    paths = Paths.make(env.get("TEXTCOMP_WORKDIR") or ".")
    all_rows = ledger.rows(paths)
    slugs = [env["TEXTCOMP_COMPETITION"]] if env.get("TEXTCOMP_COMPETITION") else \
        sorted({r["kaggle_competition"] for r in all_rows if r.get("kaggle_competition")})
    if not slugs:
        sys.stderr.write("error: set COMPETITION=<competition slug> (no ledger row was sent with make kaggle-submit)\n")
        return 2
    for slug in slugs:
        try:
            n = ledger.fill_public_scores(paths, slug, kaggle_listing(slug, env))
        except ValueError as e:
            sys.stderr.write(f"error: {e}\n")
            return 2
        sys.stdout.write(f"{slug}: public scores for {n} of {len(all_rows)} ledger rows\n")
    return ledger.main([])


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("submit", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
