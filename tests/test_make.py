"""The Makefile: `make -n all` names only stages that exist, `make help` documents the targets,
and make's variables reach the program as values, never as shell code."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_binary_competition

from pipeline.__main__ import STAGES
from pipeline.cli import env_args

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> str:
    out = subprocess.run(["make", "-n", *args, "-o", ".make/installed"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_all_dry_run_points_at_real_stages():
    text = _make("all", "DATA=/x/comp", "CONFIG=configs/cpu.yaml", "SET=train.lr=1e-5 folds.seed=3")
    stages = re.findall(r"-m pipeline ([\w-]+)", text)
    assert stages == ["inspect", "clean", "plan", "folds", "augment", "select", "tune", "train", "ensemble", "submit", "report"]
    for stage in stages:
        assert stage in STAGES
        module = STAGES[stage][0].replace(".", "/") + ".py"
        assert (ROOT / module).exists(), module
    assert "/x/comp" not in text  # values travel in the environment, not in the command line


def test_time_and_preset_reach_the_budget_and_a_set_typed_by_hand_wins():
    from pipeline.core.config import load_config, parse_duration

    args = env_args({"TEXTCOMP_TIME": "90", "TEXTCOMP_PRESET": "fast", "TEXTCOMP_SET": "train.lr=1e-5"})
    sets = args[args.index("--set") + 1:]
    cfg = load_config([], sets)
    assert parse_duration(cfg.budget.time) == 90 and cfg.budget.preset == "fast" and cfg.train.lr == 1e-5
    args = env_args({"TEXTCOMP_TIME": "2h", "TEXTCOMP_SET": "budget.time=10m"})
    assert load_config([], args[args.index("--set") + 1:]).budget.time == "10m"


def test_make_help_lists_targets():
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    for target in ("all", "test", "inspect", "clean", "folds"):
        assert re.search(rf"^\s+{target}\s+\S", out, re.M), target


def test_env_args_keep_each_value_whole_and_split_only_set():
    env = {"TEXTCOMP_DATA": "my comp; rm -rf x", "TEXTCOMP_PROFILE": "configs/cpu.yaml",
           "TEXTCOMP_CONFIG": "", "TEXTCOMP_SET": "train.lr=2e-5 'data.sep= | '", "TEXTCOMP_FOLDS": "0,1",
           "TEXTCOMP_WORKDIR": "/tmp/a b"}
    assert env_args(env) == ["--workdir", "/tmp/a b", "--data", "my comp; rm -rf x", "--config", "configs/cpu.yaml",
                             "--set", "train.lr=2e-5", "data.sep= | ", "train.folds=[0,1]"]


def _run_make(target: str, tmp: Path, **variables: str) -> subprocess.CompletedProcess:
    stamp = tmp / "installed"
    stamp.touch()  # the package is installed already: skip `make setup`
    args = ["make", "-s", target, f"PYTHON={sys.executable}", f"STAMP={stamp}", f"WORKDIR={tmp / 'work'}",
            "PROFILE=", *[f"{k}={v}" for k, v in variables.items()]]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("evil", ["x; touch {pwned}", "$(touch {pwned})", "`touch {pwned}`", "x' && touch '{pwned}",
                                  'x" && touch "{pwned}', "x\ntouch {pwned}"])
def test_data_variable_runs_no_command(tmp_path, evil):
    pwned = tmp_path / "pwned"
    data = evil.format(pwned=pwned)
    out = _run_make("clean", tmp_path, DATA=data)
    assert not pwned.exists()
    assert out.returncode == 2, out.stderr
    # the whole value arrived as one path
    assert "train.csv: file not found" in out.stderr and str(pwned) in out.stderr


def test_data_path_with_a_space_works(tmp_path):
    data = write_binary_competition(tmp_path / "my comp")
    out = _run_make("clean", tmp_path, DATA=str(data), SET="clean.lowercase=true")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "work/data/interim/train_clean.parquet").exists()
    assert "lowercase: true" in (tmp_path / "work/reports/configs/clean.yaml").read_text()


@pytest.mark.slow
def test_make_j4_all_gives_the_plain_runs_submission_byte_for_byte(tmp_path):
    """The flow's targets declare the stages they read: with -j4, inspect runs beside clean and
    folds beside augment, and the submission is the one `make all` writes."""
    comp = write_binary_competition(tmp_path / "comp")
    sets = "select.candidates=[tfidf,nbsvm] select.top_k=2 tune.n_trials=2 folds.n_splits=3 inspect.adversarial=false"
    subs = {}
    for jobs in ("-j1", "-j4"):
        work = tmp_path / jobs
        out = subprocess.run(["make", jobs, "all", "-o", ".make/installed", f"PYTHON={sys.executable}", f"DATA={comp}",
                              f"WORKDIR={work}", f"SET={sets}", "PROFILE=configs/cpu.yaml"], cwd=ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        subs[jobs] = (work / "submissions" / "submission.csv").read_bytes()
        if jobs == "-j1":  # the contract in full once (inspect), a summary line after it (clean)
            said = out.stdout + out.stderr
            assert said.count("contract: id: ") == 1 and said.count("contract: as logged above") == 1, said[-3000:]
            assert "Final CV table" in said and "wall time:" in said
    assert subs["-j1"] == subs["-j4"]
