"""benchmarks/gpu_check.sh --dry-run: the GPU check's one script, run on CPU with tiny sizes,
so it is known to work before a GPU machine is lent (slow tier: ~7 minutes on 2 cores)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_as_a_dry_run(tmp_path):
    if not (ROOT.parent / "shared" / "data" / "nlp-getting-started").exists():
        pytest.skip("../shared/data is absent")
    built = subprocess.run([sys.executable, "benchmarks/gpu_carry.py"], cwd=ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr  # built, and within the 64 MiB a call carries
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:]
    res = json.loads(next(tmp_path.glob("gpu-dryrun-*.json")).read_text())
    assert res["carry"]["fits"] and res["flow"]["rc"] == 0 and res["flow"]["submission_valid"]
    assert res["flow"]["cv"] > 0.7 and res["trainer"]["train_samples_per_s"] > 0
    assert res["tests"]["failed"] == 0 and res["tests"]["skipped"] >= 1  # no CUDA here: skipped, not failed
