"""What things cost: the probes, a fold and a run from a candidate's ``Cost``, and each stage's
own cost (a process start, a GPU's first use, the stages without models) on the machine."""

import copy
import json
import time

import pytest
from budget_helpers import WORK, costs, estimated, small_plan

from pipeline.budget import costs as costs_mod
from pipeline.budget import paces, planfile
from pipeline.budget.costs import LIGHT_S, STAGE_START_S, StageCosts
from pipeline.budget.plans import Ledger, Plan, RunPlan, Work
from pipeline.core.paths import Paths
from pipeline.modeling.base import Cost


def test_estimates_follow_rows_epochs_folds_and_token_lengths():
    c = costs()["minilm"]
    base = costs_mod.fold_seconds(c, 3200, 2, 128, 800, 1000)
    assert costs_mod.fold_seconds(c, 6400, 2, 128, 800, 1000) > 1.8 * base - 60
    assert costs_mod.fold_seconds(c, 3200, 2, 64, 800, 1000) == pytest.approx(base * 0.75, rel=0.1)
    r = RunPlan("minilm", "transformer", epochs=2, max_len=128, seeds=1)
    assert costs_mod.run_seconds(c, r, WORK, 5, False) > costs_mod.run_seconds(c, r, WORK, 3, False)


def test_chunked_texts_cost_their_windows():
    base = dict(step_s=0.3, infer_row_s=0.002, load_s=2, max_len=64, epochs=1, lengths={"64": 60.0})
    one = costs_mod.fold_seconds(Cost("m", "transformer", **base), 1000, 1, 64, 300, 500)
    chunked = Cost("m", "transformer", windows={"64": 3.0}, chunks=True, chunk_training=True, **base)
    assert costs_mod.fold_seconds(chunked, 1000, 1, 64, 300, 500) == pytest.approx(3 * (one - 2 * 2) + 2 * 2, rel=0.05)


def test_under_token_budget_batches_a_step_is_costed_at_the_planned_batch():
    """The probe fits a step's seconds against the padded tokens in its batch (a + b * tokens);
    under token batches a step is a batch filled to the budget (at most max_rows rows): fewer,
    larger steps. On a GPU, where a small batch costs its kernel launches (the H200's MiniLM
    step: 13 ms for 32 tweets), the same epoch then costs a fraction of its batch_size steps."""
    gpu = dict(family="transformer", batch_size=32, step_s=0.0135, step_fit=[0.0125, 1.25e-6], lengths={"64": 26.8},
               max_len=64, load_s=0.7, infer_row_s=8e-6, device="cuda")
    rows = Cost("m", **gpu)
    tokens = Cost("m", **gpu, batch_tokens=8192)
    assert rows.steps(6036, 64) == (189, pytest.approx(0.0135))
    n, step = tokens.steps(6036, 64)
    per_step = 8192 / 26.8  # rows a batch of 8,192 tokens holds
    assert n == 20 and step == pytest.approx(0.0125 + 1.25e-6 * 8192)  # 6,036 rows / 305.7 a step
    assert costs_mod.fold_seconds(tokens, 6036, 3, 64, 1509, 3263) < costs_mod.fold_seconds(rows, 6036, 3, 64, 1509,
                                                                                            3263) / 2
    assert tokens.row_seconds(64) == pytest.approx(step / per_step, rel=1e-3)  # a row is its share of a step
    capped = Cost("m", **gpu, token_batches=True, max_rows=64)  # the profile's: 32 x 64 tokens, at most 64 rows
    n, step = capped.steps(6036, 64)
    assert n == 95 and step == pytest.approx(0.0125 + 1.25e-6 * 64 * 26.8)
    no_fit = Cost("m", **{**gpu, "step_fit": None}, batch_tokens=8192)  # a probe without its fit: rows, as measured
    assert no_fit.steps(6036, 64) == rows.steps(6036, 64)


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
    """4,000 essays are millions of characters: the probe fits on about 0.6M of them, with a
    floor of rows for a steady slope, while 4,000 tweets stay whole."""
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
    assert m["device"] == "cpu" and len(m["fit"]) == 2  # what Cost.device and Cost.step_fit read
    if precision == "fp32":
        return
    assert m["test_infer_row_s"] > 0 and m["infer_row_s"] > 0
    c = Cost("m", "transformer", step_s=1.0, infer_row_s=0.01, test_infer_row_s=0.03, load_s=0, max_len=64)
    same = Cost("m", "transformer", step_s=1.0, infer_row_s=0.01, load_s=0, max_len=64)
    gap = costs_mod.fold_seconds(c, 320, 2, 64, 100, 1000) - costs_mod.fold_seconds(same, 320, 2, 64, 100, 1000)
    assert gap == pytest.approx(1000 * 0.02)  # the test rows only: validation stays at 0.01 a row


