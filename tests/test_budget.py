"""The time budget: the planner on synthetic throughputs, the plan applied under SET overrides,
and the anytime behaviour (a run stopped at a fold boundary; the submission still written)."""

import copy
import json
import os
import time

import pytest
from conftest import run_stage

from pipeline.budget import clock, planfile, planner
from pipeline.budget import costs as costs_mod
from pipeline.budget.costs import Cost, Work
from pipeline.budget.planner import Plan, RunPlan, make_plan
from pipeline.core.config import ConfigError, load_config, parse_duration
from pipeline.core.paths import Paths

ORDER = ["trade:", "tune:", "select:", "augment:", "seed", "epoch", "max_len", "folds:", "dropped"]


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
                pinned=pinned or [])


WORK = Work(n_train=8000, n_test=3000, augment_copies=1.0)


def kind(cut: str) -> int:
    return next(i for i, k in enumerate(ORDER) if k in cut)


def test_durations_parse_and_bad_ones_fail_at_load():
    assert [parse_duration(x) for x in ("90s", "30m", "2h", "1h30m", "45")] == [90, 1800, 7200, 5400, 45]
    with pytest.raises(ConfigError, match="budget.time"):
        load_config([], ["budget.time=3days"])
    with pytest.raises(ConfigError, match="budget.preset"):
        load_config([], ["budget.preset=huge"])


def test_a_budget_that_fits_everything_cuts_nothing():
    p = make_plan(ceiling(1e9), costs(), WORK)
    assert p.fits and p.cuts == [] and [r.name for r in p.runs] == ["tfidf", "nbsvm", "minilm", "mpnet", "emb_minilm"]
    assert p.added and "emb_minilm" in p.added[0]  # the time left buys minilm's frozen-encoder twin
    assert p.estimate_s == pytest.approx(sum(v.estimate_s for v in p.stages.values()))
    assert p.stages["train"].estimate_s > p.stages["tune"].estimate_s > 0


def test_a_budget_that_fits_nothing_keeps_the_classical_floor_and_says_so():
    p = make_plan(ceiling(1.0), costs(), WORK)
    assert not p.fits
    assert [r.name for r in p.runs] == ["tfidf", "nbsvm"] and set(p.dropped) == {"minilm", "mpnet", "emb_minilm"}
    assert p.n_splits == planner.MIN_FOLDS  # never below 3


def test_cuts_come_in_the_documented_order_and_stop_as_soon_as_it_fits():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    seen = []
    for share in (0.9, 0.6, 0.3, 0.15, 0.05):
        p = make_plan(ceiling(full * share), costs(), WORK)
        assert p.fits and p.estimate_s <= full * share
        cuts = [c for c in p.cuts if not c.startswith("trade:")]  # refill's trades come after the cuts
        kinds = [kind(c) for c in cuts]
        assert kinds == sorted(kinds), p.cuts  # trials, screening, augment, seeds, epochs, max_len, folds, drop
        # one cut fewer would not have fitted: no cut is spent for nothing
        shorter = make_plan(ceiling(1e9), costs(), WORK)
        for _ in cuts[:-1]:
            shorter.cuts.append(planner.next_cut(shorter, costs()) or "")
        assert sum(planner.stage_seconds(shorter, costs(), WORK).values()) > full * share
        seen.append(len(p.cuts))
    assert seen == sorted(seen) and seen[0] < seen[-1]  # the smaller the budget, the more is cut
    # the score side: a larger budget never plans fewer epochs or fewer runs
    small, large = make_plan(ceiling(full * 0.15), costs(), WORK), make_plan(ceiling(full * 0.6), costs(), WORK)
    assert len(large.runs) >= len(small.runs)
    assert sum(r.epochs * r.seeds for r in large.runs) >= sum(r.epochs * r.seeds for r in small.runs)


def test_a_dropped_fine_tune_gives_way_to_its_frozen_encoder():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    names = []
    for share in (0.3, 0.05, 0.02, 0.01, 0.005):
        p = make_plan(ceiling(full * share), costs(), WORK)
        names.append([r.name for r in p.runs])
        if "minilm" in p.dropped:
            assert "emb_minilm" in names[-1] and any("emb_minilm (its encoder frozen" in c for c in p.cuts)
    assert any("emb_minilm" in n for n in names), names


def test_a_pinned_key_is_never_cut_and_its_value_is_what_is_estimated():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    p = make_plan(ceiling(full * 0.3, pinned=["train.epochs", "folds.n_splits"]), costs(), WORK)
    assert all(r.epochs == 3 for r in p.runs if r.family == "transformer")
    assert p.n_splits == 5 and not any("epoch" in c or "folds:" in c for c in p.cuts)
    assert any("dropped" in c or "max_len" in c or "seed" in c for c in p.cuts)


def test_the_same_inputs_give_the_same_plan():
    a = make_plan(ceiling(4000), costs(), WORK).to_dict()
    b = make_plan(ceiling(4000), costs(), WORK).to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_estimates_follow_rows_epochs_folds_and_token_lengths():
    c = costs()["minilm"]
    base = costs_mod.fold_seconds(c, 3200, 2, 128, 800, 1000)
    assert costs_mod.fold_seconds(c, 6400, 2, 128, 800, 1000) > 1.8 * base - 60
    assert costs_mod.fold_seconds(c, 3200, 2, 64, 800, 1000) == pytest.approx(base * 0.75, rel=0.1)
    r = RunPlan("minilm", "transformer", epochs=2, max_len=128, seeds=1)
    assert costs_mod.run_seconds(c, r, WORK, 5, False) > costs_mod.run_seconds(c, r, WORK, 3, False)


def test_overrides_win_over_the_plan_and_a_plan_for_another_budget_is_not_applied(tmp_path):
    cfg = load_config([], ["budget.time=\"10m\"", "folds.n_splits=5"])
    plan = {"key": planfile.plan_key(cfg), "diff": {"folds": {"n_splits": 3}, "select": {"top_k": 1}}}

    class P:
        plan_json = tmp_path / "plan.json"

    P.plan_json.write_text(json.dumps(plan))
    applied = planfile.apply(cfg, P)
    assert applied.folds.n_splits == 5  # the user's SET wins
    assert applied.select.top_k == 1  # the plan's setting where the user said nothing
    assert planfile.active(applied) is not None
    other = load_config([], ["budget.time=\"2h\"", "folds.n_splits=5"])
    assert planfile.apply(other, P).select.top_k == other.select.top_k  # made for 10m: not applied
    assert planfile.pinned_keys(cfg) == ["folds.n_splits"]


def test_deadline_only_for_the_invocation_that_made_the_plan(monkeypatch):
    plan = {"t0": 1000.0, "budget_s": 600, "stages": {s: {"estimate_s": 10.0} for s in planner.STAGES_AFTER_TRAIN}}
    monkeypatch.setenv(clock.T0_ENV, "1000")
    assert clock.Deadline.load(Plan.from_dict(plan)).end == pytest.approx(1000 + 600 - 30)
    monkeypatch.setenv(clock.T0_ENV, "2000")  # a stage rerun by hand later: the plan's settings, not its clock
    assert clock.Deadline.load(Plan.from_dict(plan)).end is None


class ScriptedDeadline(clock.Deadline):
    """Plenty of time before the first transformer fold, none after it."""

    def __init__(self, plan):
        super().__init__(time.time() + 1e6, Plan.from_dict(plan))
        self.checks = 0

    def left(self) -> float:
        self.checks += 1
        return 1e6 if self.checks == 1 else 0.0


