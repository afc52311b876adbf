"""Training under a real launcher: 2 processes on CPU (gloo) through torchrun."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_accumulation(prepared, tiny_bert):
    """DDP averages the two processes' gradients: 2 processes x batch 4 is one process with
    batch 4 x accum 2 (same batches, same order), so the OOF must match."""
    data, workdir = prepared
    sets = [f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=2", "train.lr=1e-3",
            "train.dropout=0.0", "train.head_dropout=0.0", "train.max_train_rows=96", "train.group_by_length=false",
            "train.save_checkpoints=false"]
    assert run_stage("train", workdir, data, *sets, "train.batch_size=4", "train.grad_accum=2", "train.run=one") == 0
    # train.processes=2 (on a GPU machine: its GPU count) starts the stage again under torchrun itself
    assert run_stage("train", workdir, data, *sets, "train.batch_size=4", "train.grad_accum=1", "train.run=ddp",
                     "train.processes=2") == 0
    one = pd.read_parquet(workdir / "models/one/oof.parquet")
    ddp = pd.read_parquet(workdir / "models/ddp/oof.parquet")
    assert one["id"].tolist() == ddp["id"].tolist()
    assert np.abs(one[["p_0", "p_1"]].to_numpy() - ddp[["p_0", "p_1"]].to_numpy()).max() < 1e-4
    meta = pd.read_json(workdir / "models/ddp/fold0/meta.json", typ="series")
    assert meta["optimizer_steps"] == 24  # 96 rows / (4 x 2 processes) x 2 epochs
