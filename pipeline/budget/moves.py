"""The settings a plan may change, one ``Move`` each: how it cuts a step, how it gives one
back, and what a step is expected to cost in score.

The expected losses are priors (``PRIORS``, the one place they are stated) until this data's
history measured them: an epoch from the per-epoch validation curves of earlier runs of the
same backbone (``history.csv``), a halving of the training rows from earlier runs of it on
row subsamples (``measured_losses``). The plan file lists each figure with where it came
from. The planner cuts and gives back with these moves (``tried``: a move on a copy, kept if
it fits); train's re-plan weighs the run-level ones at the pace a run measured.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.budget.costs import fits, fold_train_rows
from pipeline.budget.plans import MIN_FOLDS, Plan, RunPlan
from pipeline.modeling.families import family

if TYPE_CHECKING:
    from pipeline.core.paths import Paths

# Expected score lost per step where nothing on this data measured it (sources: BENCHMARKS.md "Time budget").
PRIORS = {
    "epoch": 0.004,  # a fine-tune's epoch (MiniLM, disaster tweets, same folds)
    "rows": 0.02,  # a halving of a fine-tune's training rows (one run measured -0.026 at 30%, this says -0.035)
    "twin": 0.035,  # a fine-tune given way to its frozen encoder + LR
    # the same on a text pair, on CPU (a fine-tune of 1-2 epochs): the frozen twin's relation features
    # measured -0.0585 log loss (SE 0.0071) against MiniLM's 1 epoch, +0.0016 (SE 0.0169) against 2 (relation shape)
    "twin_pair": 0.0,
    # the same where the fine-tune reads long texts by their head only (its windows cut) and its twin reads
    # them whole, on CPU: long-document shape at 30 minutes (1ab377b), emb_minilm whole - minilm on heads
    # (2 epochs, max_len 128) +0.118 accuracy (SE 0.014, 5 folds); the stacker weighed minilm 0.05 (tfidf 1.53)
    "twin_long": 0.0,
    "fine_tune": 0.04,  # a fine-tune dropped with nothing in its place (the GPU record: classical only)
    "frozen": 0.003,  # a frozen encoder's worth to the ensemble (two of them: +0.0044, SE 0.0024)
    "max_len": 0.001,  # max_len at inspect's suggestion (it covers 99% of the texts)
    "seeds": 0.002,  # seeds averaged, where the metric scores probabilities (log loss 0.3804 -> 0.3700 for 3)
    "tuning": 0.001,  # a halving of a fine-tune's tuning trials
    "classical_tuning": 0.0005,  # a halving of a classical model's trials (its C)
    "screening": 0.0,  # select ranks every planned run: its rows buy a ranking, not a score
    "augment": 0.0,  # back-translation left TF-IDF's CV unchanged
    # long texts read by their head instead of whole (chunks), on the long-document shape: frozen MiniLM
    # +0.153 accuracy read whole (SE 0.015, 5 folds), MiniLM fine-tuned +0.13 (one split): the smaller
    "reading": 0.13,
}
MIN_SELECT_ROWS = 500
MIN_ROWS_SHARE = 0.3  # a subsampled fine-tune trains on at least this share of each fold's rows ...
MIN_ROWS = 500  # ... and at least this many (below, its frozen twin is the better bet)


@dataclass(frozen=True)
class Expected:
    """An expected score loss, and where the figure comes from ("prior" or what measured it)."""

    value: float
    source: str = "prior"


def priors() -> dict[str, dict[str, Any]]:
    return {k: asdict(Expected(v)) for k, v in PRIORS.items()}


def loss_of(plan: Plan, kind: str, run: str | None = None) -> float:
    """The plan's expected loss of one step of ``kind`` (for ``run``: its own measurement first)."""
    got = plan.losses.get(f"{kind}:{run}") or plan.losses.get(kind)
    return float(got["value"]) if got else PRIORS[kind]