def test_a_run_stops_at_a_fold_boundary_and_the_submission_is_still_written(binary_comp, workdir, tiny_bert,
                                                                            tmp_path):
    """Time runs out after the transformer's first fold: it stops there (finished folds kept, a
    run without every fold not blended); the classical run and the submission are there."""
    from pipeline.core.config import with_diff
    from pipeline.core.files import read_json
    from pipeline.core.paths import Paths
    from pipeline.cv import runs as train_mod

    data = binary_comp
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tiny.yaml").write_text(f"train:\n  run: tiny\n  family: transformer\n  backbone: {tiny_bert}\n"
                                   "  max_len: 32\n  batch_size: 16\n  epochs: 1\n")
    (exp / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n")
    sets = [f"select.candidates=[{exp}/lr.yaml,{exp}/tiny.yaml]", "select.top_k=2", "tune.enabled=false",
            "folds.n_splits=3"]
    for stage in ("clean", "folds", "select", "tune"):
        assert run_stage(stage, workdir, data, *sets) == 0
    plan = {"runs": [{"name": "tiny", "family": "transformer", "estimate_s": 3.0}], "replans": [], "stages": {}}
    (workdir / "reports/plan.json").write_text(json.dumps(plan))
    paths = Paths.make(workdir, data)
    cfg = load_config([], sets)
    deadline = ScriptedDeadline(plan)
    results = {}
    for entry in read_json(paths.runs_json)["runs"]:
        c = with_diff(cfg, entry["diff"])
        results[c.train.run] = train_mod.train_run(c, paths, False, deadline)
    assert results["lr"].cv is not None and results["lr"].folds_done == [0, 1, 2]  # classical: never stopped
    assert results["tiny"].cv is None and results["tiny"].folds_done == [0]  # stopped before fold 1
    assert (workdir / "models/tiny/fold0/test.parquet").exists()  # kept for the report and a resume
    assert not (workdir / "models/tiny/fold1").exists()
    assert "tiny: stopped before fold 1" in " ".join(read_json(paths.plan_json)["replans"])
    for stage in ("ensemble", "submit"):
        assert run_stage(stage, workdir, data, *sets) == 0
    assert "tiny" not in (workdir / "ensembles/blend/weights.json").read_text()  # not blended
    sub = (workdir / "submissions/submission.csv").read_text().splitlines()
    assert len(sub) == 61  # 60 test rows + header
    # with time again, the same run resumes: the finished fold is kept, the others are trained
    again = train_mod.train_run(with_diff(cfg, next(e for e in read_json(paths.runs_json)["runs"]
                                                    if e["diff"]["train"]["run"] == "tiny")["diff"]), paths)
    assert again.cv is not None and again.folds_done == [0, 1, 2]


class FixedDeadline(clock.Deadline):
    def __init__(self, left: float, plan: dict):
        super().__init__(time.time() + left, Plan.from_dict(plan))
        self._left = left

    def left(self) -> float:
        return self._left


def test_replan_cuts_the_next_run_an_epoch_at_a_time_then_skips_it(tmp_path):
    from pipeline.budget.replan import replan

    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)

    plan = {"runs": [{"name": "minilm", "family": "transformer", "estimate_s": 300.0}], "stages": {}, "replans": []}
    P.plan_json.write_text(json.dumps(plan))
    c = load_config([], ["train.run=minilm", "train.epochs=3"])
    base = load_config([], ["train.run=minilm"])
    base.train.epochs = 3
    assert replan(base, [base], FixedDeadline(1000, plan), P, pinned=[]).train.epochs == 3  # fits: untouched
    cut = replan(base, [base], FixedDeadline(150, plan), P, pinned=[])
    assert cut.train.epochs == 1  # 300s for 3 epochs; 150s left -> 1 epoch (100s)
    assert replan(base, [base], FixedDeadline(50, plan), P, pinned=[]) is None  # not even one epoch fits
    log = json.loads(P.plan_json.read_text())["replans"]
    assert len(log) == 2 and "1 epoch(s) instead of 3" in log[0] and "skipped" in log[1]
    # a user who pinned train.epochs never gets fewer: the run is skipped when it cannot fit
    assert replan(c, [c], FixedDeadline(150, plan), P, pinned=["train.epochs"]) is None
    assert replan(c, [c], FixedDeadline(400, plan), P, pinned=["train.epochs"]) is c
    lr = load_config([], ["train.run=lr", "train.family=classical"])
    assert replan(lr, [lr], FixedDeadline(0, plan), P, pinned=[]) is lr  # classical: the floor, never cut


def test_plan_stage_measures_plans_repeatably_and_select_follows_it(prepared, tiny_bert, tmp_path, monkeypatch):
    data, workdir = prepared
    # the machine counted as quiet: a probe that a busy neighbour slowed is measured again on
    # the next plan (its own test below), which would make "the same plan twice" depend on the load
    monkeypatch.setattr(clock, "disturbed", lambda share: False)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tiny.yaml").write_text(f"train:\n  run: tiny\n  family: transformer\n  backbone: {tiny_bert}\n"
                                   "  max_len: 32\n  batch_size: 16\n  epochs: 3\n")
    (exp / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n")
    sets = [f"select.candidates=[{exp}/lr.yaml,{exp}/tiny.yaml]", "tune.epochs=[1,3]", "budget.time=\"1h\"",
            "folds.n_splits=2"]
    assert run_stage("plan", workdir, data, *sets) == 0
    first = json.loads((workdir / "reports/plan.json").read_text())
    costs = first["costs"]
    assert costs[f"{exp}/tiny.yaml"]["step_s"] > 0 and costs[f"{exp}/lr.yaml"]["fit_row_s"] > 0
    assert first["fits"] and first["cuts"] == []  # an hour is plenty for 200 rows
    tiny = next(r for r in first["runs"] if r["family"] == "transformer")
    assert tiny["epochs"] == 3 and first["stages"]["train"]["estimate_s"] > 0
    assert run_stage("plan", workdir, data, *sets) == 0
    second = json.loads((workdir / "reports/plan.json").read_text())
    for key in ("runs", "cuts", "diff", "stages", "n_splits", "trials"):
        if key == "stages":
            first[key].pop("inspect+clean"), second[key].pop("inspect+clean")
            for v in [*first[key].values(), *second[key].values()]:
                v.pop("actual_s", None)
        assert first[key] == second[key], key  # measured once, cached: the same plan
    assert run_stage("select", workdir, data, *sets) == 0
    sel = json.loads((workdir / "reports/selected.json").read_text())
    entry = next(r for r in sel["runs"] if r["run"] == "tiny")
    assert entry["diff"]["train"]["epochs"] == 3 and entry["diff"]["tune"]["epochs"] == [1, 3]
    # a budget too small for the transformer's 3 epochs: cut, and select follows the cut plan
    small = [*sets[:2], "budget.time=\"20s\"", "folds.n_splits=2"]
    assert run_stage("plan", workdir, data, *small) == 0
    cut = json.loads((workdir / "reports/plan.json").read_text())
    assert cut["cuts"] and cut["estimate_s"] < first["estimate_s"]
    # the user's SET wins: pinned epochs are never cut
    assert run_stage("plan", workdir, data, *small, "train.epochs=2") == 0
    pinned = json.loads((workdir / "reports/plan.json").read_text())
    assert all(r["epochs"] == 2 for r in pinned["runs"] if r["family"] == "transformer")
    assert not any("epoch" in c for c in pinned["cuts"])


def test_a_probe_that_others_disturbed_is_used_but_not_kept(prepared, tmp_path, monkeypatch, capsys):
    data, workdir = prepared
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n")
    sets = [f"select.candidates=[{exp}/lr.yaml]", "budget.time=\"1h\"", "folds.n_splits=2"]
    throughput = workdir / "data/interim/throughput.json"
    throughput.unlink(missing_ok=True)

    def measured() -> list[str]:  # the cache's cost entries (the others are the plan's own timings)
        return [k for k, v in json.loads(throughput.read_text()).items() if isinstance(v, dict)]

    monkeypatch.setattr(clock, "disturbed", lambda share: True)
    real_exit = clock.Others.__exit__

    def half_taken(self, *exc):  # another process had half the machine
        real_exit(self, *exc)
        self.share = 0.5

    monkeypatch.setattr(clock.Others, "__exit__", half_taken)
    probe = []
    from pipeline.modeling import families

    real_probe = families.Classical.probe
    monkeypatch.setattr(families.Classical, "probe", lambda *a, **k: probe.append(real_probe(*a, **k)) or probe[-1])
    assert run_stage("plan", workdir, data, *sets) == 0
    plan = json.loads((workdir / "reports/plan.json").read_text())
    # the plan used the measurement, at the share of the machine this process would have had alone
    assert plan["costs"][f"{exp}/lr.yaml"]["fit_row_s"] == pytest.approx(0.5 * probe[0]["fit_row_s"])
    err = capsys.readouterr().err
    assert measured() == [] and "not kept in throughput.json" in err and "planned at x0.50" in err
    monkeypatch.setattr(clock.Others, "__exit__", real_exit)
    monkeypatch.setattr(clock, "disturbed", lambda share: False)
    assert run_stage("plan", workdir, data, *sets) == 0
    assert len(measured()) == 1  # measured again on a quiet machine, and kept


def test_replan_gives_back_cut_epochs_when_select_measured_a_faster_pace(tmp_path):
    from pipeline.budget.replan import measured_pace, replan

    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)

    plan = {"runs": [{"name": "minilm", "run": "minilm", "family": "transformer", "estimate_s": 300.0,
                      "screen_s": 40.0, "ceiling_epochs": 2}], "stages": {}, "replans": []}
    P.plan_json.write_text(json.dumps(plan))
    P.selection_csv.write_text("rank,candidate,seconds\n1,minilm,30.0\n")  # 0.75x the planned pace
    c = replan_base(load_config([], ["train.run=minilm"]))
    assert measured_pace(P, FixedDeadline(1000, plan), "minilm") == pytest.approx(0.75)
    grown = replan(c, [c], FixedDeadline(1000, plan), P, pinned=[])
    assert grown.train.epochs == 2  # 225s for the planned epoch; 450s for two: fits 1000s
    assert replan(c, [c], FixedDeadline(300, plan), P, pinned=[]) is c  # two would not fit 300s
    P.selection_csv.write_text("rank,candidate,seconds\n1,minilm,80.0\n")  # 2x slower than planned
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]) is c  # 600s: one epoch fits, two do not
    assert replan(c, [c], FixedDeadline(400, plan), P, pinned=[]) is None  # 600s > 400s even at one epoch
    log = json.loads(P.plan_json.read_text())["replans"]
    assert "x0.75" in log[0] and "2 epoch(s) instead of 1" in log[0] and "skipped" in log[-1]


