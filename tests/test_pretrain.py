"""Continued masked-LM pretraining on the competition's texts (train.pretrain_steps), on the tiny
BERT: the loss on held-out text falls, the copy is cached and shared, a changed text digest
builds another, a killed build resumes to the same weights, and a fine-tune starts from it."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import NEG, POS, run_stage, synthetic_texts

from pipeline.core.config import TrainConfig
from pipeline.modeling import pretrain
from pipeline.modeling import step as step_
from pipeline.modeling.data import DeviceData, Encoded


def _cfg(backbone, **kw) -> TrainConfig:
    base = dict(backbone=str(backbone), max_len=32, pretrain_steps=20, pretrain_lr=2e-3, pretrain_batch_size=16,
                precision="fp32", log_every=5)
    base.update(kw)
    cfg = TrainConfig(**base)
    cfg.validate()
    return cfg


def _tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


TRAIN, _ = synthetic_texts(200, [NEG, POS], 10)
HELD, _ = synthetic_texts(60, [NEG, POS], 11)  # the same kind of text, never trained on


def test_masking_takes_the_counted_tokens_never_a_special_or_a_pad(tiny_bert):
    tok = _tok(tiny_bert)
    ids, maskable = pretrain.windows(tok, TRAIN[:8] + ["fire"], 32)
    data = DeviceData(Encoded(ids), tok.pad_token_id, torch.device("cpu"))
    masking = pretrain.Masking.of(tok, 300, 0.15, torch.device("cpu"))
    rows = list(range(len(ids)))
    k = pretrain.n_masked(maskable, rows, 0.15)
    assert k == round(0.15 * sum(len(x) - 2 for x in ids))  # [CLS] and [SEP] are never maskable
    batch = next(data.iterate([rows]))
    torch.manual_seed(0)
    masked = masking.apply(batch, k)
    pos = masked.inputs["mlm_positions"]
    assert len(pos) == k == int((masked.labels >= 0).sum())
    before, after = batch.inputs["input_ids"].flatten(), masked.inputs["input_ids"].flatten()
    assert torch.equal(masked.labels, before[pos])  # the labels are the originals
    specials = torch.isin(before[pos], torch.tensor(tok.all_special_ids))
    assert not specials.any() and not (batch.inputs["attention_mask"].flatten()[pos] == 0).any()
    untouched = torch.ones_like(before, dtype=torch.bool)
    untouched[pos] = False
    assert torch.equal(before[untouched], after[untouched])  # nothing else changes
    # over many batches: about 80% [MASK], 10% random, 10% kept (BERT's recipe)
    torch.manual_seed(1)
    outs = [masking.apply(batch, k) for _ in range(200)]
    new = torch.cat([o.inputs["input_ids"].flatten()[o.inputs["mlm_positions"]] for o in outs])
    olds = torch.cat([o.labels for o in outs])
    assert 0.75 < float((new == tok.mask_token_id).float().mean()) < 0.85
    assert 0.07 < float(((new != tok.mask_token_id) & (new == olds)).float().mean()) < 0.14


@pytest.fixture(scope="module")
def tiny_mpnet(tiny_bert, tmp_path_factory):
    """An MPNet encoder (what packaged:mpnet is) shipped as sentence-transformers ship it: the base
    model with its pooler, no MLM head."""
    from transformers import AutoConfig, AutoModel

    folder = tmp_path_factory.mktemp("tiny_mpnet")
    tok = _tok(tiny_bert)
    tok.save_pretrained(folder)
    config = AutoConfig.for_model("mpnet", vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=130,
                                  pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_mpnet"])
def test_the_head_on_masked_positions_equals_the_whole_models_logits(which, request):
    """The fast path (the LM head on the masked positions only) computes what the model's own
    forward does at those positions."""
    backbone = request.getfixturevalue(which)
    tok = _tok(backbone)
    model = pretrain.load_masked_lm(backbone).eval()
    ids, maskable = pretrain.windows(tok, TRAIN[:6], 32)
    batch = next(DeviceData(Encoded(ids), tok.pad_token_id, torch.device("cpu")).iterate([list(range(6))]))
    masked = pretrain.Masking.of(tok, model.config.vocab_size, 0.15, torch.device("cpu")).apply(batch, 9)
    inputs = step_.model_inputs(masked, step_.mask_style(model))
    with torch.no_grad():
        fast = pretrain.MaskedLM(model)(**inputs).logits
        whole = model(**{k: v for k, v in inputs.items() if k != "mlm_positions"}).logits
    assert torch.allclose(fast, whole.flatten(0, 1)[inputs["mlm_positions"]], atol=1e-5)


def test_the_fresh_head_is_tied_to_the_word_embeddings(tiny_bert):
    model = pretrain.load_masked_lm(tiny_bert)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight


def test_pretraining_lowers_the_loss_on_held_out_text_and_is_cached_by_texts(tiny_bert, tmp_path, monkeypatch):
    tok = _tok(tiny_bert)
    cfg = _cfg(tiny_bert)
    folder = pretrain.ensure(cfg, TRAIN, tmp_path)
    before = pretrain.heldout_loss(pretrain.load_masked_lm(tiny_bert), tok, HELD, 32)
    after = pretrain.heldout_loss(pretrain.load_masked_lm(folder), tok, HELD, 32)
    assert after < before - 0.5, (before, after)  # 5.28 -> 4.43 measured
    meta = json.loads((folder / "pretrain.json").read_text())
    assert meta["steps"] == 20 and meta["texts"] == len(TRAIN) and meta["last_loss"] < meta["first_loss"]
    assert not (folder / "resume").exists() and not list(tmp_path.glob("*.partial"))
    # the same settings and texts: the copy is reused, nothing is built
    monkeypatch.setattr(pretrain.Pretrainer, "run", lambda self: pytest.fail("built again"))
    assert pretrain.ensure(cfg, TRAIN, tmp_path) == folder
    assert pretrain.ensure(_cfg(tiny_bert, seed=7, lr=1e-5), TRAIN, tmp_path) == folder  # fine-tune settings: same copy
    assert pretrain.find(_cfg(tiny_bert, pretrain_steps=10), TRAIN, tmp_path) is None  # other steps: not that copy
    monkeypatch.undo()
    # another text (one more row): another copy, built
    short = _cfg(tiny_bert, pretrain_steps=2)
    one = pretrain.ensure(short, TRAIN, tmp_path)
    other = pretrain.ensure(short, TRAIN + ["a new tweet about a flood"], tmp_path)
    assert other != one and (other / "pretrain.json").exists() and (one / "pretrain.json").exists()
    assert json.loads((other / "pretrain.json").read_text())["texts"] == len(TRAIN) + 1


@pytest.mark.parametrize("which, prefix", [("tiny_bert", "bert"), ("tiny_mpnet", "mpnet")])
def test_the_pretrained_encoder_loads_as_the_backbone_does_with_its_pooler(which, prefix, request, tmp_path):
    from transformers import AutoModel

    backbone = request.getfixturevalue(which)
    folder = pretrain.ensure(_cfg(backbone, pretrain_steps=5), TRAIN, tmp_path)
    s, n = AutoModel.from_pretrained(backbone).state_dict(), AutoModel.from_pretrained(folder).state_dict()
    assert set(s) == set(n)
    assert torch.equal(s["pooler.dense.weight"], n["pooler.dense.weight"])  # kept, not re-drawn
    assert not torch.equal(s["encoder.layer.1.output.dense.weight"], n["encoder.layer.1.output.dense.weight"])
    assert _tok(folder).get_vocab() == _tok(backbone).get_vocab()
    # and the fine-tune's own loader takes it
    from pipeline.modeling.transformer import load_model

    assert load_model(_cfg(folder), 2).base_model_prefix == prefix


def test_a_killed_build_resumes_to_the_weights_of_an_uninterrupted_one(tiny_bert, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    cfg = _cfg(tiny_bert, pretrain_steps=10)
    whole = pretrain.ensure(cfg, TRAIN, tmp_path / "a")
    real = step_.save_checkpoint
    saved = []

    def killed(folder, epoch, state):
        real(folder, epoch, state)
        saved.append(epoch)
        if len(saved) == 3:
            raise KeyboardInterrupt  # killed after the third checkpoint (step 3 of 10)

    monkeypatch.setattr(step_, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        pretrain.ensure(cfg, TRAIN, tmp_path / "b")
    monkeypatch.undo()
    partial = next((tmp_path / "b").glob("*.partial"))
    assert (partial / "resume" / "state.pt").exists()
    assert [p.name for p in (tmp_path / "b").iterdir()] == [partial.name]  # nothing half-built is in place
    resumed = pretrain.ensure(cfg, TRAIN, tmp_path / "b")
    assert resumed.name == whole.name
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    ha = pd.read_csv(whole / "history.csv")
    hb = pd.read_csv(resumed / "history.csv")
    assert np.allclose(ha["train_loss"], hb["train_loss"])


def test_the_probe_times_masked_lm_steps_and_the_family_costs_a_build(tiny_bert):
    from pipeline.modeling.families import family

    fam = family("transformer")
    m = fam.probe_pretrain(_cfg(tiny_bert), TRAIN, 3)
    assert m["mlm_step_s"] > 0 and m["windows"] == len(TRAIN) and m["steps_per_epoch"] == 13
    assert fam.pretrain_seconds(m, 100) == pytest.approx(100 * m["mlm_step_s"] + 11 * m["load_s"])
    assert family("classical").pretrain_seconds({}, 100) == 0.0 and not family("classical").pretrains


def test_a_fine_tune_starts_from_the_pretrained_encoder_and_runs_share_it(prepared, tiny_bert, monkeypatch, capsys):
    data, work = prepared
    sets = [f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=1", "train.batch_size=16",
            "train.lr=1e-3", "train.precision=fp32", "train.pretrain_steps=6", "train.pretrain_lr=2e-3"]
    assert run_stage("train", work, data, "train.run=tapt", *sets) == 0
    cache = work / "data/interim/pretrained"
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    cv = json.loads((work / "models/tapt/cv.json").read_text())
    assert cv["pretrain"]["steps"] == 6 and cv["pretrain"]["folder"] == folder.name and cv["pretrain"]["seconds"] > 0
    meta = json.loads((folder / "pretrain.json").read_text())
    clean = pd.read_parquet(work / "data/interim/train_clean.parquet")
    assert meta["texts"] >= len(clean["text"].unique()) - 5  # train and test texts, each once
    # the fold's model started from the pretrained encoder: its embeddings are the copy's, moved by one epoch
    from safetensors.torch import load_file

    pre = load_file(str(folder / "model.safetensors"))["embeddings.position_embeddings.weight"]
    raw = load_file(str(Path(tiny_bert) / "model.safetensors"))["bert.embeddings.position_embeddings.weight"]
    tuned = load_file(str(work / "models/tapt/fold0/model/model.safetensors"))["bert.embeddings.position_embeddings.weight"]
    assert (tuned - pre).abs().mean() < (tuned - raw).abs().mean()
    # another run with the same backbone and pretraining settings builds nothing
    monkeypatch.setattr(pretrain.Pretrainer, "run", lambda self: pytest.fail("built again"))
    assert run_stage("train", work, data, "train.run=tapt2", *sets, "train.lr=5e-4", "train.folds=[0]") == 0
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    # the classical family has nothing to pretrain: one line
    capsys.readouterr()
    assert run_stage("train", work, data, "train.run=bad", "train.family=classical", "train.pretrain_steps=5") == 2
    assert "train.pretrain_steps: family classical has no encoder" in capsys.readouterr().err
