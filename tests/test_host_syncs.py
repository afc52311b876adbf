"""The training loop never waits for the device between the doctor's reads.

On a GPU every read of a tensor's value (``.item()``, ``.cpu()``, ``float(t)``, ``if t:`` ...)
blocks the host until the device has finished all the work queued before it, so the next
step's kernels cannot be queued while this one runs: on short texts the GPU then idles between
launches. The reads are counted here on CPU (Python-level, the same calls a GPU would wait on):
inside an epoch, only the doctor's reads (every ``log_every`` optimizer steps) and the
evaluations may touch the device's values.
"""

import numpy as np
import pytest
from conftest import NEG, POS, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling.base import FoldData
from pipeline.modeling.syncs import training_loop_syncs
from pipeline.modeling.transformer import FoldTrainer, load_tokenizer


def _cfg(backbone, **kw) -> TrainConfig:
    base = dict(backbone=str(backbone), max_len=32, epochs=2, batch_size=8, lr=1e-3, warmup_ratio=0.1,
                log_every=5, eval_batch_size=16, save_checkpoints=False, precision="fp32")
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def _data(n=96) -> FoldData:
    texts, labels = synthetic_texts(n + 24, [NEG, POS], 0)
    return FoldData(texts[:n], np.array(labels[:n]), texts[n:], np.array(labels[n:]), texts[n:n + 8])


@pytest.mark.parametrize("kw", [
    {},
    {"ema": 0.9, "grad_accum": 2, "label_smoothing": 0.1, "llrd": 0.8, "evals_per_epoch": 2},
    {"token_batches": True, "pad_to_multiple_of": 8, "eval_batch_tokens": 256},
    {"batch_tokens": 96, "batch_size": 4},
    {"clip_norm": None, "precision": "bf16"},
    {"chunks": True, "stride": 4, "max_len": 16, "chunk_pool": "max"},  # every window a row, pooled per text
])
def test_no_host_sync_between_the_doctors_reads(tiny_bert, kw):
    cfg = _cfg(tiny_bert, **kw)
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), _data(), load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, [w for r, w in syncs.where if r == "loop"][:10]
    # the doctor reads once per log_every optimizer steps (and at each epoch's end), in one transfer each
    reads = syncs.counts.get("doctor", 0)
    assert 0 < reads <= out.optimizer_steps // cfg.log_every + 2 * cfg.epochs * cfg.evals_per_epoch + cfg.epochs
    assert out.optimizer_steps >= 10


def test_a_multilabel_fold_and_a_pair_fold_read_nothing_either(tiny_bert):
    texts, labels = synthetic_texts(80, [NEG, POS], 1)
    y = np.array([[v, 1 - v] for v in labels])
    multi = FoldData(texts[:64], y[:64], texts[64:], y[64:], texts[64:70])
    cfg = _cfg(tiny_bert, pos_weight=True)
    syncs, _ = training_loop_syncs(FoldTrainer(cfg, 2, "mean_auc", 0), multi, load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, syncs.where[:10]
    lab = np.array(labels)
    second, _ = synthetic_texts(80, [POS, NEG], 2)
    pair = FoldData(texts[:64], lab[:64], texts[64:], lab[64:], texts[64:70], train_pairs=[second[:64]],
                    val_pairs=[second[64:]], test_pairs=[second[64:70]])
    syncs, _ = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), pair, load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, syncs.where[:10]


def test_the_counter_sees_the_reads_it_is_meant_to_catch(tiny_bert, monkeypatch):
    """The premise: a per-step ``.item()`` in the loop (what the trainer did before) is counted."""
    from pipeline.modeling import step as step_

    real = step_.train_step

    def reading_step(*a, **k):
        loss = real(*a, **k)
        loss.item()
        return loss

    monkeypatch.setattr(step_, "train_step", reading_step)
    cfg = _cfg(tiny_bert)
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), _data(), load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == out.optimizer_steps


def test_a_nonfinite_loss_still_stops_the_run_within_log_every_steps(tiny_bert):
    import torch

    from pipeline.modeling.step import TrainingError

    def poison(model, step):
        if step == 3:
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))

    cfg = _cfg(tiny_bert, log_every=4, epochs=3)
    trainer = FoldTrainer(cfg, 2, "f1", 0, before_step=poison)
    with pytest.raises(TrainingError, match=r"fold 0: loss is nan at optimizer step 4 ") as err:
        trainer.fit(_data(), load_tokenizer(cfg))
    assert "lower train.lr" in str(err.value)


def test_a_deberta_v3_shaped_fold_reads_nothing_either(tiny_bert, tmp_path):
    """DeBERTa-v3 (what recent Kaggle text winners fine-tune, loaded from a local directory) runs
    eagerly in transformers 5.x and reads ``input_ids`` for padding when it gets no mask: the
    trainer always hands it one."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    tok.save_pretrained(tmp_path)
    config = AutoConfig.for_model("deberta-v2", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                  relative_attention=True, position_buckets=16, norm_rel_ebd="layer_norm",
                                  share_att_key=True, pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                  type_vocab_size=0, num_labels=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    cfg = _cfg(tmp_path)
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), _data(), load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, [w for r, w in syncs.where if r == "loop"][:10]
    assert out.optimizer_steps >= 10


def test_a_distilled_fold_reads_nothing_either(tiny_bert):
    """The soft targets live on the device beside the labels; the distillation loss reads none."""
    data = _data()
    rng = np.random.default_rng(0)
    data.train_soft = rng.dirichlet([1, 1], len(data.train_texts))
    cfg = _cfg(tiny_bert, distill_alpha=0.7, distill_temperature=2.0)
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), data, load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, [w for r, w in syncs.where if r == "loop"][:10]
    texts, labels = synthetic_texts(80, [NEG, POS], 1)
    y = np.array([[v, 1 - v] for v in labels])
    multi = FoldData(texts[:64], y[:64], texts[64:], y[64:], texts[64:70], train_soft=rng.uniform(size=(64, 2)))
    syncs, _ = training_loop_syncs(FoldTrainer(cfg, 2, "mean_auc", 0), multi, load_tokenizer(cfg))
    assert syncs.counts.get("loop", 0) == 0, syncs.where[:10]


def test_the_masked_lm_steps_read_nothing_between_the_meters_reads(tiny_bert, tmp_path):
    """Pretraining (train.pretrain_steps) masks on the device and counts the masked tokens on the
    host: its steps read nothing; the meter reads once per log_every steps."""
    from pipeline.modeling import pretrain
    from pipeline.modeling import step as step_
    from pipeline.modeling.syncs import HostSyncs

    texts, _ = synthetic_texts(120, [NEG, POS], 2)
    cfg = _cfg(tiny_bert, pretrain_steps=12, pretrain_batch_size=8, pretrain_lr=1e-3, log_every=4)
    syncs = HostSyncs()
    with syncs:
        syncs.mark(pretrain.Pretrainer, "_steps", "loop")
        syncs.mark(step_.Meter, "read", "doctor")
        pretrain.ensure(cfg, texts, tmp_path)
    assert syncs.counts.get("loop", 0) == 0, [w for r, w in syncs.where if r == "loop"][:10]
    assert 0 < syncs.counts.get("doctor", 0) <= 12 // cfg.log_every + 10  # and once at each checkpoint
