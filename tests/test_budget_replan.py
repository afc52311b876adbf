"""Train under a budget: the re-plan before each run (at the pace the run measured against its
own probe), the fold guard before each fold, and what time left over buys."""

import json

import pytest
from budget_helpers import MINILM_COST, TWINS, FixedDeadline, replan_setup, replans, rows_setup

from pipeline.budget.plans import from_file
from pipeline.budget.replan import FoldGuard, config_seconds, own_pace, replan, spare_runs, stage_pace, twin_seconds
from pipeline.core.config import load_config, with_diff
from pipeline.core.paths import Paths
from pipeline.modeling.base import Cost

PROBE_ROWS_PER_S = 32 / 0.57  # MINILM_COST's probe: 32 rows a 0.57 s step


def with_epochs(c, n):
    return with_diff(c, {"train": {"epochs": n}})


def _paths(tmp_path, plan: dict) -> Paths:
    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True, exist_ok=True)
    P.plan_json.write_text(json.dumps(plan))
    return P


def _screened(P: Paths, name: str, pace: float, seconds: float = 30.0, others: float | None = None) -> None:
    """select's table: ``name`` screened at ``pace`` times its probe's seconds per row."""
    cols = "rank,candidate,seconds,train_samples_per_s" + (",others_cpu" if others is not None else "")
    row = f"1,{name},{seconds},{PROBE_ROWS_PER_S / pace}" + (f",{others}" if others is not None else "")
    P.selection_csv.write_text(f"{cols}\n{row}\n")


def _planned(name: str = "minilm", estimate_s: float = 300.0, **run) -> dict:
    return {"runs": [{"name": name, "run": name, "family": "transformer", "estimate_s": estimate_s, "max_len": 64,
                      **run}], "costs": {name: {**MINILM_COST, "name": name}}, "stages": {}, "replans": []}


def test_replan_cuts_the_next_run_an_epoch_at_a_time_then_skips_it(tmp_path):
    plan = {"runs": [{"name": "minilm", "family": "transformer", "estimate_s": 300.0}], "stages": {}, "replans": []}
    P = _paths(tmp_path, plan)
    c = load_config([], ["train.run=minilm", "train.epochs=3"])
    base = with_epochs(load_config([], ["train.run=minilm"]), 3)
    assert replan(base, [base], FixedDeadline(1000, plan), P, pinned=[]).train.epochs == 3  # fits: untouched
    assert replan(base, [base], FixedDeadline(150, plan), P, pinned=[]).train.epochs == 1  # 300s for 3; 150s left
    assert replan(base, [base], FixedDeadline(50, plan), P, pinned=[]) is None  # not even one epoch fits
    log = replans(P)
    assert len(log) == 2 and "1 epoch(s) instead of 3" in log[0] and "skipped" in log[1]
    # a user who pinned train.epochs never gets fewer: the run is skipped when it cannot fit
    assert replan(c, [c], FixedDeadline(150, plan), P, pinned=["train.epochs"]) is None
    assert replan(c, [c], FixedDeadline(400, plan), P, pinned=["train.epochs"]) is c
    lr = load_config([], ["train.run=lr", "train.family=classical"])
    assert replan(lr, [lr], FixedDeadline(0, plan), P, pinned=[]) is lr  # classical: the floor, never cut


def test_replan_gives_back_cut_epochs_when_the_run_trained_faster_than_its_probe(tmp_path):
    plan = _planned(screen_s=40.0, ceiling_epochs=2)
    P = _paths(tmp_path, plan)
    _screened(P, "minilm", 0.75)
    c = with_epochs(load_config([], ["train.run=minilm"]), 1)
    assert own_pace(P, from_file(plan)[0], "minilm") == pytest.approx(0.75)
    assert replan(c, [c], FixedDeadline(1000, plan), P, pinned=[]).train.epochs == 2  # 225s a epoch: two fit
    assert replan(c, [c], FixedDeadline(300, plan), P, pinned=[]) is c  # two would not fit 300s
    _screened(P, "minilm", 2.0)
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]) is c  # 600s: one epoch fits, two do not
    assert replan(c, [c], FixedDeadline(400, plan), P, pinned=[]) is None  # 600s > 400s even at one epoch
    log = replans(P)
    assert "x0.75 its probe's pace" in log[0] and "2 epoch(s) instead of 1" in log[0] and "skipped" in log[-1]