def _gpu_plan(fixed: StageCosts, folds: int = 5) -> tuple[Plan, dict[str, Cost], Work]:
    work = Work(n_train=7545, n_test=3263, select_folds=2)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=3.9e-4, pred_row_s=3.1e-4, fit_fixed_s=0.5),
          "minilm": Cost("minilm", "transformer", step_s=0.0135, infer_row_s=8.2e-6, load_s=0.7, max_len=64,
                         lengths={"64": 26.8}, epochs=3, device="cuda")}
    p = small_plan(1e9, [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=3, max_len=64)])
    p.fixed, p.n_splits = fixed.to_dict(), folds
    p.classical_trials, p.tune_rows = 4, None
    p.costs, p.work, p.n_train, p.n_test = cs, work, work.n_train, work.n_test
    return p, cs, work


def test_stage_costs_are_priors_until_this_machine_measured_them():
    """The priors are the 2-core CPU's (a stage's start 6 s); a finished stage's actual seconds
    teach this machine's (the H200's folds took 3.4 s, its ensemble 3.5 s with two runs); a GPU's
    first use is paid by each stage that trains on it, and only there."""
    sc = StageCosts()
    assert sc.start_s == STAGE_START_S and sc.light("folds") == LIGHT_S["folds"] == 8.0
    assert sc.light("ensemble", 3, 7500) == pytest.approx(9.0 + 1.5 * 3 * 1.5)
    sc.learn("folds", 3.4, 2, 7545)
    sc.learn("ensemble", 3.5, 2, 7545)
    assert sc.light("folds") == pytest.approx(3.4) and sc.light("ensemble", 2, 7545) == pytest.approx(3.5, abs=0.01)
    assert sc.light("ensemble", 4, 7545) > 3.5  # its per-run part scaled alike
    sc.learn("select", 19.6, 3, 7545, models_s=15.1)  # the screenings' own seconds are the models'
    assert sc.start_s == pytest.approx(4.5) and set(sc.measured) == {"folds", "ensemble", "start_s"}
    sc.learn("select", 10.0, 3, 7545, models_s=15.0)  # side by side or a clock glitch: nothing to learn
    assert sc.start_s == pytest.approx(4.5)
    gpu, _, _ = _gpu_plan(StageCosts(first_use_s=5.0))
    cpu = copy.deepcopy(gpu)
    cpu.costs = {**cpu.costs, "minilm": Cost(**{**cpu.costs["minilm"].__dict__, "device": "cpu"})}
    a, b = costs_mod.stage_seconds(gpu), costs_mod.stage_seconds(cpu)
    for s in ("select", "tune", "train"):
        assert a[s] - b[s] == pytest.approx(5.0 if s != "tune" else 0.0, abs=0.15)  # tune: no fine-tune tuned


def test_tuning_trials_are_costed_per_family_at_the_rows_tune_trains_on():
    """The H200's tune took 92 s against 32.8 s planned: its trials were costed at the screening's
    500 rows while tune trained each on a whole fold. Each family's trials are costed on its own
    device at tune.max_train_rows (None: a fold's training rows), trials x each candidate."""
    p, cs, work = _gpu_plan(StageCosts())
    p.select_rows = 500
    full = costs_mod.fold_train_rows(work.n_train, 5)
    tfidf = costs_mod.fold_seconds(cs["tfidf"], full, 1, 64, 1509, 3263)
    assert costs_mod.stage_seconds(p)["tune"] == pytest.approx(STAGE_START_S + 4 * tfidf, abs=0.1)
    p.tune_transformers, p.trials = True, 2
    minilm = costs_mod.fold_seconds(cs["minilm"], full, 2, 64, 1509, 3263)  # at most max(tune.epochs) epochs
    # one tune.n_trials for every family tuned: the transformers' 2 for TF-IDF too
    assert costs_mod.stage_seconds(p)["tune"] == pytest.approx(STAGE_START_S + 2 * tfidf + 2 * minilm, abs=0.1)
    p.tune_rows = 1200
    assert costs_mod.stage_seconds(p)["tune"] < STAGE_START_S + 2 * tfidf + 2 * minilm - 1
    p.classical_trials = 0  # the classical models left out of tune.families
    assert costs_mod.stage_seconds(p)["tune"] == pytest.approx(STAGE_START_S + 2 * costs_mod.fold_seconds(
        cs["minilm"], 1200, 2, 64, 1509, 3263), abs=0.1)
    assert planfile.global_diff(p)["tune"]["families"] == ["transformer"]