def test_a_screening_slowed_by_other_processes_is_not_taken_as_the_runs_pace(tmp_path):
    """1h20m on the disaster tweets: a test run shared the machine while select screened mpnet,
    which then ran at x1.34 its planned pace, and train's re-plan cut an epoch from a run that
    really ran at x0.98. A screening that select saw share the CPU no longer sets the pace."""
    from pipeline.budget.replan import measured_pace, replan

    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)

    plan = {"runs": [{"name": "mpnet", "run": "mpnet", "family": "transformer", "estimate_s": 600.0,
                      "screen_s": 40.0, "ceiling_epochs": 2, "epoch_s": 300.0}], "stages": {}, "replans": []}
    P.plan_json.write_text(json.dumps(plan))
    c = with_epochs(load_config([], ["train.run=mpnet"]), 2)
    P.selection_csv.write_text("rank,candidate,seconds,others_cpu\n1,mpnet,53.6,0.02\n")  # alone: trusted
    assert measured_pace(P, FixedDeadline(700, plan), "mpnet") == pytest.approx(1.34)
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]).train.epochs == 1  # 804s > 700s: cut
    P.selection_csv.write_text("rank,candidate,seconds,others_cpu\n1,mpnet,53.6,0.31\n")  # shared
    assert measured_pace(P, FixedDeadline(700, plan), "mpnet") == 1.0  # the plan's estimate stands
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]) is c  # the planned 600s fit: kept
    P.selection_csv.write_text("rank,candidate,seconds,others_cpu\n1,mpnet,30.0,0.31\n")  # fast anyway
    assert measured_pace(P, FixedDeadline(700, plan), "mpnet") == pytest.approx(0.75)  # a lower bound: kept
    P.selection_csv.write_text("rank,candidate,seconds\n1,mpnet,53.6\n")  # a table from before the column
    assert measured_pace(P, FixedDeadline(700, plan), "mpnet") == pytest.approx(1.34)


def test_the_machine_counters_are_read_only_where_this_process_sees_the_whole_machine(tmp_path, monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(clock, "CGROUP_V1_QUOTA", str(tmp_path / "no-v1"))
    cpu = "cpu  100 0 50 1000 10 0 0 0 0 0\n"

    def stat(n: int) -> str:
        path = tmp_path / f"stat{n}"
        path.write_text(cpu + "".join(f"cpu{i} 1 0 1 10 0 0 0 0 0 0\n" for i in range(n)) + "intr 1 2 3\n")
        return str(path)

    quota, none = tmp_path / "cpu.max", tmp_path / "absent"
    seconds = 150 / os.sysconf("SC_CLK_TCK")  # user + system; idle and iowait are not busy
    assert clock.machine_cpu_s(stat(cores), str(none)) == pytest.approx(seconds)
    quota.write_text("max 100000\n")
    assert clock.machine_cpu_s(stat(cores), str(quota)) == pytest.approx(seconds)
    quota.write_text("200000 100000\n")  # a container capped at 2 CPUs: the host's counters mislead
    assert clock.machine_cpu_s(stat(cores), str(quota)) is None
    assert clock.machine_cpu_s(stat(cores + 14), str(none)) is None  # the host's 16 cores, this process's few
    (tmp_path / "no-v1").write_text("150000\n")  # cgroup v1 with a quota
    assert clock.machine_cpu_s(stat(cores), str(none)) is None
    (tmp_path / "no-v1").write_text("-1\n")
    assert clock.machine_cpu_s(stat(cores), str(none)) == pytest.approx(seconds)
    (tmp_path / "bad").write_text("garbage\n")
    assert clock.machine_cpu_s(str(tmp_path / "bad"), str(none)) is None


@pytest.mark.skipif(clock.machine_cpu_s() is None, reason="no /proc/stat: the share is not measured here")
def test_others_sees_another_process_on_the_cpu_and_not_this_one():
    import subprocess
    import sys

    cores = os.cpu_count() or 1
    with clock.Others() as idle:
        time.sleep(0.5)
    if idle.share is None or idle.share * cores > 0.3:
        pytest.skip(f"other processes already use {idle.share} of this machine's CPU: nothing to tell apart")
    with clock.Others() as alone:  # this process busy: not counted as others
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            pass
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 30\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        with clock.Others() as shared:  # another process busy on one core while this one sleeps
            time.sleep(1.0)
    finally:
        spin.kill()
        spin.wait()
    assert shared.share is not None and shared.share * cores > 0.6  # about one core's worth
    assert alone.share is not None and alone.share * cores < shared.share * cores - 0.3


def with_epochs(c, n):
    from pipeline.core.config import with_diff

    return with_diff(c, {"train": {"epochs": n}})


def replan_base(c):
    from pipeline.core.config import with_diff

    return with_diff(c, {"train": {"epochs": 1}})


def test_a_drop_gives_back_the_folds_cut_before_it_when_they_fit():
    """Cut order is folds before the drop; once the transformer is dropped, the folds cut for its
    sake come back if the classical runs fit with them."""
    work = Work(n_train=25000, n_test=8000)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2)}
    runs = [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=2, max_len=64, ceiling_epochs=2)]
    plan = Plan(preset="medium", budget_s=900, available_s=900, n_splits=5, select_rows=500, select_epochs=1,
                trials=0, tune_transformers=False, tune_epochs=[1, 2], augment=False, runs=runs)
    p = make_plan(plan, cs, work)
    assert p.fits and "minilm" in p.dropped and any("folds:" in c for c in p.cuts)
    assert p.n_splits == 5 and any("folds: 5 again" in a for a in p.added)
    assert p.estimate_s <= p.available_s


