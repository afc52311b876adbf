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
  8. the costliest fine-tune is dropped, and replaced by its frozen-embedding counterpart where
     it has one (minilm -> emb_minilm); with no fine-tune left, the costliest frozen encoder

Then ``refill`` spends what the cuts left: folds and epochs that a later cut made unnecessary
come back, a fine-tune left below its own config's epochs buys them back with a fold
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
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# Seconds the stages that are not models cost, beyond their python start (measured on the
# disaster tweets and the embedded default, 2 cores; see BENCHMARKS.md "Time budget").
STAGE_START_S = 6.0  # a `python -m pipeline <stage>` process: imports (torch, pandas, sklearn)
FIXED_S = {"folds": 2.0, "ensemble": 3.0, "submit": 1.0, "report": 4.0}
PER_RUN_S = {"ensemble": 1.5, "report": 1.5}  # per run blended / analysed, per 5,000 train rows
AUGMENT_ROWS_PER_S = {"bergamot": 25.0, "apertium": 20.0, "marian": 10.0, "ctranslate2": 20.0}
MIN_FOLDS = 3
GRACE = 0.05  # share of the budget a run may overrun to finish its last fold(s)
MIN_SELECT_ROWS = 500
STAGES_AFTER_TRAIN = ("ensemble", "submit", "report")


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


@dataclass
class RunPlan:
    name: str
    family: str
    epochs: int = 1
    max_len: int = 64
    seeds: int = 1
    estimate_s: float = 0.0
    screen_s: float = 0.0  # its screening in select (a real training loop: train calibrates on it)
    ceiling_epochs: int = 1  # the preset's epochs before any cut (train may give cut ones back)
    ceiling_seeds: int = 1  # the preset's seeds per fold before any cut
    epoch_s: float = 0.0  # what one more epoch adds to the run


@dataclass
class Plan:
    preset: str
    budget_s: float
    available_s: float  # budget less margin and what ran before the plan
    n_splits: int
    select_rows: int | None
    select_epochs: int
    trials: int  # tuning trials per tuned transformer candidate
    tune_transformers: bool
    tune_epochs: list[int]
    augment: bool
    runs: list[RunPlan]
    pinned: list[str] = field(default_factory=list)
    cuts: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    estimate_s: float = 0.0
    fits: bool = True
    dropped: list[str] = field(default_factory=list)
    classical_trials: int = 3  # tuning trials per classical candidate (cheap: never cut)
    added: list[str] = field(default_factory=list)  # what the time left after the cuts bought
    tune_timeout_s: float = 0.0  # per tuned transformer: its planned trials' seconds x 1.25 + 30
    steps: list[str] = field(default_factory=list)  # cuts and give-backs in the order they happened

    def cut(self, what: str) -> None:
        self.cuts.append(what)
        self.steps.append(f"cut: {what}")

    def add(self, what: str) -> None:
        self.added.append(what)
        self.steps.append(what)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- estimates ----------------------------------------------------------------------------------
def fold_seconds(cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                 evals_per_epoch: int = 1) -> float:
    """One fold of one candidate: training steps, validation passes, the test prediction."""
    if cost.family == "classical":
        pred = cost.fit_row_s if cost.pred_row_s is None else cost.pred_row_s
        return cost.fit_fixed_s + cost.fit_row_s * rows + pred * (n_val + n_test)
    if cost.family == "embedding":  # the encoder's pass is paid once per run (run_seconds)
        return cost.fit_row_s * (rows + n_val + n_test)
    scale = cost.length_scale(max_len)
    steps = math.ceil(rows / cost.batch_size) * epochs
    test_row_s = cost.infer_row_s if cost.test_infer_row_s is None else cost.test_infer_row_s
    infer = (n_val * epochs * evals_per_epoch * cost.infer_row_s + n_test * test_row_s) * scale
    return steps * cost.step_s * scale + infer + cost.load_s * (1 + epochs)


