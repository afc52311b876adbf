"""The static report opens in a real headless browser (slow tier; skipped without Chromium)."""

import shutil
import subprocess

import numpy as np
import pytest
from conftest import run_stage


@pytest.mark.slow
def test_report_html_renders_in_headless_chromium(prepared, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium (apt-get install chromium)")
    data, workdir = prepared
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    assert run_stage("report", workdir, data) == 0
    shot = tmp_path / "report.png"
    page = (workdir / "reports/runs/lr.html").resolve()
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                    f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[0] >= 1000
    assert img.std() > 10  # text, tables and plots, not a blank page
    assert (img < 128).mean() > 0.01