def test_an_under_trained_fine_tune_buys_its_epoch_back_with_a_fold():
    """5 folds x 2 epochs does not fit, 4 x 2 does: the epoch cut is traded for a fold, never
    below 3 folds, never when folds or epochs are pinned, and never for a preset's bonus epoch."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2)}

    def plan(avail: float, epochs: int = 2, pinned: list[str] | None = None) -> Plan:
        runs = [RunPlan("tfidf", "classical"),
                RunPlan("minilm", "transformer", epochs=epochs, max_len=64, ceiling_epochs=epochs)]
        return Plan(preset="medium", budget_s=avail, available_s=avail, n_splits=5, select_rows=500,
                    select_epochs=1, trials=0, tune_transformers=False, tune_epochs=[1, 2], augment=False,
                    runs=runs, pinned=pinned or [])

    def estimate(folds: int, epochs: int) -> float:
        p = plan(1e9)
        p.n_splits, p.runs[1].epochs = folds, epochs
        return sum(planner.stage_seconds(p, cs, work).values())

    e52, e42, e32, e51 = estimate(5, 2), estimate(4, 2), estimate(3, 2), estimate(5, 1)
    assert e32 < e42 < e52 and e51 < e52
    p = make_plan(plan((e42 + e52) / 2), cs, work)
    assert p.fits and p.n_splits == 4 and p.runs[1].epochs == 2 and p.estimate_s <= p.available_s
    assert "minilm: 1 epoch instead of 2" in p.cuts and p.cuts[-1].startswith("trade: folds 4 instead of 5")
    p = make_plan(plan((e32 + min(e42, e51)) / 2), cs, work)  # only 3 folds buy the epoch back
    assert (p.n_splits, p.runs[1].epochs) == (3, 2) and p.cuts[-1].startswith("trade: folds 3 instead of")
    pinned = make_plan(plan((e42 + e52) / 2, pinned=["folds.n_splits"]), cs, work)
    assert (pinned.n_splits, pinned.runs[1].epochs) == (5, 1) and not any("trade" in c for c in pinned.cuts)
    # best's bonus epoch (3 against the config's 2) is cut first and not bought back with folds
    bonus = make_plan(plan(estimate(5, 2) + 1, epochs=3), cs, work)
    assert (bonus.n_splits, bonus.runs[1].epochs) == (5, 2) and not any("trade" in c for c in bonus.cuts)


def test_the_classical_probe_separates_fixed_training_and_prediction_costs(monkeypatch):
    """A fake fit that costs 0.05 s + 0.2 ms per training row + 0.02 ms per predicted row: the
    probe recovers the three, and the estimate charges a fold's predicted rows at their rate."""
    import numpy as np

    from pipeline.modeling import classical, probe

    def fake_fit(tc, data, metric, fold):
        time.sleep(0.05 + 2e-4 * len(data.train_texts) + 2e-5 * (len(data.val_texts) + len(data.test_texts)))

    monkeypatch.setattr(classical, "fit_classical_fold", fake_fit)
    texts = [f"text {i}" for i in range(2500)]
    m = probe.probe_classical(None, texts, np.arange(2500) % 2, "f1")
    assert m["fit_row_s"] == pytest.approx(2e-4, rel=0.15)
    assert m["pred_row_s"] == pytest.approx(2e-5, rel=0.5) and m["pred_row_s"] < m["fit_row_s"] / 4
    assert m["fit_fixed_s"] == pytest.approx(0.05, abs=0.04)
    c = Cost("tfidf", "classical", fit_row_s=m["fit_row_s"], pred_row_s=m["pred_row_s"], fit_fixed_s=m["fit_fixed_s"])
    # 20k rows to fit and 13k to predict: within 15% of what the fake fit would take
    assert costs_mod.fold_seconds(c, 20000, 1, 64, 5000, 8000) == pytest.approx(0.05 + 4.0 + 0.26, rel=0.15)


def test_the_classical_probe_fits_long_documents_on_a_bounded_sample(monkeypatch):
    """4,000 essays are millions of characters: the probe fits on about 0.6M of them (its four
    fits on 4,000 essays of 3,500 characters took 114 s of a 30-minute budget), with a floor
    of rows for a steady slope, while 4,000 tweets stay whole."""
    import numpy as np

    from pipeline.modeling import classical, probe

    seen = []
    monkeypatch.setattr(classical, "fit_classical_fold",
                        lambda tc, data, metric, fold: seen.append(len(data.train_texts) + len(data.val_texts)))
    labels = np.arange(4000) % 2
    probe.probe_classical(None, ["word " * 200] * 4000, labels, "f1")  # 1,000 characters each
    assert max(seen) == probe.CLASSICAL_CHARS // 1000 < 4000
    seen.clear()
    probe.probe_classical(None, ["word " * 700] * 4000, labels, "f1")  # never fewer than the floor
    assert max(seen) == probe.CLASSICAL_MIN_ROWS
    seen.clear()
    probe.probe_classical(None, ["a tweet of about eighty characters, give or take a few words here"] * 4000,
                          labels, "f1")
    assert max(seen) == 4000


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_bf16_probe_on_cpu_also_times_the_float32_test_prediction(tiny_bert, precision):
    """Training autocasts to bf16 on CPU but predicts the test rows in float32: a bf16 probe
    times both, and the estimate charges test rows at the float32 rate, validation at bf16's."""
    import numpy as np
    from conftest import NEG, POS, synthetic_texts

    from pipeline.core.config import TrainConfig
    from pipeline.modeling import probe

    texts, labels = synthetic_texts(96, [NEG, POS], 0)
    tc = TrainConfig(backbone=str(tiny_bert), precision=precision, max_len=32, batch_size=8, eval_batch_size=16)
    m = probe.probe_transformer(tc, texts, np.array(labels), 2, 3, [32])
    assert ("test_infer_row_s" in m) == (precision == "bf16")
    if precision == "fp32":
        return
    assert m["test_infer_row_s"] > 0 and m["infer_row_s"] > 0
    c = Cost("m", "transformer", step_s=1.0, infer_row_s=0.01, test_infer_row_s=0.03, load_s=0, max_len=64)
    same = Cost("m", "transformer", step_s=1.0, infer_row_s=0.01, load_s=0, max_len=64)
    gap = costs_mod.fold_seconds(c, 320, 2, 64, 100, 1000) - costs_mod.fold_seconds(same, 320, 2, 64, 100, 1000)
    assert gap == pytest.approx(1000 * 0.02)  # the test rows only: validation stays at 0.01 a row


def test_a_trade_after_a_drop_keeps_the_plan_readable():
    """Folds cut for a fine-tune that was dropped come back in refill; a trade may take them
    again for another fine-tune's epoch: the plan then says the folds it really has."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2),
          "mpnet": Cost("mpnet", "transformer", step_s=3.0, infer_row_s=0.03, load_s=8, max_len=64, epochs=2)}

    def plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"),
                RunPlan("minilm", "transformer", epochs=2, max_len=64, ceiling_epochs=2),
                RunPlan("mpnet", "transformer", epochs=2, max_len=64, ceiling_epochs=2)]
        return Plan(preset="best", budget_s=avail, available_s=avail, n_splits=5, select_rows=500,
                    select_epochs=1, trials=0, tune_transformers=False, tune_epochs=[1, 2], augment=False, runs=runs)

    traded_after_drop = 0
    for avail in range(600, 6000, 50):
        p = make_plan(plan(avail), cs, work)
        assert p.estimate_s <= p.available_s or not p.fits
        assert not any(a.startswith("folds: ") and int(a.split()[1]) > p.n_splits for a in p.added), p.added
        traded_after_drop += "mpnet" in p.dropped and any(c.startswith("trade:") for c in p.cuts)
    assert traded_after_drop  # the case above happens in this range


def _replay(steps: list[str], n_splits: int, epochs: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Folds and each fine-tune's epochs after reading the plan's steps top to bottom."""
    import re

    epochs = dict(epochs)
    for s in steps:
        if m := re.match(r"cut: (?:trade: )?folds:? (\d+) instead", s) or re.match(r"folds: (\d+) again", s):
            n_splits = int(m.group(1))
        if m := re.match(r"cut: (\w+): (\d+) epochs? instead", s) or re.match(r"(\w+): (\d+) epochs again", s):
            epochs[m.group(1)] = int(m.group(2))
        if m := re.match(r"cut: trade: .* for epochs back: (.*) \(the config", s):
            epochs |= {name: int(n) for name, n in (x.split() for x in m.group(1).split(", "))}
    return n_splits, epochs


