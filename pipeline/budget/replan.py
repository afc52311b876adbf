"""What train changes while it runs, under a time budget: the plan met at a run's start, at
each fold's start, and after the last planned run.

Before each run (``replan``), at the pace each run left measured against its own probe
(``own_pace``: its screening's training rows per second; never a stage's wall time, which
holds process start-ups and other models' work): if the runs left need more than the time
left, the run about to start takes the run-level move with the least expected score lost
that fits (fewer epochs, a shorter max_len, a row subsample, its frozen twin, or it is
skipped); with time to spare it gets back the rows and epochs the plan cut. Before each fold
(``FoldGuard``): a run whose next fold would not finish before ensemble, submit and report
must start stops at that fold boundary, unless finishing it stays within the grace. Time left
after the last run buys more (``spare_runs``). Every decision is one line in the ledger.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget.clock import Deadline, disturbed
from pipeline.budget.costs import fold_seconds, fold_train_rows, run_seconds
from pipeline.budget.moves import (
    EPOCHS,
    MAX_LEN,
    ROWS,
    Move,
    heads_only_beside_a_whole_twin,
    loss_of,
    measured_losses,
    row_shares,
    rows_loss,
    twin_loss,
)
from pipeline.budget.planfile import update_ledger
from pipeline.budget.plans import Plan, RunPlan, Work
from pipeline.core.config import Config, ConfigError, TrainConfig, with_diff
from pipeline.core.paths import Paths
from pipeline.modeling.families import family

log = logging.getLogger(__name__)
SPARE_SEED = 1000  # a spare seed run's seed: the source's + this (fold k: + k; its row subsample too)


def own_pace(paths: Paths, plan: Plan | None, run: str, say: bool = False) -> float | None:
    """How much slower (>1) or faster a fine-tune trains here than its probe said: its
    screening's seconds per training row (select's table) against the probe's at the same
    max_len, clipped to [0.5, 3]. Process start-ups, model loading and a GPU's first use are
    the stages' own costs, not the run's. 1 where other processes shared the machine's CPU
    during that screening and it ran slow (a disturbance need not last; ``say``: log that)."""
    r = plan.run_plan(run) if plan else None
    cost = plan.costs.get(r.name) if r else None
    if cost is None or not r.epoch_trained or not paths.selection_csv.exists():
        return None
    table = pd.read_csv(paths.selection_csv)
    row = table[table["candidate"].astype(str) == r.name]
    if row.empty or "train_samples_per_s" not in row or not row["train_samples_per_s"].iloc[0] > 0:
        return None
    pace = float(np.clip(1 / float(row["train_samples_per_s"].iloc[0]) / cost.row_seconds(r.max_len), 0.5, 3.0))
    others = row["others_cpu"].iloc[0] if "others_cpu" in row else None
    if disturbed(None if pd.isna(others) else float(others)) and pace > 1:
        if say:
            log.warning("train: %s's screening trained at x%.2f its probe's pace while other processes used %.0f%% of "
                        "the machine's CPU: the plan's estimate stands for it (a disturbance need not last; the fold "
                        "guard still stops a run that would overrun)", run, pace, 100 * float(others))
        return 1.0
    return pace


def _work(plan: Plan) -> Work:
    return plan.work or Work(plan.n_train, plan.n_test)


def twin_seconds(plan: Plan, name: str) -> float:
    """A planned-out candidate's seconds on this plan's data and folds (its measured costs)."""
    cost = plan.costs[name]
    return run_seconds(cost, RunPlan(name, cost.family, max_len=cost.max_len), _work(plan), plan.n_splits, False)


def config_seconds(plan: Plan, name: str, tc: TrainConfig) -> float | None:
    """Candidate ``name``'s seconds on this plan's data and folds when trained as ``tc`` says
    (its epochs, max_len, seeds and row subsample), from its measured costs; the planned run's
    own estimate rescaled by the same ratio where the plan has it (so what the plan knew
    beyond the costs, several processes, carries over). None without costs."""
    cost = plan.costs.get(name)
    if cost is None or not plan.n_train:
        return None
    run = RunPlan(name, cost.family, epochs=tc.epochs, max_len=tc.max_len, seeds=len(tc.seeds or [0]),
                  rows=tc.max_train_rows)
    new = run_seconds(cost, run, _work(plan), plan.n_splits, plan.augment)
    planned = next((r for r in plan.runs if r.name == name), None)
    if planned is None or not planned.estimate_s:
        return new
    base = run_seconds(cost, planned, _work(plan), plan.n_splits, plan.augment)
    return planned.estimate_s * new / base if base > 0 else new


def most_rows(plan: Plan, name: str, c: Config, sizes: list[int | None], epochs: int, room: float, pace: float
              ) -> tuple[int | None, float, Config] | None:
    """The first of ``sizes`` (training rows per fold, largest first; None: all of them) at
    which ``c`` for ``epochs`` costs at most ``room`` seconds at ``pace``: (size, seconds, the
    config). None where none fits or candidate ``name`` has no measured costs."""
    for n in sizes:
        sized = with_diff(c, {"train": {"epochs": epochs, "max_train_rows": n}})
        seconds = config_seconds(plan, name, sized.train)
        if seconds is None:
            return None
        if seconds * pace <= room:
            return n, seconds * pace, sized
    return None


@dataclass
class Option:
    """One way to run (or not run) the next fine-tune: what it costs and what it should score."""

    what: str
    seconds: float  # at the measured pace
    loss: float  # expected score below the plan's own choice (0: the plan as made)
    diff: dict[str, Any] | None = None  # the run's config diff (None: skipped)
    twin: str | None = None  # the frozen-encoder run trained instead


def _with_history(plan: Plan, name: str, backbone: str, paths: Paths) -> Plan:
    """The plan's expected losses, with what this backbone's runs so far measured on top."""
    return dataclasses.replace(plan, losses={**plan.losses, **measured_losses(paths, {name: backbone}, plan.metric,
                                                                              plan.n_train)})


def options(c: Config, own: float, per_epoch: float, plan: Plan, paths: Paths, pinned: list[str], pace: float,
            room: float) -> list[Option]:
    """The run-level moves that make the next fine-tune fit ``room``: fewer epochs, max_len at
    inspect's suggestion, its frozen twin, a row subsample per epoch count (the most rows that
    fit), skipping it; each costed at ``pace`` and scored by the plan's expected losses with
    this backbone's measured curves on top."""
    tc, planned = c.train, plan.run_plan(c.train.run)
    name = planned.name if planned else tc.run
    p = dataclasses.replace(_with_history(plan, name, tc.backbone, paths), pinned=list(pinned))
    run = RunPlan(name, tc.family, epochs=tc.epochs, max_len=tc.max_len, rows=tc.max_train_rows)
    out = [Option(f"{tc.epochs} epoch(s) as planned", own, 0.0, {})]
    fewer = _levels(p, EPOCHS, run)
    out += [Option(f"{v.epochs} epoch(s) instead of {tc.epochs}", own - (tc.epochs - v.epochs) * per_epoch, loss,
                   {"train": {"epochs": v.epochs}}) for v, loss in fewer]
    cost = plan.costs.get(run.name)
    for v, loss in _levels(p, MAX_LEN, run)[:1] if cost else []:
        out.append(Option(f"max_len {v.max_len} instead of {tc.max_len}", own * cost.length_scale(v.max_len), loss,
                          {"train": {"max_len": v.max_len}}))
    twin = p.twins.get(name)  # (one the plan dropped too: at this pace it may fit)
    if twin and twin in plan.costs and plan.costs[twin].available and not plan.run_plan(twin):
        out.append(Option(f"{twin} (its encoder frozen + LR) instead", twin_seconds(plan, twin), twin_loss(p, run),
                          None, twin))
    if planned is not None and plan.n_train:
        full = fold_train_rows(plan.n_train, plan.n_splits)
        sizes = dict((v.rows, loss) for v, loss in _levels(p, ROWS, run))
        for e, e_loss in [(tc.epochs, 0.0), *((v.epochs, loss) for v, loss in fewer)]:
            if fit := most_rows(plan, run.name, c, list(sizes), e, room, pace):
                n, seconds, _ = fit
                out.append(Option(f"{n:,} of each fold's {full:,} rows ({n / full:.0%}), {e} epoch(s)", seconds,
                                  e_loss + sizes[n], {"train": {"epochs": e, "max_train_rows": n}}))
    return [*out, Option("skipped", 0.0, float("inf"), None)]