def twin_loss(plan: Plan, r: RunPlan) -> float:
    """A fine-tune's expected loss given way to its frozen twin: on CPU, where the fine-tune reads
    long texts by their head only and its twin reads them whole, ``twin_long``; a text pair's
    prior on CPU (``twin_pair``, measured against 1-2 epochs) only where the run trains that long
    and its epochs are the plan's to change; else the usual prior."""
    v = loss_of(plan, "twin", r.name)
    if reads_heads_beside_a_whole_twin(plan, r):
        return min(v, PRIORS["twin_long"])
    short = r.epochs <= 2 and "train.epochs" not in plan.pinned
    return v if short else max(v, PRIORS["twin"])


def reads_heads_beside_a_whole_twin(plan: Plan, r: RunPlan) -> bool:
    """On CPU, on long texts: a fine-tune whose windows were cut (it reads each text's head) with
    a frozen twin that reads them whole."""
    twin = plan.costs.get(plan.twins.get(r.name, ""))
    return (plan.device == "cpu" and bool(plan.reading.get("long")) and r.epoch_trained and r.ceiling_chunks
            and not READING.chunked(plan, r) and twin is not None and twin.chunks)


def heads_only_beside_a_whole_twin(plan: Plan, name: str) -> str | None:
    """On CPU, on long texts: the planned frozen twin that reads them whole beside fine-tune
    ``name`` (not planned). Bought back on time left over, the fine-tune would read the heads
    only, expected to add nothing beside that twin (``twin_long``; long 30m at 9d15d07: minilm
    bought so on 375 s of spare time, CV accuracy 0.5800 against emb_minilm's 0.7245)."""
    twin = next((r for r in plan.runs if r.name == plan.twins.get(name)), None)
    if plan.device == "cpu" and plan.reading.get("long") and twin is not None and READING.chunked(plan, twin):
        return twin.name
    return None


def rows_loss(plan: Plan, run: str, share: float) -> float:
    """Expected score a fine-tune on ``share`` of its rows loses against all of them."""
    return loss_of(plan, "rows", run) * math.log2(1 / share) if 0 < share < 1 else 0.0


def row_shares(full: int) -> list[int]:
    """The subsample sizes a fine-tune may take, largest first: tenths of ``full`` down to
    MIN_ROWS_SHARE (never below MIN_ROWS)."""
    out = [int(full * k / 10) for k in range(9, round(MIN_ROWS_SHARE * 10) - 1, -1)]
    return [r for r in out if r >= MIN_ROWS]


def tried(plan: Plan, change: Callable[[Plan], str | None]) -> tuple[Plan, str] | None:
    """``change`` on a copy of ``plan``: (the copy, what changed) where it applies and fits."""
    trial = copy.deepcopy(plan)
    what = change(trial)
    return (trial, what) if what and fits(trial) else None


# -- the moves ----------------------------------------------------------------------------------
class Move:
    """One setting the plan may change. ``down`` cuts a step and ``up`` gives one back, in
    place, saying what they did (None: they do not apply); ``loss`` is one step down's cost."""

    kind = ""
    pins: tuple[str, ...] = ()  # the config keys that, set by the user, forbid it
    run_level = False  # a setting of one run (for the costliest fine-tune it applies to)

    def free(self, plan: Plan) -> bool:
        return not set(self.pins) & set(plan.pinned)

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        return None

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        return None

    def loss(self, plan: Plan, r: RunPlan | None = None) -> float:
        return loss_of(plan, self.kind, r.name if r else None)


class Trials(Move):
    kind, pins = "tuning", ("tune.n_trials", "tune.families")

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if not plan.tune_transformers or not any(x.epoch_trained for x in plan.runs):
            return None
        if plan.trials // 2 >= 2:  # one trial is only the hand-set config: not worth its time
            new, old, plan.trials = plan.trials // 2, plan.trials, plan.trials // 2
            return f"tune: {new} trial{'s' if new > 1 else ''} per candidate instead of {old}"
        plan.tune_transformers = False
        return "tune: transformers not tuned (trained with their configs as selected)"