def test_the_plan_reads_in_the_order_it_was_made():
    """Cuts, give-backs and trades are listed as they happened (the embedded-default plan once
    printed "minilm: 2 epochs again" after the trade that bought its third): read top to bottom,
    the last word on the folds and on each fine-tune's epochs is what the plan runs."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=3),
          "mpnet": Cost("mpnet", "transformer", step_s=3.0, infer_row_s=0.03, load_s=8, max_len=64, epochs=3)}

    def plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"),
                RunPlan("minilm", "transformer", epochs=3, max_len=64, ceiling_epochs=3),
                RunPlan("mpnet", "transformer", epochs=3, max_len=64, ceiling_epochs=3)]
        return Plan(preset="best", budget_s=avail, available_s=avail, n_splits=5, select_rows=500,
                    select_epochs=1, trials=0, tune_transformers=False, tune_epochs=[1, 2], augment=False, runs=runs)

    out_of_order = 0  # plans where listing the cuts first and the give-backs after would misread
    for avail in range(600, 9000, 50):
        p = make_plan(plan(avail), cs, work)
        runs = {r.name: r.epochs for r in p.runs if r.family == "transformer"}
        start = {"minilm": 3, "mpnet": 3}
        assert _replay(p.steps, 5, start)[0] == p.n_splits, p.steps
        assert {k: v for k, v in _replay(p.steps, 5, start)[1].items() if k in runs} == runs, p.steps
        p.budget = f"{avail}s"
        text = planner.format_plan(p).splitlines()
        assert [t.strip() for t in text[-len(p.steps):]] == p.steps if p.steps else "cut: nothing" in text[-1]
        old = [f"cut: {c}" for c in p.cuts] + p.added
        out_of_order += _replay(old, 5, start) != _replay(p.steps, 5, start)
    assert out_of_order  # the old order misread some plans in this range
    legacy = {k: v for k, v in make_plan(plan(3000), cs, work).to_dict().items() if k != "steps"}
    assert Plan.from_dict(legacy).steps == [f"cut: {c}" for c in legacy["cuts"]] + legacy["added"]  # plans written before


def _disaster_like_costs(mpnet_installed: bool = True) -> dict[str, Cost]:
    """Roughly what the probe measured on the disaster tweets (BENCHMARKS.md "Time budget")."""
    return {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3, pred_row_s=2e-4, fit_fixed_s=1.0),
            "nbsvm": Cost("nbsvm", "classical", fit_row_s=1e-3, pred_row_s=2e-4, fit_fixed_s=1.0),
            "minilm": Cost("minilm", "transformer", step_s=0.57, infer_row_s=0.004, load_s=2, max_len=64, epochs=2),
            "emb_minilm": Cost("emb_minilm", "embedding", infer_row_s=0.003, fit_row_s=2e-5, max_len=128),
            "emb_mpnet": Cost("emb_mpnet", "embedding", infer_row_s=0.036, fit_row_s=2e-5, max_len=128,
                              available=mpnet_installed, why="packaged:mpnet: run `make setup-mpnet`")}


def test_medium_adds_the_frozen_base_encoder_where_installed_and_trades_the_fine_tunes_folds_for_it():
    """PRESET=medium = the profile + emb_mpnet where `make setup-mpnet` ran (never for fast,
    never over a pinned candidate list); when the fine-tune's 5 folds x 2 epochs fit only
    without it, the plan keeps it and gives the fine-tune a fold for its second epoch."""
    work = Work(n_train=7613, n_test=3263)

    def plan_for(preset: str, available: float, installed: bool = True, pinned: tuple[str, ...] = ()) -> Plan:
        cfg = load_config([], [f"budget.preset={preset}", "select.candidates=[tfidf,nbsvm,minilm]",
                               "tune.enabled=false"])
        c = _disaster_like_costs(installed)
        return make_plan(planner.ceiling(cfg, c, available, available, list(pinned), "logloss"), c, work)

    names = lambda p: [r.name for r in p.runs]  # noqa: E731
    assert "emb_mpnet" in names(plan_for("medium", 1e9))
    assert "emb_mpnet" not in names(plan_for("medium", 1e9, installed=False))
    assert "emb_mpnet" not in names(plan_for("fast", 1e9))
    assert "emb_mpnet" not in names(plan_for("medium", 1e9, pinned=("select.candidates",)))

    def uncut(installed: bool) -> Plan:  # the medium ceiling itself, estimated (no room: nothing added)
        cfg = load_config([], ["budget.preset=medium", "select.candidates=[tfidf,nbsvm,minilm]", "tune.enabled=false"])
        c = _disaster_like_costs(installed)
        p = planner.ceiling(cfg, c, 1e9, 1e9, [], "logloss")
        p.estimate_s = sum(planner.stage_seconds(p, c, work).values())
        return p

    without = uncut(installed=False)
    minilm = next(r for r in without.runs if r.name == "minilm")
    assert minilm.epochs == 2 and without.n_splits == 5
    mpnet_s = next(r for r in uncut(installed=True).runs if r.name == "emb_mpnet").estimate_s
    tight = without.estimate_s + 0.5 * mpnet_s  # 5 x 2 fits alone, not beside emb_mpnet
    assert plan_for("medium", tight, installed=False).n_splits == 5
    p = plan_for("medium", tight)
    assert p.fits and "emb_mpnet" in names(p) and "minilm" in names(p)
    assert next(r for r in p.runs if r.name == "minilm").epochs == 2 and 3 <= p.n_splits < 5
    assert any(c.startswith("trade:") for c in p.cuts) and p.estimate_s <= tight


def test_room_a_trade_leaves_buys_the_presets_epochs_then_seeds_back():
    """A trade gives up whole folds, which can leave room (the 2h `best` plan on the disaster
    tweets left 1,600 s unused at 3 folds with mpnet at 2 of its 3 epochs): the plan then takes
    the preset's epochs back, then its seeds, while it fits. Whatever the budget, the final
    plan leaves no such give-back that would still fit."""
    work = Work(n_train=7545, n_test=3263)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.47, infer_row_s=0.005, load_s=2, max_len=64, epochs=2),
          "mpnet": Cost("mpnet", "transformer", step_s=2.7, infer_row_s=0.02, load_s=1, max_len=64, epochs=2)}

    def ceiling_plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"),
                RunPlan("minilm", "transformer", epochs=3, max_len=64, seeds=3, ceiling_epochs=3, ceiling_seeds=3),
                RunPlan("mpnet", "transformer", epochs=3, max_len=64, seeds=3, ceiling_epochs=3, ceiling_seeds=3)]
        return Plan(preset="best", budget_s=avail, available_s=avail, n_splits=5, select_rows=500,
                    select_epochs=1, trials=0, tune_transformers=False, tune_epochs=[1, 3], augment=False, runs=runs)

    def still_fits(p: Plan, name: str, what: str) -> bool:
        trial = copy.deepcopy(p)
        r = next(x for x in trial.runs if x.name == name)
        setattr(r, what, getattr(r, what) + 1)
        return planner._fits(trial, cs, work)

    bought_back = 0
    for avail in range(2000, 16000, 250):
        p = make_plan(ceiling_plan(avail), cs, work)
        assert not p.fits or p.estimate_s <= p.available_s
        if not p.fits:
            continue
        for r in p.runs:
            if r.family == "transformer":
                assert r.epochs >= r.ceiling_epochs or not still_fits(p, r.name, "epochs"), (avail, p.runs)
                assert r.seeds >= r.ceiling_seeds or not still_fits(p, r.name, "seeds"), (avail, p.runs)
        traded = any(c.startswith("trade:") for c in p.cuts)
        bought_back += traded and any(" again (" in a and ("epochs" in a or "seeds" in a) for a in p.added)
    assert bought_back  # the case happens in this range


def test_best_buys_seeds_only_where_the_metric_scores_probabilities():
    """best's ceiling has three seeds per fine-tune for log loss or AUC, one for F1 or accuracy
    (3 mpnet seeds moved the disaster tweets' CV F1 by -0.0013 at 2.9x the seconds); a pinned
    train.seeds wins either way."""
    cfg = load_config([], ["budget.preset=best"])

    def seeds(metric, pinned=()):
        plan = planner.ceiling(cfg, costs(), 1e9, 1e9, list(pinned), metric)
        return {r.name: r.seeds for r in plan.runs if r.family == "transformer"}

    assert seeds("logloss") == seeds("roc_auc") == {"minilm": 3, "mpnet": 3}
    assert seeds("f1") == seeds("accuracy") == seeds("macro_f1") == {"minilm": 1, "mpnet": 1}
    pinned = load_config([], ["budget.preset=best", "train.seeds=[1,2]"])
    assert {r.name: r.seeds for r in planner.ceiling(pinned, costs(), 1e9, 1e9, ["train.seeds"], "f1").runs
            if r.family == "transformer"} == {"minilm": 2, "mpnet": 2}


def test_long_texts_get_a_longer_max_len_when_the_budget_has_room_and_chunks_cost_their_windows():
    """Inspect says the texts need 256 tokens; the fine-tune was set for 64: with room the plan
    raises it (x2 steps, never past the backbone's positions); without room it stays."""
    work = Work(n_train=2000, n_test=500)
    base = dict(step_s=0.3, infer_row_s=0.002, load_s=2, max_len=64, epochs=1, suggested_max_len=256,
                lengths={"64": 60.0, "128": 110.0, "256": 200.0})
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-4),
          "minilm": Cost("minilm", "transformer", max_positions=128, **base)}

    def plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=1, max_len=64, ceiling_epochs=1)]
        return Plan(preset="medium", budget_s=avail, available_s=avail, n_splits=3, select_rows=500,
                    select_epochs=1, trials=0, tune_transformers=False, tune_epochs=[1], augment=False, runs=runs)

    roomy = make_plan(plan(1e6), cs, work)
    assert roomy.runs[1].max_len == 128 and any("max_len 128 instead of 64" in s for s in roomy.steps)  # positions cap
    at = {}
    for n in (64, 128):
        p = plan(1e6)
        p.runs[1].max_len = n
        at[n] = sum(planner.stage_seconds(p, cs, work).values())
    assert at[128] > at[64]
    tight = make_plan(plan((at[64] + at[128]) / 2), cs, work)
    assert tight.fits and tight.runs[1].max_len == 64  # 128 does not fit: the texts stay cut
    chunked = Cost("minilm", "transformer", windows={"64": 3.0}, chunk_training=True, **base)
    one = costs_mod.fold_seconds(cs["minilm"], 1000, 1, 64, 300, 500)
    assert costs_mod.fold_seconds(chunked, 1000, 1, 64, 300, 500) == pytest.approx(3 * (one - 2 * 2) + 2 * 2, rel=0.05)


