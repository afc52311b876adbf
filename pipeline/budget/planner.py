"""The time budget: measured costs in, a plan out; cut in a fixed order until it fits.

``make_plan`` is the whole decision, a pure function a person can read and test: it starts
from the preset's *ceiling* (what the preset would run with unlimited time: candidates,
epochs, tuning trials, seeds, folds) and applies the first cut that still applies, in this
order, until the estimate fits the budget less its safety margin:

  1. tuning trials of the transformer candidates halved (while >= 2), then no transformer tuning
  2. the screening subsample halved (down to 500 rows)
  3. augmentation off
  4. seeds: one per fold instead of several
  5. epochs: the costliest transformer run loses one (never below 1)
  6. max_len: down to inspect's suggestion (which covers 99% of the texts)
  7. folds: one fewer for every run (never below 3; folds.csv is then written with that many,
     so every run's OOF stays comparable)
  8. a frozen encoder is dropped where that alone makes the plan fit (the cheapest such one: a
     fine-tune outscores a frozen encoder); else the costliest fine-tune trains on the largest
     share of each fold's rows (tenths, down to 30%) that fits (a frozen encoder goes first where
     only that makes a subsample fit); else it is dropped, and replaced by its frozen-embedding
     counterpart where it has one (minilm -> emb_minilm); with no fine-tune left, the costliest
     frozen encoder

Then ``refill`` spends what the cuts left: folds, then a subsampled fine-tune's rows, then
epochs that a later cut made unnecessary come back, a fine-tune left below its own config's epochs buys them back with a fold
(``trade_folds_for_epochs``: a bet, not yet measured, that the config's epochs are worth more
than a fold's share of rows), the room a trade's whole folds leave buys the preset's epochs and
then its seeds back, and time still left buys the frozen-encoder twin of a planned fine-tune.

Classical models are never cut: they run first and make a valid submission early. A key the
user set (``SET="train.epochs=3"``) is never cut, and its value is what the estimate uses.

The estimate is measured throughput times work (rows x epochs x folds, at the data's own
token lengths): see ``fold_seconds``. The plan stage measures; select, tune and train apply
the plan through ``global_diff`` and ``run_diff``; train's ``Deadline`` stops a run at a fold
boundary when the next fold would overrun.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pipeline.budget.costs import FIXED_S, PER_RUN_S, STAGE_START_S, Cost, Work, fold_seconds, run_seconds
from pipeline.core.config import Config
from pipeline.modeling.families import family

log = logging.getLogger(__name__)

MIN_FOLDS = 3
MIN_SELECT_ROWS = 500
STAGES_AFTER_TRAIN = ("ensemble", "submit", "report")


def _build(cls: type, d: dict[str, Any]) -> Any:
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
    estimate_s: float = 0.0
    screen_s: float = 0.0  # its screening in select (a real training loop: train calibrates on it)
    ceiling_epochs: int = 1  # the preset's epochs before any cut (train may give cut ones back)
    ceiling_seeds: int = 1  # the preset's seeds per fold before any cut
    epoch_s: float | None = None  # what one more epoch adds to the run (an epoch-trained one)
    run: str = ""  # the run name train uses (a candidate may be a path to its YAML)
    actual_s: float | None = None  # train's seconds for it, once it ran
    folds_done: list[int] | None = None
    complete: bool | None = None  # every fold done (so the ensemble blends it)

    @property
    def run_name(self) -> str:
        return self.run or self.name

    @property
    def epoch_trained(self) -> bool:
        return family(self.family).epoch_trained


@dataclass
class Stage:
    """A stage's estimated seconds, and its actual ones once it finished."""

    estimate_s: float
    actual_s: float | None = None


