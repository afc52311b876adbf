"""What a candidate costs on this machine and data, and the seconds that makes a fold or a run.

The estimate is measured throughput times work (rows x epochs x folds, at the data's own
token lengths); each family spells its own formula (``Family.fold_seconds``), so nothing here
knows a family by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
class Cost:
    """One candidate's measured costs on this machine and data."""

    name: str
    family: str  # transformer, classical, embedding
    batch_size: int = 32
    step_s: float = 0.0  # transformer: seconds per optimizer step (batch_size rows at max_len)
    infer_row_s: float = 0.0  # transformer / embedding encoder: seconds per row predicted
    test_infer_row_s: float | None = None  # transformer: per test row (float32 where training is bf16 on CPU)
    load_s: float = 0.0  # transformer: model build + one checkpoint save
    fit_row_s: float = 0.0  # classical (and an embedding head): seconds per training row of one fold's fit
    pred_row_s: float | None = None  # classical: seconds per row predicted (None: as fit_row_s)
    fit_fixed_s: float = 0.0  # classical: seconds a fit costs whatever its size
    max_len: int = 64  # the candidate's max_len when measured
    lengths: dict[str, float] = field(default_factory=dict)  # max_len -> mean truncated tokens per text
    suggested_max_len: int | None = None
    epochs: int = 2  # the candidate's own epochs (its config)
    available: bool = True  # the backbone is installed
    why: str = ""  # why not available
    max_positions: int | None = None  # transformer: the longest input its position embeddings allow
    windows: dict[str, float] = field(default_factory=dict)  # train.chunks: max_len -> windows per text
    chunk_training: bool = False  # train.chunk_training: training reads every window too

    def windows_at(self, max_len: int) -> float:
        """Mean windows a text is read in at ``max_len`` (1 without train.chunks)."""
        if not self.windows:
            return 1.0
        return self.windows.get(str(max_len), self.windows.get(str(self.max_len), 1.0))

    def length_scale(self, max_len: int) -> float:
        """Step time scales with the tokens actually fed (length-grouped batches pad little)."""
        base = self.lengths.get(str(self.max_len))
        new = self.lengths.get(str(max_len))
        return new / base if base and new else max_len / self.max_len


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
