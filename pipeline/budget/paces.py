"""reports/paces.json: what a machine measured for the plan, to plan on it again or from elsewhere.

It holds each candidate's costs (the probes), each stage's own cost (``StageCosts``: a
model stage's process start, a GPU's first use, the stages without models) and what ran before
the plan (inspect + clean, the plan's probes), with the machine and data they were measured
on. `make all` writes it, and the ledger of each finished stage teaches it (``learn``, kept
beside the probes in data/interim/throughput.json); `make plan PACES=<file> TIME=...` plans
from one instead of measuring: what a budget buys on a machine you are not on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.budget.costs import StageCosts
from pipeline.budget.plans import Ledger, Plan, build, locked
from pipeline.core.config import ConfigError
from pipeline.core.files import read_json, write_json
from pipeline.core.paths import Paths
from pipeline.modeling.base import Cost

log = logging.getLogger(__name__)
VERSION = 1


def machine() -> dict[str, Any]:
    """This machine, as far as the plan's figures depend on it."""
    import os
    import platform

    import torch

    gpu = torch.cuda.is_available()
    return {"device": "cuda" if gpu else "cpu", "gpus": torch.cuda.device_count() if gpu else 0,
            "name": torch.cuda.get_device_name(0) if gpu else (platform.processor() or platform.machine()),
            "cores": os.cpu_count() or 1, "threads": torch.get_num_threads(), "torch": torch.__version__}


def key(m: dict[str, Any]) -> str:
    return f"stages:{m['device']}:{m['name']}:{m['cores']}:{m['threads']}"


def first_use_s() -> float | None:
    """A GPU's first use in a fresh process: transformers' import and the device's context (what
    select, tune and train each pay before their first fine-tune's step; torch's own import is
    a stage's start)."""
    import subprocess
    import sys

    code = ("import time; import torch; t = time.perf_counter(); import transformers; torch.zeros(1, device='cuda'); "
            "torch.cuda.synchronize(); print(time.perf_counter() - t)")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return round(float(out.stdout.strip().splitlines()[-1]), 2) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):  # not measured: the prior stands
        return None


def stage_costs(cache: dict[str, Any], m: dict[str, Any]) -> StageCosts:
    """This machine's stage costs: what its ledgers taught (the cache), else priors; a GPU's
    first use measured once."""
    sc = StageCosts.of(cache.get(key(m)))
    sc.cores, sc.machine = m["cores"], key(m)
    if m["device"] == "cuda" and "first_use_s" not in sc.measured and (seconds := first_use_s()) is not None:
        sc.first_use_s = seconds
        sc.measured["first_use_s"] = f"measured by the plan stage on {time.strftime('%Y-%m-%d')}"
        cache[key(m)] = sc.to_dict()
    return sc


def write(paths: Paths, plan: Plan, m: dict[str, Any], data: dict[str, Any], probes: dict[str, str]) -> None:
    """reports/paces.json from the plan this stage made here (``probes``: where each cost came from)."""
    before = plan.stages.get("inspect+clean", 0.0)
    write_json(paths.paces_json, {
        "version": VERSION, "recorded": time.strftime("%Y-%m-%d %H:%M"), "machine": m, "data": data,
        "before_s": before, "plan_s": plan.stages.get("plan", 0.0), "stages": StageCosts.of(plan.fixed).to_dict(),
        "costs": {n: asdict(c) for n, c in plan.costs.items()},
        "sources": {"costs": probes, "before_s": "inspect + clean, as they ran before this plan",
                    "plan_s": "the plan stage's probes, as they ran"}})


def read(path: str | Path) -> dict[str, Any]:
    """A paces file, checked: one line naming the file where it is not one."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"budget.paces: {path} not found (make all writes reports/paces.json)")
    try:
        d = read_json(path)
    except ValueError as e:
        raise ConfigError(f"budget.paces: {path} is not JSON ({e})") from None
    if not isinstance(d, dict) or d.get("version") != VERSION or not isinstance(d.get("costs"), dict):
        raise ConfigError(f"budget.paces: {path} is not a paces file of version {VERSION} (no 'costs')")
    return d


def costs_of(d: dict[str, Any], names: list[str]) -> dict[str, Cost]:
    """The candidates' costs as the file has them (a candidate it lacks: not available there)."""
    out = {}
    for n in names:
        c = d["costs"].get(n)
        out[n] = build(Cost, c) if c else Cost(n, "?", available=False, why="not in the paces file")
    return out


def learn(paths: Paths, plan: Plan, ledger: Ledger, stage: str) -> None:
    """A finished stage's seconds, taught to this machine's stage costs (a light stage's whole,
    a model stage's start: its actual less its models' own seconds), for the next plan here."""
    m = plan.fixed.get("machine")  # paces.key of the machine the plan was made on
    actual = ledger.stages.get(stage)
    if plan.paces or not m or actual is None or (stage == "augment" and plan.augment):
        return
    models_s = 0.0
    if stage == "select" and paths.selection_csv.exists():
        import pandas as pd

        models_s = float(pd.read_csv(paths.selection_csv)["seconds"].fillna(0).sum())
    elif stage == "train":
        models_s = sum(r.actual_s or 0.0 for r in ledger.runs.values())
    with locked(paths.plan_json.with_name(".plan.lock")):
        cache = read_json(paths.throughput_json) if paths.throughput_json.exists() else {}
        sc = StageCosts.of(cache.get(m) or plan.fixed)  # what this machine knew, else what the plan assumed
        sc.learn(stage, actual, len(plan.runs), plan.n_train, models_s, f"this machine's {stage} of "
                 f"{time.strftime('%Y-%m-%d')}")
        cache[m] = sc.to_dict()
        write_json(paths.throughput_json, cache)
        if paths.paces_json.exists():
            write_json(paths.paces_json, {**read_json(paths.paces_json), "stages": sc.to_dict()})