@dataclass
class Plan:
    """The plan: the preset's ceiling as cut to fit (the planner's fields), then what the plan
    stage and the running stages add (reports/plan.json holds all of it)."""

    preset: str = "medium"
    budget_s: float = 0.0
    available_s: float = 0.0  # budget less margin and what ran before the plan
    n_splits: int = 5
    select_rows: int | None = None
    select_epochs: int = 1
    trials: int = 1  # tuning trials per tuned transformer candidate
    tune_transformers: bool = False
    tune_epochs: list[int] = field(default_factory=lambda: [1])
    augment: bool = False
    runs: list[RunPlan] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)
    stages: dict[str, Stage] = field(default_factory=dict)
    estimate_s: float = 0.0
    fits: bool = True
    dropped: list[str] = field(default_factory=list)
    classical_trials: int = 3  # tuning trials per classical candidate (cheap: never cut)
    added: list[str] = field(default_factory=list)  # what the time left after the cuts bought
    tune_timeout_s: float = 0.0  # per tuned transformer: its planned trials' seconds x 1.25 + 30
    steps: list[str] = field(default_factory=list)  # cuts and give-backs in the order they happened
    # what the plan stage adds when it writes reports/plan.json, and the stages update as they finish
    budget: str = ""  # as typed: 30m, 2h
    margin: float = 0.1
    before_s: float = 0.0  # inspect + clean + the plan's own probes
    device: str = "cpu"
    t0: float | None = None  # the `make` invocation's start (TEXTCOMP_T0) the plan was made for
    key: str = ""  # planfile.plan_key of the config it was made for
    costs: dict[str, Cost] = field(default_factory=dict)
    replans: list[str] = field(default_factory=list)  # what train changed while running
    diff: dict[str, Any] = field(default_factory=dict)  # planfile.global_diff, applied by select/tune/train
    last_end: float | None = None  # when the last recorded stage finished (epoch seconds)
    n_train: int = 0  # the rows planned for (train's re-plan costs the options it did not plan)
    n_test: int = 0
    elapsed_s: float | None = None
    seeds_pay: bool = False  # the metric scores probabilities (SEED_METRICS): extra seeds may be bought

    def cut(self, what: str) -> None:
        self.cuts.append(what)
        self.steps.append(f"cut: {what}")

    def add(self, what: str) -> None:
        self.added.append(what)
        self.steps.append(what)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        """reports/plan.json read back (a plan written before ``steps`` existed lists its cuts,
        then its give-backs)."""
        plan = _build(cls, {**d, "runs": [_build(RunPlan, r) for r in d.get("runs", [])],
                            "stages": {k: _build(Stage, v) for k, v in d.get("stages", {}).items()},
                            "costs": {k: _build(Cost, v) for k, v in d.get("costs", {}).items()}})
        if "steps" not in d:
            plan.steps = [f"cut: {c}" for c in plan.cuts] + list(plan.added)
        return plan

    def run_plan(self, run: str) -> RunPlan | None:
        """The planned run that train calls ``run``."""
        return next((r for r in self.runs if r.run_name == run), None)

    def estimate(self, stages: tuple[str, ...]) -> float:
        return sum(self.stages[s].estimate_s for s in stages if s in self.stages)



# -- estimates ----------------------------------------------------------------------------------
def stage_seconds(plan: Plan, costs: dict[str, Cost], work: Work) -> dict[str, float]:
    """Every stage after the plan, by the plan's settings."""
    n_val = math.ceil(work.n_train / plan.n_splits)
    n_tr = work.n_train - n_val
    out = {"folds": STAGE_START_S + FIXED_S["folds"]}
    out["augment"] = STAGE_START_S + (work.n_train * max(work.augment_copies, 1) / work.augment_rows_per_s
                                      if plan.augment else 0.0)
    screen = 0.0
    for r in plan.runs:
        c = costs[r.name]
        rows = min(plan.select_rows or n_tr, n_tr)
        r.screen_s = work.select_folds * fold_seconds(c, rows, plan.select_epochs, r.max_len, n_val, work.n_test,
                                                      work.evals_per_epoch)
        # (a frozen encoder's pass over what the screening fold touches)
        r.screen_s += family(c.family).encode_seconds(c, rows + n_val + work.n_test)
        screen += r.screen_s
    out["select"] = STAGE_START_S + screen
    tune = 0.0
    plan.tune_timeout_s = 0.0
    for r in plan.runs:
        c = costs[r.name]
        fam = family(c.family)
        if not fam.tuned_by_default or (fam.epoch_trained and not plan.tune_transformers):
            continue
        rows = min(plan.select_rows or n_tr, n_tr)
        epochs = min(r.epochs, max(plan.tune_epochs))
        trials = plan.trials if plan.tune_transformers else plan.classical_trials
        one = trials * work.tune_folds * fold_seconds(c, rows, epochs, r.max_len, n_val, work.n_test,
                                                      work.evals_per_epoch)
        tune += one
        if fam.epoch_trained:  # Optuna stops starting trials past this (a slow machine day)
            plan.tune_timeout_s = max(plan.tune_timeout_s, round(1.25 * one + 30))
    out["tune"] = STAGE_START_S + tune
    screened = min(plan.select_rows or n_tr, n_tr)
    for r in plan.runs:
        r.estimate_s = run_seconds(costs[r.name], r, work, plan.n_splits, plan.augment, screened)
        if r.epoch_trained:  # what one more epoch adds (train gives cut epochs back with it)
            more = RunPlan(r.name, r.family, epochs=r.epochs + 1, max_len=r.max_len, seeds=r.seeds, rows=r.rows)
            r.epoch_s = round(run_seconds(costs[r.name], more, work, plan.n_splits, plan.augment) - r.estimate_s, 1)
    out["train"] = STAGE_START_S + sum(r.estimate_s for r in plan.runs)
    n = len(plan.runs)
    for s in STAGES_AFTER_TRAIN:
        out[s] = STAGE_START_S + FIXED_S[s] + PER_RUN_S.get(s, 0.0) * n * max(1.0, work.n_train / 5000)
    return {k: round(v, 1) for k, v in out.items()}