def run_seconds(cost: Cost, run: RunPlan, work: Work, n_splits: int, augment: bool,
                screened: int | None = None) -> float:
    """A run's seconds; ``screened``: train rows select already encoded (the embedding cache)."""
    n_val = math.ceil(work.n_train / n_splits)
    rows = work.n_train - n_val
    if augment and cost.family == "transformer":
        rows = int(rows * (1 + work.augment_copies))
    per_fold = fold_seconds(cost, rows, run.epochs, run.max_len, n_val, work.n_test, work.evals_per_epoch)
    total = per_fold * n_splits * (run.seeds if cost.family == "transformer" else 1)
    if cost.family == "embedding":  # one encoder pass, less what select's screening encoded (cached)
        todo = work.n_train + work.n_test if screened is None else max(0, work.n_train - n_val - screened)
        total += cost.infer_row_s * todo
    return total


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
        if c.family == "embedding":  # the encoder's pass over what the screening fold touches
            r.screen_s += c.infer_row_s * (rows + n_val + work.n_test)
        screen += r.screen_s
    out["select"] = STAGE_START_S + screen
    tune = 0.0
    plan.tune_timeout_s = 0.0
    for r in plan.runs:
        c = costs[r.name]
        if c.family == "transformer" and not plan.tune_transformers:
            continue
        if c.family == "embedding":
            continue  # not in tune.families by default; its C is cheap to tune when it is
        rows = min(plan.select_rows or n_tr, n_tr)
        epochs = min(r.epochs, max(plan.tune_epochs))
        trials = plan.trials if plan.tune_transformers else plan.classical_trials
        one = trials * work.tune_folds * fold_seconds(c, rows, epochs, r.max_len, n_val, work.n_test,
                                                      work.evals_per_epoch)
        tune += one
        if c.family == "transformer":  # Optuna stops starting trials past this (a slow machine day)
            plan.tune_timeout_s = max(plan.tune_timeout_s, round(1.25 * one + 30))
    out["tune"] = STAGE_START_S + tune
    screened = min(plan.select_rows or n_tr, n_tr)
    for r in plan.runs:
        r.estimate_s = run_seconds(costs[r.name], r, work, plan.n_splits, plan.augment, screened)
        if r.family == "transformer":  # what one more epoch adds (train gives cut epochs back with it)
            more = RunPlan(r.name, r.family, epochs=r.epochs + 1, max_len=r.max_len, seeds=r.seeds)
            r.epoch_s = round(run_seconds(costs[r.name], more, work, plan.n_splits, plan.augment) - r.estimate_s, 1)
    out["train"] = STAGE_START_S + sum(r.estimate_s for r in plan.runs)
    n = len(plan.runs)
    for s in STAGES_AFTER_TRAIN:
        out[s] = STAGE_START_S + FIXED_S[s] + PER_RUN_S.get(s, 0.0) * n * max(1.0, work.n_train / 5000)
    return {k: round(v, 1) for k, v in out.items()}


# -- the decision -------------------------------------------------------------------------------
def _costliest(plan: Plan, families: tuple[str, ...], ok: Any = lambda r: True) -> RunPlan | None:
    runs = [r for r in plan.runs if r.family in families and ok(r)]
    return max(runs, key=lambda r: (r.estimate_s, r.name)) if runs else None


def next_cut(plan: Plan, costs: dict[str, Cost]) -> str | None:
    """Apply the first cut in the documented order that still applies; say what it was."""
    pinned = set(plan.pinned)
    has_tr = any(r.family == "transformer" for r in plan.runs)
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
        r = _costliest(plan, ("transformer",), lambda r: r.seeds > 1)
        if r is not None:
            msg = f"{r.name}: 1 seed instead of {r.seeds}"
            r.seeds = 1
            return msg
    if "train.epochs" not in pinned:
        r = _costliest(plan, ("transformer",), lambda r: r.epochs > 1)
        if r is not None:
            r.epochs -= 1
            return f"{r.name}: {r.epochs} epoch{'s' if r.epochs > 1 else ''} instead of {r.epochs + 1}"
    if "train.max_len" not in pinned:
        r = _costliest(plan, ("transformer",),
                       lambda r: (s := costs[r.name].suggested_max_len) is not None and r.max_len > s)
        if r is not None:
            old, r.max_len = r.max_len, costs[r.name].suggested_max_len
            return f"{r.name}: max_len {r.max_len} (inspect's suggestion) instead of {old}"
    if "folds.n_splits" not in pinned and plan.n_splits > MIN_FOLDS:
        plan.n_splits -= 1
        return f"folds: {plan.n_splits} instead of {plan.n_splits + 1} (every run; folds.csv follows)"
    if "select.candidates" not in pinned:
        r = _costliest(plan, ("transformer",)) or _costliest(plan, ("embedding",))
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


