"""The time budget's decision, a pure function a person can read and test.

``ceiling`` is what the preset runs given unlimited time (candidates, epochs, trials, seeds,
folds). ``make_plan`` cuts it one move at a time (pipeline.budget.moves) until the estimate
fits the budget less its margin, then ``refill`` gives back what later cuts made needless.

On a CPU the cuts come in a fixed order, the first that still applies each time:

  1. the transformers' tuning trials halved (while >= 2), then none
  2. the screening subsample halved (down to 500 rows)
  3. augmentation off
  4. seeds: one per fold; 5. epochs: the costliest fine-tune loses one; 6. max_len: down to
     inspect's suggestion; 7. folds: one fewer for every run (never below 3); 7b. reading: long
     texts by their heads, not in windows (a fine-tune whose frozen twin reads them whole gives
     way to that twin instead: ``twin_long``)
  8. on a text pair on CPU, the costliest fine-tune of 1-2 epochs (not pinned) gives way to its
     frozen twin, or goes where its twin is already planned (``twin_pair``);
     a frozen encoder whose drop alone makes it fit; else the costliest fine-tune on the
     largest tenth of its rows that fits (a frozen encoder first where only that makes a
     subsample fit); else the fine-tune is dropped (its frozen twin in its place), then the
     costliest frozen encoder
  9. the classical models' tuning trials halved

On a GPU every possible step is weighed instead: the one that loses the least expected score
per second it saves comes first, so the fine-tunes, most of the score per second there, are
cut last. ``refill`` then gives back folds, a subsample's rows and epochs; a fine-tune left
below its config's epochs buys them back with folds; then the preset's epochs, seeds and a
max_len the texts need; a medium plan with room takes best's extras (``toward_best``); and
time still left buys the frozen twins of the fine-tunes. Classical models are never dropped.
A key the user set (``SET="train.epochs=3"``) is never planned over.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict
from typing import Any

from pipeline.budget.costs import fits, fold_train_rows
from pipeline.budget.moves import (
    DROP,
    EPOCHS,
    FOLDS,
    MAX_LEN,
    MOVES,
    PRIORS,
    READING,
    ROWS,
    SEEDS,
    Expected,
    Move,
    RunPlan,
    loss_of,
    priors,
    row_shares,
    step,
    targets,
    tried,
    twin_loss,
)
from pipeline.budget.plans import MIN_FOLDS, Plan, Work
from pipeline.core.config import Config
from pipeline.core.metrics import metric_of
from pipeline.modeling.base import Cost
from pipeline.modeling.families import family

log = logging.getLogger(__name__)



def ceiling(cfg: Config, costs: dict[str, Cost], budget_s: float, available_s: float, pinned: list[str],
            metric: str, twins: dict[str, str] | None = None, losses: dict[str, Any] | None = None,
            fixed: dict[str, Any] | None = None, reading: dict[str, Any] | None = None, pair: bool = False) -> Plan:
    """What the preset runs given unlimited time, from the profile's settings.

    fast: the classical candidates + the cheapest transformer for 1 epoch, no transformer
    tuning; medium: the profile as it stands + budget.medium_extra where installed; best:
    budget.best_extra too, one more epoch, twice the trials, three seeds per fold where
    ``metric`` scores probabilities (one for a label metric such as F1, where averaging
    measured no gain), and screening on all rows. On a text-pair competition every preset adds
    budget.pair_extra (the members that read the relation: only there are they costed). Where
    inspect found long texts (``reading``), every encoder reads them whole (``read_whole``). On a
    text ``pair`` on CPU a fine-tune's frozen twin is expected to lose nothing (``twin_pair``)."""
    preset = cfg.budget.preset
    names = list(cfg.select.candidates)
    if "select.candidates" not in pinned:
        # the preset's extras, and on text pairs (only there are they costed) budget.pair_extra
        names += [n for n in extra_candidates(cfg) + list(cfg.budget.pair_extra) if n not in names and n in costs]
    for n in [n for n in names if n in costs and not costs[n].available]:
        log.info("budget: %s left out: %s", n, costs[n].why)
    names = [n for n in names if n in costs and costs[n].available]
    if preset == "fast" and "select.candidates" not in pinned:
        fine_tunes = sorted((n for n in names if family(costs[n].family).epoch_trained), key=lambda n: costs[n].step_s)
        names = [n for n in names if family(costs[n].family).never_cut] + fine_tunes[:1]
    best_seeds = 3 if preset == "best" and metric_of(metric).seeds_pay else 1
    tune_on = cfg.tune.enabled and any(family(n).epoch_trained for n in cfg.tune.families) and preset != "fast"
    runs = []
    for n in names:
        c = costs[n]
        trained = family(c.family).epoch_trained
        epochs = c.epochs
        if "train.epochs" not in pinned:
            if tune_on:  # the profile's tuning searches at most max(tune.epochs): today's most
                epochs = min(epochs, max(cfg.tune.epochs))
            epochs = 1 if preset == "fast" else epochs + (preset == "best")
        seeds = (len(cfg.train.seeds or [0]) if "train.seeds" in pinned else best_seeds) if trained else 1
        epochs = epochs if trained else 1
        runs.append(RunPlan(n, c.family, epochs=epochs, max_len=c.max_len, seeds=seeds, ceiling_epochs=epochs,
                            ceiling_seeds=seeds))
    if preset == "best" and best_seeds == 1 and "train.seeds" not in pinned:
        log.info("budget: best: one seed per fold for metric %s (seed averaging pays in probabilities, "
                 "not in labels: BENCHMARKS.md); SET='train.seeds=[42,43,44]' asks for three", metric)
    gpu = any(c.device == "cuda" for c in costs.values() if c.available)
    if reading and reading.get("long"):
        for r in runs:
            read_whole(r, costs[r.name], reading, pinned, gpu)
    trials = cfg.tune.n_trials * (2 if preset == "best" and "tune.n_trials" not in pinned else 1)
    return Plan(preset=preset, budget_s=budget_s, available_s=available_s, n_splits=cfg.folds.n_splits,
                ceiling_folds=cfg.folds.n_splits, select_rows=None if preset == "best" and
                "select.max_train_rows" not in pinned else cfg.select.max_train_rows,
                select_epochs=cfg.select.epochs, trials=trials, tune_transformers=tune_on,
                tune_epochs=list(cfg.tune.epochs), tune_rows=cfg.tune.max_train_rows,
                augment=bool(cfg.augment.methods and cfg.train.augment), runs=runs, pinned=sorted(pinned),
                classical_trials=cfg.tune.n_trials, metric=metric, seeds_pay=metric_of(metric).seeds_pay, twins=dict(twins or {}),
                extras=list(cfg.budget.best_extra), losses=_losses(losses, pair and not gpu), fixed=dict(fixed or {}),
                device="cuda" if gpu else "cpu", reading=dict(reading or {}))


