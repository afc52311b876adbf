"""On a CUDA device (`pytest -m gpu`; benchmarks/gpu_check.sh runs them): the precision auto
picks, a fold trained on the GPU learns what it learns on the CPU, the test prediction's dtype,
and both devices under the distributed launcher where there are two. Skipped without CUDA, so
CI (which never has a GPU) deselects them and the dry run reports them skipped."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NEG, POS, run_stage, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling.base import FoldData
from pipeline.modeling.device import gpu_has_native_bf16, pick_dtype
from pipeline.modeling.transformer import FoldTrainer, load_tokenizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def _cfg(tiny_bert, device: str, **kw) -> TrainConfig:
    base = dict(backbone=str(tiny_bert), max_len=32, epochs=3, batch_size=8, lr=1e-3, warmup_ratio=0.0,
                dropout=0.0, head_dropout=0.0, eval_batch_size=16, save_checkpoints=False, device=device,
                precision="auto")
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def _data() -> FoldData:
    texts, labels = synthetic_texts(96, [NEG, POS], 0)
    return FoldData(texts[:64], np.array(labels[:64]), texts[64:], np.array(labels[64:]), texts[64:80])


def test_auto_precision_is_bf16_only_on_native_bf16_tensor_cores(tiny_bert):
    device = torch.device("cuda", 0)
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    assert gpu_has_native_bf16(device) == native
    assert pick_dtype(_cfg(tiny_bert, "cuda"), device) == (torch.bfloat16 if native else torch.float16)


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_a_fold_trained_on_the_gpu_learns_what_the_cpu_learns(tiny_bert, precision):
    """fp16 runs with loss scaling (a GradScaler): without it small gradients underflow and
    the model learns nothing; the master weights stay float32 whatever the checkpoint holds."""
    data = _data()
    gpu = FoldTrainer(_cfg(tiny_bert, "cuda", precision=precision), 2, "accuracy", 0).fit(
        data, load_tokenizer(_cfg(tiny_bert, "cuda")))
    cpu = FoldTrainer(_cfg(tiny_bert, "cpu", precision="fp32"), 2, "accuracy", 0).fit(
        data, load_tokenizer(_cfg(tiny_bert, "cpu")))
    assert cpu.best_score > 0.9, cpu.best_score  # the task is learnable at these settings
    assert gpu.best_score >= cpu.best_score - 0.1, (gpu.best_score, cpu.best_score)
    assert np.isfinite(gpu.test_proba).all() and np.allclose(gpu.test_proba.sum(1), 1, atol=1e-3)


def test_every_visible_gpu_trains_with_no_command_line_change(prepared, tiny_bert):
    """Two or more GPUs: train (train.processes unset) relaunches itself under torchrun, one
    process per device (NCCL); its OOF is one process's with the same global batch."""
    if torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device")
    data, workdir = prepared
    sets = [f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=2", "train.lr=1e-3", "train.device=cuda",
            "train.precision=fp32", "train.dropout=0.0", "train.head_dropout=0.0", "train.max_train_rows=96",
            "train.group_by_length=false", "train.save_checkpoints=false"]
    n = torch.cuda.device_count()
    assert run_stage("train", workdir, data, *sets, "train.batch_size=4", f"train.grad_accum={n}", "train.run=one",
                     "train.processes=1") == 0
    assert run_stage("train", workdir, data, *sets, "train.batch_size=4", "train.grad_accum=1", "train.run=all") == 0
    one = pd.read_parquet(workdir / "models/one/oof.parquet")
    every = pd.read_parquet(workdir / "models/all/oof.parquet")
    assert np.abs(one[["p_0", "p_1"]].to_numpy() - every[["p_0", "p_1"]].to_numpy()).max() < 1e-3
