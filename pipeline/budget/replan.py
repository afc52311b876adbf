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
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget.clock import Deadline, disturbed
from pipeline.budget.planfile import update_plan
from pipeline.budget.planner import Plan
from pipeline.core.config import Config, ConfigError, TrainConfig, with_diff
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


# What the plan expects an option to cost in score when nothing measured says: the disaster
# tweets' MiniLM scored 0.8013 CV F1 after 1 epoch and 0.8048 after 2 (BENCHMARKS.md); its
# frozen twin + LR scored 0.7749 against the fine-tune's 0.8101; max_len at inspect's
# suggestion keeps 99% of the texts whole.
EPOCH_PRIOR = 0.004  # score per epoch cut
TWIN_PRIOR = 0.035  # a fine-tune's score over its frozen encoder + LR
MAX_LEN_PRIOR = 0.001  # cutting max_len to the suggestion


@dataclass
class Option:
    """One way to run (or not run) the next fine-tune: what it costs and what it should score."""

    what: str
    seconds: float  # at the measured pace
    loss: float  # expected score below the plan's own choice (0: the plan as made)
    diff: dict[str, Any] | None = None  # the run's config diff (None: skipped)
    twin: str | None = None  # the frozen-encoder run trained instead


def epoch_gain(paths: Paths, backbone: str) -> float:
    """What an epoch adds, from the per-epoch validation curves of earlier runs of this backbone
    on this data (models/*/history.csv); EPOCH_PRIOR where none has two epochs."""
    gains = []
    for run in paths.runs_with_cv():
        try:
            if yaml_train(run.config).get("backbone") != backbone:
                continue
            h = pd.read_csv(run.history)
        except (OSError, ValueError):
            continue
        ev = h[(h["kind"] == "eval") & h["metric"].notna()]
        curve = ev.assign(e=ev["epoch"].round()).groupby("e")["metric"].mean()
        if len(curve) >= 2:
            gains.append(float(np.mean(np.diff(curve.to_numpy()))))
    return max(0.0, float(np.mean(gains))) if gains else EPOCH_PRIOR


def yaml_train(path: Any) -> dict[str, Any]:
    import yaml

    return (yaml.safe_load(path.read_text()) or {}).get("train", {})


def options(c: Config, own: float, per_epoch: float, deadline: Deadline, paths: Paths,
            pinned: list[str]) -> list[Option]:
    """The real ways to make the next fine-tune fit: fewer epochs, a max_len cut to inspect's
    suggestion, its frozen twin, skipping it; each costed at the measured pace and scored by
    what has been measured (this backbone's epoch curves, the twin's screening), else a prior."""
    from pipeline.budget.planner import FALLBACK

    tc, plan = c.train, deadline.plan
    out = [Option(f"{tc.epochs} epoch(s) as planned", own, 0.0, {})]
    gain = epoch_gain(paths, tc.backbone)
    if "train.epochs" not in pinned:
        for e in range(tc.epochs - 1, 0, -1):
            out.append(Option(f"{e} epoch(s) instead of {tc.epochs}", own - (tc.epochs - e) * per_epoch,
                              (tc.epochs - e) * gain, {"train": {"epochs": e}}))
    planned = plan.run_plan(tc.run) if plan else None
    cost = plan.costs.get(planned.name) if plan and planned else None
    if cost and cost.suggested_max_len and tc.max_len > cost.suggested_max_len and "train.max_len" not in pinned:
        scale = cost.length_scale(cost.suggested_max_len)
        out.append(Option(f"max_len {cost.suggested_max_len} instead of {tc.max_len}", own * scale, MAX_LEN_PRIOR,
                          {"train": {"max_len": cost.suggested_max_len}}))
    twin = FALLBACK.get(planned.name) if planned else None
    if plan and twin and twin in plan.costs and plan.costs[twin].available and not plan.run_plan(twin):
        out.append(Option(f"{twin} (its encoder frozen + LR) instead", twin_seconds(plan, twin) * deadline.slowdown(),
                          TWIN_PRIOR, None, twin))
    out.append(Option("skipped", 0.0, float("inf"), None))
    return out


def twin_seconds(plan: Plan, name: str) -> float:
    """A planned-out candidate's seconds on this plan's data and folds (its measured costs)."""
    from pipeline.budget.costs import Work, run_seconds
    from pipeline.budget.planner import RunPlan

    cost = plan.costs[name]
    return run_seconds(cost, RunPlan(name, cost.family, max_len=cost.max_len), Work(plan.n_train, plan.n_test),
                       plan.n_splits, False)