def _replan_setup(tmp_path, budget_s: float = 1800.0, twin: bool = True):
    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)
    costs = {"emb_minilm": {"name": "emb_minilm", "family": "embedding", "infer_row_s": 0.01, "fit_row_s": 2e-5,
                            "max_len": 128, "available": twin}}
    plan = {"budget_s": budget_s, "n_splits": 5, "n_train": 7600, "n_test": 3300, "stages": {}, "replans": [],
            "costs": costs, "runs": [{"name": "minilm", "run": "minilm", "family": "transformer", "estimate_s": 1200.0,
                                      "epochs": 2, "ceiling_epochs": 2, "epoch_s": 600.0}]}
    P.plan_json.write_text(json.dumps(plan))
    from pipeline.core.config import with_diff

    c = with_diff(load_config([], []), {"train": {"run": "minilm", "epochs": 2}})  # as runs.json's diff sets it
    return P, plan, c


def test_a_shortfall_within_the_tolerance_keeps_the_plan_and_says_so(tmp_path):
    """The measured 30m case: MiniLM at x1.22 needed ~1438s with 1430s left; it was cut to one
    epoch for 8 seconds. Now a shortfall within the fold guard's grace (5% of the budget) keeps it."""
    from pipeline.budget.replan import replan

    P, plan, c = _replan_setup(tmp_path)
    assert replan(c, [c], FixedDeadline(1190, plan), P, pinned=[]) is c  # 10s short of 1200s: kept
    log = json.loads(P.plan_json.read_text())["replans"]
    assert "the plan kept: 10s short, within the 90s" in log[0]
    cut = replan(c, [c], FixedDeadline(1000, plan), P, pinned=[])  # 200s short: beyond the tolerance
    assert cut.train.epochs == 1


def test_a_larger_shortfall_takes_the_option_with_the_best_expected_score(tmp_path):
    from pipeline.budget.replan import replan

    P, plan, c = _replan_setup(tmp_path)
    got = replan(c, [c], FixedDeadline(500, plan), P, pinned=[])  # one epoch (600s) does not fit: the twin does
    assert got.train.family == "embedding" and got.train.run == "emb_minilm"
    assert "emb_minilm (its encoder frozen + LR) instead" in json.loads(P.plan_json.read_text())["replans"][-1]
    P2, plan2, c2 = _replan_setup(tmp_path / "notwin", twin=False)
    assert replan(c2, [c2], FixedDeadline(500, plan2), P2, pinned=[]) is None  # nothing fits: skipped
    # the options are scored by this backbone's own epoch curve where one exists: a second epoch
    # that measured +0.05 makes the twin (-0.035 expected) the better cut than one epoch
    run = P.run("earlier")
    run.dir.mkdir(parents=True)
    run.config.write_text(f"train:\n  backbone: {c.train.backbone}\n")
    run.cv.write_text("{}")
    run.history.write_text("fold,kind,epoch,metric\n0,eval,1.0,0.70\n0,eval,2.0,0.75\n1,eval,1.0,0.71\n1,eval,2.0,0.76\n")
    got = replan(c, [c], FixedDeadline(900, plan), P, pinned=[])
    assert got.train.run == "emb_minilm"
    assert "1 epoch(s) instead of 2: ~600s, -0.0500 expected" in json.loads(P.plan_json.read_text())["replans"][-1]


def test_time_left_after_the_last_run_buys_the_frozen_twin(tmp_path):
    from pipeline.budget.replan import spare_runs

    P, plan, c = _replan_setup(tmp_path)
    extra = spare_runs([c], FixedDeadline(900, plan), P)
    assert [e.train.run for e in extra] == ["emb_minilm"] and extra[0].train.family == "embedding"
    assert "spare time" in json.loads(P.plan_json.read_text())["replans"][-1]
    assert spare_runs([c], FixedDeadline(50, plan), P) == []  # no room: nothing bought


def test_room_beyond_mediums_ceiling_buys_bests_extras_in_order_of_worth():
    """A medium ceiling that fits with room to spare would leave the budget unused: the room
    buys best's base-size fine-tune at its config's epochs, then the frozen encoders, then the
    extra epoch, then seeds (only for a probability metric); fast never grows, and a budget
    with no room is planned as before."""
    work = Work(n_train=7613, n_test=3263)
    c = {**_disaster_like_costs(), "mpnet": Cost("mpnet", "transformer", step_s=2.0, infer_row_s=0.02, load_s=5,
                                                 max_len=64, epochs=2)}

    def plan_for(preset: str, available: float, metric: str = "f1") -> Plan:
        cfg = load_config([], [f"budget.preset={preset}", "select.candidates=[tfidf,nbsvm,minilm]",
                               "tune.enabled=false"])
        return make_plan(planner.ceiling(cfg, c, available, available, [], metric), c, work)

    runs = lambda p: {r.name: (r.epochs, r.seeds) for r in p.runs}  # noqa: E731
    cfg = load_config([], ["budget.preset=medium", "select.candidates=[tfidf,nbsvm,minilm]", "tune.enabled=false"])
    medium_s = sum(planner.stage_seconds(planner.ceiling(cfg, c, 1e9, 1e9, [], "f1"), c, work).values())
    assert runs(plan_for("medium", medium_s * 1.001)).keys() == {"tfidf", "nbsvm", "minilm", "emb_mpnet"}

    roomy = plan_for("medium", 1e9, metric="f1")
    assert runs(roomy)["mpnet"] == (3, 1) and "emb_minilm" in runs(roomy)
    assert runs(roomy)["minilm"] == (3, 1)  # best's extra epoch (mpnet's too: it was added at its config's 2)
    assert all(seeds == 1 for _, seeds in runs(roomy).values())  # F1: seeds were measured not to pay
    assert [a.split(":")[0] for a in roomy.added][:2] == ["mpnet", "emb_minilm"]
    assert all(s == 3 for n, (_, s) in runs(plan_for("medium", 1e9, metric="logloss")).items()
               if n in ("minilm", "mpnet"))
    assert "mpnet" not in runs(plan_for("fast", 1e9))

    # room for the fine-tune's frozen twin but not the base fine-tune: the cheap extra only
    mid = plan_for("medium", medium_s * 1.001 + 60, metric="f1")
    assert "mpnet" not in runs(mid) and "emb_minilm" in runs(mid) and mid.estimate_s <= mid.available_s


