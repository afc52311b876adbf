"""report: one page for the whole competition, and the tuning doctor's reading of each run.

Usage: python -m pipeline report
Reads:  whatever the stages wrote (inspect, clean, selection, tuning, runs, ensemble, submission)
Writes: reports/index.md and reports/index.html (static, opens without a server),
        reports/runs/<run>.md (+ .html, PNGs): findings, confusion matrix, score by length and
        by extra column, most confident mistakes, calibration; reports/doctor.json
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict

import pandas as pd

from pipeline.core.config import Config
from pipeline.core.contract import Schema
from pipeline.core.files import read_json, write_json, write_text
from pipeline.core.ledger import ledger_path, rows
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of, publish
from pipeline.cv.compare import comparisons
from pipeline.cv.distill import teacher_stages
from pipeline.cv.store import finished_runs
from pipeline.reporting.markdown import to_html
from pipeline.reporting.pages import RunAnalysis, analyse_run, closing_summary, competition_page

log = logging.getLogger(__name__)


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    """Everything the page shows: clean, inspect, select, tune, each run, the ensemble, the submission."""
    teachers = teacher_stages(paths, finished_runs(paths))  # a student is compared with its teacher
    optional = [s for s in dict.fromkeys(("inspect", "select", "tune", f"ensemble-{cfg.ensemble.name}", *teachers,
                                          "submit")) if paths.manifest(s).exists()]
    kept = ledger_path(paths)  # `make lb` fills public scores in: the page shows them
    return inputs_of(paths, ["clean", *optional, *[f"train-{r}" for r in finished_runs(paths)]],
                     files={"ledger": kept} if kept.is_file() else None, config={"report": asdict(cfg.report)})


def run(cfg: Config, paths: Paths, force: bool = False) -> list[RunAnalysis]:
    inputs = stage_inputs(cfg, paths)
    runs = finished_runs(paths)  # published whole; each checked against its manifest by stage_inputs
    schema = Schema.load(paths.schema_json)
    train = pd.read_parquet(paths.train_clean)
    inspect = read_json(paths.inspect_json) if paths.inspect_json.exists() else None
    with publish(paths, "report", inputs) as tx:  # every page of the report from one moment
        analyses = [analyse_run(paths.run_dir(r), cfg, paths, schema, train, inspect, tx) for r in runs]
        write_json(tx.path(paths.doctor_json),
                   {a.run: [f.to_dict() for f in a.findings] for a in analyses})
        md = competition_page(paths, analyses, schema, comparisons(paths, schema.metric, schema.n_outputs))
        write_text(tx.path(paths.index_md), md)
        write_text(tx.path(paths.index_html), to_html(md, "competition report"))
        if paths.inspect_md.exists():
            write_text(tx.path(paths.inspect_html), to_html(paths.inspect_md.read_text(), "data report"))
    for a in analyses:
        for f in a.findings:
            log.info("doctor %s: %s: %s -> %s", a.run, f.rule, f.message, f.advice)
    _track(cfg, paths)
    log.info("report: %d runs -> %s", len(analyses), paths.index_html)
    sys.stdout.write("\n" + closing_summary(paths, schema) + "\n")
    return analyses


def _track(cfg: Config, paths: Paths) -> None:
    """The report page, attached to the tracker run of the submission it describes."""
    from pipeline.core import tracking
    from pipeline.core.transaction import file_digest

    if not tracking.enabled(cfg) or not paths.submission.exists():
        return
    digest = file_digest(paths.submission)
    row = next((r for r in reversed(rows(paths)) if r.get("sha256") == digest), None)
    if row and row.get("tracker_run"):
        tracking.log_artifacts(paths, row["tracker_run"], [paths.index_md, paths.index_html, paths.doctor_json])


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("report", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
