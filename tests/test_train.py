"""Training: each feature pinned on a tiny BERT built on the fly (offline, CPU)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NEG, POS, run_stage, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling.base import FoldData
from pipeline.modeling.data import DeviceData, Encoded, LengthGroupedBatches
from pipeline.modeling.schedule import lr_factor
from pipeline.modeling.step import TrainingError, param_groups
from pipeline.modeling.transformer import FoldTrainer, load_model


def _cfg(tiny_bert, **kw) -> TrainConfig:
    base = dict(backbone=str(tiny_bert), max_len=32, epochs=1, batch_size=8, lr=1e-3, warmup_ratio=0.0,
                dropout=0.0, head_dropout=0.0, log_every=1, eval_batch_size=16, save_checkpoints=False,
                precision="fp32")  # exact arithmetic on every CPU (auto is bf16 where AMX tiles are)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def _data(n=24, seed=0) -> FoldData:
    texts, labels = synthetic_texts(n + 12, [NEG, POS], seed)
    return FoldData(texts[:n], np.array(labels[:n]), texts[n:], np.array(labels[n:]), texts[n:n + 6])


def _tok(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_bert)


# -- schedule ----------------------------------------------------------------------------
def test_schedule_endpoints():
    total, warm = 100, 10
    assert lr_factor(0, total, warm) == pytest.approx(1 / 11)
    assert lr_factor(warm, total, warm) == pytest.approx(1.0)  # peak right after warmup
    assert lr_factor(total, total, warm, "cosine", 0.1) == pytest.approx(0.1)  # decays to the floor
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)  # cosine halfway
    assert lr_factor(55, total, warm, "linear") == pytest.approx(0.5)
    assert lr_factor(90, total, warm, "constant") == 1.0
    assert max(lr_factor(s, total, 0, "onecycle") for s in range(total)) == pytest.approx(1.0, abs=0.05)
    assert lr_factor(0, total, 0, "onecycle") < 0.1
    values = [lr_factor(s, total, warm) for s in range(warm, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_param_groups_llrd_head_lr_and_no_decay(tiny_bert):
    cfg = _cfg(tiny_bert, lr=1e-4, head_lr=1e-3, llrd=0.5, weight_decay=0.05)
    model = load_model(cfg, 2)
    groups = param_groups(model, cfg)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["classifier.weight"])]["lr"] == pytest.approx(1e-3)
    assert by_param[id(named["bert.encoder.layer.1.attention.self.query.weight"])]["lr"] == pytest.approx(1e-4)
    assert by_param[id(named["bert.encoder.layer.0.attention.self.query.weight"])]["lr"] == pytest.approx(5e-5)
    assert by_param[id(named["bert.embeddings.word_embeddings.weight"])]["lr"] == pytest.approx(2.5e-5)
    for name, p in named.items():
        wd = by_param[id(p)]["weight_decay"]
        if name.endswith("bias") or "LayerNorm" in name:
            assert wd == 0.0, name
        else:
            assert wd == 0.05, name


@pytest.fixture(scope="module")
def confident_bert(tiny_bert, tmp_path_factory):
    """The tiny BERT with a confident classification head (bias +3/-3): its first predictions are
    far from 50/50, where smoothing would change the loss too little to see."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("confident_bert")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([3.0, -3.0]))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(out)
    return out


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_trainer_applies_label_smoothing_in_closed_form(confident_bert, eps):
    """The first logged training loss is the smoothed cross-entropy of the initial model on the
    one batch, in closed form: drop or ignore train.label_smoothing and it fails."""
    from pipeline.modeling.device import seed_everything

    tiny_bert = confident_bert
    cfg = _cfg(tiny_bert, batch_size=8, lr=1e-12, label_smoothing=eps, clip_norm=None)
    base = _data(n=8)
    # mostly class 1 against a head that favours class 0: smoothing moves the loss a lot
    # (with balanced labels and a symmetric head the smoothed mean would equal the plain one)
    data = FoldData(base.train_texts, np.array([1, 1, 1, 1, 1, 1, 1, 0]), base.val_texts, base.val_labels,
                    base.test_texts)
    out = FoldTrainer(cfg, 2, "f1", 0).fit(data, _tok(tiny_bert))
    logged = [h for h in out.history if h["kind"] == "train"][0]["train_loss"]
    seed_everything(cfg.seed + 0)  # the model the trainer built for fold 0
    model = load_model(cfg, 2).eval()
    enc = _tok(tiny_bert)(data.train_texts, padding=True, truncation=True, max_length=cfg.max_len,
                          return_tensors="pt")
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits.float(), -1)
    y = torch.as_tensor(data.train_labels)
    nll = -logp[torch.arange(len(y)), y]
    closed = ((1 - eps) * nll + eps * -logp.mean(-1)).mean().item()
    assert logged == pytest.approx(closed, abs=1e-5)
    if eps:
        assert abs(logged - nll.mean().item()) > 1e-3  # smoothing changed the loss the trainer used


