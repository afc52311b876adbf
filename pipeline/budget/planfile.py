"""reports/plan.json: made by the plan stage, applied by select, tune and train; its ledger kept
current as the stages run.

A plan applies only to the config it was made for (``plan_key``) and, for its clock, only to
the `make` invocation that made it (``clock.Deadline``). ``apply`` layers the plan's shared
settings (``global_diff``) under the user's SET overrides; ``run_diff`` is one run's epochs,
max_len and seeds. Every stage records its actual seconds in the ledger (``record``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.budget import paces
from pipeline.budget.clock import started
from pipeline.budget.plans import Ledger, Plan, from_file, locked, to_file
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
                 "families": tuned_families(plan.tune_transformers, plan.classical_trials > 0),
                 **({"timeout_s": plan.tune_timeout_s} if plan.tune_timeout_s else {})},
    }
    if not plan.augment:
        diff["augment"] = {"methods": []}
        diff["train"] = {"augment": []}
    return diff


def tuned_families(fine_tunes: bool, classical: bool = True) -> list[str]:
    """tune.families under a plan: every family tuned by default, the epoch-trained ones only
    where the plan kept their trials, the others where it kept theirs."""
    return [n for n in FAMILIES if family(n).tuned_by_default
            and (fine_tunes if family(n).epoch_trained else classical)]


def run_diff(plan: Plan, name: str, seed: int, stride: int = 32) -> dict[str, Any]:
    """One run's planned epochs (a cap: tuning searches at most that many), max_len and seeds;
    where it reads long texts in windows at a max_len that leaves its ``stride`` (the tokens two
    windows share) no room (train.stride must be below half of max_len: 32 at max_len 64 is
    not), the windows share a quarter of max_len instead: fewer windows than the plan costed."""
    r = next((r for r in plan.runs if r.name == name), None)
    if r is None:
        return {}
    overlap = {"stride": r.max_len // 4} if r.chunks and stride >= r.max_len // 2 else {}
    if not r.epoch_trained:  # a frozen encoder: how it reads long texts, where the plan decided it
        return {"train": {"chunks": r.chunks, **overlap}} if r.chunks is not None else {}
    lo = min(plan.tune_epochs[0], r.epochs)
    return {"train": {"epochs": r.epochs, "max_len": r.max_len,
                      "seeds": [seed + i for i in range(r.seeds)] if r.seeds > 1 else None,
                      **({"max_train_rows": r.rows} if r.rows else {}),
                      **({"chunks": r.chunks} if r.chunks is not None else {}), **overlap},
            "tune": {"epochs": [lo, r.epochs]}}


def planned_diff(cfg: Config, paths: Paths, name: str) -> tuple[dict[str, Any], Path]:
    """A candidate's experiment file, with the plan's settings for it (epochs cap, max_len,
    seeds) layered on top when a plan applies; SET overrides still win."""
    diff, path = candidate_diff(name, paths.root)
    plan = active(cfg)
    if plan and name in {r.name for r in plan.runs}:
        stride = diff.get("train", {}).get("stride", cfg.train.stride)
        for section, values in run_diff(plan, name, cfg.train.seed, stride).items():
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


def load(paths: Paths) -> tuple[Plan, Ledger] | None:
    return from_file(read_json(paths.plan_json)) if paths.plan_json.exists() else None


def load_plan(paths: Paths) -> Plan | None:
    got = load(paths)
    return got[0] if got else None


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


def save(paths: Paths, plan: Plan, ledger: Ledger) -> None:
    write_json(paths.plan_json, to_file(plan, ledger))


def update_ledger(paths: Paths, change: Callable[[Ledger], None]) -> tuple[Plan, Ledger] | None:
    """Read, change and atomically rewrite the ledger in reports/plan.json, under the lock."""
    if not paths.plan_json.exists():
        return None
    with locked(paths.plan_json.with_name(".plan.lock")):
        got = load(paths)
        if got is None:
            return None
        change(got[1])
        save(paths, *got)
    return got


def record(paths: Paths, stage: str) -> None:
    """The stage's actual seconds beside its estimate: from the previous stage's end to now
    (its python start included), for the `make` invocation that made the plan; what it teaches
    about this machine's stage costs goes where the probes are kept (``paces.learn``)."""
    plan = load_plan(paths)
    t0 = started()
    if plan is None or t0 is None or plan.t0 != t0 or stage not in plan.stages:
        return
    now = time.time()

    def change(led: Ledger) -> None:
        last = led.last_end or (t0 + led.stages.get("inspect+clean", 0.0))
        led.stages[stage] = round(now - last, 1)
        led.last_end = now
        led.elapsed_s = round(now - t0, 1)

    got = update_ledger(paths, change)
    if got is not None:
        paces.learn(paths, *got, stage)