def test_the_last_cut_drops_a_frozen_encoder_rather_than_the_fine_tune_where_that_fits():
    """Measured on a fresh machine (a busy probe made all-mpnet frozen cost 434 s): the plan
    dropped MiniLM's fine-tune (CV 0.805) and kept the frozen mpnet (0.794), though the
    fine-tune fitted without it. The frozen encoder goes; the fine-tune keeps its epochs back."""
    work = Work(n_train=7613, n_test=3263)
    c = _disaster_like_costs()
    c["emb_mpnet"] = Cost("emb_mpnet", "embedding", infer_row_s=0.2, fit_row_s=2e-5, max_len=128)
    cfg = load_config([], ["budget.preset=medium", "select.candidates=[tfidf,nbsvm,minilm]", "tune.enabled=false"])
    floor = planner.ceiling(cfg, c, 1e9, 1e9, [], "f1")  # every cut before the drop, without emb_mpnet
    floor.runs = [r for r in floor.runs if r.name != "emb_mpnet"]
    floor.select_rows, floor.n_splits = planner.MIN_SELECT_ROWS, planner.MIN_FOLDS
    next(r for r in floor.runs if r.name == "minilm").epochs = 1
    available = sum(planner.stage_seconds(floor, c, work).values()) + 1.0
    p = make_plan(planner.ceiling(cfg, c, available, available, [], "f1"), c, work)
    names = {r.name: r for r in p.runs}
    assert "minilm" in names and "emb_mpnet" not in names and p.fits
    assert any(x.startswith("emb_mpnet: dropped") and "fine-tunes fit" in x for x in p.cuts)
    assert p.estimate_s <= available


def _floor(c: dict[str, Cost], cfg, work: Work, rows: int | None, drop: tuple[str, ...] = ()) -> float:
    """The seconds of the plan every cut before the last one makes: 3 folds, 1 epoch, 500-row screening."""
    floor = planner.ceiling(cfg, c, 1e9, 1e9, [], "f1")
    floor.runs = [r for r in floor.runs if r.name not in drop]
    floor.select_rows, floor.n_splits = planner.MIN_SELECT_ROWS, planner.MIN_FOLDS
    for r in floor.runs:
        if r.name == "minilm":
            r.epochs, r.rows = 1, rows
    return sum(planner.stage_seconds(floor, c, work).values())


def test_a_fine_tune_that_does_not_fit_trains_on_a_subsample_of_its_rows_before_it_is_dropped():
    """Measured on the disaster tweets at 10m: MiniLM's smallest fine-tune (1 epoch x 3 folds,
    370 s) did not fit the 262 s left, so it was dropped and 60% of the budget went unused. Now
    it trains on the largest tenth of each fold's rows that fits; a frozen encoder goes first
    where only that makes a subsample fit; below 30% of the rows it is dropped as before; and
    train gets the subsample through the run's diff."""
    work = Work(n_train=7613, n_test=3263)
    c = _disaster_like_costs(mpnet_installed=False)
    cfg = load_config([], ["budget.preset=medium", "select.candidates=[tfidf,nbsvm,minilm]", "tune.enabled=false"])
    full = planner.fold_train_rows(work.n_train, 3)
    assert full == 5075
    between = (_floor(c, cfg, work, int(full * 0.6)) + _floor(c, cfg, work, int(full * 0.7))) / 2
    p = make_plan(planner.ceiling(cfg, c, between, between, [], "f1"), c, work)
    minilm = next(r for r in p.runs if r.name == "minilm")
    assert minilm.rows == int(full * 0.6) and minilm.epochs == 1 and p.n_splits == 3 and p.fits
    assert p.estimate_s <= between and "minilm: 3,045 of each fold's 5,075 training rows (60%" in p.cuts[-1]
    assert planfile.run_diff(p, "minilm", 42)["train"]["max_train_rows"] == 3045
    assert "max_train_rows" not in planfile.run_diff(make_plan(planner.ceiling(cfg, c, 1e9, 1e9, [], "f1"), c, work),
                                                     "minilm", 42)["train"]  # all rows: the config's own
    # the estimate follows the rows: 60% of the rows costs less than all of them, more than 30%
    secs = {n: costs_mod.run_seconds(c["minilm"], RunPlan("minilm", "transformer", rows=n), work, 3, False)
            for n in (None, 3045, 1522)}
    assert secs[None] > secs[3045] > secs[1522]

    # below 30% nothing fits: dropped, its frozen twin instead (as before)
    tight = _floor(c, cfg, work, int(full * 0.3)) - 1
    p = make_plan(planner.ceiling(cfg, c, tight, tight, [], "f1"), c, work)
    assert "minilm" not in {r.name for r in p.runs} and "emb_minilm" in {r.name for r in p.runs}

    # a frozen encoder in the way of the subsample goes first (a fine-tune outscores it)
    c2 = _disaster_like_costs()
    c2["emb_mpnet"] = Cost("emb_mpnet", "embedding", infer_row_s=0.2, fit_row_s=2e-5, max_len=128)
    no_mpnet = _floor(c2, cfg, work, int(full * 0.5), drop=("emb_mpnet",))
    p = make_plan(planner.ceiling(cfg, c2, no_mpnet, no_mpnet, [], "f1"), c2, work)
    names = {r.name: r for r in p.runs}
    assert "emb_mpnet" not in names and names["minilm"].rows and p.fits
    assert any("so that minilm fits on a subsample" in x for x in p.cuts)

    # a user who set train.max_train_rows is never subsampled by the plan
    pinned = make_plan(planner.ceiling(cfg, c, between, between, ["train.max_train_rows"], "f1"), c, work)
    assert "minilm" not in {r.name for r in pinned.runs}


def test_a_subsampled_fine_tune_gets_its_rows_back_when_a_later_cut_leaves_room():
    work = Work(n_train=7613, n_test=3263)
    c = _disaster_like_costs(mpnet_installed=False)
    cfg = load_config([], ["budget.preset=medium", "select.candidates=[tfidf,nbsvm,minilm]", "tune.enabled=false"])
    p = make_plan(planner.ceiling(cfg, c, 1e9, 1e9, [], "f1"), c, work)
    p.n_splits, p.select_rows = 3, 500
    r = next(x for x in p.runs if x.name == "minilm")
    r.epochs, r.rows = 1, 4000
    planner._fits(p, c, work)
    p.available_s = p.estimate_s + 1  # room for 4,000 rows a fold
    r.rows = 1522
    back = planner._more_rows(p, c, work)
    assert next(x for x in back.runs if x.name == "minilm").rows == 3552  # 70% of 5,075: 80% (4,060) > 4,000
    assert back.added[-1].startswith("minilm: 3,552 of each fold's 5,075 training rows")


MINILM_COST = {"name": "minilm", "family": "transformer", "step_s": 0.57, "infer_row_s": 0.004, "load_s": 2,
               "max_len": 64, "epochs": 2}


def _rows_setup(tmp_path, rows: int | None = None, epochs: int = 2, dropped: tuple[str, ...] = ()):
    """A 30m plan whose MiniLM (measured costs, 5 folds of 7,600 rows) is about to start or ran."""
    from pipeline.core.config import with_diff

    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)
    cost = {"minilm": MINILM_COST,
            "emb_minilm": {"name": "emb_minilm", "family": "embedding", "infer_row_s": 0.003, "fit_row_s": 2e-5},
            "emb_mpnet": {"name": "emb_mpnet", "family": "embedding", "infer_row_s": 0.03, "fit_row_s": 2e-5}}
    run = RunPlan("minilm", "transformer", epochs=epochs, rows=rows, ceiling_epochs=2)
    work = Work(7600, 3300)
    run.estimate_s = costs_mod.run_seconds(Cost(**MINILM_COST), run, work, 5, False)
    plan = {"budget_s": 1800.0, "n_splits": 5, "n_train": 7600, "n_test": 3300, "stages": {}, "replans": [],
            "costs": cost, "runs": [{**run.__dict__, "run": "minilm"}], "dropped": list(dropped)}
    P.plan_json.write_text(json.dumps(plan))
    c = with_diff(load_config([], []), {"train": {"run": "minilm", "epochs": epochs, "max_train_rows": rows}})
    return P, plan, c, run.estimate_s


