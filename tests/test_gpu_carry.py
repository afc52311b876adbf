"""The GPU check's carry is derived, not written by hand: every distribution installing the
project adds to the GPU image is carried as a wheel, shipped in site/, or left out on purpose
(with a reason, and then never imported in the check)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gpu_carry", ROOT / "benchmarks" / "gpu_carry.py")
gpu_carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_carry)


def test_every_distribution_the_install_adds_is_carried_in_the_image_or_left_out_with_a_reason():
    full = gpu_carry.closure()
    carried = gpu_carry.to_carry()
    left_out = set(full) - set(gpu_carry.closure(cut=set(gpu_carry.NOT_CARRIED)))
    for name, entry in full.items():
        assert entry["in_image"] or name in carried or name in gpu_carry.SITE or name in left_out, name
    assert left_out >= set(gpu_carry.NOT_CARRIED) and "torch" not in left_out
    # what the first H200 run found missing from the hand-written list: nlpaug -> gdown ->
    # beautifulsoup4 -> soupsieve; nltk -> defusedxml; requests[socks] -> PySocks
    for name in ("gdown", "beautifulsoup4", "soupsieve", "defusedxml", "pysocks", "optuna", "nlpaug"):
        assert name in carried, name
    assert not {"torch", "transformers", "numpy", "requests"} & set(carried)  # the image has them


def test_the_closure_follows_extras_asked_of_a_distribution_the_image_has():
    """requests is in the image, but gdown asks for requests[socks]: PySocks must come along."""
    full = gpu_carry.closure()
    assert full["requests"]["in_image"] and "socks" in full["requests"]["extras"]
    assert full["pysocks"]["parent"] == "requests"


def test_the_image_list_is_the_shared_record():
    shared = ROOT.parent / "shared" / "gpu-runs" / "gpu-image-packages.txt"
    if not shared.exists():
        pytest.skip("../shared is absent")
    assert gpu_carry.IMAGE_LIST.read_text() == shared.read_text()


def test_with_tracking_off_no_stage_imports_what_is_not_carried(tmp_path):
    """NOT_CARRIED is safe only if the check never imports it: the stages' modules, with
    TEXTCOMP_TRACK=0, load without mlflow."""
    code = ("import sys, importlib\n"
            "for m in ('inspection', 'clean', 'plan', 'folds', 'augment', 'selection', 'tune', 'train', 'ensemble',"
            " 'submit', 'report'):\n"
            "    importlib.import_module('pipeline.stages.' + m)\n"
            "from pipeline.core import tracking\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('mlflow',)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "TEXTCOMP_TRACK": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