def _losses(measured: dict[str, Any] | None, pair_on_cpu: bool) -> dict[str, Any]:
    """The priors, a text pair's on CPU where it has its own, then what this data measured."""
    out = priors()
    if pair_on_cpu:
        out["twin"] = asdict(Expected(PRIORS["twin_pair"], "prior: a text pair on CPU (twin_pair)"))
    return {**out, **(measured or {})}


def read_whole(r: RunPlan, c: Cost, reading: dict[str, Any], pinned: list[str], gpu: bool) -> None:
    """An encoder run on long texts (inspect's ``reading``: a real share over max_len) reads them
    whole: on a GPU a fine-tune first at the backbone's limit (512 for BERT-sized encoders), then,
    where texts still take more than one window, in windows (train.chunks). The cuts can take
    the windows back (``moves.Reading``); a reading the user set is never planned over."""
    if not family(c.family).uses_backbone or {"train.chunks", "train.truncation", "train.max_chunks"} & set(pinned):
        return
    if gpu and family(c.family).epoch_trained and "train.max_len" not in pinned:
        longest = min(int(reading.get("gpu_max_len") or r.max_len), c.max_positions or 512)
        r.max_len = max(r.max_len, longest)
    windows = c.windows.get(str(r.max_len)) or (reading.get("windows") or {}).get(str(r.max_len))
    if windows and windows > 1.0:
        c.windows.setdefault(str(r.max_len), float(windows))
        r.chunks = r.ceiling_chunks = True


def extra_candidates(cfg: Config) -> list[str]:
    """Candidates the preset adds to the profile's own (each only where its backbone is installed)."""
    return {"medium": cfg.budget.medium_extra, "best": cfg.budget.best_extra}.get(cfg.budget.preset, [])


