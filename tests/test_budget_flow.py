"""The time budget through the stages: the plan stage measuring and writing its files, the
plan applied under SET overrides, the clock, a run stopped at a fold boundary, the CPU's runs
trained beside the GPU's, and whether other processes shared the machine while it was timed."""

import json
import os
import time

import pytest
from conftest import run_stage

from pipeline.budget import clock, planfile
from pipeline.budget.plans import STAGES_AFTER_TRAIN, from_file
from pipeline.core.config import ConfigError, load_config, parse_duration
from pipeline.core.paths import Paths


def test_durations_parse_and_bad_ones_fail_at_load():
    assert [parse_duration(x) for x in ("90s", "30m", "2h", "1h30m", "45")] == [90, 1800, 7200, 5400, 45]
    with pytest.raises(ConfigError, match="budget.time"):
        load_config([], ["budget.time=3days"])
    with pytest.raises(ConfigError, match="budget.preset"):
        load_config([], ["budget.preset=huge"])


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
    plan = {"t0": 1000.0, "budget_s": 600, "stages": {s: {"estimate_s": 10.0} for s in STAGES_AFTER_TRAIN}}
    monkeypatch.setenv(clock.T0_ENV, "1000")
    assert clock.Deadline.load(from_file(plan)[0]).end == pytest.approx(1000 + 600 - 30)
    monkeypatch.setenv(clock.T0_ENV, "2000")  # a stage rerun by hand later: the plan's settings, not its clock
    assert clock.Deadline.load(from_file(plan)[0]).end is None


class ScriptedDeadline(clock.Deadline):
    """Plenty of time before the first transformer fold, none after it."""

    def __init__(self, plan):
        super().__init__(time.time() + 1e6, from_file(plan)[0])
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


def test_plan_stage_measures_plans_repeatably_and_select_follows_it(prepared, tiny_bert, tmp_path, monkeypatch):
    from pipeline.modeling import families

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
    # what was measured, in reports/paces.json: a plan from that file is the same plan, nothing measured
    recorded = json.loads((workdir / "reports/paces.json").read_text())
    assert recorded["costs"] == costs and recorded["machine"]["device"] == "cpu" and recorded["before_s"] >= 0
    paces_file = tmp_path / "paces.json"
    paces_file.write_text(json.dumps(recorded))
    monkeypatch.setattr(families.Transformer, "probe", lambda *a, **k: pytest.fail("a paces file measures nothing"))
    assert run_stage("plan", workdir, data, *sets, f"budget.paces={paces_file}") == 0
    third = json.loads((workdir / "reports/plan.json").read_text())
    assert third["paces"] == str(paces_file) and third["costs"] == costs
    for key in ("runs", "cuts", "n_splits", "trials"):
        assert third[key] == first[key], key
    assert {s: v["estimate_s"] for s, v in third["stages"].items() if s != "inspect+clean"} == \
        {s: v["estimate_s"] for s, v in first["stages"].items()}  # (first's inspect+clean was popped above)
    monkeypatch.undo()
    monkeypatch.setattr(clock, "disturbed", lambda share: False)
    assert run_stage("plan", workdir, data, *sets) == 0
    assert run_stage("select", workdir, data, *sets) == 0
    sel = json.loads((workdir / "reports/selected.json").read_text())
    entry = next(r for r in sel["runs"] if r["run"] == "tiny")
    assert entry["diff"]["train"]["epochs"] == 3 and entry["diff"]["tune"]["epochs"] == [1, 3]
    import pandas as pd  # select's table has each candidate's training rate: train's re-plan reads its pace there

    assert (pd.read_csv(workdir / "reports/model_selection.csv")["train_samples_per_s"] > 0).all()
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
        return [k for k, v in json.loads(throughput.read_text()).items()
                if isinstance(v, dict) and not k.startswith("stages:")]

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


def test_the_cpu_runs_train_beside_the_gpus_when_the_plan_says_so(binary_comp, workdir, tiny_bert, tmp_path):
    """A plan made for a machine with a GPU and the cores for both runs the classical models in
    a process of their own while the fine-tunes train: both finish, both are in the ledger.
    (Here the "GPU" run trains on the CPU: what is tested is that train follows the plan.)"""
    from pipeline.budget.plans import Ledger, Plan, RunPlan, to_file
    from pipeline.core.config import with_diff
    from pipeline.modeling.base import Cost
    from pipeline.stages import train as train_stage

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tiny.yaml").write_text(f"train:\n  run: tiny\n  family: transformer\n  backbone: {tiny_bert}\n"
                                   "  max_len: 32\n  batch_size: 16\n  epochs: 1\n")
    (exp / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n")
    sets = [f"select.candidates=[{exp}/lr.yaml,{exp}/tiny.yaml]", "select.top_k=2", "tune.enabled=false",
            "folds.n_splits=2"]
    for stage in ("clean", "folds", "select", "tune"):
        assert run_stage(stage, workdir, binary_comp, *sets) == 0
    names = {"lr": f"{exp}/lr.yaml", "tiny": f"{exp}/tiny.yaml"}
    plan = Plan(side_by_side=True, n_splits=2, runs=[RunPlan(names["lr"], "classical", run="lr"),
                                                     RunPlan(names["tiny"], "transformer", run="tiny")],
                costs={names["lr"]: Cost(names["lr"], "classical"),
                       names["tiny"]: Cost(names["tiny"], "transformer", device="cuda")})
    paths = Paths.make(workdir, binary_comp)
    paths.plan_json.write_text(json.dumps(to_file(plan, Ledger())))
    cfg = load_config([], sets)
    object.__setattr__(cfg, "_plan", plan)  # as planfile.apply leaves it
    results = train_stage.run(cfg, paths, plan="reports/runs.json")
    assert sorted(r.run for r in results if r.cv is not None) == ["lr", "tiny"]
    ledger = from_file(json.loads(paths.plan_json.read_text()))[1]
    assert set(ledger.runs) == {"lr", "tiny"} and all(r.complete for r in ledger.runs.values())
    assert (workdir / "models/lr/cv.json").exists() and (workdir / "models/tiny/cv.json").exists()
    assert train_stage._cpu_runs([with_diff(cfg, {"train": {"run": "lr"}})], plan) == []  # no GPU run: in turn
