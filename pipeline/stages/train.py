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
families first (where the plan says so, in a process of their own on the CPU beside the GPU's
fine-tunes), re-plans before each other run at the pace that run measured against its probe,
stops a run at a fold boundary when its next fold would not finish before ensemble, submit
and report must start, and spends time left over (pipeline.budget.replan).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from pipeline.budget.clock import Deadline, Others
from pipeline.budget.planfile import active, pinned_keys, update_ledger
from pipeline.budget.plans import Ledger, Plan, RunRecord
from pipeline.budget.replan import replan, spare_runs, stage_pace
from pipeline.core.config import Config, with_diff
from pipeline.core.files import DataError, read_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import require
from pipeline.cv.runs import RunResult, train_run
from pipeline.modeling import distributed as dist_
from pipeline.modeling.families import family
from pipeline.modeling.step import TrainingError

log = logging.getLogger(__name__)


def run(cfg: Config, paths: Paths, force: bool = False, plan: str | None = None,
        relaunch_argv: list[str] | None = None) -> list[RunResult]:
    n = dist_.wanted_processes(cfg.train.processes)
    if n > 1 and not dist_.under_launcher() and relaunch_argv is not None:
        return relaunch(n, relaunch_argv)
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
    beside = _cpu_runs(configs, deadline.plan) if deadline.plan and deadline.plan.side_by_side else []
    pool, future = None, None
    if beside:  # the CPU's runs in a process of their own while this one trains the fine-tunes on the GPU
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        log.info("train: %s on the CPU beside the fine-tunes on the GPU (the plan found that shorter than one after "
                 "the other)", ", ".join(c.train.run for c in beside))
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_logging)
        future = pool.submit(train_runs, beside, paths, force, deadline)
    results, trained, done = [], [], []
    gpu = [c for c in configs if c not in beside]
    for i, c in enumerate(gpu):
        if deadline.end is not None:
            c = replan(c, gpu[i:], deadline, paths, pinned=pinned_keys(cfg))
            if c is None:
                continue
        results += [r for _, r, _, _ in train_runs([c], paths, force, deadline, into=(trained, done))]
    if future is not None:
        for c, result, seconds, _ in future.result():  # another process of ours: no disturbance of theirs
            results.append(result)
            trained += [c] if result.cv is not None else []
            done += [(c, seconds, None)] if result.cv is not None and result.trained == result.folds_done else []
        pool.shutdown()
        done = [(c, s, None) for c, s, _ in done]  # the CPU they shared was our own runs', beside them by plan
    for extra in spare_runs(trained, deadline, paths, stage_pace(done, deadline.plan)):
        results += [r for _, r, _, _ in train_runs([extra], paths, force, deadline)]
    return results


def train_runs(configs: list[Config], paths: Paths, force: bool, deadline: Deadline,
               into: tuple[list, list] | None = None) -> list[tuple[Config, RunResult, float, float | None]]:
    """Each run trained in turn, its seconds in the ledger (``into``: the trained runs and
    those that trained every fold here, with their seconds and the share of the CPU other
    processes used meanwhile, appended as they finish)."""
    out = []
    for c in configs:
        t0 = time.time()
        with Others() as others:
            result = train_run(c, paths, force, deadline)
        seconds = time.time() - t0
        update_ledger(paths, lambda led, r=result, s=seconds: _record_run(led, r, s))
        out.append((c, result, seconds, others.share))
        if into is not None:
            into[0].extend([c] if result.cv is not None else [])
            into[1].extend([(c, seconds, others.share)]
                           if result.cv is not None and result.trained == result.folds_done else [])
    return out


def _cpu_runs(configs: list[Config], plan: Plan) -> list[Config]:
    """The runs the plan costed on the CPU (where a GPU run is there to train beside them)."""
    def device(c: Config) -> str:
        r = plan.run_plan(c.train.run)
        return plan.costs[r.name].device if r is not None and r.name in plan.costs else "cpu"

    cpu = [c for c in configs if device(c) == "cpu"]
    return cpu if len(cpu) < len(configs) else []


def _child_logging() -> None:
    from pipeline.cli import setup_logging

    setup_logging()


def relaunch(n: int, argv: list[str]) -> list[RunResult]:
    """The stage again, as ``n`` DDP processes under torchrun (several GPUs, or train.processes):
    each trains every fold on its share of the batches; rank 0 writes."""
    import subprocess

    log.info("train: %d processes (%s) under torchrun", n, "NCCL, one per GPU" if dist_.torch.cuda.is_available()
             else "gloo on CPU")
    code = subprocess.call(dist_.launch_command(n, argv), env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))})
    if code:
        raise TrainingError(f"train under torchrun ({n} processes) exited with {code}; its log is above")
    return []


def _record_run(ledger: Ledger, result: RunResult, seconds: float) -> None:
    ledger.runs[result.run] = RunRecord(round(seconds, 1), result.folds_done, result.cv is not None)


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default=None,
                        help="train every run listed in this plan (reports/runs.json; relative to --workdir)")


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    args = list(sys.argv[1:] if argv is None else argv)  # what torchrun starts again under several processes
    try:
        return stage_main("train", __doc__, lambda cfg, paths, **kw: run(cfg, paths, relaunch_argv=args, **kw), argv,
                          _args)
    except TrainingError as e:
        log.error("%s", e)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
