import json

import numpy as np
from conftest import run_stage

from pipeline.stages.lr_find import suggest_lr


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = np.logspace(-7, 0, 200)
    x = np.log10(lrs)
    loss = 1.0 - 0.8 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -1.5, (x + 1.5) ** 2 * 3, 0)
    steepest, at_min = suggest_lr(lrs, loss)
    assert 10 ** -3.2 < steepest < 10 ** -2.8
    assert at_min > steepest


def test_lr_find_stage(prepared, tiny_bert):
    data, workdir = prepared
    assert run_stage("lr-find", workdir, data, f"train.backbone={tiny_bert}", "train.max_len=32",
                     "train.batch_size=8", "--steps", "40", "--start-lr", "1e-6", "--end-lr", "10") == 0
    out = json.loads((workdir / "reports/lr_find.json").read_text())
    assert 1e-6 <= out["suggested_lr"] <= out["min_loss_lr"] <= 10
    assert len(out["lrs"]) == len(out["losses"]) and np.all(np.diff(out["lrs"]) > 0)
    assert (workdir / "reports/lr_find.png").exists()