def make_plan(ceiling: Plan, costs: dict[str, Cost], work: Work) -> Plan:
    """Cut ``ceiling`` until its estimate fits ``available_s``; then give back (``refill``)."""
    plan = copy.deepcopy(ceiling)
    plan.costs, plan.work, plan.n_train, plan.n_test = costs, work, work.n_train, work.n_test
    while not fits(plan):
        cut = next_cut(plan)
        if cut is None:
            plan.fits = False
            return plan
        plan, what = cut
        plan.cut(what)
    plan.fits = True
    return refill(plan)


# -- cuts ---------------------------------------------------------------------------------------
def next_cut(plan: Plan) -> tuple[Plan, str] | None:
    """The next cut (on a GPU: the step with the least expected score lost per second saved)."""
    if plan.device == "cuda":
        return _cheapest_cut(plan)
    for move in MOVES[:8]:  # trials, screening, augment, seeds, epochs, max_len, folds, reading
        if move.free(plan):
            for r in targets(plan, move):
                if what := move.down(plan, r):
                    return plan, what
    if DROP.free(plan) and (what := _last_cut(plan)):
        return plan, what
    move = MOVES[-1]  # the classical models' trials
    return (plan, what) if move.free(plan) and (what := move.down(plan)) else None


def _last_cut(plan: Plan) -> str | None:
    """Before a fine-tune goes: on a text pair on CPU, a fine-tune of 1-2 epochs gives way to
    its frozen twin (``twin_loss``); else a frozen encoder whose drop alone makes the plan fit (a
    fine-tune outscores a frozen encoder), else the fine-tune on a row subsample."""
    frozen = sorted((r for r in plan.runs if not r.epoch_trained and not family(r.family).never_cut),
                    key=lambda r: (r.estimate_s, r.name))
    fine_tunes = targets(plan, EPOCHS)
    planned = {x.name for x in plan.runs}
    for r in fine_tunes:  # a text pair on CPU: the twin (in its place, or already beside it) reads the relation as well
        if twin_loss(plan, r) <= loss_of(plan, "frozen") and (DROP.twin(plan, r) or plan.twins.get(r.name) in planned):
            return DROP.down(plan, r)
    if fine_tunes:
        for r in frozen:
            if tried(plan, step(DROP, r.name)):
                DROP.down(plan, r)
                return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s) so that the fine-tunes fit"
    if fine_tunes and ROWS.free(plan):
        r = fine_tunes[0]
        trial = copy.deepcopy(plan)
        while what := ROWS.down(trial, trial.named(r.name)):
            if fits(trial):
                r.rows = trial.named(r.name).rows
                return what
        full = fold_train_rows(plan.n_train, plan.n_splits)
        sizes = [n for n in row_shares(full) if n < (r.rows or full)]
        floor = copy.deepcopy(plan)
        floor.runs = [x for x in floor.runs if x.name not in {f.name for f in frozen}]
        floor.named(r.name).rows = sizes[-1] if sizes else None
        if sizes and frozen and fits(floor):
            DROP.down(plan, frozen[0])
            return (f"{frozen[0].name}: dropped (estimated {frozen[0].estimate_s:.0f}s) so that {r.name} fits on a "
                    "subsample of its rows")
    r = (fine_tunes or sorted(frozen, key=lambda r: (r.estimate_s, r.name), reverse=True) or [None])[0]
    return DROP.down(plan, r) if r is not None else None


def _cheapest_cut(plan: Plan) -> tuple[Plan, str] | None:
    """Of every step each move can take, the one with the least expected loss per second saved
    (ties: the CPU's order); classical models are never dropped."""
    best: tuple[tuple[float, int], Plan, str] | None = None
    for i, move in enumerate(MOVES):
        for r in targets(plan, move) if move.free(plan) else []:
            trial = copy.deepcopy(plan)
            what = step(move, r.name if r else None)(trial)
            if not what:
                continue
            fits(trial)
            saved = plan.estimate_s - trial.estimate_s
            key = (move.loss(plan, r) / saved if saved > 0 else float("inf"), i)
            if saved > 0 and (best is None or key < best[0]):
                best = (key, trial, what)
    return None if best is None else (best[1], best[2])


