"""On a CUDA device (`pytest -m gpu`; benchmarks/gpu_check.sh runs them): the precision auto
picks, a fold trained in bf16 and in fp16 (with loss scaling) learns what the CPU's float32
reference learns, a bucketed epoch reads nothing from the device between the doctor's reads,
and every visible device trains under the distributed launcher where there are two. Skipped
without CUDA, so CI (which never has a GPU) deselects them and the dry run reports them skipped.

The toy task is their premise: ``test_the_toy_tasks_cpu_reference_learns`` (fast tier, every
machine) holds it, so it cannot silently stop being one (on the first H200 run the old settings,
64 rows for 3 epochs, learnt nothing on any seed, and both GPU comparisons failed on it). The
settings below learnt the task to accuracy 1.0 for each of 16 tiny-BERT initialisations x 3
training seeds on CPU."""

import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NEG, POS, run_stage, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling.base import FoldData
from pipeline.modeling.device import gpu_has_native_bf16, pick_dtype
from pipeline.modeling.syncs import training_loop_syncs
from pipeline.modeling.transformer import FoldTrainer, load_tokenizer


def on_gpu(test):
    """gpu-marked (deselected by the fast tier) and skipped without CUDA."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")(test))


TOY = dict(max_len=32, epochs=8, batch_size=16, lr=2e-3, warmup_ratio=0.1, dropout=0.0, head_dropout=0.0,
           eval_batch_size=64, save_checkpoints=False)


def _cfg(tiny_bert, device: str, **kw) -> TrainConfig:
    cfg = TrainConfig(**{**TOY, "backbone": str(tiny_bert), "device": device, "precision": "auto", **kw})
    cfg.validate()
    return cfg


def _data() -> FoldData:
    texts, labels = synthetic_texts(256 + 64, [NEG, POS], 0)
    return FoldData(texts[:256], np.array(labels[:256]), texts[256:], np.array(labels[256:]), texts[256:272])


def _cpu_reference(tiny_bert):
    cfg = _cfg(tiny_bert, "cpu", precision="fp32")
    return FoldTrainer(cfg, 2, "accuracy", 0).fit(_data(), load_tokenizer(cfg))


def test_the_toy_tasks_cpu_reference_learns(tiny_bert):
    """The GPU comparisons' premise, checked on every machine."""
    assert _cpu_reference(tiny_bert).best_score > 0.95


@on_gpu
def test_auto_precision_is_bf16_only_on_native_bf16_tensor_cores(tiny_bert):
    device = torch.device("cuda", 0)
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    assert gpu_has_native_bf16(device) == native
    assert pick_dtype(_cfg(tiny_bert, "cuda"), device) == (torch.bfloat16 if native else torch.float16)


@on_gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_fold_trained_on_the_gpu_learns_what_the_cpu_learns(tiny_bert, precision):
    """fp16 runs with loss scaling (a GradScaler, which fused AdamW takes without a host read):
    without it small gradients underflow and the model learns nothing; the master weights stay
    float32 whatever the checkpoint holds."""
    cpu = _cpu_reference(tiny_bert)
    assert cpu.best_score > 0.95, cpu.best_score  # the premise (also a fast CPU test)
    cfg = _cfg(tiny_bert, "cuda", precision=precision)
    out = FoldTrainer(cfg, 2, "accuracy", 0).fit(_data(), load_tokenizer(cfg))
    assert out.best_score >= cpu.best_score - 0.05, (out.best_score, cpu.best_score)
    assert np.isfinite(out.test_proba).all() and np.allclose(out.test_proba.sum(1), 1, atol=1e-3)
    assert next(out.extra["model"].parameters()).dtype == torch.float32


@on_gpu
def test_a_bucketed_epoch_on_the_gpu_reads_nothing_between_the_doctors_reads(tiny_bert, capsys):
    """Token batches padded to multiples of 8, in the device's precision: no Python-level read
    and no synchronisation CUDA reports inside the epochs, but the doctor's reads; the epoch's
    time is printed for the GPU check's log."""
    cfg = _cfg(tiny_bert, "cuda", token_batches=True, pad_to_multiple_of=8, eval_batch_tokens=4096, log_every=10)
    tok = load_tokenizer(cfg)
    FoldTrainer(cfg, 2, "accuracy", 0).fit(_data(), tok)  # warm: kernels, cuBLAS handles
    t0 = time.perf_counter()
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "accuracy", 0), _data(), tok)
    seconds = time.perf_counter() - t0
    assert syncs.counts.get("loop", 0) == 0, [w for r, w in syncs.where if r == "loop"][:10]
    assert syncs.cuda_counts.get("loop", 0) == 0, syncs.cuda_counts
    assert out.best_score > 0.95
    with capsys.disabled():
        print(f"\nbucketed fold: {out.optimizer_steps} steps, {out.extra['mean_rows_per_step']:.1f} rows a step, "
              f"{out.train_samples_per_s:.0f} samples/s, {seconds:.2f} s with evaluations; doctor reads "
              f"{syncs.counts.get('doctor', 0)}, CUDA syncs by region {syncs.cuda_counts}")


@on_gpu
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
