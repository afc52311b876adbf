"""Planning for a machine you are not on: a paces file (what `make all` measured, or the H200
profile built from its record) in place of the probes; expected losses from this data's history."""

import json
from pathlib import Path

import pytest
from conftest import SHARED, run_stage

from pipeline.budget import paces
from pipeline.budget.plans import Plan, from_file
from pipeline.core.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "benchmarks/results/paces-h200-2026-12-04.json"
GPU = ROOT / "configs/gpu.yaml"


@pytest.fixture(scope="module")
def tweets(tmp_path_factory) -> Path:
    """The disaster tweets, cleaned once for this module's plans (nothing is measured on them)."""
    if not (SHARED / "train.csv").exists():
        pytest.skip(f"{SHARED} is absent")
    work = tmp_path_factory.mktemp("tweets")
    assert run_stage("clean", work, SHARED, config=GPU) == 0
    return work


def plan_for(work: Path, time: str, *sets: str, paces_file: Path = H200) -> Plan:
    assert run_stage("plan", work, SHARED, f'budget.time="{time}"', f"budget.paces={paces_file}", *sets,
                     config=GPU) == 0
    return from_file(json.loads((work / "reports/plan.json").read_text()))[0]


def set_up(tmp_path: Path, *names: str) -> Path:
    """The H200 profile as if `make setup-mpnet` had run there (its mpnet costs are estimates)."""
    d = json.loads(H200.read_text())
    for n in names:
        d["costs"][n]["available"] = True
    out = tmp_path / "paces-set-up.json"
    out.write_text(json.dumps(d))
    return out


def test_the_h200_profile_says_what_was_measured_there_and_what_is_estimated():
    d = paces.read(H200)
    assert d["machine"]["name"] == "NVIDIA H200" and d["machine"]["device"] == "cuda"
    assert d["costs"]["minilm"]["step_s"] == 0.01348 and d["costs"]["minilm"]["device"] == "cuda"
    assert d["before_s"] == 14.9 and d["plan_s"] == 20.7 and d["stages"]["light_s"]["folds"] == 3.4
    assert not d["costs"]["mpnet"]["available"] and "estimate" in d["costs"]["mpnet"]["why"]
    assert {"measured there", "estimated"} <= set(d["sources"]) and any("mpnet" in s for s in d["sources"]["estimated"])


def test_four_minutes_on_the_h200_keep_minilm_on_every_fold(tweets):
    """The record: at TIME=4m the plan cut MiniLM to 3 folds (then train skipped it). Planned
    from the H200's paces, MiniLM is fine-tuned on all 5 folds for at least 2 epochs, the
    classical models train beside it on the CPU, and the estimate fits the budget."""
    p = plan_for(tweets, "4m")
    minilm = p.named("minilm")
    assert p.fits and p.device == "cuda" and p.n_splits == 5 and minilm.epochs >= 2 and minilm.rows is None
    assert p.estimate_s <= p.budget_s * (1 - p.margin) and p.side_by_side
    assert not any(c.startswith(("minilm:", "folds:", "trade:")) for c in p.cuts)
    assert p.paces == str(H200) and p.stages["inspect+clean"] == 14.9 and p.stages["folds"] == 3.4


def test_ten_minutes_on_the_h200_buy_what_the_presets_ceiling_allows(tweets, tmp_path):
    """TIME=10m buys more than 4m: the frozen twin and the tuning trials 4m cut; with the base
    encoder set up there, mpnet fine-tuned on every fold; with a metric that scores
    probabilities, seeds."""
    four, ten = plan_for(tweets, "4m"), plan_for(tweets, "10m")
    assert ten.fits and ten.n_splits == 5 and ten.estimate_s <= ten.budget_s * (1 - ten.margin)
    assert "emb_minilm" in {r.name for r in ten.runs} and ten.trials > four.trials
    assert "mpnet" not in {r.name for r in ten.runs}  # not set up on that machine
    mpnet = plan_for(tweets, "10m", paces_file=set_up(tmp_path, "mpnet", "emb_mpnet"))
    assert mpnet.fits and mpnet.named("mpnet").epochs >= 2 and mpnet.n_splits == 5
    assert mpnet.named("minilm").epochs >= 2 and "emb_mpnet" in {r.name for r in mpnet.runs}
    four_mpnet = plan_for(tweets, "4m", paces_file=set_up(tmp_path, "mpnet", "emb_mpnet"))
    assert four_mpnet.fits and four_mpnet.estimate_s < mpnet.estimate_s


def test_seeds_are_bought_where_the_metric_scores_probabilities(tweets, tmp_path):
    work = tmp_path / "logloss"
    assert run_stage("clean", work, SHARED, "data.metric=logloss", config=GPU) == 0
    p = plan_for(work, "10m", "data.metric=logloss")
    assert p.seeds_pay and p.named("minilm").seeds > 1 and p.fits
    assert any("seeds per fold" in a for a in p.added)


def test_the_plan_says_which_expected_loss_was_measured_and_which_is_a_prior(tweets, tmp_path):
    """This data's history has MiniLM's epoch curve (history.csv) and a run of it on 30% of the
    rows: the plan's expected losses for MiniLM's epochs and rows are those measurements; the
    rest are priors, and the plan's text says which."""
    import shutil

    work = tmp_path / "history"
    shutil.copytree(tweets, work)
    for run, rows, cv in (("minilm", None, 0.80), ("minilm_seed1042", 1509, 0.776)):
        d = work / "models" / run
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(f"train:\n  backbone: packaged:minilm\n  max_train_rows: {rows or 'null'}\n"
                                       "folds:\n  n_splits: 5\n")
        (d / "cv.json").write_text(json.dumps({"cv": cv}))
        (d / "history.csv").write_text("fold,kind,epoch,metric\n0,eval,1.0,0.790\n0,eval,2.0,0.797\n"
                                       "0,eval,3.0,0.799\n")
    p = plan_for(work, "4m")
    assert p.losses["epoch:minilm"]["value"] == pytest.approx(0.0045)
    assert p.losses["epoch:minilm"]["source"].startswith("measured: the epoch curves of minilm, minilm_seed1042")
    share = 1509 / (7545 - 1509)
    assert p.losses["rows:minilm"]["value"] == pytest.approx((0.80 - 0.776) / -__import__("math").log2(share), rel=1e-3)
    assert p.losses["twin"] == {"value": 0.035, "source": "prior"}
    from pipeline.budget.planner import format_plan

    assert "measured here: epoch:minilm 0.0045" in format_plan(p)


def test_a_bad_paces_file_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="budget.paces: .*missing.json not found"):
        paces.read(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1}')
    with pytest.raises(ConfigError, match=r"bad.json is not a paces file of version 1"):
        paces.read(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json is not JSON"):
        paces.read(bad)


def test_make_hands_paces_over_and_auto_picks_the_profile_of_the_machine_it_was_recorded_on():
    from pipeline.cli import env_args

    args = env_args({"TEXTCOMP_PACES": str(H200), "TEXTCOMP_PROFILE": "auto", "TEXTCOMP_TIME": "4m"})
    assert args[args.index("--config") + 1] == "configs/gpu.yaml"
    assert f'budget.paces="{H200}"' in args and 'budget.time="4m"' in args
