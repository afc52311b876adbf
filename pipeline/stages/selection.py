"""select: screen candidate models on a short budget and rank them.

Usage: python -m pipeline select [--set select.candidates=[tfidf,minilm] select.top_k=2]
Reads:  clean data, folds.csv, configs/exp/<candidate>.yaml for each candidate
Writes: reports/model_selection.csv + reports/figures/model_selection.png,
        reports/selected.json (the candidates passed on to tune/train, with their config diffs)

Each candidate trains on select.folds of the shared folds.csv, on a subsample of the
training rows, for select.epochs: enough to rank, not to win. select.pinned overrides
the ranking.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget.clock import Others, disturbed
from pipeline.budget.planfile import planned_diff
from pipeline.core.config import Config, ConfigError, with_diff
from pipeline.core.contract import Schema
from pipeline.core.experiments import candidate_path
from pipeline.core.files import DataError, save_figure, write_csv, write_json
from pipeline.core.metrics import metric_of
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of, publish
from pipeline.cv.data import load_training_data
from pipeline.cv.runs import train_fold
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


def screening_config(cfg: Config, diff: dict[str, Any]) -> Config:
    s = cfg.select
    c = with_diff(cfg, diff)
    c.train.folds = list(s.folds)
    c.train.max_train_rows = s.max_train_rows
    c.train.save_checkpoints = False
    c.train.seeds = None  # one seed ranks as well as three
    if family(c.train.family).epoch_trained:
        c.train.epochs = s.epochs
        c.train.patience = None
    return c.validate()


@dataclass
class SelectResult:
    table: pd.DataFrame
    selected: list[str]


def screen(cfg: Config, paths: Paths, name: str) -> dict[str, Any]:
    diff, path = planned_diff(cfg, paths, name)
    c = screening_config(cfg, diff)
    td = load_training_data(c, paths)
    row: dict[str, Any] = {"candidate": name, "config": str(path), "family": c.train.family,
                           "model": family(c.train.family).describe(c.train)}
    t0 = time.perf_counter()
    try:
        with Others() as others:  # train's re-plan reads the training pace against the probe's
            outs = [train_fold(c, td, k, None)[0] for k in c.train.folds]
    except (OSError, ValueError) as e:  # a backbone that cannot load (hub name offline, bad dir)
        log.warning("select: candidate %s failed: %s", name, str(e).splitlines()[0][:300])
        return {**row, "score": np.nan, "seconds": np.nan, "error": str(e).splitlines()[0][:300]}
    row.update(score=float(np.mean([o.best_score for o in outs])), seconds=round(time.perf_counter() - t0, 2),
               # the fastest fold's: a later fold runs on kernels the first one warmed (a GPU's first steps
               # cost their shapes' autotuning, not the run's pace); train's re-plan holds it against the probe's
               train_samples_per_s=round(float(max(o.train_samples_per_s for o in outs)), 3),
               others_cpu=others.share, error="")
    log.info("select: %s scored %.4f in %.1fs", name, row["score"], row["seconds"])
    if disturbed(others.share):
        log.warning("select: other processes used %.0f%% of the machine's CPU while %s was screened: its %.1fs "
                    "are slower than this machine runs it alone", 100 * others.share, name, row["seconds"])
    return row


def rank(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    ok = table[table["score"].notna()]
    ordered = ok.sort_values(["score", "seconds"], ascending=[not metric_of(metric).greater_is_better, True])
    failed = table[table["score"].isna()]
    out = pd.concat([ordered, failed], ignore_index=True)
    out.insert(0, "rank", [i + 1 if pd.notna(s) else None for i, s in enumerate(out["score"])])
    return out


def plot(table: pd.DataFrame, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["score"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.5 + 0.45 * max(1, len(ok))))
    colors = ["#55a868" if s else "#8c8c8c" for s in ok["selected"]]
    axes[0].barh(ok["candidate"], ok["score"], color=colors)
    axes[0].set(title=f"screening {metric}")
    axes[0].invert_yaxis()
    axes[1].barh(ok["candidate"], ok["seconds"], color=colors)
    axes[1].set(title="seconds")
    axes[1].invert_yaxis()
    save_figure(path, fig)


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    files = {name: p for name in cfg.select.candidates if (p := candidate_path(name, paths.root)).exists()}
    return inputs_of(paths, ["clean", "folds"], files=files,
                     config={"select": asdict(cfg.select), "train": asdict(cfg.train), "data": asdict(cfg.data)})


def run(cfg: Config, paths: Paths, force: bool = False) -> SelectResult:
    inputs = stage_inputs(cfg, paths)
    schema = Schema.load(paths.schema_json)
    rows = [screen(cfg, paths, name) for name in cfg.select.candidates]
    table = rank(pd.DataFrame(rows), schema.metric)
    if cfg.select.pinned:
        unknown = [p for p in cfg.select.pinned if p not in set(table["candidate"])]
        if unknown:
            raise ConfigError(f"select.pinned names {unknown[0]!r}, which is not in select.candidates")
        chosen = list(cfg.select.pinned)
    else:
        chosen = table[table["score"].notna()]["candidate"].head(cfg.select.top_k).tolist()
    if not chosen:
        raise DataError("select: every candidate failed; see the errors in reports/model_selection.csv")
    table["selected"] = table["candidate"].isin(chosen)
    runs = []
    for name in chosen:
        diff, path = planned_diff(cfg, paths, name)
        # every candidate was chosen on the screened folds: their validation labels are spent
        diff["train"]["searched_folds"] = sorted(set(cfg.select.folds))
        runs.append({"run": diff["train"]["run"], "candidate": name, "config": str(path), "diff": diff})
    with publish(paths, "select", inputs) as tx:  # the table and the choice it implies, together
        write_csv(tx.path(paths.selection_csv), table)
        plot(table, schema.metric, tx.path(paths.figure("model_selection")))
        write_json(tx.path(paths.selected_json), {"metric": schema.metric, "pinned": bool(cfg.select.pinned),
                                                  "runs": runs})
    log.info("select (metric %s):\n%s\nselected: %s -> %s", schema.metric,
             table.drop(columns=["config"]).to_string(index=False), ", ".join(chosen), paths.selected_json)
    return SelectResult(table=table, selected=chosen)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("select", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