# -- batches -----------------------------------------------------------------------------
def test_length_grouped_batches_cover_each_index_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000)
    s = LengthGroupedBatches(lengths, 16, seed=1, group=True, mega=20)
    batches = s.batches()
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000)) and len(batches) == len(s)
    spread_grouped = np.mean([np.ptp(lengths[b]) for b in batches])
    plain = LengthGroupedBatches(lengths, 16, seed=1, group=False).batches()
    assert spread_grouped < 0.25 * np.mean([np.ptp(lengths[b]) for b in plain])
    assert s.batches() == batches  # deterministic for an epoch
    s.set_epoch(1)
    assert s.batches() != batches


def test_token_budget_batches_cover_each_index_once_and_fill_the_budget():
    """Short texts make large batches, long ones small; no batch over the budget (but one row)."""
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(5, 20, size=600), rng.integers(100, 130, size=100)])
    s = LengthGroupedBatches(lengths, 16, seed=1, max_tokens=512, multiple=8)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(700)) and len(batches) == len(s)
    padded = [len(b) * int(np.ceil(lengths[b].max() / 8) * 8) for b in batches]
    assert max(padded) <= 512
    rows_short = [len(b) for b in batches if lengths[b].max() < 20]
    rows_long = [len(b) for b in batches if lengths[b].min() >= 100]
    # 512 // 24 = 21 rows of short texts or more, 512 // 136 = 3 of long ones (a mega-batch's last batch: what is left)
    assert np.median(rows_short) >= 21 and max(rows_long) <= 4
    # most batches are full: length-sorted rows waste little of the budget
    assert np.median(padded) >= 0.8 * 512
    assert s.batches() == batches
    s.set_epoch(1)
    assert s.batches() != batches
    capped = LengthGroupedBatches(lengths, 16, seed=1, max_tokens=512, multiple=8, max_rows=32).batches()
    assert max(len(b) for b in capped) == 32 and sorted(i for b in capped for i in b) == list(range(700))
    cfg = TrainConfig(batch_size=16, max_len=32, token_batches=True)
    assert (cfg.token_budget(), cfg.token_batch_max_rows()) == (512, 32)  # 2 x batch_size rows at most
    two = [LengthGroupedBatches(lengths, 16, seed=1, max_tokens=512, world=2, rank=r).batches() for r in (0, 1)]
    assert len(two[0]) == len(two[1])  # every process runs the same number of steps