# -- the decision -------------------------------------------------------------------------------
def _costliest(plan: Plan, kind: Callable[[RunPlan], bool], ok: Callable[[RunPlan], bool] = lambda r: True
               ) -> RunPlan | None:
    runs = [r for r in plan.runs if kind(r) and ok(r)]
    return max(runs, key=lambda r: (r.estimate_s, r.name)) if runs else None


def _fine_tune(r: RunPlan) -> bool:
    return r.epoch_trained


def _droppable(r: RunPlan) -> bool:
    """Not a fine-tune, yet the planner may drop it (a frozen encoder; never a classical model)."""
    return not r.epoch_trained and not family(r.family).never_cut


def next_cut(plan: Plan, costs: dict[str, Cost], fits: Callable[[Plan], bool] | None = None,
             work: Work | None = None) -> str | None:
    """Apply the first cut in the documented order that still applies; say what it was.
    ``fits`` (the budget's test) lets the last cut drop a frozen encoder instead of a fine-tune
    where that alone makes the plan fit, or train the fine-tune on a subsample of its rows
    (``work`` says how many there are) where that does."""
    pinned = set(plan.pinned)
    has_tr = any(r.epoch_trained for r in plan.runs)
    if has_tr and plan.tune_transformers and "tune.n_trials" not in pinned and "tune.families" not in pinned:
        if plan.trials // 2 >= 2:  # one trial is only the hand-set config: not worth its time
            new = plan.trials // 2
            msg = f"tune: {new} trial{'s' if new > 1 else ''} per candidate instead of {plan.trials}"
            plan.trials = new
            return msg
        plan.tune_transformers = False
        return "tune: transformers not tuned (trained with their configs as selected)"
    if "select.max_train_rows" not in pinned and (plan.select_rows is None or plan.select_rows > MIN_SELECT_ROWS):
        old = plan.select_rows
        plan.select_rows = max(MIN_SELECT_ROWS, (old // 2) if old else MIN_SELECT_ROWS * 4)
        return f"select: {plan.select_rows:,}-row screening subsample instead of {old if old else 'all rows'}"
    if plan.augment and "augment.methods" not in pinned and "train.augment" not in pinned:
        plan.augment = False
        return "augment: off"
    if "train.seeds" not in pinned:
        r = _costliest(plan, _fine_tune, lambda r: r.seeds > 1)
        if r is not None:
            msg = f"{r.name}: 1 seed instead of {r.seeds}"
            r.seeds = 1
            return msg
    if "train.epochs" not in pinned:
        r = _costliest(plan, _fine_tune, lambda r: r.epochs > 1)
        if r is not None:
            r.epochs -= 1
            return f"{r.name}: {r.epochs} epoch{'s' if r.epochs > 1 else ''} instead of {r.epochs + 1}"
    if "train.max_len" not in pinned:
        r = _costliest(plan, _fine_tune,
                       lambda r: (s := costs[r.name].suggested_max_len) is not None and r.max_len > s)
        if r is not None:
            old, r.max_len = r.max_len, costs[r.name].suggested_max_len
            return f"{r.name}: max_len {r.max_len} (inspect's suggestion) instead of {old}"
    if "folds.n_splits" not in pinned and plan.n_splits > MIN_FOLDS:
        plan.n_splits -= 1
        return f"folds: {plan.n_splits} instead of {plan.n_splits + 1} (every run; folds.csv follows)"
    if "select.candidates" not in pinned:
        # a fine-tune outscores a frozen encoder (disaster tweets, same folds: MiniLM fine-tuned
        # CV F1 0.805, all-mpnet frozen + LR 0.794, MiniLM frozen 0.775; BENCHMARKS.md "Time
        # budget"): the cheapest frozen encoder whose drop alone makes the plan fit goes first
        if fits is not None and any(r.epoch_trained for r in plan.runs):
            for r in sorted((r for r in plan.runs if _droppable(r)), key=lambda r: (r.estimate_s, r.name)):
                trial = copy.deepcopy(plan)
                trial.runs = [x for x in trial.runs if x.name != r.name]
                if fits(trial):
                    plan.runs.remove(r)
                    plan.dropped.append(r.name)
                    return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s) so that the fine-tunes fit"
        if fits is not None and work is not None and "train.max_train_rows" not in pinned:
            msg = _subsample(plan, work, fits)
            if msg:
                return msg
        r = _costliest(plan, _fine_tune) or _costliest(plan, _droppable)
        if r is not None:
            i = plan.runs.index(r)
            plan.runs.remove(r)
            plan.dropped.append(r.name)
            alt = FALLBACK.get(r.name)
            if alt and alt in costs and costs[alt].available and alt not in {x.name for x in plan.runs} \
                    and alt not in plan.dropped:  # the same encoder, frozen: one forward pass instead of training
                plan.runs.insert(i, RunPlan(alt, costs[alt].family, max_len=costs[alt].max_len))
                return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s); {alt} (its encoder frozen + LR) instead"
            return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s)"
    return None


