"""What train changes while it runs, under a time budget: the plan met at a run's start and at
each fold's start.

Before each run (``replan``), with the pace measured so far (this candidate's screening in
select, else the stages so far): if the runs left need more than the time left, the one about
to start is cut (an epoch at a time, then the run itself); if they need less, it gets back the
epochs the plan cut. Before each fold (``fold_guard``): a run whose next fold would not finish
before ensemble, submit and report must start stops at that fold boundary, unless finishing
it stays within the grace. Every decision is one log line, kept in reports/plan.json.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.budget.clock import Deadline, disturbed
from pipeline.budget.planfile import update_plan
from pipeline.core.config import Config, TrainConfig, with_diff
from pipeline.core.paths import Paths
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


def planned_seconds(deadline: Deadline, run: str) -> float | None:
    r = deadline.plan.run_plan(run) if deadline.plan else None
    return r.estimate_s if r else None


def measured_pace(paths: Paths, deadline: Deadline, run: str, say: bool = False) -> float | None:
    """Actual / planned seconds of this candidate's screening in select: the real training loop
    on this data and machine, so a better guide than the probe's few steps (clipped to [0.5, 3]).
    1 (the plan's estimate) when other processes shared the machine's CPU during that screening
    and it ran slow: one disturbed screening once cost mpnet an epoch (``say``: log that)."""
    r = deadline.plan.run_plan(run) if deadline.plan else None
    if not r or not r.screen_s or not paths.selection_csv.exists():
        return None
    table = pd.read_csv(paths.selection_csv)
    row = table[table["candidate"].astype(str) == r.name]
    if row.empty or pd.isna(row["seconds"].iloc[0]):
        return None
    pace = float(np.clip(float(row["seconds"].iloc[0]) / r.screen_s, 0.5, 3.0))
    others = row["others_cpu"].iloc[0] if "others_cpu" in row else None
    if disturbed(None if pd.isna(others) else float(others)) and pace > 1:
        if say:
            log.warning("train: %s's screening ran at x%.2f its planned pace while other processes used %.0f%% "
                        "of the machine's CPU: the plan's estimate stands for it (a disturbance need not last; "
                        "the fold guard still stops a run that would overrun)", run, pace, 100 * float(others))
        return 1.0
    return pace


def replan(c: Config, remaining: list[Config], deadline: Deadline, paths: Paths,
           pinned: list[str]) -> Config | None:
    """The run about to start as the time left allows: ``c`` itself, ``c`` with other epochs,
    or None (skipped). Runs of a family the planner never cuts are never cut here either."""
    fam = family(c.train.family)
    if fam.never_cut:
        return c
    pace = {r.train.run: measured_pace(paths, deadline, r.train.run, say=r.train.run == c.train.run)
            or deadline.slowdown() for r in remaining}  # read once: select's table does not change here
    need_before = need = sum((planned_seconds(deadline, r.train.run) or 0.0) * pace[r.train.run] for r in remaining)
    own = (planned_seconds(deadline, c.train.run) or 0.0) * pace[c.train.run]
    left = deadline.left()
    epochs = c.train.epochs
    planned = deadline.plan.run_plan(c.train.run) if deadline.plan else None
    # what an epoch adds (or takes away)
    per_epoch = (planned.epoch_s if planned is not None and planned.epoch_s is not None else own / max(epochs, 1)) \
        * pace[c.train.run]
    can_change = fam.epoch_trained and "train.epochs" not in pinned
    if need <= left:
        ceiling = planned.ceiling_epochs if planned else epochs
        while can_change and epochs < ceiling and need + per_epoch <= left:
            epochs, need = epochs + 1, need + per_epoch
        if epochs == c.train.epochs:
            return c
        what = f"{c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}"
    else:
        while need > left and can_change and epochs > 1:
            epochs, need, own = epochs - 1, need - per_epoch, own - per_epoch
        if need > left and own > left:
            what = f"{c.train.run}: skipped"
        elif epochs != c.train.epochs:
            what = f"{c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}"
        else:
            return c  # the others after it pay: the fold guard stops whatever would overrun
    msg = (f"re-plan: {c.train.run} measured at x{pace[c.train.run]:.2f} its planned pace; the {len(remaining)} "
           f"run(s) left then need ~{need_before:.0f}s, "
           f"{max(left, 0):.0f}s left before ensemble/submit/report -> {what}")
    log.warning("%s", msg)
    update_plan(paths, lambda p: p.replans.append(msg))
    if what.endswith("skipped"):
        return None
    return with_diff(c, {"train": {"epochs": epochs}})


@dataclass
class FoldGuard:
    """Before each fold of a run under a budget: go on, or stop at this fold boundary."""

    deadline: Deadline
    paths: Paths
    tc: TrainConfig
    n_splits: int

    def __post_init__(self) -> None:
        self.spent: list[float] = []  # seconds of the folds trained here: the pace of the next one

    @property
    def active(self) -> bool:
        return self.deadline.end is not None and not family(self.tc.family).never_cut

    def per_fold(self) -> float:
        """The plan's seconds for one fold at the pace measured so far."""
        tc, d = self.tc, self.deadline
        planned = d.plan.run_plan(tc.run) if d.plan else None
        pace = measured_pace(self.paths, d, tc.run) or d.slowdown()
        est = planned.estimate_s if planned else 0.0
        if family(tc.family).epoch_trained:  # planned for its epochs; re-planned to tc.epochs
            return est / self.n_splits * pace * tc.epochs / max(planned.epochs if planned else 1, 1)
        return est / self.n_splits * pace

    def stop_before(self, k: int, folds_left: int) -> bool:
        """Whether the run stops before fold ``k`` (``folds_left`` folds still to train, k included)."""
        if not self.active:
            return False
        need = float(np.mean(self.spent)) if self.spent else self.per_fold()
        left = self.deadline.left()
        rest = need * folds_left
        if need > left and rest - left <= self.deadline.grace():
            log.warning("train %s: finishing its last %d fold(s) ~%.0fs past the deadline (within the %.0fs grace: "
                        "a run without every fold would be thrown away)", self.tc.run, round(rest / max(need, 1e-9)),
                        rest - left, self.deadline.grace())
            return False
        if need <= left:
            return False
        log.warning("train %s: stopped at a fold boundary before fold %d: it needs ~%.0fs, %.0fs left in the "
                    "budget before ensemble/submit/report; the finished folds are kept (a rerun with more "
                    "time resumes here) but a run without every fold is not blended", self.tc.run, k, need,
                    max(left, 0))
        update_plan(self.paths, lambda p: p.replans.append(
            f"{self.tc.run}: stopped before fold {k} (needs ~{need:.0f}s, {max(left, 0):.0f}s left)"))
        return True