def config_seconds(plan: Plan, name: str, tc: TrainConfig) -> float | None:
    """Candidate ``name``'s seconds on this plan's data and folds when trained as ``tc`` says
    (its epochs, max_len, seeds and row subsample), from its measured costs (one process);
    the planned run's own estimate rescaled by the same ratio where the plan has it (so what
    the plan knew beyond the costs, several processes, carries over). None without costs."""
    from pipeline.budget.costs import Work, run_seconds
    from pipeline.budget.planner import RunPlan

    cost = plan.costs.get(name)
    if cost is None or not plan.n_train:
        return None
    work = Work(plan.n_train, plan.n_test)
    run = RunPlan(name, cost.family, epochs=tc.epochs, max_len=tc.max_len, seeds=len(tc.seeds or [0]),
                  rows=tc.max_train_rows)
    new = run_seconds(cost, run, work, plan.n_splits, plan.augment)
    planned = next((r for r in plan.runs if r.name == name), None)
    if planned is None or not planned.estimate_s:
        return new
    base = run_seconds(cost, planned, work, plan.n_splits, plan.augment)
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


def _rows_options(c: Config, plan: Plan | None, pace: float, room: float, gain: float, pinned: list[str]
                  ) -> list[Option]:
    """The fine-tune on a subsample of each fold's rows: per epoch count, the largest share
    (tenths, down to MIN_ROWS_SHARE) whose seconds at ``pace`` fit ``room``."""
    from pipeline.budget.planner import fold_train_rows, row_shares, rows_loss

    planned = plan.run_plan(c.train.run) if plan else None
    if planned is None or "train.max_train_rows" in pinned or not plan.n_train:
        return []
    full = fold_train_rows(plan.n_train, plan.n_splits)
    epochs = [c.train.epochs] + ([] if "train.epochs" in pinned else list(range(c.train.epochs - 1, 0, -1)))
    sizes: list[int | None] = [n for n in row_shares(full) if not c.train.max_train_rows or n < c.train.max_train_rows]
    out = []
    for e in epochs:
        fit = most_rows(plan, planned.name, c, sizes, e, room, pace)
        if fit is not None:
            n, seconds, _ = fit
            out.append(Option(f"{n:,} of each fold's {full:,} rows ({n / full:.0%}), {e} epoch(s)", seconds,
                              (c.train.epochs - e) * gain + rows_loss(n / full),
                              {"train": {"epochs": e, "max_train_rows": n}}))
    return out