def make_plan(ceiling: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """Cut ``ceiling`` in the documented order until its estimate fits ``available_s``."""
    plan = copy.deepcopy(ceiling)
    folds = ceiling.n_splits
    while True:
        if _fits(plan, costs, work):
            plan.fits = True
            return refill(plan, costs, work, folds)
        cut = next_cut(plan, costs)
        if cut is None:
            plan.fits = False
            return plan
        plan.cut(cut)


def _fits(trial: Plan, costs: dict[str, Cost], work: Work) -> bool:
    trial.stages = stage_seconds(trial, costs, work)
    trial.estimate_s = round(sum(trial.stages.values()), 1)
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
    plan = _give_back(plan, costs, work, "epochs")
    plan = trade_folds_for_epochs(plan, costs, work)
    # a trade takes whole folds, so it may leave room: the preset's epochs, then its seeds
    plan = _give_back(plan, costs, work, "epochs")
    plan = _give_back(plan, costs, work, "seeds")
    if "select.candidates" in plan.pinned:
        return plan
    for r in [r for r in plan.runs if r.family == "transformer"]:
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


def _give_back(plan: Plan, costs: dict[str, Cost], work: Work, what: str) -> Plan:
    """Each fine-tune's cut ``epochs`` or ``seeds`` back, one at a time up to the preset's
    ceiling, in plan order, while the plan still fits (never a key the user pinned)."""
    if f"train.{what}" in plan.pinned:
        return plan
    for name in [r.name for r in plan.runs if r.family == "transformer"]:
        while True:
            trial = copy.deepcopy(plan)
            r = next(x for x in trial.runs if x.name == name)
            if getattr(r, what) >= getattr(r, f"ceiling_{what}"):
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
        return [r for r in p.runs if r.family == "transformer"
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


def ceiling(cfg: Any, costs: dict[str, Cost], budget_s: float, available_s: float, pinned: list[str],
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
        transformers = sorted((n for n in names if costs[n].family == "transformer"),
                              key=lambda n: costs[n].step_s)
        names = [n for n in names if costs[n].family == "classical"] + transformers[:1]
    epochs_bonus = 1 if preset == "best" else 0
    best_seeds = 3 if preset == "best" and metric in SEED_METRICS else 1
    tune_on = cfg.tune.enabled and "transformer" in cfg.tune.families and preset != "fast"
    runs = []
    for n in names:
        c = costs[n]
        epochs = c.epochs
        if "train.epochs" not in pinned:
            if tune_on:  # the profile's tuning searches at most max(tune.epochs): today's most
                epochs = min(epochs, max(cfg.tune.epochs))
            epochs = 1 if preset == "fast" else epochs + epochs_bonus
        seeds = len(cfg.train.seeds or [0]) if "train.seeds" in pinned else best_seeds
        epochs = epochs if c.family == "transformer" else 1
        runs.append(RunPlan(name=n, family=c.family, epochs=epochs, max_len=c.max_len,
                            seeds=seeds if c.family == "transformer" else 1, ceiling_epochs=epochs,
                            ceiling_seeds=seeds if c.family == "transformer" else 1))
    if preset == "best" and best_seeds == 1 and "train.seeds" not in pinned:
        log.info("budget: best: one seed per fold for metric %s (seed averaging pays in probabilities, "
                 "not in labels: BENCHMARKS.md); SET='train.seeds=[42,43,44]' asks for three", metric)
    trials = cfg.tune.n_trials * (2 if preset == "best" and "tune.n_trials" not in pinned else 1)
    return Plan(preset=preset, budget_s=budget_s, available_s=available_s, n_splits=cfg.folds.n_splits,
                select_rows=None if preset == "best" and "select.max_train_rows" not in pinned
                else cfg.select.max_train_rows,
                select_epochs=cfg.select.epochs, trials=trials, tune_transformers=tune_on,
                tune_epochs=list(cfg.tune.epochs), augment=bool(cfg.augment.methods and cfg.train.augment),
                runs=runs, pinned=sorted(pinned), classical_trials=cfg.tune.n_trials)


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


# -- the plan as config --------------------------------------------------------------------------
def global_diff(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan's settings that every stage shares (applied under the user's SET overrides)."""
    runs = [r["name"] for r in plan["runs"]]
    diff: dict[str, Any] = {
        "folds": {"n_splits": plan["n_splits"]},
        "select": {"candidates": runs, "top_k": max(1, len(runs)), "max_train_rows": plan["select_rows"]},
        "tune": {"n_trials": max(1, plan["trials"] if plan["tune_transformers"] else plan["classical_trials"]),
                 "families": ["transformer", "classical"] if plan["tune_transformers"] else ["classical"],
                 **({"timeout_s": plan["tune_timeout_s"]} if plan.get("tune_timeout_s") else {})},
    }
    if not plan["augment"]:
        diff["augment"] = {"methods": []}
        diff["train"] = {"augment": []}
    return diff


def run_diff(plan: dict[str, Any], name: str, seed: int) -> dict[str, Any]:
    """One run's planned epochs (a cap: tuning searches at most that many), max_len and seeds."""
    r = next((r for r in plan["runs"] if r["name"] == name), None)
    if r is None or r["family"] != "transformer":
        return {}
    lo = min(plan["tune_epochs"][0], r["epochs"])
    return {"train": {"epochs": r["epochs"], "max_len": r["max_len"],
                      "seeds": [seed + i for i in range(r["seeds"])] if r["seeds"] > 1 else None},
            "tune": {"epochs": [lo, r["epochs"]]}}


def pinned_keys(cfg: Any) -> list[str]:
    """The section.key names the user set on the command line (SET / --set): never planned over."""
    overrides = getattr(cfg, "_sources", ([], [], []))[2]
    keys = []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("budget."):
            keys.append(key)
    return sorted(set(keys))


# -- the plan file -------------------------------------------------------------------------------
def plan_key(cfg: Any) -> str:
    """What a plan was made for: the budget and every section it plans over, before planning."""
    from pipeline.transaction import value_digest

    return value_digest({s: asdict(getattr(cfg, s)) for s in ("budget", "folds", "select", "tune", "train", "augment")}
                        | {"pinned": pinned_keys(cfg)})


def load_plan(paths: Any) -> dict[str, Any] | None:
    from pipeline.io import read_json

    return read_json(paths.plan_json) if paths.plan_json.exists() else None


def apply(cfg: Any, paths: Any) -> Any:
    """``cfg`` with the plan's shared settings, when a plan was made for exactly this budget and
    config (else unchanged, and said so). The user's SET overrides stay on top."""
    from pipeline.config import with_diff

    if cfg.budget.time is None:
        return cfg
    plan = load_plan(paths)
    if plan is None:
        log.warning("budget.time=%s but %s is missing: the profile runs as it stands (run `make plan`)",
                    cfg.budget.time, paths.plan_json)
        return cfg
    if plan.get("key") != plan_key(cfg):
        log.warning("%s was made for another budget, preset or config: not applied (run `make plan`)", paths.plan_json)
        return cfg
    applied = with_diff(cfg, plan["diff"])
    object.__setattr__(applied, "_plan", plan)
    return applied


def active(cfg: Any) -> dict[str, Any] | None:
    """The plan ``apply`` put on this config, if any."""
    return getattr(cfg, "_plan", None)


def update_plan(paths: Any, change: Any) -> dict[str, Any] | None:
    """Read, change and atomically rewrite reports/plan.json (stages run one at a time)."""
    from pipeline.io import write_json

    plan = load_plan(paths)
    if plan is None:
        return None
    change(plan)
    write_json(paths.plan_json, plan)
    return plan


def record(paths: Any, stage: str) -> None:
    """The stage's actual seconds beside its estimate: from the previous stage's end to now
    (its python start included), for the `make` invocation that made the plan."""
    plan = load_plan(paths)
    t0 = started()
    if plan is None or t0 is None or plan.get("t0") != t0 or stage not in plan.get("stages", {}):
        return
    now = time.time()

    def change(p: dict[str, Any]) -> None:
        last = p.get("last_end") or (t0 + (p["stages"]["inspect+clean"].get("actual_s") or 0.0))
        p["stages"][stage]["actual_s"] = round(now - last, 1)
        p["last_end"] = now
        p["elapsed_s"] = round(now - t0, 1)

    update_plan(paths, change)


# -- a shared machine ---------------------------------------------------------------------------
SHARED = 0.10  # other processes' share of the machine's CPU above which a timing measured them too


def disturbed(share: float | None) -> bool:
    """Whether a timing that other processes took ``share`` of the CPU during measured them too."""
    return share is not None and share > SHARED


CGROUP_V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"  # -1 unless a quota is set


def machine_cpu_s(stat: str = "/proc/stat", cpu_max: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """CPU seconds every process on this machine has used so far (Linux ``/proc/stat``; steal
    time counts: another guest had the core), else None. None too where this process does not
    see the whole machine: a container whose ``/proc/stat`` counts more cores than it may run
    on, or that a CPU quota caps, would count other tenants' work as a disturbance."""
    try:
        with open(stat) as f:
            lines = f.read().splitlines()
        ticks = [int(x) for x in lines[0].split()[1:9]]
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        if cores != len(os.sched_getaffinity(0)) or len(ticks) < 5:
            return None
        if os.path.exists(cpu_max):  # cgroup v2: "max 100000" unless a quota is set
            with open(cpu_max) as f:
                if not f.read().strip().startswith("max"):
                    return None
        if os.path.exists(CGROUP_V1_QUOTA):  # cgroup v1: -1 unless a quota is set
            with open(CGROUP_V1_QUOTA) as f:
                if f.read().strip() != "-1":
                    return None
    except (OSError, ValueError, IndexError, AttributeError):  # no sched_getaffinity off Linux
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


class Others:
    """``with Others() as o: ...`` -> ``o.share``: the share of the machine's CPU that other
    processes used while the block ran (0 = it had the machine to itself; 0.5 on 2 cores = one
    core busy with something else), so a timing taken then is known to be slow for a reason
    that may not last. None where the machine's counters cannot be read."""

    def __init__(self) -> None:
        self.share: float | None = None

    def __enter__(self) -> Others:
        self._t, self._busy, self._own = time.perf_counter(), machine_cpu_s(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        busy, wall = machine_cpu_s(), time.perf_counter() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (time.process_time() - self._own)
        self.share = round(min(1.0, max(0.0, other / (wall * (os.cpu_count() or 1)))), 3)


# -- the clock ----------------------------------------------------------------------------------
T0_ENV = "TEXTCOMP_T0"  # make's start time (epoch seconds), exported once per `make` invocation


def started() -> float | None:
    v = os.environ.get(T0_ENV, "").strip()
    try:
        return float(v) if v else None
    except ValueError:
        return None


class Deadline:
    """When train must stop so that what follows it still fits in the budget.

    Only for the `make` invocation that made the plan (same T0): a stage rerun by hand later
    follows the plan's settings but not its clock."""

    def __init__(self, end: float | None, plan: dict[str, Any] | None = None) -> None:
        self.end = end
        self.plan = plan

    @classmethod
    def load(cls, plan: dict[str, Any] | None) -> Deadline:
        t0 = started()
        if not plan or t0 is None or plan.get("t0") != t0:
            return cls(None, plan)
        after = sum(plan["stages"].get(s, {}).get("estimate_s", 0.0) for s in STAGES_AFTER_TRAIN)
        return cls(t0 + plan["budget_s"] - after, plan)

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.time()

    def grace(self) -> float:
        """How far past the deadline a run may go to finish its last folds (an incomplete run
        is not blended, so stopping it one fold short throws all of it away): 5% of the budget."""
        return GRACE * float((self.plan or {}).get("budget_s", 0.0))

    def slowdown(self) -> float:
        """Actual / estimated seconds of the stages finished so far in this run (>= 1 only when slower)."""
        if not self.plan:
            return 1.0
        est = act = 0.0
        for s, v in self.plan["stages"].items():
            if v.get("actual_s") is not None and s not in ("inspect+clean", "plan") and v.get("estimate_s", 0) > 30:
                est += v["estimate_s"]
                act += v["actual_s"]
        return max(1.0, act / est) if est else 1.0


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a person reads it: per stage and run, estimated seconds; what was cut."""
    target = plan["budget_s"] * (1 - plan["margin"])
    lines = [f"budget {plan['budget']} ({plan['budget_s']:.0f}s, preset {plan['preset']}, device {plan['device']}): "
             f"estimate {plan['estimate_s']:.0f}s, planned to fit {target:.0f}s ({plan['margin']:.0%} of the budget "
             f"kept free for estimation error)"
             + ("" if plan["fits"] else " -- DOES NOT FIT even with every cut (classical models are never cut): "
                "expect to overrun")]
    for s, v in plan["stages"].items():
        act = f"  actual {v['actual_s']:7.1f}s" if v.get("actual_s") is not None else ""
        lines.append(f"  {s:<14} {v['estimate_s']:8.1f}s{act}")
    for r in plan["runs"]:
        extra = (f"{r['epochs']} epoch(s), max_len {r['max_len']}, {r['seeds']} seed(s)"
                 if r["family"] == "transformer" else r["family"])
        lines.append(f"    run {r['name']:<12} {r['estimate_s']:8.1f}s  {extra}, {plan['n_splits']} folds")
    lines.append(f"  settings: {plan['n_splits']} folds; select {plan['select_rows'] or 'all'} rows; tune "
                 f"{plan['trials']} trials ({'transformers and classical' if plan['tune_transformers'] else 'classical only'})"
                 f"; augment {'on' if plan['augment'] else 'off'}")
    lines += [f"  {c}" for c in steps(plan)] or ["  cut: nothing (everything the preset asks for fits)"]
    return "\n".join(lines)


def steps(plan: dict[str, Any]) -> list[str]:
    """The cuts and what the time left bought back, in the order the planner made them (a plan
    written before ``steps`` existed: its cuts, then its give-backs)."""
    if "steps" in plan:
        return list(plan["steps"])
    return [f"cut: {c}" for c in plan["cuts"]] + list(plan.get("added", []))


def dumps(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, sort_keys=False)