def test_device_data_serves_padded_batches_with_a_mask_only_where_padded():
    ds = Encoded([[5, 6, 7], [5], [8, 9, 10, 11]], labels=np.array([1, 0, 1]))
    data = DeviceData(ds, pad_id=0, device=torch.device("cpu"), multiple=4)
    first, second = data.iterate([[0, 1], [2]])
    assert first.inputs["input_ids"].tolist() == [[5, 6, 7, 0], [5, 0, 0, 0]]
    assert first.inputs["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert first.labels.tolist() == [1, 0] and (first.rows, first.tokens) == (2, 4)
    assert second.inputs["input_ids"].tolist() == [[8, 9, 10, 11]]
    assert first.padded and not second.padded  # the host knows: an SDPA model then gets no mask at all


# -- the loop ----------------------------------------------------------------------------
def _grads_at_first_step(tiny_bert, batch_size, accum):
    grads = {}

    def capture(model, step):
        if step == 0:
            grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    cfg = _cfg(tiny_bert, batch_size=batch_size, grad_accum=accum, group_by_length=False, clip_norm=None)
    out = FoldTrainer(cfg, 2, "f1", 0, before_step=capture).fit(_data(8), _tok(tiny_bert))
    return grads, out


def test_accumulation_equals_big_batch(tiny_bert):
    big, out_big = _grads_at_first_step(tiny_bert, 8, 1)
    acc, out_acc = _grads_at_first_step(tiny_bert, 4, 2)
    assert out_big.optimizer_steps == out_acc.optimizer_steps == 1
    assert big.keys() == acc.keys() and len(big) > 10
    for name in big:
        assert torch.allclose(big[name], acc[name], atol=1e-6, rtol=0), name


def test_optimizer_step_count_with_ragged_last_group(tiny_bert):
    # 24 rows / batch 4 = 6 micro-batches; accum 4 -> a step after batch 4 and after the last: 2 per epoch
    # (the popular `step % accum == 0` would also fire on the first micro-batch: 3 per epoch)
    cfg = _cfg(tiny_bert, batch_size=4, grad_accum=4, epochs=2)
    out = FoldTrainer(cfg, 2, "f1", 0).fit(_data(24), _tok(tiny_bert))
    assert out.optimizer_steps == 4
    lrs = [h["lr"] for h in out.history if h["kind"] == "train"]
    assert len(lrs) == 4


def test_same_config_twice_gives_same_predictions(tiny_bert):
    cfg = _cfg(tiny_bert, epochs=2, dropout=0.1)
    a = FoldTrainer(cfg, 2, "f1", 3).fit(_data(), _tok(tiny_bert))
    b = FoldTrainer(cfg, 2, "f1", 3).fit(_data(), _tok(tiny_bert))
    assert np.abs(a.val_proba - b.val_proba).max() < 1e-6
    assert np.abs(a.test_proba - b.test_proba).max() < 1e-6


def test_nonfinite_loss_stops_with_step_and_lr(tiny_bert):
    def poison(model, step):
        if step == 1:
            with torch.no_grad():
                model.classifier.weight.fill_(float("nan"))

    cfg = _cfg(tiny_bert, batch_size=4)
    with pytest.raises(TrainingError, match=r"fold 0: loss is nan at optimizer step 2 .*lr "):
        FoldTrainer(cfg, 2, "f1", 0, before_step=poison).fit(_data(), _tok(tiny_bert))


@pytest.mark.parametrize("kw, frozen, trained", [
    ({"freeze_embeddings": True}, "bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.output.dense.weight"),
    ({"freeze_layers": 1}, "bert.encoder.layer.0.output.dense.weight", "bert.encoder.layer.1.output.dense.weight"),
    ({"freeze_encoder_epochs": 1}, "bert.encoder.layer.1.output.dense.weight", "classifier.weight"),
])
def test_freezing(tiny_bert, kw, frozen, trained):
    cfg = _cfg(tiny_bert, **kw)
    before = dict(load_model(cfg, 2).named_parameters())
    before = {k: v.detach().clone() for k, v in before.items()}
    trainer = FoldTrainer(cfg, 2, "f1", 0)
    out = trainer.fit(_data(), _tok(tiny_bert))
    after = dict(out.extra["model"].named_parameters())
    assert torch.equal(before[frozen], after[frozen].detach())
    assert not torch.equal(before[trained], after[trained].detach())


def test_bf16_on_cpu_autocasts_the_matmuls_and_keeps_float32_weights(tiny_bert):
    seen = []

    def spy(model, step):  # from the first step on, the dtype of every classifier output
        if step == 0:
            model.classifier.register_forward_hook(lambda _m, _i, o: seen.append(o.dtype))

    fp32 = FoldTrainer(_cfg(tiny_bert, epochs=2, precision="fp32"), 2, "f1", 0).fit(_data(), _tok(tiny_bert))
    cfg = _cfg(tiny_bert, epochs=2, precision="bf16")
    out = FoldTrainer(cfg, 2, "f1", 0, before_step=spy).fit(_data(), _tok(tiny_bert))
    # training steps and validation in bf16; the submitted test probabilities in float32 (what
    # the offline bundle and a CPU without bf16 tiles reproduce)
    assert set(seen[:-1]) == {torch.bfloat16} and seen[-1] == torch.float32
    assert {p.dtype for p in out.extra["model"].parameters()} == {torch.float32}  # master weights
    assert np.isfinite(out.val_proba).all() and np.isfinite(out.test_proba).all()
    gap = np.abs(out.val_proba - fp32.val_proba).max()
    assert 0 < gap < 0.1  # rounding, not a different model


@pytest.mark.parametrize("precision, tiles, expect", [
    ("auto", True, torch.bfloat16), ("auto", False, torch.float32), ("bf16", False, torch.bfloat16),
    ("fp32", True, torch.float32), ("fp16", True, torch.float32)])
def test_cpu_precision_auto_follows_the_cpus_bf16_tiles(monkeypatch, caplog, precision, tiles, expect):
    from pipeline.modeling import device as transformer

    monkeypatch.setattr(transformer, "cpu_has_bf16_tiles", lambda: tiles)
    cfg = TrainConfig(precision=precision)
    assert transformer.pick_dtype(cfg, torch.device("cpu")) == expect
    assert ("no fast path on CPU" in caplog.text) == (precision == "fp16")


def test_early_stopping_and_best_checkpoint(tiny_bert):
    cfg = _cfg(tiny_bert, lr=1e-12, head_lr=1e-12, epochs=6, patience=2, evals_per_epoch=1)
    out = FoldTrainer(cfg, 2, "f1", 0).fit(_data(), _tok(tiny_bert))
    evals = [h for h in out.history if h["kind"] == "eval"]
    assert len(evals) == 3  # the first sets the best, two more without improvement stop it
    assert out.best_epoch == 1.0


def test_ema_changes_the_evaluated_weights(tiny_bert):
    plain = FoldTrainer(_cfg(tiny_bert, epochs=2), 2, "f1", 0).fit(_data(), _tok(tiny_bert))
    ema = FoldTrainer(_cfg(tiny_bert, epochs=2, ema=0.5), 2, "f1", 0).fit(_data(), _tok(tiny_bert))
    assert np.abs(plain.val_proba - ema.val_proba).max() > 1e-4


def test_resume_within_fold_matches_uninterrupted(tiny_bert, tmp_path):
    cfg = _cfg(tiny_bert, epochs=3, batch_size=4, dropout=0.1)
    full = FoldTrainer(cfg, 2, "f1", 1).fit(_data(), _tok(tiny_bert))

    class Killed(Exception):
        pass

    def kill(model, step):
        if step == 8:  # mid second epoch (6 steps per epoch)
            raise Killed

    ckpt = tmp_path / "resume"
    with pytest.raises(Killed):
        FoldTrainer(cfg, 2, "f1", 1, checkpoint_dir=ckpt, before_step=kill).fit(_data(), _tok(tiny_bert))
    assert (ckpt / "state.pt").exists()
    resumed = FoldTrainer(cfg, 2, "f1", 1, checkpoint_dir=ckpt).fit(_data(), _tok(tiny_bert))
    assert resumed.optimizer_steps == full.optimizer_steps == 18
    assert np.abs(resumed.val_proba - full.val_proba).max() < 1e-6


def test_checkpoint_with_pickled_objects_is_refused(tiny_bert, tmp_path):
    ckpt = tmp_path / "resume"
    ckpt.mkdir()
    torch.save({"epoch": 0, "evil": TrainConfig()}, ckpt / "state.pt")
    with pytest.raises(TrainingError, match="checkpoint does not load"):
        FoldTrainer(_cfg(tiny_bert), 2, "f1", 0, checkpoint_dir=ckpt).fit(_data(), _tok(tiny_bert))


# -- the stage ---------------------------------------------------------------------------
def _train(workdir, data, tiny_bert, *sets):
    return run_stage("train", workdir, data, f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=1",
                     "train.batch_size=16", "train.lr=1e-3", *sets)


def test_train_stage_writes_oof_test_cv_and_resumes_per_fold(prepared, tiny_bert):
    data, workdir = prepared
    assert _train(workdir, data, tiny_bert, "train.run=tiny", "train.folds=[0]") == 0
    run = workdir / "models" / "tiny"
    assert (run / "fold0" / "oof.parquet").exists() and not (run / "oof.parquet").exists()
    stamp = (run / "fold0" / "oof.parquet").stat().st_mtime_ns
    assert _train(workdir, data, tiny_bert, "train.run=tiny") == 0
    assert (run / "fold0" / "oof.parquet").stat().st_mtime_ns == stamp  # finished fold kept
    oof, test = pd.read_parquet(run / "oof.parquet"), pd.read_parquet(run / "test.parquet")
    train = pd.read_parquet(workdir / "data/interim/train_clean.parquet")
    assert oof["id"].is_unique and set(oof["id"]) == set(train["id"])
    assert np.allclose(oof[["p_0", "p_1"]].sum(1), 1, atol=1e-5)
    assert len(test) == 60 and np.allclose(test[["p_0", "p_1"]].sum(1), 1, atol=1e-5)
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "f1" and len(cv["folds"]) == 2 and 0 <= cv["cv"] <= 1 and "threshold" in cv
    assert "epoch_choice" not in cv  # one evaluation a fold: no epoch was chosen, so no optimism to state
    assert (run / "fold1" / "model" / "model.safetensors").exists()
    assert (run / "curves.png").exists() and (run / "config.yaml").exists() and (run / "env.json").exists()
    hist = pd.read_csv(run / "history.csv")
    assert {"train", "eval"} <= set(hist["kind"]) and hist["lr"].notna().any()
    # a changed hyper-parameter invalidates finished folds
    assert _train(workdir, data, tiny_bert, "train.run=tiny", "train.lr=5e-4") == 0
    assert (run / "fold0" / "oof.parquet").stat().st_mtime_ns != stamp


def _curves(metric_by_fold: list[list[float]]) -> pd.DataFrame:
    rows = []
    for k, curve in enumerate(metric_by_fold):
        for e, m in enumerate(curve, start=1):
            rows += [{"fold": k, "kind": "train", "epoch": e - 0.5, "metric": None},
                     {"fold": k, "kind": "eval", "epoch": float(e), "metric": m}]
    return pd.DataFrame(rows)


def test_epoch_choice_states_what_keeping_each_folds_best_evaluation_adds():
    """Each fold keeps its best evaluation by its own validation labels (mpnet on the disaster
    tweets: best epochs 2, 2, 1, 3). Choosing the evaluation on the other folds' mean curve instead
    shows the optimism; worked by hand here, both metric directions."""
    from pipeline.cv.scores import epoch_choice

    f1 = epoch_choice(_curves([[0.70, 0.80, 0.75], [0.72, 0.78, 0.79], [0.90, 0.70, 0.71]]), "f1")
    assert f1["epochs"] == {"0": 1.0, "1": 1.0, "2": 2.0}  # fold 2's own spike at epoch 1 does not pick for it
    assert f1["own_best"] == pytest.approx(0.83) and f1["chosen_on_other_folds"] == pytest.approx(2.12 / 3, abs=1e-5)
    assert f1["optimism"] == pytest.approx(0.83 - 2.12 / 3, abs=1e-5)
    loss = epoch_choice(_curves([[0.5, 0.4, 0.45], [0.5, 0.42, 0.41], [0.3, 0.5, 0.49]]), "logloss")
    assert loss["epochs"] == {"0": 1.0, "1": 1.0, "2": 2.0}  # lower is better: the other folds' minimum
    assert loss["own_best"] == pytest.approx(0.37) and loss["optimism"] == pytest.approx(0.13, abs=1e-5)
    same = epoch_choice(_curves([[0.7, 0.8], [0.71, 0.81]]), "f1")  # every fold peaks where the others do
    assert same["optimism"] == 0.0
    assert epoch_choice(_curves([[0.7, 0.8], [0.71]]), "f1") is None  # only one evaluation every fold has
    assert epoch_choice(_curves([[0.7, 0.8]]), "f1") is None  # one fold


def test_classical_models_multiclass(multiclass_comp, workdir):
    assert run_stage("clean", workdir, multiclass_comp) == 0
    assert run_stage("folds", workdir, multiclass_comp, "folds.n_splits=3") == 0
    for model in ("lr", "nbsvm", "svm"):
        assert run_stage("train", workdir, multiclass_comp, "train.family=classical",
                         f"train.classical_model={model}", f"train.run={model}") == 0
        cv = json.loads((workdir / "models" / model / "cv.json").read_text())
        assert cv["metric"] == "logloss" and cv["accuracy"] > 0.9, (model, cv)
        oof = pd.read_parquet(workdir / "models" / model / "oof.parquet")
        assert np.allclose(oof[["p_0", "p_1", "p_2"]].sum(1), 1, atol=1e-6)


def test_augmented_rows_never_leak_into_their_sources_validation_fold():
    from pipeline.cv.data import TrainingData, fold_rows

    train = pd.DataFrame({"id": [1, 2, 3, 4], "input": list("abcd"), "label": [0, 1, 0, 1], "fold": [0, 0, 1, 1]})
    aug = pd.DataFrame({"source_id": [1, 3, 3], "input": ["a'", "c'", "c''"], "label": [0, 0, 0]})
    td = TrainingData(train=train, test=train[["id", "input"]], schema=None, augmented=aug, fingerprint="", inputs={})
    rows, val = fold_rows(td, 0)
    assert sorted(val["id"]) == [1, 2] and "a'" not in set(val["input"])
    assert sorted(rows["input"]) == ["c", "c'", "c''", "d"]  # fold-0 sources' copies excluded
    rows, val = fold_rows(td, 1)
    assert sorted(rows["input"]) == ["a", "a'", "b"] and sorted(val["id"]) == [3, 4]


def test_bad_fold_selection_is_a_clear_error(prepared, tiny_bert, capsys):
    data, workdir = prepared
    assert _train(workdir, data, tiny_bert, "train.folds=[7]") == 2
    assert "train.folds: fold 7 does not exist" in capsys.readouterr().err


def test_lr_schedule_in_history_follows_warmup_then_decay(tiny_bert):
    cfg = _cfg(tiny_bert, batch_size=2, epochs=1, warmup_ratio=0.25)
    out = FoldTrainer(cfg, 2, "f1", 0).fit(_data(16), _tok(tiny_bert))
    lrs = [h["lr"] for h in out.history if h["kind"] == "train"]
    peak = int(np.argmax(lrs))
    assert 0 < peak < len(lrs) - 1 and math.isclose(max(lrs), 1e-3, rel_tol=1e-6)
    assert lrs[-1] < lrs[peak] / 10


def test_sigkill_mid_fold_then_rerun_matches_uninterrupted(prepared, tiny_bert, tmp_path):
    """A real SIGKILL while a fold trains; `train` again resumes and gives the same OOF."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    data, workdir = prepared
    sets = [f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=4", "train.batch_size=8",
            "train.lr=1e-3", "train.folds=[0]", "train.save_checkpoints=false"]
    assert run_stage("train", workdir, data, *sets, "train.run=straight") == 0
    cmd = [sys.executable, "-m", "pipeline", "train", "--workdir", str(workdir), "--data", str(data), "-q",
           "--set", *sets, "train.run=killed"]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = workdir / "models/killed/fold0/resume/state.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert state.exists(), "no epoch checkpoint appeared"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (workdir / "models/killed/fold0/oof.parquet").exists()
    assert run_stage("train", workdir, data, *sets, "train.run=killed") == 0
    a = pd.read_parquet(workdir / "models/straight/fold0/oof.parquet")
    b = pd.read_parquet(workdir / "models/killed/fold0/oof.parquet")
    assert a["id"].tolist() == b["id"].tolist()
    assert (a[["p_0", "p_1"]].to_numpy() == b[["p_0", "p_1"]].to_numpy()).all()  # bit-identical on CPU


def test_checkpoint_restores_every_random_state(tmp_path):
    """torch (CPU, and CUDA where there is one), NumPy and Python's random: saved with the
    checkpoint, loaded with weights_only=True, and each draws the same numbers again."""
    import random

    from pipeline.modeling.step import rng_state, set_rng_state

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # a cached Gaussian in NumPy's state too
    torch.save(rng_state(), tmp_path / "state.pt")
    want = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            np.random.normal())
    torch.rand(5), np.random.rand(7), random.random()  # move every generator on
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True))
    got = (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
           np.random.normal())
    assert got == want


def test_pseudo_labels_come_from_the_teachers_fold_model_and_never_reach_validation(prepared):
    """Fold k trains on the test rows that the teacher's fold-k model (which never saw fold
    k's labels) is confident about; validation rows stay fold-k originals."""
    import numpy as np

    from pipeline.core.config import load_config
    from pipeline.core.paths import Paths
    from pipeline.cv.data import fold_rows, load_training_data

    data, work = prepared
    assert run_stage("train", work, data, "train.family=classical", "train.run=teacher") == 0
    test_ids = pd.read_parquet(work / "data/interim/test_clean.parquet")["id"].tolist()
    for k, (rows, cls) in enumerate([(test_ids[:5], 1), (test_ids[-7:], 0)]):  # crafted teacher folds
        p1 = np.full(len(test_ids), 0.5)
        p1[[test_ids.index(i) for i in rows]] = 0.99 if cls == 1 else 0.01
        pd.DataFrame({"id": test_ids, "p_0": 1 - p1, "p_1": p1}).to_parquet(work / f"models/teacher/fold{k}/test.parquet")
    paths = Paths.make(work, data)
    cfg = load_config([Path(__file__).resolve().parents[1] / "configs/base.yaml"],
                      ["train.family=classical", "train.pseudo_teacher=teacher", "train.pseudo_threshold=0.9"])
    td = load_training_data(cfg, paths)
    for k, (want, cls) in enumerate([(test_ids[:5], 1), (test_ids[-7:], 0)]):
        rows, val = fold_rows(td, k)
        pseudo = rows[rows["id"].isin(test_ids)]
        assert sorted(pseudo["id"]) == sorted(want) and set(pseudo["label"]) == {cls}
        assert not val["id"].isin(test_ids).any() and (val["id"].isin(td.train["id"])).all()
    plain = load_training_data(load_config([Path(__file__).resolve().parents[1] / "configs/base.yaml"],
                                           ["train.family=classical"]), paths)
    assert plain.fingerprint != td.fingerprint  # a student with pseudo-labels is another run
    assert run_stage("train", work, data, "train.family=classical", "train.run=student",
                     "train.pseudo_teacher=teacher", "train.pseudo_threshold=0.9") == 0
    assert run_stage("train", work, data, "train.family=classical", "train.run=student2",
                     "train.pseudo_teacher=nobody") == 2  # one line: no such run


@pytest.mark.parametrize("capability, precision, expect", [
    ((7, 5), "auto", torch.float16), ((6, 0), "auto", torch.float16), ((7, 0), "auto", torch.float16),
    ((8, 0), "auto", torch.bfloat16), ((9, 0), "auto", torch.bfloat16), ((7, 5), "bf16", torch.bfloat16),
    ((8, 6), "fp16", torch.float16), ((9, 0), "fp32", torch.float32)])
def test_gpu_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch, caplog, capability, precision, expect):
    """A T4 (7.5) says torch.cuda.is_bf16_supported() through emulation: auto must take fp16
    there, and a forced bf16 is warned about."""
    from pipeline.modeling import device

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.pick_dtype(TrainConfig(precision=precision), torch.device("cuda", 0)) == expect
    assert ("emulated, the slow path" in caplog.text) == (precision == "bf16" and capability < (8, 0))