def test_the_replan_judges_a_run_by_its_own_pace_not_the_stages_wall_time(tmp_path):
    """The H200 record: select screened MiniLM in 9.6 s against 3.3 s planned (the GPU's first use,
    its model loads, kernels tuned for new shapes), select and tune ran long with CPU work, and
    the re-plan took x2.88 for MiniLM's pace and skipped it with 14 s left. Its training rows per
    second against its own probe's are what count: at x1.0 it runs as planned; at x2 it is cut
    to what fits."""
    h200 = {"name": "minilm", "family": "transformer", "step_s": 0.01348, "infer_row_s": 8.2e-06, "load_s": 0.698,
            "max_len": 64, "lengths": {"64": 26.758}, "epochs": 3, "device": "cuda"}
    plan = {"budget_s": 240, "n_splits": 5, "n_train": 7545, "n_test": 3263, "twins": TWINS, "replans": [],
            "costs": {"minilm": h200}, "stages": {"select": {"estimate_s": 15.6, "actual_s": 19.6},
                                                  "tune": {"estimate_s": 32.8, "actual_s": 92.0}},
            "runs": [{"name": "minilm", "run": "minilm", "family": "transformer", "epochs": 3, "max_len": 64,
                      "ceiling_epochs": 3, "estimate_s": 52.0, "screen_s": 3.32}]}
    P = _paths(tmp_path, plan)
    probe_rows_per_s = 1 / from_file(plan)[0].costs["minilm"].row_seconds(64)
    P.selection_csv.write_text(f"rank,candidate,seconds,train_samples_per_s\n1,minilm,9.56,{probe_rows_per_s}\n")
    c = with_epochs(load_config([], ["train.run=minilm"]), 3)
    assert 52.0 * 9.56 / 3.32 > 60  # at the screening's wall-time pace (x2.88) it would not fit
    assert replan(c, [c], FixedDeadline(60, plan), P, pinned=[]) is c and replans(P) == []  # x1.00: as planned
    P.selection_csv.write_text(f"rank,candidate,seconds,train_samples_per_s\n1,minilm,9.56,{probe_rows_per_s / 2}\n")
    got = replan(c, [c], FixedDeadline(60, plan), P, pinned=[])
    assert got is not None and got.train.epochs < 3 and "x2.00 its probe's pace" in replans(P)[-1]
    P.selection_csv.write_text("rank,candidate,seconds\n1,minilm,9.56\n")  # a table without the rate: as planned
    assert own_pace(P, from_file(plan)[0], "minilm") is None
    assert replan(c, [c], FixedDeadline(60, plan), P, pinned=[]) is c


def test_a_screening_slowed_by_other_processes_is_not_taken_as_the_runs_pace(tmp_path):
    """A test run shared the machine while select screened mpnet, whose pace then read x1.34;
    train's re-plan cut an epoch from a run that really ran at x0.98. A screening that select
    saw share the CPU no longer sets the pace when it reads slow."""
    plan = _planned("mpnet", 600.0, screen_s=40.0, ceiling_epochs=2, epoch_s=300.0)
    P = _paths(tmp_path, plan)
    c = with_epochs(load_config([], ["train.run=mpnet"]), 2)
    p = from_file(plan)[0]
    _screened(P, "mpnet", 1.34, others=0.02)  # alone: trusted
    assert own_pace(P, p, "mpnet") == pytest.approx(1.34)
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]).train.epochs == 1  # 804s > 700s: cut
    _screened(P, "mpnet", 1.34, others=0.31)  # shared
    assert own_pace(P, p, "mpnet") == 1.0  # the plan's estimate stands
    assert replan(c, [c], FixedDeadline(700, plan), P, pinned=[]) is c  # the planned 600s fit: kept
    _screened(P, "mpnet", 0.75, others=0.31)  # fast anyway: a lower bound, kept
    assert own_pace(P, p, "mpnet") == pytest.approx(0.75)


