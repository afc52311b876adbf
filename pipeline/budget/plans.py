"""The plan's two records, kept in one file (reports/plan.json).

``Plan`` is the decision the plan stage made: what runs, with which settings, estimated how
long, and what was cut or given back to get there. Nothing changes it once it is written.
``Ledger`` is what the stages met as they ran: each stage's actual seconds, each run's, and
what train re-planned. The file lays them side by side (a stage's estimate beside its actual
seconds), so a person and the benchmarks read one table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.modeling.base import Cost
from pipeline.modeling.families import family

STAGES_AFTER_TRAIN = ("ensemble", "submit", "report")
MIN_FOLDS = 3


def build(cls: type, d: dict[str, Any]) -> Any:
    """A dataclass from its JSON dict; keys it does not know (a newer writer's) are left out."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class RunPlan:
    name: str
    family: str
    epochs: int = 1
    max_len: int = 64
    seeds: int = 1
    rows: int | None = None  # a fine-tune on a subsample of each fold's training rows (None: all of them)
    chunks: bool | None = None  # long texts read whole in windows (train.chunks); None: as its config says
    ceiling_chunks: bool = False  # the ceiling read them whole (give-backs stop there)
    estimate_s: float = 0.0
    screen_s: float = 0.0  # its screening in select
    ceiling_epochs: int = 1  # the preset's epochs before any cut (give-backs stop there)
    ceiling_seeds: int = 1  # the preset's seeds per fold before any cut
    epoch_s: float | None = None  # what one more epoch adds to the run (an epoch-trained one)
    run: str = ""  # the run name train uses (a candidate may be a path to its YAML)

    @property
    def run_name(self) -> str:
        return self.run or self.name

    @property
    def epoch_trained(self) -> bool:
        return family(self.family).epoch_trained


@dataclass
class Work:
    """What the data and the profile ask for, besides the plan's own settings."""

    n_train: int
    n_test: int
    augment_rows_per_s: float = 20.0
    augment_copies: float = 0.0  # copies per train row when augmentation is on
    select_folds: int = 1
    tune_folds: int = 1
    evals_per_epoch: int = 1
    processes: int = 1  # train's DDP processes (GPUs): an epoch-trained run's folds split over them


@dataclass
class Plan:
    """The decision: the preset's ceiling as cut to fit. ``steps`` lists the cuts ("cut: ...")
    and give-backs in the order they were made; ``losses`` the expected score each kind of
    cut costs, and whether that figure was measured here or is a prior."""

    preset: str = "medium"
    budget: str = ""  # as typed: 30m, 2h
    budget_s: float = 0.0
    margin: float = 0.1
    available_s: float = 0.0  # budget less margin and what ran before the plan
    before_s: float = 0.0  # inspect + clean + the plan's own probes
    device: str = "cpu"  # where the fine-tunes run: cuda orders the cuts by expected score per second
    n_splits: int = 5
    ceiling_folds: int = 5  # the preset's folds before any cut (give-backs stop there)
    select_rows: int | None = None
    select_epochs: int = 1
    trials: int = 1  # tuning trials per tuned transformer candidate
    tune_transformers: bool = False
    tune_epochs: list[int] = field(default_factory=lambda: [1])
    tune_rows: int | None = None  # tune.max_train_rows: each trial's training rows (None: the fold's)
    classical_trials: int = 3  # tuning trials per classical candidate
    tune_timeout_s: float = 0.0  # per tuned transformer: its planned trials' seconds x 1.25 + 30
    augment: bool = False
    side_by_side: bool = False  # train runs the CPU runs beside the GPU's fine-tunes
    runs: list[RunPlan] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    twins: dict[str, str] = field(default_factory=dict)  # fine-tune -> its frozen-encoder candidate (budget.twin)
    reading: dict[str, Any] = field(default_factory=dict)  # inspect's "reading": how long the texts are
    extras: list[str] = field(default_factory=list)  # best's candidates, for a medium plan with room (budget.best_extra)
    pinned: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)  # estimated seconds per stage
    estimate_s: float = 0.0
    fits: bool = True
    metric: str = ""
    seeds_pay: bool = False  # the metric scores probabilities: extra seeds may be bought
    losses: dict[str, dict[str, Any]] = field(default_factory=dict)  # moves.Expected per kind of cut
    costs: dict[str, Cost] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)  # costs.StageCosts: what stages cost beyond models
    work: Work | None = None
    n_train: int = 0
    n_test: int = 0
    paces: str = ""  # the paces file the plan was made from ("" : measured here)
    t0: float | None = None  # the `make` invocation's start (TEXTCOMP_T0) the plan was made for
    key: str = ""  # planfile.plan_key of the config it was made for
    diff: dict[str, Any] = field(default_factory=dict)  # planfile.global_diff, applied by select/tune/train

    def cut(self, what: str) -> None:
        self.steps.append(f"cut: {what}")

    def add(self, what: str) -> None:
        self.steps.append(what)

    @property
    def cuts(self) -> list[str]:
        return [s[5:] for s in self.steps if s.startswith("cut: ")]

    @property
    def added(self) -> list[str]:
        return [s for s in self.steps if not s.startswith("cut: ")]

    def run_plan(self, run: str) -> RunPlan | None:
        """The planned run that train calls ``run``."""
        return next((r for r in self.runs if r.run_name == run), None)

    def named(self, name: str) -> RunPlan:
        return next(r for r in self.runs if r.name == name)

    def estimate(self, stages: tuple[str, ...]) -> float:
        return sum(self.stages.get(s, 0.0) for s in stages)