# -- give-backs ---------------------------------------------------------------------------------
def refill(plan: Plan) -> Plan:
    """Spend what the cuts left: a later cut (a dropped run) can make an earlier one needless."""
    for move in (READING, FOLDS, ROWS, EPOCHS):
        plan = give(plan, move)
    plan = trade_folds_for_epochs(plan)
    for move in (EPOCHS, SEEDS, MAX_LEN):  # a trade takes whole folds, so it may leave room
        plan = give(plan, move)
    if "select.candidates" in plan.pinned:
        return plan
    plan = toward_best(plan)
    for r in [r for r in plan.runs if r.epoch_trained]:
        alt = plan.twins.get(r.name)
        if alt and alt in plan.costs and plan.costs[alt].available and alt not in {x.name for x in plan.runs}:
            plan = _added(plan, lambda p, a=alt: _add(p, a, 1, f"{a}: added (its encoder frozen + LR, ~{{s}}s): "
                                                                "the budget had room"))
    return plan


def give(plan: Plan, move: Move) -> Plan:
    """``move``'s steps back, one at a time (each fine-tune in plan order), while the plan fits."""
    if not move.free(plan):
        return plan
    for name in [r.name for r in targets(plan, move)] if move.run_level else [None]:
        while got := tried(plan, step(move, name, up=True)):
            plan, what = got
            plan.add(what)
    return plan


def _add(p: Plan, name: str, epochs: int, say: str) -> str:
    c = p.costs[name]
    p.runs.append(RunPlan(name, c.family, epochs=epochs, max_len=c.max_len, ceiling_epochs=epochs))
    return say


def _added(plan: Plan, change: Any) -> Plan:
    """``change`` kept where it fits; its line says the added run's estimate (``{s}``)."""
    got = tried(plan, change)
    if got is None:
        return plan
    trial, what = got
    trial.add(what.replace("{s}", f"{trial.runs[-1].estimate_s:.0f}"))
    return trial


def trade_folds_for_epochs(plan: Plan) -> Plan:
    """A fine-tune cut below its own config's epochs runs a schedule its config was not set for,
    while a fold less costs each fold only 1/k - 1/(k+1) of its training rows: so a fold goes
    (never below 3; every run; folds.csv follows) for the epoch back, while the plan still fits
    (a bet, not yet measured end to end). Epochs a preset added on top of the config are not
    bought this way."""
    if {"folds.n_splits", "train.epochs"} & set(plan.pinned):
        return plan

    def short(p: Plan) -> list[RunPlan]:
        return [r for r in p.runs if r.epoch_trained and r.epochs < min(r.ceiling_epochs, max(p.costs[r.name].epochs, 1))]

    while short(plan) and plan.n_splits > MIN_FOLDS:
        for k in range(plan.n_splits - 1, MIN_FOLDS - 1, -1):  # the most folds that buys an epoch back
            trial = copy.deepcopy(plan)
            trial.n_splits = k
            back = []
            for r in short(trial):
                r.epochs += 1
                if fits(trial):
                    back.append(f"{r.name} {r.epochs}")
                else:
                    r.epochs -= 1
            if back:
                break
        if not back or not fits(trial):
            return plan
        trial.steps = [a for a in trial.steps  # folds refill gave back and the trade takes again
                       if not (a.startswith("folds: ") and int(a.split()[1]) > trial.n_splits)]
        trial.cut(f"trade: folds {trial.n_splits} instead of {plan.n_splits} (every run; folds.csv follows) for "
                  f"epochs back: {', '.join(back)} (the config's epochs, bought with a fold's share of rows)")
        plan = trial
    return plan


