"""tune: Optuna search over the selected candidates' hyper-parameters, with pruning.

Usage: python -m pipeline tune [--set tune.n_trials=20 tune.storage=postgresql://user:pw@host/db]
Reads:  reports/selected.json, clean data, folds.csv
Writes: tune/<run>/{trials.csv, best.json, history.png, importance.png}, the study in
        tune/<run>/study.db (or tune.storage), configs/generated/<run>.yaml and
        reports/runs.json (the runs train --plan trains)

The study lives in its storage, so a crashed search resumes where it stopped, and several
machines pointed at one RDB URL (PostgreSQL) share one study: each runs `make tune` and
Optuna hands out trials. Trials report each validation pass so the pruner can stop bad
ones early (median or Hyperband).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.config import Config, dump_yaml, with_diff
from pipeline.core.contract import Schema
from pipeline.core.files import DataError, read_json, save_figure, write_csv, write_json, write_text
from pipeline.core.metrics import metric_of
from pipeline.core.paths import Paths
from pipeline.core.transaction import Transaction, inputs_of, publish, require, value_digest
from pipeline.cv.data import load_training_data
from pipeline.cv.runs import train_fold
from pipeline.modeling.families import family

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


def make_pruner(kind: str) -> optuna.pruners.BasePruner:
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def storage_url(cfg: Config, paths: Paths, run: str) -> str:
    if cfg.tune.storage:
        return cfg.tune.storage
    d = paths.tune(run)
    d.dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d.study_db}"


# what does not change how a trial is scored: a study resumes across changes to these
_NOT_IN_STUDY = ("enabled", "n_trials", "timeout_s", "storage", "sampler_seed", "families")


def study_name(cfg: Config, paths: Paths, entry: dict[str, Any], schema: Schema) -> str:
    """<run>-<fingerprint of what the trials measured>: the cleaned data, the folds, the search
    space and tuning folds, the candidate's base config and the metric. Re-running tune after
    any of them changed starts a new study instead of mixing trials scored on other terms."""
    space = {k: v for k, v in asdict(cfg.tune).items() if k not in _NOT_IN_STUDY}
    key = value_digest({"clean": require(paths, "clean").digest, "folds": require(paths, "folds").digest,
                        "space": space, "base": entry["diff"], "metric": schema.metric, "data": asdict(cfg.data)})
    return f"{entry['diff']['train']['run']}-{key[:12]}"


def tune_run(cfg: Config, paths: Paths, entry: dict[str, Any], schema: Schema, tx: Transaction) -> dict[str, Any]:
    import optuna

    base = with_diff(cfg, entry["diff"])
    run, fam = base.train.run, family(base.train.family)
    direction = "maximize" if metric_of(schema.metric).greater_is_better else "minimize"
    name = study_name(cfg, paths, entry, schema)
    storage = storage_url(cfg, paths, run)
    others = [n for n in optuna.get_all_study_names(storage) if n.startswith(f"{run}-") and n != name]
    if others and name not in optuna.get_all_study_names(storage):
        log.info("tune %s: new study %s: the data, folds, search space or metric differ from those of %s "
                 "(kept in the storage, not resumed)", run, name, ", ".join(others))
    study = optuna.create_study(study_name=name, storage=open_storage(cfg, storage), direction=direction,
                                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=cfg.tune.sampler_seed),
                                pruner=make_pruner(cfg.tune.pruner))
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    if not study.trials:
        # The hand-set config is trial 0: the search can only improve on it (on the tuning folds).
        study.enqueue_trial(fam.baseline(base), skip_if_exists=True)
    td = load_training_data(base, paths)

    def objective(trial: optuna.Trial) -> float:
        params = fam.search(trial, base)
        c = with_diff(cfg, {**entry["diff"], "train": {**entry["diff"].get("train", {}), **params}})
        c.train.folds, c.train.max_train_rows, c.train.save_checkpoints = list(cfg.tune.folds), cfg.tune.max_train_rows, False
        c.train.seeds = None  # a trial ranks settings; the seeds are averaged in train
        evals = [0]

        def report(epoch: float, value: float) -> None:
            trial.report(value, evals[0])
            evals[0] += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch:.2f} with {value:.4f}")

        scores = [train_fold(c, td, k, None, on_eval=report)[0].best_score for k in c.train.folds]
        return float(sum(scores) / len(scores))

    if cfg.tune.storage is None:  # a shared storage's dead trials: optuna's heartbeat (open_storage)
        retry_stale(study)
    remaining = max(0, cfg.tune.n_trials - len(done))
    log.info("tune %s: %d trials done in the study, %d to run (storage %s)", run, len(done), remaining,
             storage_url(cfg, paths, run))
    search(study, objective, cfg.tune.n_trials, cfg.tune.sampler_seed, cfg.tune.timeout_s)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise DataError(f"tune {run}: no trial completed (all pruned or failed); raise tune.n_trials")
    best = study.best_trial
    params = fam.search(optuna.trial.FixedTrial(best.params), base)
    searched = sorted(set(entry["diff"]["train"].get("searched_folds", [])) | set(cfg.tune.folds))
    diff = {**entry["diff"], "train": {**entry["diff"].get("train", {}), **params, "searched_folds": searched}}
    out = paths.tune(run)
    write_csv(tx.path(out.trials), study.trials_dataframe())
    write_json(tx.path(out.best), {"run": run, "study": name, "value": best.value, "params": best.params, "train": params,
                                   "trials": len(study.trials), "metric": schema.metric})
    write_text(tx.path(paths.generated_config(run)),
               f"# generated by `make tune` from {entry['config']}: best of {len(complete)} trials "
               f"({schema.metric} {best.value:.4f})\n" + dump_yaml(diff))
    plot_study(study, tx.path(out.history_png), tx.path(out.importance_png))
    log.info("tune %s: best %s %.4f with %s", run, schema.metric, best.value, best.params)
    return {"run": run, "candidate": entry.get("candidate"), "config": str(paths.generated_config(run)),
            "diff": diff, "tuned": True, "value": best.value}


FINISHED = ("COMPLETE", "PRUNED")


def finished(study: optuna.Study) -> int:
    return sum(t.state.name in FINISHED for t in study.trials)


def search(study: optuna.Study, objective: object, n_trials: int, seed: int, timeout_s: float | None) -> None:
    """Trials until ``n_trials`` have finished. The sampler is seeded by how many have finished
    (not kept from trial to trial in this process), so a search killed and resumed draws what the
    uninterrupted one drew: the n-th trial's parameters depend on the seed, n and the finished
    trials alone."""
    import optuna

    t0 = time.monotonic()
    while finished(study) < n_trials and (timeout_s is None or time.monotonic() - t0 < timeout_s):
        study.sampler = optuna.samplers.TPESampler(seed=seed + finished(study))
        study.optimize(objective, n_trials=1, catch=())


def open_storage(cfg: Config, url: str) -> optuna.storages.BaseStorage | str:
    """The study's storage. A shared one (tune.storage: machines searching one study) beats a
    heartbeat, and optuna fails a trial whose heartbeat stopped (its machine died) and queues it
    again with its parameters (RetryFailedTrialCallback)."""
    if cfg.tune.storage is None:
        return url
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=300,
                                      failed_trial_callback=RetryFailedTrialCallback(max_retry=3))


def retry_stale(study: optuna.Study) -> None:
    """A trial that a kill left RUNNING in the study's own SQLite file (one search writes it, so
    every RUNNING trial there is dead) is retried with its parameters: failed, and its
    parameters queued first."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        log.warning("tune %s: trial %d was left running (a killed search): retried with its parameters %s",
                    study.study_name, t.number, t.params)