MIN_ROWS_SHARE = 0.3  # a subsampled fine-tune trains on at least this share of each fold's rows ...
MIN_ROWS = 500  # ... and at least this many (below, its frozen twin is the better bet: ROWS_PRIOR)
ROWS_PRIOR = 0.02  # score a fine-tune loses per halving of its training rows (a prior, not yet measured:
# at MIN_ROWS_SHARE it is about replan.TWIN_PRIOR, what the frozen twin loses against the fine-tune)


def fold_train_rows(n_train: int, n_splits: int) -> int:
    """The training rows of one fold (the rest of train less the fold's validation rows)."""
    return n_train - math.ceil(n_train / n_splits)


def rows_loss(share: float) -> float:
    """Expected score a fine-tune on ``share`` of its rows loses against all of them (ROWS_PRIOR)."""
    return ROWS_PRIOR * math.log2(1 / share) if 0 < share < 1 else 0.0


def row_shares(full: int) -> list[int]:
    """The subsample sizes a fine-tune may take, largest first: tenths of ``full`` down to
    MIN_ROWS_SHARE (never below MIN_ROWS)."""
    out = [int(full * k / 10) for k in range(9, round(MIN_ROWS_SHARE * 10) - 1, -1)]
    return [r for r in out if r >= MIN_ROWS]


def _subsample(plan: Plan, work: Work, fits: Callable[[Plan], bool]) -> str | None:
    """The cut before a fine-tune is dropped: the costliest fine-tune trains on the largest
    share of each fold's rows (tenths, down to MIN_ROWS_SHARE) that makes the plan fit. Where
    none does, but would without the frozen encoders, the cheapest frozen encoder goes first (a
    fine-tune outscores a frozen encoder). None: the fine-tune cannot be saved this way."""
    r = _costliest(plan, _fine_tune)
    if r is None:
        return None
    full = fold_train_rows(work.n_train, plan.n_splits)
    sizes = [n for n in row_shares(full) if n < (r.rows or full)]
    for n in sizes:
        trial = copy.deepcopy(plan)
        next(x for x in trial.runs if x.name == r.name).rows = n
        if fits(trial):
            r.rows = n
            return (f"{r.name}: {n:,} of each fold's {full:,} training rows ({n / full:.0%}; expected "
                    f"-{rows_loss(n / full):.3f}) instead of dropping it")
    frozen = sorted((x for x in plan.runs if _droppable(x)), key=lambda x: (x.estimate_s, x.name))
    if sizes and frozen:
        floor = copy.deepcopy(plan)
        floor.runs = [x for x in floor.runs if not _droppable(x)]
        next(x for x in floor.runs if x.name == r.name).rows = sizes[-1]
        if fits(floor):
            plan.runs.remove(frozen[0])
            plan.dropped.append(frozen[0].name)
            return (f"{frozen[0].name}: dropped (estimated {frozen[0].estimate_s:.0f}s) so that {r.name} fits on a "
                    "subsample of its rows")
    return None