def test_a_shortfall_within_the_tolerance_keeps_the_plan_and_says_so(tmp_path):
    """MiniLM at x1.22 needed ~1438s with 1430s left; it was cut to one epoch for 8 seconds. A
    shortfall within the fold guard's grace (5% of the budget) keeps it."""
    P, plan, c = replan_setup(tmp_path)
    assert replan(c, [c], FixedDeadline(1190, plan), P, pinned=[]) is c  # 10s short of 1200s: kept
    assert "the plan kept: 10s short, within the 90s" in replans(P)[0]
    assert replan(c, [c], FixedDeadline(1000, plan), P, pinned=[]).train.epochs == 1  # 200s short: cut


def test_a_larger_shortfall_takes_the_option_with_the_best_expected_score(tmp_path):
    P, plan, c = replan_setup(tmp_path)
    got = replan(c, [c], FixedDeadline(500, plan), P, pinned=[])  # one epoch (600s) does not fit: the twin does
    assert got.train.family == "embedding" and got.train.run == "emb_minilm"
    assert "emb_minilm (its encoder frozen + LR) instead" in replans(P)[-1]
    P2, plan2, c2 = replan_setup(tmp_path / "notwin", twin=False)
    assert replan(c2, [c2], FixedDeadline(500, plan2), P2, pinned=[]) is None  # nothing fits: skipped
    # the options are scored by this backbone's own epoch curve where one exists: a second epoch
    # that measured +0.05 makes the twin (-0.035 expected) the better cut than one epoch
    run = P.run("earlier")
    run.dir.mkdir(parents=True)
    run.config.write_text(f"train:\n  backbone: {c.train.backbone}\n")
    run.cv.write_text("{}")
    run.history.write_text("fold,kind,epoch,metric\n0,eval,1.0,0.70\n0,eval,2.0,0.75\n1,eval,1.0,0.71\n1,eval,2.0,0.76\n")
    assert replan(c, [c], FixedDeadline(900, plan), P, pinned=[]).train.run == "emb_minilm"
    assert "1 epoch(s) instead of 2: ~600s, -0.0500 expected" in replans(P)[-1]


def test_a_shortfall_is_met_with_a_row_subsample_where_that_loses_least(tmp_path):
    """Between all rows at 2 epochs and 1 epoch, 90% of the rows at 2 epochs is the option with
    the best expected score (0.003 for a tenth of the rows, 0.004 for an epoch) when it fits;
    the log line has the numbers of every option; a pinned subsample is never re-planned."""
    P, plan, c, full_s = rows_setup(tmp_path)
    ninety = config_seconds(from_file(plan)[0], "minilm", with_diff(c, {"train": {"max_train_rows": 5472}}).train)
    assert ninety < full_s - 90  # beyond the grace: a real choice
    got = replan(c, [c], FixedDeadline((ninety + full_s - 90) / 2, plan), P, pinned=[])
    assert got.train.max_train_rows == 5472 and got.train.epochs == 2
    line = replans(P)[-1]
    assert "-> minilm: 5,472 of each fold's 6,080 rows (90%), 2 epoch(s)" in line and "1 epoch(s) instead" in line
    kept = replan(c, [c], FixedDeadline((ninety + full_s - 90) / 2, plan), P, pinned=["train.max_train_rows"])
    assert kept.train.max_train_rows is None