def test_without_a_terminal_long_loops_log_their_progress(tiny_bert, monkeypatch, caplog):
    """A notebook's `!make all` has no TTY: tqdm is off there, so the loops log done/total, rate, ETA."""
    from pipeline.core import progress as progress_mod

    assert list(progress_mod.progress(range(3), 3, "x", terminal=False, every_s=0.0)) == [0, 1, 2]
    monkeypatch.setattr(progress_mod, "EVERY_S", 0.0)
    monkeypatch.setattr(progress_mod.progress, "__defaults__", (None, "", "it", 0.0, False))
    with caplog.at_level("INFO", logger="pipeline.progress"):
        FoldTrainer(_cfg(tiny_bert), 2, "f1", 0).fit(_data(24), _tok(tiny_bert))
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.progress"]
    assert any(m.startswith("fold 0 epoch 0: 1/3 batches (33%)") and "left" in m for m in lines), lines
    assert any(m.startswith("predicting 12 rows") for m in lines)


def test_a_half_precision_checkpoint_trains_with_float32_master_weights(tiny_bert, tmp_path):
    """transformers 5 loads a checkpoint in the dtype it was saved in; a backbone stored in fp16
    (gpu_check.sh carries MiniLM so) must still train float32 weights under autocast."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    half = tmp_path / "half"
    AutoModelForSequenceClassification.from_pretrained(tiny_bert).half().save_pretrained(half)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(half)
    model = load_model(_cfg(half), 2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    out = FoldTrainer(_cfg(half, epochs=2), 2, "f1", 0).fit(_data(), _tok(half))
    assert np.isfinite(out.val_proba).all()
