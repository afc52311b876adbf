"""Seconds: a fold, a run and each stage, from the candidates' measured costs (``Cost``, the
family interface's) and what each stage costs beyond its models (``StageCosts``).

Each family spells its own formula (``Family.fold_seconds``), so nothing here knows a family
by name. A stage's own cost (its process start, its imports, a GPU's first use) is a prior
until this machine measured it: the ledger of a finished stage teaches it (``learn``), and
the plan stage keeps what it learned beside the probes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.modeling.base import Cost
from pipeline.modeling.families import family

if TYPE_CHECKING:
    from pipeline.budget.plans import Plan, RunPlan, Work

# Priors, measured on the disaster tweets and the embedded default, 2 cores (BENCHMARKS.md "Time budget"):
STAGE_START_S = 6.0  # a `python -m pipeline <stage>` process: imports (torch, pandas, sklearn), its inputs
LIGHT_S = {"folds": 8.0, "augment": 6.0, "ensemble": 9.0, "submit": 7.0, "report": 10.0}  # start included
PER_RUN_S = {"ensemble": 1.5, "report": 1.5}  # per run blended / analysed, per 5,000 train rows
AUGMENT_ROWS_PER_S = {"bergamot": 25.0, "apertium": 20.0, "marian": 10.0, "ctranslate2": 20.0}


@dataclass
class StageCosts:
    """What each stage costs beyond its models' work, on one machine."""

    start_s: float = STAGE_START_S  # select, tune, train: the process, its imports and inputs
    light_s: dict[str, float] = field(default_factory=lambda: dict(LIGHT_S))  # the stages without models
    per_run_s: dict[str, float] = field(default_factory=lambda: dict(PER_RUN_S))
    first_use_s: float = 0.0  # a stage that trains on a GPU: transformers' import, the device's first use
    cores: int = 0  # the machine's CPU cores (0: not known)
    machine: str = ""  # paces.key of the machine these are for
    measured: dict[str, str] = field(default_factory=dict)  # figure -> where it was measured (the rest: priors)

    @classmethod
    def of(cls, d: dict[str, Any] | None) -> StageCosts:
        from pipeline.budget.plans import build

        return build(cls, d) if d else cls()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def light(self, stage: str, n_runs: int = 0, n_train: int = 0) -> float:
        return self.light_s.get(stage, self.start_s) + self.per_run_s.get(stage, 0.0) * n_runs * max(1.0, n_train / 5000)

    def learn(self, stage: str, actual_s: float, n_runs: int, n_train: int, models_s: float = 0.0,
              where: str = "") -> None:
        """A finished stage's actual seconds: a light stage's whole (its per-run work scaled
        alike), a model stage's (``models_s``: its models' own seconds) start."""
        if stage in self.light_s:
            factor = actual_s / max(self.light(stage, n_runs, n_train), 1e-9)
            self.light_s[stage] = round(self.light_s[stage] * factor, 2)
            if stage in self.per_run_s:
                self.per_run_s[stage] = round(self.per_run_s[stage] * factor, 3)
        elif models_s and actual_s > models_s:
            self.start_s = round(actual_s - models_s, 2)
            stage = "start_s"
        else:
            return
        self.measured[stage] = where or "measured"


def fold_seconds(cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                 evals_per_epoch: int = 1) -> float:
    """One fold of one candidate: training, validation passes, the test prediction."""
    return family(cost.family).fold_seconds(cost, rows, epochs, max_len, n_val, n_test, evals_per_epoch)


def fold_train_rows(n_train: int, n_splits: int) -> int:
    """The training rows of one fold (the rest of train less the fold's validation rows)."""
    return n_train - math.ceil(n_train / n_splits)


def run_seconds(cost: Cost, run: RunPlan, work: Work, n_splits: int, augment: bool,
                screened: int | None = None) -> float:
    """A run's seconds: every fold (every seed of an epoch-trained family, whose rows grow with
    augmentation), plus what its family pays once per run (a frozen encoder's pass over the
    rows select's screening did not encode: ``screened``)."""
    fam = family(cost.family)
    if run.chunks is not None and run.chunks != cost.chunks:  # the plan reads long texts otherwise than the config
        cost = dataclasses.replace(cost, chunks=run.chunks)
    n_val = math.ceil(work.n_train / n_splits)
    rows = work.n_train - n_val
    if run.rows and fam.epoch_trained:  # train.max_train_rows: a subsample of each fold's rows
        rows = min(rows, run.rows)
    if augment and fam.epoch_trained:
        rows = int(rows * (1 + work.augment_copies))
    per_fold = fold_seconds(cost, rows, run.epochs, run.max_len, n_val, work.n_test, work.evals_per_epoch)
    total = per_fold * n_splits * (run.seeds / work.processes if fam.epoch_trained else 1)
    todo = work.n_train + work.n_test if screened is None else max(0, work.n_train - n_val - screened)
    # a pretrained encoder is built once before the first fold (runs that share one each pay it here: an upper bound)
    return total + fam.encode_seconds(cost, todo) + cost.pretrain_s