def toward_best(plan: Plan) -> Plan:
    """A medium plan whose ceiling fits with room to spare takes best's extras one at a time
    while it still fits: best's other candidates (fine-tunes at their config's epochs first,
    then the frozen encoders), best's extra epoch for each fine-tune (early stopping keeps the
    best epoch, so it costs time, not score), then three seeds per fold where the metric
    scores probabilities. Each is one line of the plan."""
    if plan.preset != "medium":
        return plan
    have = {r.name for r in plan.runs}
    extras = [n for n in plan.extras if n not in have and n in plan.costs and plan.costs[n].available]
    for n in sorted(extras, key=lambda n: not family(plan.costs[n].family).epoch_trained):
        trained = family(plan.costs[n].family).epoch_trained
        epochs = max(plan.costs[n].epochs, 1) if trained and "train.epochs" not in plan.pinned else 1
        what = f"{epochs} epoch(s)" if trained else "its encoder frozen + LR"
        plan = _added(plan, lambda p, n=n, e=epochs, w=what: _add(
            p, n, e, f"{n}: added from best ({w}, ~{{s}}s): the budget had room"))

    def bonus(name: str, what: str) -> Any:
        def change(p: Plan) -> str | None:
            r = p.named(name)
            if r.rows or (r.epochs < r.ceiling_epochs if what == "epochs" else r.seeds >= 3):
                return None  # its own cut epochs or rows did not come back: no bonus
            if what == "epochs":
                r.epochs = r.ceiling_epochs = r.epochs + 1
                return f"{name}: {r.epochs} epochs (best's extra one; early stopping keeps the best): the budget had room"
            r.seeds += 1
            r.ceiling_seeds = max(r.ceiling_seeds, r.seeds)
            return f"{name}: {r.seeds} seeds per fold (best's; averaged): the budget had room"
        return change

    for what, repeat in (("epochs", False), ("seeds", True)):
        if f"train.{what}" in plan.pinned or (what == "seeds" and not plan.seeds_pay):
            continue
        for name in [r.name for r in plan.runs if r.epoch_trained]:
            while got := tried(plan, bonus(name, what)):
                plan = got[0]
                plan.add(got[1])
                if not repeat:
                    break
    return plan


# -- as a person reads it -----------------------------------------------------------------------
def format_plan(plan: Plan, actual: dict[str, float] | None = None) -> str:
    """The plan as a person reads it: per stage and run, estimated seconds; what was cut, and
    the expected losses it weighed (measured here, or priors)."""
    actual = actual or {}
    target = plan.budget_s * (1 - plan.margin)
    lines = [f"budget {plan.budget} ({plan.budget_s:.0f}s, preset {plan.preset}, device {plan.device}"
             f"{', paces from ' + plan.paces if plan.paces else ''}): estimate {plan.estimate_s:.0f}s, planned to fit "
             f"{target:.0f}s ({plan.margin:.0%} of the budget kept free for estimation error)"
             + ("" if plan.fits else " -- DOES NOT FIT even with every cut (classical models are never cut): "
                "expect to overrun")]
    for s, v in plan.stages.items():
        lines.append(f"  {s:<14} {v:8.1f}s" + (f"  actual {actual[s]:7.1f}s" if s in actual else ""))
    for r in plan.runs:
        extra = (f"{r.epochs} epoch(s), max_len {r.max_len}, {r.seeds} seed(s)"
                 + (f", {r.rows:,} rows a fold" if r.rows else "") if r.epoch_trained else r.family)
        where = f", {plan.costs[r.name].device}" if r.name in plan.costs and plan.device == "cuda" else ""
        lines.append(f"    run {r.name:<12} {r.estimate_s:8.1f}s  {extra}, {plan.n_splits} folds{where}")
    tuned = [f"transformers {plan.trials}" if plan.tune_transformers else "",
             f"classical {plan.trials if plan.tune_transformers else plan.classical_trials}" if plan.classical_trials else ""]
    lines.append(f"  settings: {plan.n_splits} folds; select {plan.select_rows or 'all'} rows; tune trials: "
                 f"{', '.join(t for t in tuned if t) or 'none'}; augment {'on' if plan.augment else 'off'}"
                 + ("; train runs the CPU's runs beside the GPU's" if plan.side_by_side else ""))
    measured = [f"{k} {v['value']:.4f} ({v['source']})" for k, v in plan.losses.items()
                if not v["source"].startswith("prior")]
    lines.append("  expected loss per step: " + ", ".join(
        f"{k} {loss_of(plan, k):.4f}" for k in ("epoch", "rows", "twin", "frozen", "max_len"))
        + f" (priors{'; measured here: ' + '; '.join(measured) if measured else ''})")
    if plan.reading.get("long"):
        reads = [f"{r.name} " + (f"whole ({plan.costs[r.name].windows.get(str(r.max_len), 0):.1f} windows a text at "
                                 f"max_len {r.max_len})" if READING.chunked(plan, r) else f"by its head (max_len {r.max_len})")
                 for r in plan.runs if r.name in plan.costs and family(r.family).uses_backbone]
        lines.append(f"  long texts: {plan.reading['share_over']:.0%} of the inputs over max_len "
                     f"{plan.reading['max_len']} (inspect): " + ("; ".join(reads) or "no encoder run reads them"))
    lines += [f"  {c}" for c in plan.steps] or ["  cut: nothing (everything the preset asks for fits)"]
    return "\n".join(lines)