def test_a_subsampled_fine_tune_gets_its_rows_back_when_the_stages_before_ran_fast(tmp_path):
    P, plan, c, planned_s = rows_setup(tmp_path, rows=3040, epochs=1)
    assert replan(c, [c], FixedDeadline(planned_s + 5, plan), P, pinned=[]).train.max_train_rows == 3040
    assert replan(c, [c], FixedDeadline(planned_s * 3, plan), P, pinned=[]).train.max_train_rows is None
    assert "all of each fold's 6,080 training rows instead of 3,040" in replans(P)[-1]
    some = replan(c, [c], FixedDeadline(planned_s * 1.3 + 45, plan), P, pinned=[])
    assert 3040 < some.train.max_train_rows < 6080


def test_time_left_after_the_last_run_buys_the_frozen_twin(tmp_path):
    P, plan, c = replan_setup(tmp_path)
    extra = spare_runs([c], FixedDeadline(900, plan), P)
    assert [e.train.run for e in extra] == ["emb_minilm"] and extra[0].train.family == "embedding"
    assert "spare time" in replans(P)[-1]
    assert spare_runs([c], FixedDeadline(50, plan), P) == []  # no room: nothing bought


def test_spare_time_buys_dropped_frozen_encoders_then_a_fine_tune_sized_to_what_is_left(tmp_path):
    """Spare time buys the twin and the dropped frozen encoders while they fit, then one
    fine-tune sized to the rest: a dropped one under its own name, else another seed of the one
    that ran, on a row subsample."""
    P, plan, c, full_s = rows_setup(tmp_path, epochs=1, dropped=("emb_mpnet",))
    p = from_file(plan)[0]
    frozen = twin_seconds(p, "emb_minilm") + twin_seconds(p, "emb_mpnet")
    extra = spare_runs([c], FixedDeadline(frozen + 45 + full_s * 0.75, plan), P)
    assert [e.train.run for e in extra] == ["emb_minilm", "emb_mpnet", "minilm_seed1042"]
    seed = extra[-1].train
    assert seed.family == "transformer" and seed.seed == 1042 and 0 < seed.max_train_rows < 6080
    assert "minilm_seed1042 (another seed of minilm): 1 epoch(s) on" in replans(P)[-1]
    small = spare_runs([c], FixedDeadline(twin_seconds(p, "emb_minilm") + 45 + 10, plan), P)
    assert [e.train.run for e in small] == ["emb_minilm"]  # the cheap twin only; no fine-tune below 30%
    P2, plan2, c2, _ = rows_setup(tmp_path / "dropped", epochs=1, dropped=("mpnet",))
    plan2["costs"]["mpnet"] = {**MINILM_COST, "name": "mpnet", "step_s": 1.5, "infer_row_s": 0.01}
    P2.plan_json.write_text(json.dumps(plan2))
    got = spare_runs([c2], FixedDeadline(2000, plan2), P2)
    assert got[-1].train.run == "mpnet" and got[-1].train.backbone == "packaged:mpnet"


def test_spare_time_is_costed_at_the_pace_of_the_runs_this_stage_trained(tmp_path):
    """A busy loop for the first 5 minutes: select ran at x1.56, the runs after the loop stopped
    at x0.82; costed at x1.56 the frozen twin did not fit the 83 s left."""
    P, plan, c, full_s = rows_setup(tmp_path, epochs=1)
    p = from_file(plan)[0]
    assert stage_pace([(c, full_s * 0.8, 0.0)], p) == pytest.approx(0.8)
    assert stage_pace([(c, 30.0, 0.0)], p) is None  # under a minute of evidence: the plan's estimates
    rows = with_diff(c, {"train": {"max_train_rows": 3040}})  # costed at the rows it ran with
    assert stage_pace([(rows, config_seconds(p, "minilm", rows.train), None)], p) == pytest.approx(1.0)
    room = twin_seconds(p, "emb_minilm") * 1.2 + 45  # half the 90 s grace is kept back
    assert [e.train.run for e in spare_runs([c], FixedDeadline(room, plan), P, pace=1.5)] == []
    assert [e.train.run for e in spare_runs([c], FixedDeadline(room, plan), P, pace=0.8)] == ["emb_minilm"]