def on_gpu(plan: Plan, names: list[str]) -> bool:
    return any(plan.costs[n].device == "cuda" for n in names)


SIDE_BY_SIDE_CORES = 4  # a machine with this many cores runs its CPU runs beside a GPU's fine-tunes


def train_seconds(plan: Plan, cpu: float, gpu: float, sc: StageCosts) -> float:
    """The runs' seconds in train: one after the other, or the CPU's runs in a process of their
    own (its own start) beside the GPU's fine-tunes, where the machine has the cores for both
    and that is the shorter (``plan.side_by_side``: what train then does)."""
    beside = max(cpu + sc.start_s, gpu)
    plan.side_by_side = sc.cores >= SIDE_BY_SIDE_CORES and cpu > 0 and gpu > 0 and beside < cpu + gpu
    return beside if plan.side_by_side else cpu + gpu


def stage_seconds(plan: Plan) -> dict[str, float]:
    """Every stage after the plan, by the plan's settings (and each run's seconds on it)."""
    costs, work, sc = plan.costs, plan.work, StageCosts.of(plan.fixed)
    n_val = math.ceil(work.n_train / plan.n_splits)
    n_tr = work.n_train - n_val
    out = {"folds": sc.light("folds")}
    out["augment"] = sc.light("augment") + (work.n_train * max(work.augment_copies, 1) / work.augment_rows_per_s
                                            if plan.augment else 0.0)
    screened = min(plan.select_rows or n_tr, n_tr)
    for r in plan.runs:
        c = costs[r.name]
        r.screen_s = work.select_folds * fold_seconds(c, screened, plan.select_epochs, r.max_len, n_val, work.n_test,
                                                      work.evals_per_epoch)
        r.screen_s += family(c.family).encode_seconds(c, screened + n_val + work.n_test)  # a frozen encoder's pass
    names = [r.name for r in plan.runs]
    out["select"] = sc.start_s + sc.first_use_s * on_gpu(plan, names) + sum(r.screen_s for r in plan.runs)
    tune, tuned = 0.0, []
    plan.tune_timeout_s = 0.0
    for r in plan.runs:
        c = costs[r.name]
        fam = family(c.family)
        if not fam.tuned_by_default or (fam.epoch_trained and not plan.tune_transformers):
            continue
        # one tune.n_trials for every family tuned (the transformers' where they are), none where cut
        trials = (plan.trials if plan.tune_transformers else plan.classical_trials) if fam.epoch_trained or \
            plan.classical_trials else 0
        one = trials * work.tune_folds * fold_seconds(c, min(plan.tune_rows or n_tr, n_tr), min(
            r.epochs, max(plan.tune_epochs)), r.max_len, n_val, work.n_test, work.evals_per_epoch)
        tune, tuned = tune + one, tuned + [r.name] * (trials > 0)
        if fam.epoch_trained:  # Optuna stops starting trials past this (a slow machine day)
            plan.tune_timeout_s = max(plan.tune_timeout_s, round(1.25 * one + 30))
    out["tune"] = sc.start_s + sc.first_use_s * on_gpu(plan, tuned) + tune
    cpu = gpu = 0.0
    for r in plan.runs:
        r.estimate_s = run_seconds(costs[r.name], r, work, plan.n_splits, plan.augment, screened)
        if r.epoch_trained:  # what one more epoch adds (train gives cut epochs back with it)
            more = type(r)(r.name, r.family, epochs=r.epochs + 1, max_len=r.max_len, seeds=r.seeds, rows=r.rows)
            r.epoch_s = round(run_seconds(costs[r.name], more, work, plan.n_splits, plan.augment) - r.estimate_s, 1)
        if costs[r.name].device == "cuda":
            gpu += r.estimate_s
        else:
            cpu += r.estimate_s
    out["train"] = sc.start_s + sc.first_use_s * on_gpu(plan, names) + train_seconds(plan, cpu, gpu, sc)
    for s in ("ensemble", "submit", "report"):
        out[s] = sc.light(s, len(plan.runs), work.n_train)
    return {k: round(v, 1) for k, v in out.items()}


def fits(plan: Plan) -> bool:
    """The plan's stages estimated (kept on the plan) and whether they fit its available seconds."""
    plan.stages = stage_seconds(plan)
    plan.estimate_s = round(sum(plan.stages.values()), 1)
    return plan.estimate_s <= plan.available_s