def replan(c: Config, remaining: list[Config], deadline: Deadline, paths: Paths,
           pinned: list[str]) -> Config | None:
    """The run about to start as the time left allows: ``c`` itself, ``c`` changed (epochs,
    max_len), its frozen twin's config, or None (skipped); runs of a family the planner never
    cuts are never cut here either. A shortfall within the tolerance (the fold guard's grace:
    the margin's half) keeps the plan; a larger one takes the option with the least expected
    score lost among those that fit; time to spare gives back epochs the plan cut."""
    fam = family(c.train.family)
    if fam.never_cut:
        return c
    pace = {r.train.run: measured_pace(paths, deadline, r.train.run, say=r.train.run == c.train.run)
            or deadline.slowdown() for r in remaining}  # read once: select's table does not change here
    need = sum((planned_seconds(deadline, r.train.run) or 0.0) * pace[r.train.run] for r in remaining)
    own = (planned_seconds(deadline, c.train.run) or 0.0) * pace[c.train.run]
    left = deadline.left()
    planned = deadline.plan.run_plan(c.train.run) if deadline.plan else None
    per_epoch = (planned.epoch_s if planned is not None and planned.epoch_s is not None
                 else own / max(c.train.epochs, 1)) * pace[c.train.run]  # what an epoch adds (or takes away)
    head = (f"re-plan: {c.train.run} measured at x{pace[c.train.run]:.2f} its planned pace; the {len(remaining)} "
            f"run(s) left then need ~{need:.0f}s, {max(left, 0):.0f}s left before ensemble/submit/report")
    if need <= left:
        if fam.epoch_trained and c.train.max_train_rows and "train.max_train_rows" not in pinned:
            bigger, seconds = _more_rows(c, need - own, left - deadline.grace() / 2, pace[c.train.run], deadline.plan,
                                         head, paths)
            if bigger is not c:  # what the run and one more epoch of it now cost
                one_more = config_seconds(deadline.plan, planned.name, with_diff(
                    bigger, {"train": {"epochs": bigger.train.epochs + 1}}).train) or 0.0
                need, c = need - own + seconds, bigger
                per_epoch = max(per_epoch, one_more * pace[c.train.run] - seconds)
        return _give_back(c, need, left, per_epoch, planned, fam.epoch_trained and "train.epochs" not in pinned, head,
                          paths)
    if need - left <= deadline.grace():
        _say(paths, f"{head} -> the plan kept: {need - left:.0f}s short, within the {deadline.grace():.0f}s the "
                    "margin keeps for estimation error (the fold guard stops a run that would overrun more)")
        return c
    rest = need - own  # what the runs after this one need
    opts = options(c, own, per_epoch, deadline, paths, pinned) if fam.epoch_trained else \
        [Option("as planned", own, 0.0, {}), Option("skipped", 0.0, float("inf"), None)]
    if fam.epoch_trained:
        opts[-1:-1] = _rows_options(c, deadline.plan, pace[c.train.run], left - rest, epoch_gain(paths, c.train.backbone),
                                    pinned)
    fits = [o for o in opts if rest + o.seconds <= left] or [opts[-1]]
    best = min(fits, key=lambda o: (o.loss, o.seconds))
    numbers = "; ".join(f"{o.what}: ~{o.seconds:.0f}s, -{o.loss:.4f} expected" for o in opts if o.what != "skipped")
    _say(paths, f"{head} -> {c.train.run}: {best.what} (options: {numbers})")
    if best.twin is not None:
        return twin_config(c, best.twin, paths)
    return None if best.diff is None else (c if not best.diff else with_diff(c, best.diff))


def twin_config(c: Config, twin: str, paths: Paths) -> Config:
    """``c``'s run given way to ``twin`` (its experiment file), on the folds select/tune spent alike."""
    from pipeline.core.experiments import candidate_diff

    diff = candidate_diff(twin, paths.root)[0]
    diff["train"] = {**diff.get("train", {}), "searched_folds": list(c.train.searched_folds)}
    return with_diff(c, diff)


def stage_pace(done: list[tuple[Config, float]], plan: Plan | None) -> float | None:
    """Actual / estimated seconds of the runs this train stage trained (each costed at the
    config it ran with), where they add up to a minute or more: the newest evidence of this
    machine's pace. (A busy loop that slowed the probes and select for 5 minutes and then
    stopped made the stages' ratio, x1.56, forbid a frozen twin that the runs' own pace,
    x0.82, had room for.)"""
    if plan is None:
        return None
    est = act = 0.0
    for c, seconds in done:
        planned = plan.run_plan(c.train.run)
        name = planned.name if planned else c.train.run
        e = config_seconds(plan, name, c.train) if family(c.train.family).epoch_trained else \
            (planned.estimate_s if planned else None)
        if e:
            est, act = est + e, act + seconds
    return act / est if act >= 60 and est > 0 else None


def spare_runs(trained: list[Config], deadline: Deadline, paths: Paths, pace: float | None = None) -> list[Config]:
    """What time left after the last planned run buys, before ensemble, submit and report must
    start (less half the tolerance), each while it fits and said in one line: the frozen-encoder
    twin of each fine-tune that ran and the frozen encoders the plan dropped, cheapest first;
    then one more fine-tune sized to what is still left (the best expected score among its
    epochs and row subsamples): a fine-tune the plan dropped, else another seed of one that ran.
    Each is costed at ``pace`` (``stage_pace``), else at the stages' slowdown so far."""
    from pipeline.budget.planner import FALLBACK

    plan, out = deadline.plan, []
    if plan is None or deadline.end is None or not trained:
        return out
    names = {c.train.run for c in trained}
    ran = {p.name for p in plan.runs if p.run_name in names}
    frozen = {FALLBACK[p.name] for p in plan.runs if p.epoch_trained and p.name in ran and p.name in FALLBACK}
    frozen |= {n for n in plan.dropped if n in plan.costs and not family(plan.costs[n].family).epoch_trained}
    frozen = sorted((n for n in frozen if n in plan.costs and plan.costs[n].available and not plan.run_plan(n)),
                    key=lambda n: twin_seconds(plan, n))
    spend = deadline.left() - deadline.grace() / 2
    pace = pace or deadline.slowdown()
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