def _more_rows(plan: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """A subsampled fine-tune's rows back, a tenth at a time up to all of them, while the plan fits."""
    for name in [r.name for r in plan.runs if r.rows]:
        while True:
            trial = copy.deepcopy(plan)
            r = next(x for x in trial.runs if x.name == name)
            full = fold_train_rows(work.n_train, trial.n_splits)
            if r.rows is None:
                break
            bigger = [n for n in row_shares(full) if n > r.rows]
            r.rows = bigger[-1] if bigger else None
            if not _fits(trial, costs, work):
                break
            trial.add(f"{name}: {f'{r.rows:,}' if r.rows else 'all'} of each fold's {full:,} training rows "
                      "(the cuts after it left room)")
            plan = trial
    return plan


def make_plan(ceiling: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """Cut ``ceiling`` in the documented order until its estimate fits ``available_s``."""
    plan = copy.deepcopy(ceiling)
    folds = ceiling.n_splits
    while True:
        if _fits(plan, costs, work):
            plan.fits = True
            return refill(plan, costs, work, folds)
        cut = next_cut(plan, costs, lambda p: _fits(p, costs, work), work)
        if cut is None:
            plan.fits = False
            return plan
        plan.cut(cut)


def _fits(trial: Plan, costs: dict[str, Cost], work: Work) -> bool:
    estimates = stage_seconds(trial, costs, work)
    trial.stages = {k: Stage(v) for k, v in estimates.items()}
    trial.estimate_s = round(sum(estimates.values()), 1)
    return trial.estimate_s <= trial.available_s


def refill(plan: Plan, costs: dict[str, Cost], work: Work, ceiling_folds: int) -> Plan:
    """Spend what the cuts left unused. A later cut (a dropped run) can make an earlier one
    unnecessary: folds come back one at a time, then each transformer's epochs, up to the
    preset's ceiling, while the plan still fits. Then the frozen-encoder twin of each fine-tuned
    run still in the plan (minilm -> emb_minilm: one forward pass, a diverse ensemble member)."""
    while plan.n_splits < ceiling_folds and any("folds:" in c for c in plan.cuts):
        trial = copy.deepcopy(plan)
        trial.n_splits += 1
        if not _fits(trial, costs, work):
            break
        trial.add(f"folds: {trial.n_splits} again (the cuts after the fold cut left room)")
        plan = trial
    plan = _more_rows(plan, costs, work)
    plan = _give_back(plan, costs, work, "epochs")
    plan = trade_folds_for_epochs(plan, costs, work)
    # a trade takes whole folds, so it may leave room: the preset's epochs, then its seeds
    plan = _give_back(plan, costs, work, "epochs")
    plan = _give_back(plan, costs, work, "seeds")
    plan = _raise_max_len(plan, costs, work)
    if "select.candidates" in plan.pinned:
        return plan
    plan = toward_best(plan, costs, work)
    for r in [r for r in plan.runs if r.epoch_trained]:
        alt = FALLBACK.get(r.name)
        if not alt or alt not in costs or not costs[alt].available or alt in {x.name for x in plan.runs}:
            continue
        trial = copy.deepcopy(plan)
        trial.runs.append(RunPlan(alt, costs[alt].family, max_len=costs[alt].max_len))
        if _fits(trial, costs, work):
            trial.add(f"{alt}: added (its encoder frozen + LR, ~{trial.runs[-1].estimate_s:.0f}s): "
                      "the budget had room")
            plan = trial
    return plan


def toward_best(plan: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """A medium plan whose ceiling fits with room to spare (the budget would be left unused)
    takes best's extras one at a time while the plan still fits, in the order of their measured
    worth on the disaster tweets (BENCHMARKS.md "Time budget"): best's other candidates (the
    base-size fine-tune at its config's epochs - CV F1 0.816-0.820 against MiniLM's 0.805 - then
    the frozen encoders), best's extra epoch for each fine-tune (early stopping keeps the best
    epoch, so it cannot cost score, only time), then best's three seeds per fold where the
    metric scores probabilities. Each is one line in ``added``."""
    if plan.preset != "medium":
        return plan
    have = {r.name for r in plan.runs}
    extras = [n for n in BEST_EXTRA if n not in have and n in costs and costs[n].available]
    for n in sorted(extras, key=lambda n: not family(costs[n].family).epoch_trained):
        c = costs[n]
        trained = family(c.family).epoch_trained
        trial = copy.deepcopy(plan)
        epochs = max(c.epochs, 1) if trained and "train.epochs" not in plan.pinned else 1
        trial.runs.append(RunPlan(n, c.family, epochs=epochs, max_len=c.max_len, ceiling_epochs=epochs))
        if _fits(trial, costs, work):
            what = f"{epochs} epoch(s)" if trained else "its encoder frozen + LR"
            trial.add(f"{n}: added from best ({what}, ~{trial.runs[-1].estimate_s:.0f}s): the budget had room")
            plan = trial
    if "train.epochs" not in plan.pinned:
        for name in [r.name for r in plan.runs if r.epoch_trained]:
            trial = copy.deepcopy(plan)
            r = next(x for x in trial.runs if x.name == name)
            if r.epochs < r.ceiling_epochs or r.rows:  # its own cut epochs or rows did not come back: no bonus
                continue
            r.epochs += 1
            r.ceiling_epochs = r.epochs
            if _fits(trial, costs, work):
                trial.add(f"{name}: {r.epochs} epochs (best's extra one; early stopping keeps the best): "
                          "the budget had room")
                plan = trial
    if plan.seeds_pay and "train.seeds" not in plan.pinned:
        for name in [r.name for r in plan.runs if r.epoch_trained]:
            while True:
                trial = copy.deepcopy(plan)
                r = next(x for x in trial.runs if x.name == name)
                if r.seeds >= 3 or r.rows:
                    break
                r.seeds += 1
                r.ceiling_seeds = max(r.ceiling_seeds, r.seeds)
                if not _fits(trial, costs, work):
                    break
                trial.add(f"{name}: {r.seeds} seeds per fold (best's; averaged): the budget had room")
                plan = trial
    return plan


def _raise_max_len(plan: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """Long texts: a fine-tune whose max_len cuts texts that inspect says need more (its
    suggestion covers 99% of them) reads more of them, up to the suggestion and never past its
    backbone's positions, in steps (x2, then the suggestion) while the plan still fits."""
    if "train.max_len" in plan.pinned:
        return plan
    for name in [r.name for r in plan.runs if r.epoch_trained]:
        c = costs[name]
        want = min(c.suggested_max_len or 0, c.max_positions or 1 << 30)
        while True:
            trial = copy.deepcopy(plan)
            r = next(x for x in trial.runs if x.name == name)
            if r.max_len >= want:
                break
            old, r.max_len = r.max_len, min(want, r.max_len * 2)
            if not _fits(trial, costs, work):
                break
            trial.add(f"{name}: max_len {r.max_len} instead of {old} (the texts need it, the budget had room)")
            plan = trial
    return plan


def _give_back(plan: Plan, costs: dict[str, Cost], work: Work, what: str) -> Plan:
    """Each fine-tune's cut ``epochs`` or ``seeds`` back, one at a time up to the preset's
    ceiling, in plan order, while the plan still fits (never a key the user pinned)."""
    if f"train.{what}" in plan.pinned:
        return plan
    for name in [r.name for r in plan.runs if r.epoch_trained]:
        while True:
            trial = copy.deepcopy(plan)
            r = next(x for x in trial.runs if x.name == name)
            if getattr(r, what) >= getattr(r, f"ceiling_{what}") or (what == "seeds" and r.rows):
                break
            setattr(r, what, getattr(r, what) + 1)
            if not _fits(trial, costs, work):
                break
            trial.add(f"{name}: {getattr(r, what)} {what} again (the cuts after it left room)")
            plan = trial
    return plan


def trade_folds_for_epochs(plan: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """A fine-tune cut below its own config's epochs runs a schedule its config was not set for
    (MiniLM on the disaster tweets, same folds: CV F1 0.8013 after 1 epoch, 0.8048 after 2 --
    a gain inside the fold-to-fold noise there; what the trade itself gains is not measured
    yet: see BENCHMARKS.md "Time budget"), while a fold less costs
    each fold only 1/k - 1/(k+1) of its training rows (80% -> 75% at 5 -> 4 folds) and a k-fold
    run costs about (k-1) row-epochs: so when the cuts left a fine-tune below its config's
    epochs, a fold goes (never below 3; every run; folds.csv follows) for the epoch back, while
    the plan still fits. Epochs a preset added on top of the config (best's extra one) are not
    bought this way."""
    if {"folds.n_splits", "train.epochs"} & set(plan.pinned):
        return plan

    def short(p: Plan) -> list[RunPlan]:
        return [r for r in p.runs if r.epoch_trained
                and r.epochs < min(r.ceiling_epochs, max(costs[r.name].epochs, 1))]

    while short(plan) and plan.n_splits > MIN_FOLDS:
        for k in range(plan.n_splits - 1, MIN_FOLDS - 1, -1):  # the most folds that buys an epoch back
            trial = copy.deepcopy(plan)
            trial.n_splits = k
            back = []
            for r in short(trial):
                r.epochs += 1
                if _fits(trial, costs, work):
                    back.append(f"{r.name} {r.epochs}")
                else:
                    r.epochs -= 1
            if back:
                break
        if not back or not _fits(trial, costs, work):
            return plan
        trial.added = [a for a in trial.added  # folds refill gave back and the trade takes again
                       if not (a.startswith("folds: ") and int(a.split()[1]) > trial.n_splits)]
        trial.cut(f"trade: folds {trial.n_splits} instead of {plan.n_splits} (every run; folds.csv "
                  f"follows) for epochs back: {', '.join(back)} (the config's epochs, bought with a "
                  "fold's share of rows)")
        plan = trial
    return plan


SEED_METRICS = ("logloss", "roc_auc")
# best's three seeds per fold, only where the metric scores probabilities: on the disaster
# tweets (F1, mpnet 2 epochs, 5 folds, BENCHMARKS.md) averaging 3 seeds moved CV F1 by -0.0013
# (SE 0.0010) at 2.9x the seconds, while the same average's OOF log loss fell 0.3804 -> 0.3700.


def ceiling(cfg: Config, costs: dict[str, Cost], budget_s: float, available_s: float, pinned: list[str],
            metric: str) -> Plan:
    """What the preset runs given unlimited time, from the profile's settings.

    fast: the classical candidates + the cheapest transformer for 1 epoch, no transformer
    tuning; medium: the profile as it stands + ``MEDIUM_EXTRA`` where installed; best: every
    available candidate of ``BEST_EXTRA`` too, one more epoch, twice the trials, three seeds
    per fold where ``metric`` scores probabilities (``SEED_METRICS``; one seed for a label
    metric such as F1 or accuracy, where averaging measured no gain), and screening on all rows."""
    preset = cfg.budget.preset
    names = list(cfg.select.candidates)
    if "select.candidates" not in pinned:
        names += [n for n in extra_candidates(preset) if n not in names and n in costs]
    missing = [n for n in names if n in costs and not costs[n].available]
    for n in missing:
        log.info("budget: %s left out: %s", n, costs[n].why)
    names = [n for n in names if n in costs and costs[n].available]
    if preset == "fast" and "select.candidates" not in pinned:
        fine_tunes = sorted((n for n in names if family(costs[n].family).epoch_trained),
                            key=lambda n: costs[n].step_s)
        names = [n for n in names if family(costs[n].family).never_cut] + fine_tunes[:1]
    epochs_bonus = 1 if preset == "best" else 0
    best_seeds = 3 if preset == "best" and metric in SEED_METRICS else 1
    tune_on = cfg.tune.enabled and any(family(n).epoch_trained for n in cfg.tune.families) and preset != "fast"
    runs = []
    for n in names:
        c = costs[n]
        trained = family(c.family).epoch_trained
        epochs = c.epochs
        if "train.epochs" not in pinned:
            if tune_on:  # the profile's tuning searches at most max(tune.epochs): today's most
                epochs = min(epochs, max(cfg.tune.epochs))
            epochs = 1 if preset == "fast" else epochs + epochs_bonus
        seeds = len(cfg.train.seeds or [0]) if "train.seeds" in pinned else best_seeds
        epochs = epochs if trained else 1
        runs.append(RunPlan(name=n, family=c.family, epochs=epochs, max_len=c.max_len,
                            seeds=seeds if trained else 1, ceiling_epochs=epochs,
                            ceiling_seeds=seeds if trained else 1))
    if preset == "best" and best_seeds == 1 and "train.seeds" not in pinned:
        log.info("budget: best: one seed per fold for metric %s (seed averaging pays in probabilities, "
                 "not in labels: BENCHMARKS.md); SET='train.seeds=[42,43,44]' asks for three", metric)
    trials = cfg.tune.n_trials * (2 if preset == "best" and "tune.n_trials" not in pinned else 1)
    return Plan(preset=preset, budget_s=budget_s, available_s=available_s, n_splits=cfg.folds.n_splits,
                select_rows=None if preset == "best" and "select.max_train_rows" not in pinned
                else cfg.select.max_train_rows,
                select_epochs=cfg.select.epochs, trials=trials, tune_transformers=tune_on,
                tune_epochs=list(cfg.tune.epochs), augment=bool(cfg.augment.methods and cfg.train.augment),
                runs=runs, pinned=sorted(pinned), classical_trials=cfg.tune.n_trials,
                seeds_pay=metric in SEED_METRICS)


BEST_EXTRA = ("mpnet", "emb_mpnet", "emb_minilm")
# The base-size encoder frozen + LR: one forward pass (~5x MiniLM's, once per run), and the
# member that lifted the disaster tweets' stack most at 30m (BENCHMARKS.md "Time budget").
# In the ceiling, not a refill extra: the cuts then take a fine-tune's epochs and folds
# before they take it (it is dropped only after the fine-tunes, as the cut order says).
MEDIUM_EXTRA = ("emb_mpnet",)


def extra_candidates(preset: str) -> tuple[str, ...]:
    """Candidates a preset adds to the profile's own (each only where its backbone is installed)."""
    return {"medium": MEDIUM_EXTRA, "best": BEST_EXTRA}.get(preset, ())


FALLBACK = {"minilm": "emb_minilm", "mpnet": "emb_mpnet"}  # what a dropped fine-tune becomes


def format_plan(plan: Plan) -> str:
    """The plan as a person reads it: per stage and run, estimated seconds; what was cut."""
    target = plan.budget_s * (1 - plan.margin)
    lines = [f"budget {plan.budget} ({plan.budget_s:.0f}s, preset {plan.preset}, device {plan.device}): "
             f"estimate {plan.estimate_s:.0f}s, planned to fit {target:.0f}s ({plan.margin:.0%} of the budget "
             f"kept free for estimation error)"
             + ("" if plan.fits else " -- DOES NOT FIT even with every cut (classical models are never cut): "
                "expect to overrun")]
    for s, v in plan.stages.items():
        act = f"  actual {v.actual_s:7.1f}s" if v.actual_s is not None else ""
        lines.append(f"  {s:<14} {v.estimate_s:8.1f}s{act}")
    for r in plan.runs:
        extra = (f"{r.epochs} epoch(s), max_len {r.max_len}, {r.seeds} seed(s)"
                 + (f", {r.rows:,} rows a fold" if r.rows else "") if r.epoch_trained else r.family)
        lines.append(f"    run {r.name:<12} {r.estimate_s:8.1f}s  {extra}, {plan.n_splits} folds")
    lines.append(f"  settings: {plan.n_splits} folds; select {plan.select_rows or 'all'} rows; tune "
                 f"{plan.trials} trials ({'transformers and classical' if plan.tune_transformers else 'classical only'})"
                 f"; augment {'on' if plan.augment else 'off'}")
    lines += [f"  {c}" for c in plan.steps] or ["  cut: nothing (everything the preset asks for fits)"]
    return "\n".join(lines)