def test_a_run_other_processes_slowed_does_not_set_the_pace_of_what_spare_time_buys(tmp_path):
    """The hog run at 1ab377b: minilm trained while a busy loop held a core for part of it;
    costed at that pace, the time left after the loop stopped bought the frozen twin only and
    146 s of the 600 went unused."""
    P, plan, c, full_s = rows_setup(tmp_path, epochs=1)
    p = from_file(plan)[0]
    assert stage_pace([(c, full_s * 1.6, 0.43)], p) is None  # slowed by others: the plan's estimates
    assert stage_pace([(c, full_s * 1.6, 0.05)], p) == pytest.approx(1.6)  # its own pace, however slow
    rows = with_diff(c, {"train": {"max_train_rows": 3040}})
    assert stage_pace([(c, full_s * 1.6, 0.43), (rows, config_seconds(p, "minilm", rows.train) * 0.9, 0.0)],
                      p) == pytest.approx(0.9)  # the undisturbed run alone


def test_train_hands_the_spare_time_each_runs_share_of_other_processes(tmp_path, monkeypatch):
    """The train stage measures, per run, the CPU other processes used while it trained, and
    passes it with the run's seconds to the pace the spare runs are costed at."""
    from pipeline.cv.runs import RunResult
    from pipeline.stages import train

    class Busy:  # other processes held 40% of the CPU while the run trained
        share = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.share = 0.4

    P, plan, c, _ = rows_setup(tmp_path, epochs=1)
    monkeypatch.setattr(train, "Others", Busy)
    monkeypatch.setattr(train, "train_run", lambda c, paths, force, deadline=None: RunResult(
        c.train.run, paths.models / c.train.run, {"cv": 0.8}, [0, 1], [0, 1]))
    trained, done = [], []
    out = train.train_runs([c], P, False, FixedDeadline(900, plan), into=(trained, done))
    assert [x[3] for x in out] == [0.4] and trained == [c]
    assert [(cc.train.run, share) for cc, _, share in done] == [(c.train.run, 0.4)]


def test_the_fold_guard_costs_a_fold_at_the_rows_it_trains_on(tmp_path):
    P, plan, c, planned_s = rows_setup(tmp_path, rows=3040, epochs=1)

    def at(rows):
        return FoldGuard(FixedDeadline(1e4, plan), P, with_diff(c, {"train": {"max_train_rows": rows}}).train,
                         5).per_fold()

    assert at(3040) == pytest.approx(planned_s / 5)
    assert at(None) > at(3040) * 1.3


def test_a_frozen_encoders_first_fold_which_encodes_every_row_does_not_stop_its_cheap_later_folds(tmp_path):
    """Spare time bought frozen MiniLM (~42 s); its first fold took 48 s (the encoder's pass over
    every row, cached for the other folds) and the guard stopped it before fold 1 with 46 s
    left, though each later fold is one logistic regression (2 s)."""
    P, plan, c, _ = rows_setup(tmp_path)
    emb = with_diff(load_config([], []), {"train": {"run": "emb_minilm", "family": "embedding",
                                                    "backbone": "packaged:minilm"}}).train
    guard = FoldGuard(FixedDeadline(46, plan), P, emb, 3)
    guard.spent = [48.0]
    assert guard.next_fold() < 5 and not guard.stop_before(1, 2)
    guard.spent = [48.0, 2.0]
    assert guard.next_fold() == 2.0
    tune = FoldGuard(FixedDeadline(46, plan), P, c.train, 5)  # a fine-tune's folds cost alike
    tune.spent = [48.0]
    assert tune.next_fold() == 48.0 and tune.stop_before(1, 4)
    assert "minilm: stopped before fold 1" in replans(P)[-1]


def test_cost_is_the_family_interfaces_own():
    """The budget reads a candidate's costs through the family interface (pipeline.modeling.base)."""
    from pipeline.budget import costs

    assert costs.Cost is Cost and Cost("m", "transformer").device == "cpu"