SPARE_SEED = 1000  # a spare seed run's seed: the source's + this (fold k: + k; its row subsample too)


def _spare_fine_tune(trained: list[Config], plan: Plan, spend: float, pace: float, paths: Paths
                     ) -> tuple[Config, float, str] | None:
    """The fine-tune that fills ``spend``: among the fine-tunes the plan dropped (under their own
    names), else the cheapest fine-tune that ran (as another seed, ``<run>_seed<n>``), the option
    with the best expected score (ROWS_PRIOR, EPOCH_PRIOR) whose seconds at ``pace`` fit."""
    from pipeline.budget.planner import fold_train_rows, row_shares, rows_loss

    full = fold_train_rows(plan.n_train, plan.n_splits)
    dropped = [n for n in plan.dropped if n in plan.costs and plan.costs[n].available
               and family(plan.costs[n].family).epoch_trained and not plan.run_plan(n)]
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
            loss = (c.train.epochs - e) * EPOCH_PRIOR + rows_loss((n or full) / full)
            if best is None or loss < best[0]:
                best = (loss, sized, seconds, f"{what}: {e} epoch(s) on "
                        f"{'all' if n is None else f'{n:,}'} of each fold's {full:,} training rows")
        if best is not None:
            return best[1], best[2], best[3]
    return None


def _more_rows(c: Config, rest: float, aim: float, pace: float, plan: Plan | None, head: str, paths: Paths
               ) -> tuple[Config, float]:
    """A subsampled fine-tune's rows back, as many as fit ``aim`` beside the ``rest`` of the
    runs (all of them, else the largest tenth of its fold's rows), and its seconds then."""
    from pipeline.budget.planner import fold_train_rows, row_shares

    planned = plan.run_plan(c.train.run) if plan else None
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


def _give_back(c: Config, need: float, left: float, per_epoch: float, planned: Any, can_change: bool, head: str,
               paths: Paths) -> Config:
    epochs = c.train.epochs
    ceiling = planned.ceiling_epochs if planned else epochs
    while can_change and epochs < ceiling and need + per_epoch <= left:
        epochs, need = epochs + 1, need + per_epoch
    if epochs == c.train.epochs:
        return c
    _say(paths, f"{head} -> {c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}")
    return with_diff(c, {"train": {"epochs": epochs}})


def _say(paths: Paths, msg: str) -> None:
    log.warning("%s", msg)
    update_plan(paths, lambda p: p.replans.append(msg))


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
        now = config_seconds(d.plan, planned.name, tc) if planned and family(tc.family).epoch_trained else None
        if now is not None:  # planned for its epochs and rows; re-planned to tc's
            return now / self.n_splits * pace
        if family(tc.family).epoch_trained:  # planned for its epochs; re-planned to tc.epochs
            return est / self.n_splits * pace * tc.epochs / max(planned.epochs if planned else 1, 1)
        return est / self.n_splits * pace

    def next_fold(self) -> float:
        """The next fold's seconds: the mean of the folds trained here so far, else the plan's.
        A frozen encoder's first fold also encodes every row (cached for its other folds), so
        once it is done the later folds (a logistic regression each) are what counts: measured
        ones, else the family's per-fold estimate. (The first fold's 48 s once stopped a frozen
        MiniLM bought by spare time, whose second fold took 2 s.)"""
        tc, d = self.tc, self.deadline
        planned = d.plan.run_plan(tc.run) if d.plan else None
        name = planned.name if planned else tc.run
        cost = d.plan.costs.get(name) if d.plan else None
        fam = family(tc.family)
        if cost is not None and fam.encode_seconds(cost, 1) > 0:
            if len(self.spent) > 1:
                return float(np.mean(self.spent[1:]))
            if self.spent:
                from pipeline.budget.costs import fold_seconds
                from pipeline.budget.planner import fold_train_rows

                rows = fold_train_rows(d.plan.n_train, self.n_splits)
                pace = measured_pace(self.paths, d, tc.run) or d.slowdown()
                return fold_seconds(cost, rows, 1, tc.max_len, d.plan.n_train - rows, d.plan.n_test) * pace
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
        update_plan(self.paths, lambda p: p.replans.append(
            f"{self.tc.run}: stopped before fold {k} (needs ~{need:.0f}s, {max(left, 0):.0f}s left)"))
        return True