def _levels(plan: Plan, move: Move, run: RunPlan) -> list[tuple[RunPlan, float]]:
    """``run`` after each step ``move`` takes down (where the user did not pin it), with the
    expected loss of getting there."""
    out, v, loss = [], copy.copy(run), 0.0
    while move.free(plan):
        step_loss = move.loss(plan, v)
        if not move.down(plan, v):
            break
        loss += step_loss
        out.append((copy.copy(v), loss))
    return out


def replan(c: Config, remaining: list[Config], deadline: Deadline, paths: Paths, pinned: list[str]) -> Config | None:
    """The run about to start as the time left allows: ``c`` itself, ``c`` changed, its frozen
    twin's config, or None (skipped); runs of a family the planner never cuts are never cut
    here either. A shortfall within the tolerance (the fold guard's grace: the margin's half)
    keeps the plan; a larger one takes the option with the least expected score lost among
    those that fit; time to spare gives back the rows and epochs the plan cut."""
    fam, plan = family(c.train.family), deadline.plan
    if fam.never_cut:
        return c
    pace = {r.train.run: own_pace(paths, plan, r.train.run, say=r.train.run == c.train.run) or 1.0 for r in remaining}
    planned_s = {r.train.run: (plan.run_plan(r.train.run).estimate_s if plan.run_plan(r.train.run) else 0.0)
                 for r in remaining}
    need = sum(planned_s[r] * pace[r] for r in planned_s)
    run, own, left = c.train.run, planned_s[c.train.run] * pace[c.train.run], deadline.left()
    planned = plan.run_plan(run)
    per_epoch = (planned.epoch_s if planned is not None and planned.epoch_s is not None
                 else own / max(c.train.epochs, 1)) * pace[run]  # what an epoch adds (or takes away)
    head = (f"re-plan: {run} measured at x{pace[run]:.2f} its probe's pace; the {len(remaining)} run(s) left then "
            f"need ~{need:.0f}s, {max(left, 0):.0f}s left before ensemble/submit/report")
    if need <= left:
        if fam.epoch_trained and c.train.max_train_rows and "train.max_train_rows" not in pinned:
            bigger, seconds = _more_rows(c, need - own, left - deadline.grace() / 2, pace[run], plan, head, paths)
            if bigger is not c:  # what the run and one more epoch of it now cost
                one_more = config_seconds(plan, planned.name, with_diff(
                    bigger, {"train": {"epochs": bigger.train.epochs + 1}}).train) or 0.0
                need, c = need - own + seconds, bigger
                per_epoch = max(per_epoch, one_more * pace[run] - seconds)
        return _give_back(c, need, left, per_epoch, planned, fam.epoch_trained and "train.epochs" not in pinned, head,
                          paths)
    if need - left <= deadline.grace():
        _say(paths, f"{head} -> the plan kept: {need - left:.0f}s short, within the {deadline.grace():.0f}s the "
                    "margin keeps for estimation error (the fold guard stops a run that would overrun more)")
        return c
    rest = need - own  # what the runs after this one need
    opts = options(c, own, per_epoch, plan, paths, pinned, pace[run], left - rest) if fam.epoch_trained else \
        [Option("as planned", own, 0.0, {}), Option("skipped", 0.0, float("inf"), None)]
    best = min([o for o in opts if rest + o.seconds <= left] or [opts[-1]], key=lambda o: (o.loss, o.seconds))
    numbers = "; ".join(f"{o.what}: ~{o.seconds:.0f}s, -{o.loss:.4f} expected" for o in opts if o.what != "skipped")
    _say(paths, f"{head} -> {run}: {best.what} (options: {numbers})")
    if best.twin is not None:
        return twin_config(c, best.twin, paths)
    return None if best.diff is None else (c if not best.diff else with_diff(c, best.diff))


