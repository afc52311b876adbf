"""The embedding family: a frozen encoder's mean-pooled vectors + a logistic regression per
fold, cached by text; packaged with its encoder, the bundle reproduces its submission."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from conftest import run_stage


def test_embedding_run_caches_vectors_and_packages(prepared, tiny_bert, monkeypatch):
    import pipeline.modeling.embedding as emb

    data, work = prepared
    sets = ("train.family=embedding", "train.run=emb", f"train.backbone={tiny_bert}", "train.max_len=32",
            "train.eval_batch_size=16")
    assert run_stage("train", work, data, *sets) == 0
    cv = json.loads((work / "models/emb/cv.json").read_text())
    assert cv["family"] == "embedding" and 0 <= cv["cv"] <= 1
    cache = list((work / "data/interim/embeddings").glob("*.npz"))
    assert len(cache) == 1
    with np.load(cache[0], allow_pickle=False) as z:
        n_cached = len(z["keys"])
    n_texts = len(pd.read_parquet(work / "data/interim/train_clean.parquet")) + \
        len(pd.read_parquet(work / "data/interim/test_clean.parquet"))
    assert n_cached <= n_texts and n_cached > 0.9 * n_texts  # every distinct text once
    # a second run (another C) never loads the encoder: every vector comes from the disk cache
    emb._MEMO.clear()

    def no_encoder(*a, **k):
        raise AssertionError("the encoder was loaded although every text is cached")

    monkeypatch.setattr(emb, "load_encoder", no_encoder)
    assert run_stage("train", work, data, *sets, "train.C=0.5", "train.run=emb2") == 0
    monkeypatch.undo()
    # blended with a TF-IDF run and packaged: the bundle ships the encoder once, and reproduces
    assert run_stage("train", work, data, "train.family=classical", "train.run=tfidf") == 0
    common = ("ensemble.method=mean", "ensemble.runs=[emb,tfidf]", "package.name=e1")
    for stage in ("ensemble", "submit", "package"):
        assert run_stage(stage, work, data, *common) == 0
    bundle = work / "dist/e1"
    member = next(m for m in json.loads((bundle / "manifest.json").read_text())["predict"]["members"]
                  if m["family"] == "embedding")
    assert member["encoder"] == "models/emb/encoder" and (bundle / member["encoder"] / "model.safetensors").exists()
    assert member["max_abs_diff_vs_run"] < 1e-5
    # package ran predict.py in a process that cannot import pipeline: every label as submitted
    assert json.loads((bundle / "manifest.json").read_text())["verification"]["labels_differing"] == 0