@dataclass
class RunRecord:
    actual_s: float | None = None
    folds_done: list[int] | None = None
    complete: bool | None = None  # every fold done (so the ensemble blends it)


@dataclass
class Ledger:
    """What the stages met: actual seconds per stage and run, and train's re-plans."""

    stages: dict[str, float] = field(default_factory=dict)
    runs: dict[str, RunRecord] = field(default_factory=dict)  # by run name
    replans: list[str] = field(default_factory=list)
    last_end: float | None = None  # when the last recorded stage finished (epoch seconds)
    elapsed_s: float | None = None


def to_file(plan: Plan, ledger: Ledger) -> dict[str, Any]:
    """reports/plan.json: the plan, each stage's and run's actual seconds beside its estimate."""
    d = asdict(plan)
    d["stages"] = {s: {"estimate_s": e, "actual_s": ledger.stages.get(s)} for s, e in plan.stages.items()}
    d["runs"] = [{**asdict(r), **asdict(ledger.runs.get(r.run_name, RunRecord()))} for r in plan.runs]
    d["cuts"], d["added"] = plan.cuts, plan.added
    d["other_runs"] = {k: asdict(v) for k, v in ledger.runs.items() if plan.run_plan(k) is None}
    d.update(replans=ledger.replans, last_end=ledger.last_end, elapsed_s=ledger.elapsed_s)
    return d


def from_file(d: dict[str, Any]) -> tuple[Plan, Ledger]:
    stages = {s: v if isinstance(v, dict) else {"estimate_s": v} for s, v in d.get("stages", {}).items()}
    runs = d.get("runs", [])
    plan = build(Plan, {**d, "runs": [build(RunPlan, r) for r in runs],
                        "stages": {s: float(v.get("estimate_s") or 0.0) for s, v in stages.items()},
                        "costs": {k: build(Cost, v) for k, v in d.get("costs", {}).items()},
                        "work": build(Work, d["work"]) if d.get("work") else None})
    ran = {r.get("run") or r["name"]: build(RunRecord, r) for r in runs if r.get("actual_s") is not None}
    ran |= {k: build(RunRecord, v) for k, v in d.get("other_runs", {}).items()}
    ledger = Ledger(stages={s: v["actual_s"] for s, v in stages.items() if v.get("actual_s") is not None},
                    runs=ran, replans=list(d.get("replans", [])), last_end=d.get("last_end"),
                    elapsed_s=d.get("elapsed_s"))
    return plan, ledger


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An advisory lock on ``path`` (reports/.plan.lock): `make -jN all` runs stages side by
    side, and two of them recording their seconds must not lose one."""
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): stages there run one at a time
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