def _more_rows(c: Config, rest: float, aim: float, pace: float, plan: Plan, head: str, paths: Paths
               ) -> tuple[Config, float]:
    """A subsampled fine-tune's rows back, as many as fit ``aim`` beside the ``rest`` of the
    runs (all of them, else the largest tenth of its fold's rows), and its seconds then."""
    planned = plan.run_plan(c.train.run)
    if planned is None or not plan.n_train:
        return c, 0.0
    full = fold_train_rows(plan.n_train, plan.n_splits)
    sizes = [None, *(n for n in row_shares(full) if n > c.train.max_train_rows)]
    fit = most_rows(plan, planned.name, c, sizes, c.train.epochs, aim - rest, pace)
    if fit is None:
        return c, 0.0
    n, seconds, bigger = fit
    _say(paths, f"{head} -> {c.train.run}: {'all' if n is None else f'{n:,}'} of each fold's {full:,} "
                f"training rows instead of {c.train.max_train_rows:,} (~{seconds:.0f}s)")
    return bigger, seconds


def _give_back(c: Config, need: float, left: float, per_epoch: float, planned: RunPlan | None, can_change: bool,
               head: str, paths: Paths) -> Config:
    epochs = c.train.epochs
    ceiling = planned.ceiling_epochs if planned else epochs
    while can_change and epochs < ceiling and need + per_epoch <= left:
        epochs, need = epochs + 1, need + per_epoch
    if epochs == c.train.epochs:
        return c
    _say(paths, f"{head} -> {c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}")
    return with_diff(c, {"train": {"epochs": epochs}})