class ClassicalTrials(Move):
    kind, pins = "classical_tuning", ("tune.n_trials", "tune.families")

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        """Halved, then none (tune.families without them); while the transformers are tuned, the
        one tune.n_trials is theirs too, so none at once."""
        if not plan.classical_trials or not any(family(x.family).never_cut for x in plan.runs):
            return None
        old = plan.trials if plan.tune_transformers else plan.classical_trials
        plan.classical_trials = 0 if plan.tune_transformers else plan.classical_trials // 2
        return f"tune: {plan.classical_trials} trial(s) per classical model instead of {old}"


class Screening(Move):
    kind, pins = "screening", ("select.max_train_rows",)

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        old = plan.select_rows
        if old is not None and old <= MIN_SELECT_ROWS:
            return None
        plan.select_rows = max(MIN_SELECT_ROWS, (old // 2) if old else MIN_SELECT_ROWS * 4)
        return f"select: {plan.select_rows:,}-row screening subsample instead of {old if old else 'all rows'}"


class Augment(Move):
    kind, pins = "augment", ("augment.methods", "train.augment")

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if not plan.augment:
            return None
        plan.augment = False
        return "augment: off"


class Count(Move):
    """A whole number of the plan or of a run, a step of one between a floor and its ceiling."""

    attr, ceiling, floor = "", "", 1

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        on = r if self.run_level else plan
        if getattr(on, self.attr) <= self.floor:
            return None
        setattr(on, self.attr, getattr(on, self.attr) - 1)
        return self.said(r, getattr(on, self.attr), cut=True)

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        on = r if self.run_level else plan
        if getattr(on, self.attr) >= getattr(on, self.ceiling):
            return None
        setattr(on, self.attr, getattr(on, self.attr) + 1)
        return self.said(r, getattr(on, self.attr), cut=False)

    def said(self, r: RunPlan | None, n: int, cut: bool) -> str:
        raise NotImplementedError


class Folds(Count):
    kind, pins, attr, ceiling, floor = "rows", ("folds.n_splits",), "n_splits", "ceiling_folds", MIN_FOLDS

    def said(self, r: RunPlan | None, n: int, cut: bool) -> str:
        return (f"folds: {n} instead of {n + 1} (every run; folds.csv follows)" if cut
                else f"folds: {n} again (the cuts after the fold cut left room)")

    def loss(self, plan: Plan, r: RunPlan | None = None) -> float:
        """Each fine-tune's rows per fold shrink from (k-1)/k to (k-2)/(k-1)."""
        k = plan.n_splits
        share = (k - 2) * k / (k - 1) ** 2
        return sum(rows_loss(plan, x.name, share) for x in plan.runs if x.epoch_trained)


class Epochs(Count):
    kind, pins, run_level, attr, ceiling = "epoch", ("train.epochs",), True, "epochs", "ceiling_epochs"

    def said(self, r: RunPlan | None, n: int, cut: bool) -> str:
        return (f"{r.name}: {n} epoch{'s' if n > 1 else ''} instead of {n + 1}" if cut
                else f"{r.name}: {n} epochs again (the cuts after it left room)")


class Seeds(Move):
    kind, pins, run_level = "seeds", ("train.seeds",), True

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if r.seeds <= 1:
            return None
        old, r.seeds = r.seeds, 1
        return f"{r.name}: 1 seed instead of {old}"

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if r.seeds >= r.ceiling_seeds or r.rows:
            return None
        r.seeds += 1
        return f"{r.name}: {r.seeds} seeds again (the cuts after it left room)"


class MaxLen(Move):
    """Down to inspect's suggestion (it covers 99% of the texts); up toward it where the
    fine-tune's config cuts texts that need more (x2 a step, never past its positions)."""

    kind, pins, run_level = "max_len", ("train.max_len",), True

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        s = plan.costs[r.name].suggested_max_len
        if s is None or r.max_len <= s:
            return None
        old, r.max_len = r.max_len, s
        return f"{r.name}: max_len {s} (inspect's suggestion) instead of {old}"

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        c = plan.costs[r.name]
        want = min(c.suggested_max_len or 0, c.max_positions or 1 << 30)
        if r.max_len >= want:
            return None
        old, r.max_len = r.max_len, min(want, r.max_len * 2)
        return f"{r.name}: max_len {r.max_len} instead of {old} (the texts need it, the budget had room)"


class Reading(Move):
    """Long texts read whole, in overlapping windows (train.chunks), or by their head: a run's
    pass costs its windows per text (inspect's ``reading`` and the probe say how many)."""

    kind, pins, run_level = "reading", ("train.chunks", "train.truncation", "train.max_chunks"), True

    def chunked(self, plan: Plan, r: RunPlan) -> bool:
        return r.chunks if r.chunks is not None else plan.costs[r.name].chunks

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if not self.chunked(plan, r):
            return None
        windows = plan.costs[r.name].windows.get(str(r.max_len))
        r.chunks = False
        if reads_heads_beside_a_whole_twin(plan, r) and DROP.free(plan) and (
                DROP.twin(plan, r) or plan.twins[r.name] in {x.name for x in plan.runs}):
            # on CPU a fine-tune on the heads loses to its twin reading whole (twin_long): not kept for its heads
            return (f"{DROP.down(plan, r)}: reading every window ({windows or 0:.1f} a text) does not fit, and on "
                    "the heads only it is expected to lose to its twin reading them whole")
        return (f"{r.name}: reads the head of long texts only instead of every window"
                + (f" ({windows:.1f} a text)" if windows else ""))

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if not r.ceiling_chunks or self.chunked(plan, r):
            return None
        r.chunks = True
        return f"{r.name}: reads long texts whole again (the cuts after it left room)"


class Rows(Move):
    """A fine-tune on a subsample of each fold's rows: a tenth of them a step (down to MIN_ROWS_SHARE)."""

    kind, pins, run_level = "rows", ("train.max_train_rows",), True

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        full = fold_train_rows(plan.n_train, plan.n_splits)
        sizes = [n for n in row_shares(full) if n < (r.rows or full)]
        if not sizes:
            return None
        r.rows = sizes[0]
        return (f"{r.name}: {r.rows:,} of each fold's {full:,} training rows ({r.rows / full:.0%}; expected "
                f"-{rows_loss(plan, r.name, r.rows / full):.3f}) instead of dropping it")

    def up(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if r.rows is None:
            return None
        full = fold_train_rows(plan.n_train, plan.n_splits)
        bigger = [n for n in row_shares(full) if n > r.rows]
        r.rows = bigger[-1] if bigger else None
        return f"{r.name}: {f'{r.rows:,}' if r.rows else 'all'} of each fold's {full:,} training rows (the cuts after " \
               "it left room)"

    def loss(self, plan: Plan, r: RunPlan | None = None) -> float:
        full = fold_train_rows(plan.n_train, plan.n_splits)
        sizes = [n for n in row_shares(full) if n < (r.rows or full)]
        return rows_loss(plan, r.name, sizes[0] / full) - rows_loss(plan, r.name, (r.rows or full) / full) \
            if sizes else math.inf


class Drop(Move):
    """A run dropped: a fine-tune gives way to its frozen twin where it has one (one forward
    pass instead of training), a frozen encoder goes."""

    kind, pins, run_level = "frozen", ("select.candidates",), True

    def twin(self, plan: Plan, r: RunPlan) -> str | None:
        alt = plan.twins.get(r.name)
        c = plan.costs.get(alt) if alt else None
        ok = r.epoch_trained and c is not None and c.available
        return alt if ok and alt not in {x.name for x in plan.runs} and alt not in plan.dropped else None

    def down(self, plan: Plan, r: RunPlan | None = None) -> str | None:
        if family(r.family).never_cut:
            return None
        i = plan.runs.index(r)
        plan.runs.remove(r)
        plan.dropped.append(r.name)
        alt = self.twin(plan, r)
        if alt:
            whole = plan.costs[alt].chunks and bool(plan.reading.get("long"))  # its windows a cut may take and give back
            plan.runs.insert(i, RunPlan(alt, plan.costs[alt].family, max_len=plan.costs[alt].max_len,
                                        chunks=True if whole else None, ceiling_chunks=whole))
            return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s); {alt} (its encoder frozen + LR) instead"
        return f"{r.name}: dropped (estimated {r.estimate_s:.0f}s)"

    def loss(self, plan: Plan, r: RunPlan | None = None) -> float:
        if not r.epoch_trained:
            return loss_of(plan, "frozen")
        return twin_loss(plan, r) if self.twin(plan, r) else loss_of(plan, "fine_tune")


TRIALS, CLASSICAL_TRIALS, SCREENING, AUGMENT = Trials(), ClassicalTrials(), Screening(), Augment()
FOLDS, SEEDS, EPOCHS, MAX_LEN, ROWS, DROP = Folds(), Seeds(), Epochs(), MaxLen(), Rows(), Drop()
READING = Reading()
MOVES = (TRIALS, SCREENING, AUGMENT, SEEDS, EPOCHS, MAX_LEN, FOLDS, READING, ROWS, DROP,
         CLASSICAL_TRIALS)  # the CPU's order


def targets(plan: Plan, move: Move) -> list[RunPlan | None]:
    """What ``move`` may change: the plan, or its runs costliest first (fine-tunes, except a drop)."""
    if not move.run_level:
        return [None]
    runs = [r for r in plan.runs if r.epoch_trained or move is DROP or
            (move is READING and family(r.family).uses_backbone)]
    return sorted(runs, key=lambda r: (r.estimate_s, r.name), reverse=True)


def step(move: Move, name: str | None, up: bool = False) -> Callable[[Plan], str | None]:
    """The change ``move`` makes to run ``name`` (None: to the plan) of the plan it is given."""

    def change(p: Plan) -> str | None:
        target = p.named(name) if name else None
        return move.up(p, target) if up else move.down(p, target)

    return change


# -- what this data's history measured ----------------------------------------------------------
def measured_losses(paths: Paths, fine_tunes: dict[str, str], metric: str, n_train: int) -> dict[str, dict[str, Any]]:
    """Per fine-tune candidate (name -> backbone): an epoch's worth from the per-epoch validation
    curves of earlier runs of its backbone on this data, and a halving of its rows from earlier
    runs of it on different row subsamples, where those exist."""
    from pipeline.core.metrics import metric_of

    sign = float(metric_of(metric).sign) if metric else 1.0  # a plan made before the metric was known
    out: dict[str, dict[str, Any]] = {}
    for name, backbone in fine_tunes.items():
        runs = _runs_of(paths, backbone)
        gains = [g for _, h, _ in runs if (g := _epoch_gain(h)) is not None]
        if gains:
            out[f"epoch:{name}"] = asdict(Expected(round(max(0.0, sign * float(np.mean(gains))), 5), "measured: the "
                                                  f"epoch curves of {', '.join(r for r, _, _ in runs)} (history.csv)"))
        points = [(math.log2(min(1.0, (t.get("max_train_rows") or 1e12) / fold_train_rows(n_train, n))), cv)
                  for _, _, (t, n, cv) in runs if cv is not None]
        if len({x for x, _ in points}) >= 2:
            slope = float(np.polyfit([x for x, _ in points], [y for _, y in points], 1)[0])
            out[f"rows:{name}"] = asdict(Expected(round(max(0.0, sign * slope), 5), "measured: CV of "
                                                  f"{', '.join(r for r, _, _ in runs)} on their row subsamples"))
    return out


def _runs_of(paths: Paths, backbone: str) -> list[tuple[str, Any, tuple[dict[str, Any], int, float | None]]]:
    import pandas as pd
    import yaml

    from pipeline.core.files import read_json

    out = []
    for run in paths.runs_with_cv():
        try:
            cfg = yaml.safe_load(run.config.read_text()) or {}
            t = cfg.get("train", {})
            if t.get("backbone") != backbone:
                continue
            out.append((run.dir.name, pd.read_csv(run.history),
                        (t, int(cfg.get("folds", {}).get("n_splits", 5)), read_json(run.cv).get("cv"))))
        except (OSError, ValueError, KeyError, AttributeError):
            continue
    return out


def _epoch_gain(h: Any) -> float | None:
    ev = h[(h["kind"] == "eval") & h["metric"].notna()]
    curve = ev.assign(e=ev["epoch"].round()).groupby("e")["metric"].mean()
    return float(np.mean(np.diff(curve.to_numpy()))) if len(curve) >= 2 else None
