"""`make -n all` names only stages that exist; `make help` documents the targets."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.__main__ import STAGES

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _make(*args: str) -> str:
    out = subprocess.run(["make", "-n", *args, "-o", ".make/installed"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_all_dry_run_points_at_real_stages():
    text = _make("all", "DATA=/x/comp", "CONFIG=configs/cpu.yaml", "SET=train.lr=1e-5 folds.seed=3")
    stages = re.findall(r"-m pipeline ([\w-]+)", text)
    assert stages == ["inspect", "clean", "folds", "augment", "select", "tune", "train", "ensemble", "submit", "report"]
    for stage in stages:
        assert stage in STAGES
        module = STAGES[stage][0].replace(".", "/") + ".py"
        assert (ROOT / module).exists(), module
    for line in (ln for ln in text.splitlines() if "-m pipeline" in ln):
        assert "--data /x/comp" in line and "--config configs/cpu.yaml" in line
        assert "--set train.lr=1e-5 folds.seed=3" in line


def test_make_help_lists_targets():
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    for target in ("all", "test", "inspect", "clean", "folds"):
        assert re.search(rf"^\s+{target}\s+\S", out, re.M), target