def twin_config(c: Config, twin: str, paths: Paths) -> Config:
    """``c``'s run given way to ``twin`` (its experiment file), on the folds select/tune spent alike."""
    from pipeline.core.experiments import candidate_diff

    diff = candidate_diff(twin, paths.root)[0]
    diff["train"] = {**diff.get("train", {}), "searched_folds": list(c.train.searched_folds)}
    return with_diff(c, diff)


def stage_pace(done: list[tuple[Config, float, float | None]], plan: Plan | None) -> float | None:
    """Actual / estimated seconds of the runs this train stage trained (each costed at the
    config it ran with), where they add up to a minute or more: the newest evidence of this
    machine's pace, from the runs themselves. Each run comes with the share of the CPU other
    processes used while it trained; a run they slowed is left out (a disturbance need not
    last: the time after it is costed at the runs' own pace, as the re-plan does with a
    screening)."""
    if plan is None:
        return None
    est = act = 0.0
    for c, seconds, others in done:
        if disturbed(others):
            continue
        planned = plan.run_plan(c.train.run)
        name = planned.name if planned else c.train.run
        e = config_seconds(plan, name, c.train) if family(c.train.family).epoch_trained else \
            (planned.estimate_s if planned else None)
        if e:
            est, act = est + e, act + seconds
    return act / est if act >= 60 and est > 0 else None


def spare_runs(trained: list[Config], deadline: Deadline, paths: Paths, pace: float | None = None) -> list[Config]:
    """What time left after the last planned run buys, before ensemble, submit and report must
    start (less half the tolerance), each while it fits and said in one line: the frozen twin
    of each fine-tune that ran and the frozen encoders the plan dropped, cheapest first; then
    one more fine-tune sized to what is still left (the best expected score among its epochs
    and row subsamples): a fine-tune the plan dropped (not one that would read the heads of long
    texts beside its twin reading them whole, on CPU), else another seed of one that ran. Each
    is costed at ``pace`` (``stage_pace``), else as the plan estimated it."""
    plan, out = deadline.plan, []
    if plan is None or deadline.end is None or not trained:
        return out
    names = {c.train.run for c in trained}
    ran = {p.name for p in plan.runs if p.run_name in names}
    frozen = {plan.twins[p.name] for p in plan.runs if p.epoch_trained and p.name in ran and p.name in plan.twins}
    frozen |= {n for n in plan.dropped if n in plan.costs and not family(plan.costs[n].family).epoch_trained}
    frozen = sorted((n for n in frozen if n in plan.costs and plan.costs[n].available and not plan.run_plan(n)),
                    key=lambda n: twin_seconds(plan, n))
    spend = deadline.left() - deadline.grace() / 2
    pace = pace or 1.0
    for twin in frozen:
        seconds = twin_seconds(plan, twin) * pace
        if seconds > spend:
            continue
        _say(paths, f"spare time: ~{deadline.left():.0f}s left after the planned runs buys {twin} (~{seconds:.0f}s, "
                    "its encoder frozen + LR: a diverse ensemble member)")
        out.append(twin_config(trained[0], twin, paths))
        spend -= seconds
    extra = _spare_fine_tune(trained, plan, spend, pace, paths)
    if extra is not None:
        c, seconds, what = extra
        _say(paths, f"spare time: ~{spend:.0f}s still left buys {what} (~{seconds:.0f}s)")
        out.append(c)
    return out