def plot_study(study: optuna.Study, history_png: Path, importance_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    values = [(t.number, t.value) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([n for n, _ in values], [v for _, v in values], "o", label="trial")
    best, run_best = [], None
    for _, v in values:
        run_best = v if run_best is None else (max(run_best, v) if study.direction.name == "MAXIMIZE"
                                               else min(run_best, v))
        best.append(run_best)
    ax.plot([n for n, _ in values], best, "-", label="best so far")
    ax.set(title=f"optimisation history: {study.study_name}", xlabel="trial")
    ax.legend()
    save_figure(history_png, fig)
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as e:  # too few complete trials or a single parameter value
        log.info("tune: no parameter importances (%s)", e)
        return
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.35 * len(imp)))
    ax.barh(list(imp), list(imp.values()))
    ax.invert_yaxis()
    ax.set(title="parameter importance")
    save_figure(importance_png, fig)


@dataclass
class TuneResult:
    plan: dict[str, Any]


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    return inputs_of(paths, ["select", "clean", "folds"],
                     config={"tune": asdict(cfg.tune), "train": asdict(cfg.train), "data": asdict(cfg.data)})


def run(cfg: Config, paths: Paths, force: bool = False) -> TuneResult:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    inputs = stage_inputs(cfg, paths)
    selected = read_json(paths.selected_json)
    schema = Schema.load(paths.schema_json)
    runs = []
    with publish(paths, "tune", inputs) as tx:  # each study's summary, generated configs and the plan together
        for entry in selected["runs"]:
            name = with_diff(cfg, entry["diff"]).train.family
            if cfg.tune.enabled and name in cfg.tune.families:
                runs.append(tune_run(cfg, paths, entry, schema, tx))
            else:
                runs.append({**entry, "tuned": False})
        plan = {"metric": schema.metric, "runs": runs}
        write_json(tx.path(paths.runs_json), plan)
    log.info("tune: plan for train -> %s: %s", paths.runs_json,
             ", ".join(f"{r['run']} ({'tuned' if r['tuned'] else 'as selected'})" for r in runs))
    return TuneResult(plan=plan)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("tune", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
