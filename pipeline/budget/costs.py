"""What a candidate costs on this machine and data, and the seconds that makes a fold or a run.

``Cost`` (a candidate's measured costs) is the family interface's (pipeline.modeling.base).

The estimate is measured throughput times work (rows x epochs x folds, at the data's own
token lengths); each family spells its own formula (``Family.fold_seconds``), so nothing here
knows a family by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.modeling.base import Cost
from pipeline.modeling.families import family

if TYPE_CHECKING:
    from pipeline.budget.planner import RunPlan

# Seconds the stages that are not models cost, beyond their python start (measured on the
# disaster tweets and the embedded default, 2 cores; see BENCHMARKS.md "Time budget").
STAGE_START_S = 6.0  # a `python -m pipeline <stage>` process: imports (torch, pandas, sklearn)
FIXED_S = {"folds": 2.0, "ensemble": 3.0, "submit": 1.0, "report": 4.0}
PER_RUN_S = {"ensemble": 1.5, "report": 1.5}  # per run blended / analysed, per 5,000 train rows
AUGMENT_ROWS_PER_S = {"bergamot": 25.0, "apertium": 20.0, "marian": 10.0, "ctranslate2": 20.0}


@dataclass
class Work:
    """What the data asks for."""

    n_train: int
    n_test: int
    augment_rows_per_s: float = 20.0
    augment_copies: float = 0.0  # copies per train row when augmentation is on
    select_folds: int = 1
    tune_folds: int = 1
    evals_per_epoch: int = 1
    processes: int = 1  # train's DDP processes (GPUs): an epoch-trained run's folds split over them


def fold_seconds(cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                 evals_per_epoch: int = 1) -> float:
    """One fold of one candidate: training, validation passes, the test prediction."""
    return family(cost.family).fold_seconds(cost, rows, epochs, max_len, n_val, n_test, evals_per_epoch)


def run_seconds(cost: Cost, run: RunPlan, work: Work, n_splits: int, augment: bool,
                screened: int | None = None) -> float:
    """A run's seconds: every fold (every seed of an epoch-trained family, whose rows grow with
    augmentation), plus what its family pays once per run (a frozen encoder's pass over the
    rows select's screening did not encode: ``screened``)."""
    fam = family(cost.family)
    n_val = math.ceil(work.n_train / n_splits)
    rows = work.n_train - n_val
    if run.rows and fam.epoch_trained:  # train.max_train_rows: a subsample of each fold's rows
        rows = min(rows, run.rows)
    if augment and fam.epoch_trained:
        rows = int(rows * (1 + work.augment_copies))
    per_fold = fold_seconds(cost, rows, run.epochs, run.max_len, n_val, work.n_test, work.evals_per_epoch)
    total = per_fold * n_splits * (run.seeds / work.processes if fam.epoch_trained else 1)
    todo = work.n_train + work.n_test if screened is None else max(0, work.n_train - n_val - screened)
    return total + fam.encode_seconds(cost, todo)