def _spare_fine_tune(trained: list[Config], plan: Plan, spend: float, pace: float, paths: Paths
                     ) -> tuple[Config, float, str] | None:
    """The fine-tune that fills ``spend``: among the fine-tunes the plan dropped (under their own
    names), else the cheapest fine-tune that ran (as another seed, ``<run>_seed<n>``), the option
    with the best expected score whose seconds at ``pace`` fit."""
    full = fold_train_rows(plan.n_train, plan.n_splits)
    dropped = [n for n in plan.dropped if n in plan.costs and plan.costs[n].available
               and family(plan.costs[n].family).epoch_trained and not plan.run_plan(n)]
    for n in list(dropped):
        if twin := heads_only_beside_a_whole_twin(plan, n):
            dropped.remove(n)
            _say(paths, f"spare time: not {n} (the plan dropped it): on the heads of long texts it is expected to "
                        f"add nothing beside {twin} reading them whole")
    sources: list[tuple[str, Config, str]] = []
    for n in dropped:
        try:
            sources.append((n, twin_config(trained[0], n, paths), f"{n} (the plan dropped it)"))
        except ConfigError:  # its experiment file is gone: nothing to buy
            continue
    if not sources:
        done = sorted((c for c in trained if family(c.train.family).epoch_trained and plan.run_plan(c.train.run)),
                      key=lambda c: plan.run_plan(c.train.run).estimate_s)
        for c in done[:1]:
            seed = c.train.seed + SPARE_SEED
            run = f"{c.train.run}_seed{seed}"
            sources.append((plan.run_plan(c.train.run).name, with_diff(c, {"train": {"run": run, "seed": seed,
                                                                                      "seeds": None}}),
                            f"{run} (another seed of {c.train.run})"))
    for name, c, what in sources:
        best = None
        for e in range(max(c.train.epochs, 1), 0, -1):  # at each epoch count, the most rows that fit
            fit = most_rows(plan, name, c, [None, *row_shares(full)], e, spend, pace)
            if fit is None:
                continue
            n, seconds, sized = fit
            loss = (c.train.epochs - e) * loss_of(plan, "epoch", name) + rows_loss(plan, name, (n or full) / full)
            if best is None or loss < best[0]:
                best = (loss, sized, seconds, f"{what}: {e} epoch(s) on "
                        f"{'all' if n is None else f'{n:,}'} of each fold's {full:,} training rows")
        if best is not None:
            return best[1], best[2], best[3]
    return None


def _say(paths: Paths, msg: str) -> None:
    log.warning("%s", msg)
    update_ledger(paths, lambda led: led.replans.append(msg))


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
        """The plan's seconds for one fold at the pace this run measured."""
        tc, plan = self.tc, self.deadline.plan
        planned = plan.run_plan(tc.run) if plan else None
        pace = own_pace(self.paths, plan, tc.run) or 1.0
        now = config_seconds(plan, planned.name, tc) if planned and family(tc.family).epoch_trained else None
        if now is not None:  # planned for its epochs and rows; re-planned to tc's
            return now / self.n_splits * pace
        return (planned.estimate_s if planned else 0.0) / self.n_splits * pace

    def next_fold(self) -> float:
        """The next fold's seconds: the mean of the folds trained here so far, else the plan's.
        A frozen encoder's first fold also encodes every row (cached for its other folds), so
        once it is done the later folds (a logistic regression each) are what counts: measured
        ones, else the family's per-fold estimate."""
        tc, plan = self.tc, self.deadline.plan
        planned = plan.run_plan(tc.run) if plan else None
        cost = plan.costs.get(planned.name if planned else tc.run) if plan else None
        if cost is not None and family(tc.family).encode_seconds(cost, 1) > 0:
            if len(self.spent) > 1:
                return float(np.mean(self.spent[1:]))
            if self.spent:
                rows = fold_train_rows(plan.n_train, self.n_splits)
                return fold_seconds(cost, rows, 1, tc.max_len, plan.n_train - rows, plan.n_test)
        return float(np.mean(self.spent)) if self.spent else self.per_fold()

    def stop_before(self, k: int, folds_left: int) -> bool:
        """Whether the run stops before fold ``k`` (``folds_left`` folds still to train, k included)."""
        if not self.active:
            return False
        need = self.next_fold()
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
        update_ledger(self.paths, lambda led: led.replans.append(
            f"{self.tc.run}: stopped before fold {k} (needs ~{need:.0f}s, {max(left, 0):.0f}s left)"))
        return True
