"""train: one model configuration on every fold of folds.csv.

Usage: python -m pipeline train [--config configs/exp/<run>.yaml] [--set train.lr=3e-5 ...]
       python -m pipeline train --plan reports/selected.json   (every run that select/tune chose)
Reads:  data/interim/{train,test}_clean.parquet, data/processed/folds.csv,
        data/interim/augmented/<method>.parquet for each train.augment method
Writes: models/<run>/{config.yaml, env.json, fold<k>/, oof.parquet, test.parquet, cv.json,
        history.csv, curves.png}

A killed run resumes: finished folds are kept (their config fingerprint matches), and a
fold in progress restarts from its last finished epoch (pipeline.cv.runs).

Under a time budget (reports/plan.json, `make all TIME=30m`), --plan trains the cheap
families first, re-plans before each other run when the stages so far ran slower than planned
(an epoch at a time, then the run), and stops a run at a fold boundary when its next fold
would not finish before ensemble, submit and report must start (pipeline.budget.replan).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from pipeline.budget.clock import Deadline
from pipeline.budget.planfile import active, pinned_keys, update_plan
from pipeline.budget.planner import Plan
from pipeline.budget.replan import replan
from pipeline.core.config import Config, with_diff
from pipeline.core.files import DataError, read_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import require
from pipeline.cv.runs import RunResult, train_run
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


def run(cfg: Config, paths: Paths, force: bool = False, plan: str | None = None) -> list[RunResult]:
    if not plan:
        return [train_run(cfg, paths, force)]
    plan_path = Path(plan) if Path(plan).is_absolute() else paths.root / plan  # relative to the work directory
    if not plan_path.exists():
        raise DataError(f"{plan_path}: not found; run `make select` (and `make tune`) first")
    if plan_path.resolve() == paths.runs_json.resolve():
        require(paths, "tune")  # the plan tune published, whole and current
    configs = [with_diff(cfg, entry["diff"]) for entry in read_json(plan_path)["runs"]]
    configs.sort(key=lambda c: family(c.train.family).order)  # cheap first: a submission exists early
    deadline = Deadline.load(active(cfg))
    results = []
    for i, c in enumerate(configs):
        if deadline.end is not None:
            c = replan(c, configs[i:], deadline, paths, pinned=pinned_keys(cfg))
            if c is None:
                continue
        t0 = time.time()
        result = train_run(c, paths, force, deadline)
        update_plan(paths, lambda p, r=result, s=time.time() - t0: _record_run(p, r, s))
        results.append(result)
    return results


def _record_run(plan: Plan, result: RunResult, seconds: float) -> None:
    r = plan.run_plan(result.run)
    if r is not None:
        r.actual_s, r.folds_done, r.complete = round(seconds, 1), result.folds_done, result.cv is not None


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default=None,
                        help="train every run listed in this plan (reports/runs.json; relative to --workdir)")


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main
    from pipeline.modeling.step import TrainingError

    try:
        return stage_main("train", __doc__, run, argv, _args)
    except TrainingError as e:
        log.error("%s", e)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