def test_a_shortfall_is_met_with_a_row_subsample_where_that_loses_least(tmp_path):
    """Between all rows at 2 epochs and 1 epoch, 90% of the rows at 2 epochs is the option with
    the best expected score (ROWS_PRIOR: 0.003 for a tenth of the rows, EPOCH_PRIOR 0.004 for an
    epoch) when it fits; the log line has the numbers of every option."""
    from pipeline.budget.replan import config_seconds, replan

    P, plan, c, full_s = _rows_setup(tmp_path)
    p = Plan.from_dict(plan)
    from pipeline.core.config import with_diff

    ninety = config_seconds(p, "minilm", with_diff(c, {"train": {"max_train_rows": 5472}}).train)
    assert ninety < full_s - 90  # beyond the grace: a real choice
    got = replan(c, [c], FixedDeadline((ninety + full_s - 90) / 2, plan), P, pinned=[])
    assert got.train.max_train_rows == 5472 and got.train.epochs == 2
    line = json.loads(P.plan_json.read_text())["replans"][-1]
    assert "-> minilm: 5,472 of each fold's 6,080 rows (90%), 2 epoch(s)" in line and "1 epoch(s) instead" in line
    # a pinned subsample is never re-planned over
    kept = replan(c, [c], FixedDeadline((ninety + full_s - 90) / 2, plan), P, pinned=["train.max_train_rows"])
    assert kept.train.max_train_rows is None


def test_a_subsampled_fine_tune_gets_its_rows_back_when_the_stages_before_ran_fast(tmp_path):
    from pipeline.budget.replan import replan

    P, plan, c, planned_s = _rows_setup(tmp_path, rows=3040, epochs=1)
    same = replan(c, [c], FixedDeadline(planned_s + 5, plan), P, pinned=[])
    assert same.train.max_train_rows == 3040  # no room: as planned
    got = replan(c, [c], FixedDeadline(planned_s * 3, plan), P, pinned=[])
    assert got.train.max_train_rows is None  # all rows fit the time left (less half the grace)
    log = json.loads(P.plan_json.read_text())["replans"]
    assert "all of each fold's 6,080 training rows instead of 3,040" in log[-1]  # (a second epoch does not fit too)
    some = replan(c, [c], FixedDeadline(planned_s * 1.3 + 45, plan), P, pinned=[])
    assert 3040 < some.train.max_train_rows < 6080


def test_spare_time_buys_dropped_frozen_encoders_then_a_fine_tune_sized_to_what_is_left(tmp_path):
    """Measured: at 30m, 250 s were left after spare time bought the frozen twin, and at 10m the
    frozen mpnet the plan dropped (87 s) was never bought back. Spare time now buys the twin and
    the dropped frozen encoders while they fit, then one fine-tune sized to the rest: a dropped
    one under its own name, else another seed of the one that ran, on a row subsample."""
    from pipeline.budget.replan import spare_runs

    P, plan, c, full_s = _rows_setup(tmp_path, epochs=1, dropped=("emb_mpnet",))
    p = Plan.from_dict(plan)
    from pipeline.budget.replan import twin_seconds

    frozen = twin_seconds(p, "emb_minilm") + twin_seconds(p, "emb_mpnet")
    extra = spare_runs([c], FixedDeadline(frozen + 45 + full_s * 0.75, plan), P)
    assert [e.train.run for e in extra] == ["emb_minilm", "emb_mpnet", "minilm_seed1042"]
    seed = extra[-1].train
    assert seed.family == "transformer" and seed.seed == 1042 and 0 < seed.max_train_rows < 6080
    assert "minilm_seed1042 (another seed of minilm): 1 epoch(s) on" in json.loads(P.plan_json.read_text())["replans"][-1]
    # little room: the cheap twin only, and no fine-tune below 30% of the rows
    small = spare_runs([c], FixedDeadline(twin_seconds(p, "emb_minilm") + 45 + 10, plan), P)
    assert [e.train.run for e in small] == ["emb_minilm"]
    # a fine-tune the plan dropped is bought under its own name before another seed
    P2, plan2, c2, _ = _rows_setup(tmp_path / "dropped", epochs=1, dropped=("mpnet",))
    plan2["costs"]["mpnet"] = {**MINILM_COST, "name": "mpnet", "step_s": 1.5, "infer_row_s": 0.01}
    P2.plan_json.write_text(json.dumps(plan2))
    got = spare_runs([c2], FixedDeadline(2000, plan2), P2)
    assert got[-1].train.run == "mpnet" and got[-1].train.backbone == "packaged:mpnet"


def test_the_fold_guard_costs_a_fold_at_the_rows_it_trains_on(tmp_path):
    from pipeline.budget.replan import FoldGuard

    P, plan, c, planned_s = _rows_setup(tmp_path, rows=3040, epochs=1)
    from pipeline.core.config import with_diff

    at = lambda rows: FoldGuard(FixedDeadline(1e4, plan), P, with_diff(c, {"train": {"max_train_rows": rows}}).train,  # noqa: E731
                                5).per_fold()
    assert at(3040) == pytest.approx(planned_s / 5)
    assert at(None) > at(3040) * 1.3


def test_a_frozen_encoders_first_fold_which_encodes_every_row_does_not_stop_its_cheap_later_folds(tmp_path):
    """Measured: spare time bought frozen MiniLM (~42 s); its first fold took 48 s (the encoder's
    pass over every row, cached for the other folds) and the guard stopped it before fold 1 with
    46 s left, though each later fold is one logistic regression (2 s): 48 s thrown away."""
    from pipeline.budget.replan import FoldGuard
    from pipeline.core.config import with_diff

    P, plan, c, _ = _rows_setup(tmp_path)
    emb = with_diff(load_config([], []), {"train": {"run": "emb_minilm", "family": "embedding",
                                                    "backbone": "packaged:minilm"}}).train
    guard = FoldGuard(FixedDeadline(46, plan), P, emb, 3)
    guard.spent = [48.0]
    assert guard.next_fold() < 5 and not guard.stop_before(1, 2)
    guard.spent = [48.0, 2.0]
    assert guard.next_fold() == 2.0
    # a fine-tune's folds cost alike: the mean of those done is the next one's
    tune = FoldGuard(FixedDeadline(46, plan), P, c.train, 5)
    tune.spent = [48.0]
    assert tune.next_fold() == 48.0 and tune.stop_before(1, 4)


def test_spare_time_is_costed_at_the_pace_of_the_runs_this_stage_trained(tmp_path):
    """Measured with a busy loop for the first 5 minutes: select ran at x1.56 its estimate, the
    runs after the loop stopped at x0.82; costed at x1.56 the frozen twin (76 s planned) did not
    fit the 83 s left, and 16% of the budget went unused."""
    from pipeline.budget.replan import spare_runs, stage_pace, twin_seconds
    from pipeline.core.config import with_diff

    P, plan, c, full_s = _rows_setup(tmp_path, epochs=1)
    p = Plan.from_dict(plan)
    assert stage_pace([(c, full_s * 0.8)], p) == pytest.approx(0.8)
    assert stage_pace([(c, 30.0)], p) is None  # under a minute of evidence: the stages' slowdown instead
    rows = with_diff(c, {"train": {"max_train_rows": 3040}})  # costed at the rows it ran with
    from pipeline.budget.replan import config_seconds

    assert stage_pace([(rows, config_seconds(p, "minilm", rows.train))], p) == pytest.approx(1.0)
    twin = twin_seconds(p, "emb_minilm")
    room = twin * 1.2 + 45  # half the 90 s grace is kept back
    assert [e.train.run for e in spare_runs([c], FixedDeadline(room, plan), P, pace=1.5)] == []
    assert [e.train.run for e in spare_runs([c], FixedDeadline(room, plan), P, pace=0.8)] == ["emb_minilm"]
