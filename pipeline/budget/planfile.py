"""reports/plan.json: made by the plan stage, applied by select, tune and train, kept current.

A plan applies only to the config it was made for (``plan_key``) and, for its clock, only to
the `make` invocation that made it (``clock.Deadline``). ``apply`` layers the plan's shared
settings (``global_diff``) under the user's SET overrides; ``run_diff`` is one run's epochs,
max_len and seeds. Every stage records its actual seconds beside its estimate (``record``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.budget.clock import started
from pipeline.budget.planner import Plan
from pipeline.core.config import FAMILIES, Config, with_diff
from pipeline.core.experiments import candidate_diff
from pipeline.core.files import read_json, write_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import value_digest
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


def global_diff(plan: Plan) -> dict[str, Any]:
    """The plan's settings that every stage shares (applied under the user's SET overrides)."""
    runs = [r.name for r in plan.runs]
    diff: dict[str, Any] = {
        "folds": {"n_splits": plan.n_splits},
        "select": {"candidates": runs, "top_k": max(1, len(runs)), "max_train_rows": plan.select_rows},
        "tune": {"n_trials": max(1, plan.trials if plan.tune_transformers else plan.classical_trials),
                 "families": tuned_families(plan.tune_transformers),
                 **({"timeout_s": plan.tune_timeout_s} if plan.tune_timeout_s else {})},
    }
    if not plan.augment:
        diff["augment"] = {"methods": []}
        diff["train"] = {"augment": []}
    return diff


def tuned_families(fine_tunes: bool) -> list[str]:
    """tune.families under a plan: every family tuned by default, the epoch-trained ones only
    where the plan kept their trials."""
    return [n for n in FAMILIES if family(n).tuned_by_default and (fine_tunes or not family(n).epoch_trained)]


def run_diff(plan: Plan, name: str, seed: int) -> dict[str, Any]:
    """One run's planned epochs (a cap: tuning searches at most that many), max_len and seeds."""
    r = next((r for r in plan.runs if r.name == name), None)
    if r is None or not r.epoch_trained:
        return {}
    lo = min(plan.tune_epochs[0], r.epochs)
    return {"train": {"epochs": r.epochs, "max_len": r.max_len,
                      "seeds": [seed + i for i in range(r.seeds)] if r.seeds > 1 else None,
                      **({"max_train_rows": r.rows} if r.rows else {})},
            "tune": {"epochs": [lo, r.epochs]}}


def planned_diff(cfg: Config, paths: Paths, name: str) -> tuple[dict[str, Any], Path]:
    """A candidate's experiment file, with the plan's settings for it (epochs cap, max_len,
    seeds) layered on top when a plan applies; SET overrides still win."""
    diff, path = candidate_diff(name, paths.root)
    plan = active(cfg)
    if plan and name in {r.name for r in plan.runs}:
        for section, values in run_diff(plan, name, cfg.train.seed).items():
            diff[section] = {**diff.get(section, {}), **values}
    return diff, path


def pinned_keys(cfg: Config) -> list[str]:
    """The section.key names the user set on the command line (SET / --set): never planned over."""
    overrides = getattr(cfg, "_sources", ([], [], []))[2]
    keys = []
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if not key.startswith("budget."):
            keys.append(key)
    return sorted(set(keys))


def plan_key(cfg: Config) -> str:
    """What a plan was made for: the budget and every section it plans over, before planning."""
    return value_digest({s: asdict(getattr(cfg, s)) for s in ("budget", "folds", "select", "tune", "train", "augment")}
                        | {"pinned": pinned_keys(cfg)})


def load_plan(paths: Paths) -> Plan | None:
    return Plan.from_dict(read_json(paths.plan_json)) if paths.plan_json.exists() else None


def apply(cfg: Config, paths: Paths) -> Config:
    """``cfg`` with the plan's shared settings, when a plan was made for exactly this budget and
    config (else unchanged, and said so). The user's SET overrides stay on top."""
    if cfg.budget.time is None:
        return cfg
    plan = load_plan(paths)
    if plan is None:
        log.warning("budget.time=%s but %s is missing: the profile runs as it stands (run `make plan`)",
                    cfg.budget.time, paths.plan_json)
        return cfg
    if plan.key != plan_key(cfg):
        log.warning("%s was made for another budget, preset or config: not applied (run `make plan`)", paths.plan_json)
        return cfg
    applied = with_diff(cfg, plan.diff)
    object.__setattr__(applied, "_plan", plan)
    return applied


def active(cfg: Config) -> Plan | None:
    """The plan ``apply`` put on this config, if any."""
    return getattr(cfg, "_plan", None)


def save_plan(paths: Paths, plan: Plan) -> None:
    write_json(paths.plan_json, plan.to_dict())


def update_plan(paths: Paths, change: Callable[[Plan], None]) -> Plan | None:
    """Read, change and atomically rewrite reports/plan.json, under a lock: `make -jN all` runs
    stages side by side, and two of them recording their seconds must not lose one."""
    if not paths.plan_json.exists():
        return None
    with _locked(paths.plan_json.with_name(".plan.lock")):
        plan = load_plan(paths)
        if plan is None:
            return None
        change(plan)
        save_plan(paths, plan)
    return plan


@contextmanager
def _locked(path: Path) -> Iterator[None]:
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


def record(paths: Paths, stage: str) -> None:
    """The stage's actual seconds beside its estimate: from the previous stage's end to now
    (its python start included), for the `make` invocation that made the plan."""
    plan = load_plan(paths)
    t0 = started()
    if plan is None or t0 is None or plan.t0 != t0 or stage not in plan.stages:
        return
    now = time.time()

    def change(p: Plan) -> None:
        last = p.last_end or (t0 + (p.stages["inspect+clean"].actual_s or 0.0))
        p.stages[stage].actual_s = round(now - last, 1)
        p.last_end = now
        p.elapsed_s = round(now - t0, 1)

    update_plan(paths, change)