def test_the_cpu_runs_go_beside_the_gpus_fine_tunes_where_the_machine_has_the_cores():
    """On a machine with the cores for both, train runs the classical models in a process of
    their own beside the fine-tunes on the GPU: its seconds are the longer side's (the CPU side
    pays its own start); on 2 cores, or without a GPU run, one after the other."""
    p, cs, work = _gpu_plan(StageCosts(cores=16))
    secs = costs_mod.stage_seconds(p)
    runs = {r.name: r.estimate_s for r in p.runs}
    assert p.side_by_side and secs["train"] == pytest.approx(
        STAGE_START_S + max(runs["tfidf"] + STAGE_START_S, runs["minilm"]), abs=0.1)
    two, _, _ = _gpu_plan(StageCosts(cores=2))
    assert costs_mod.stage_seconds(two)["train"] == pytest.approx(STAGE_START_S + sum(runs.values()), abs=0.1)
    assert not two.side_by_side
    tiny, _, _ = _gpu_plan(StageCosts(cores=16, start_s=200.0))  # a start that costs more than it saves
    costs_mod.stage_seconds(tiny)
    assert not tiny.side_by_side
    assert estimated(p, cs, work) < estimated(two, cs, work)


def test_a_finished_stage_teaches_this_machine_its_stage_costs(tmp_path):
    """The ledger's actual seconds go where the probes are kept (this machine's entry in
    throughput.json) and into reports/paces.json; a plan made from another machine's paces
    teaches nothing (its ledger is this machine's, its costs are not)."""
    P = Paths.make(tmp_path)
    P.reports.mkdir(parents=True)
    P.interim.mkdir(parents=True)
    key = "stages:cpu:x86_64:2:2"
    plan = Plan(runs=[RunPlan("tfidf", "classical"), RunPlan("nbsvm", "classical")], n_train=7545,
                fixed=StageCosts(machine=key).to_dict(), stages={"folds": 8.0, "select": 20.0, "ensemble": 13.5})
    P.paces_json.write_text(json.dumps({"version": 1, "costs": {}, "stages": StageCosts().to_dict()}))
    P.selection_csv.write_text("rank,candidate,seconds\n1,tfidf,3.0\n2,nbsvm,4.0\n")
    ledger = Ledger(stages={"folds": 3.4, "select": 11.5, "ensemble": 3.5})
    for stage in ("folds", "select", "ensemble"):
        paces.learn(P, plan, ledger, stage)
    learned = StageCosts.of(json.loads(P.throughput_json.read_text())[key])
    assert learned.light("folds") == pytest.approx(3.4) and learned.start_s == pytest.approx(4.5)
    assert learned.machine == key and learned.light("submit") == StageCosts().light("submit")  # not run: the prior
    assert learned.light("ensemble", 2, 7545) == pytest.approx(3.5, abs=0.01)
    assert json.loads(P.paces_json.read_text())["stages"] == learned.to_dict()
    other = tmp_path / "other"
    Q = Paths.make(other)
    Q.reports.mkdir(parents=True)
    plan.paces = "paces-h200.json"
    paces.learn(Q, plan, ledger, "folds")
    assert not Q.throughput_json.exists()


def test_a_gpus_first_use_is_measured_once_per_machine(monkeypatch):
    """A fresh process's first GPU use (transformers' import, the device's context) is measured
    by the plan stage once and kept with the machine's stage costs; a CPU pays none."""
    calls = []
    monkeypatch.setattr(paces, "first_use_s", lambda: calls.append(1) or 4.2)
    gpu = {"device": "cuda", "name": "NVIDIA H200", "cores": 16, "threads": 16}
    cache: dict = {}
    assert paces.stage_costs(cache, gpu).first_use_s == 4.2 and "first_use_s" in cache[paces.key(gpu)]["measured"]
    assert paces.stage_costs(cache, gpu).first_use_s == 4.2 and len(calls) == 1  # kept: not measured again
    cpu = {"device": "cpu", "name": "x86_64", "cores": 2, "threads": 2}
    assert paces.stage_costs(cache, cpu).first_use_s == 0.0 and len(calls) == 1
    monkeypatch.setattr(paces, "first_use_s", lambda: None)  # a failed measurement: the prior, not kept
    assert paces.stage_costs({}, gpu).first_use_s == 0.0


def test_a_run_that_starts_from_a_pretrained_encoder_pays_its_build_once():
    """train.pretrain_steps: the masked-LM build is paid once before the first fold, not per fold
    or seed (a build found in the cache costs nothing: plan.pretrain_seconds gives 0)."""
    from pipeline.budget.plans import RunPlan, Work

    base = dict(family="transformer", step_s=0.5, infer_row_s=0.004, load_s=2, max_len=64, epochs=2)
    run = RunPlan("m", "transformer", epochs=2, max_len=64, seeds=2)
    work = Work(n_train=2000, n_test=500)
    plain = costs_mod.run_seconds(Cost("m", **base), run, work, 5, False)
    assert costs_mod.run_seconds(Cost("m", **base, pretrain_s=300.0), run, work, 5, False) == pytest.approx(plain + 300)
