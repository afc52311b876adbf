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


def test_a_long_text_is_embedded_whole_its_windows_pooled(tiny_bert, tmp_path):
    """train.chunks: every window of a text embedded and pooled (their mean, or each dimension's
    maximum), normalised again; a text that fits is embedded as the head reads it; the cache keeps the two
    readings apart."""
    import torch

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.embedding import cache_file, text_encoding
    from pipeline.runtime import embed as embed_texts
    from pipeline.runtime import encode_texts, load_encoder, mean_pool

    model, tok = load_encoder(tiny_bert)
    words = "fire flood storm party movie music coffee crash rescue injured".split()
    long_a = " ".join(words * 6) + " earthquake wildfire"
    long_b = " ".join(words * 6) + " birthday holiday"  # the same head, another end
    texts = [long_a, long_b, "fire near the city"]
    head = embed_texts(model, tok, texts, 16, 8)
    assert np.allclose(head[0], head[1])  # the head cannot tell them apart
    for pool in ("mean", "max"):
        cfg = TrainConfig(max_len=16, stride=4, chunks=True, chunk_pool=pool)
        whole = embed_texts(model, tok, texts, 16, 8, encoding=text_encoding(cfg))
        assert not np.allclose(whole[0], whole[1]) and np.allclose(whole[2], head[2], atol=1e-6)
        ids, _, owner = encode_texts(tok, texts[:1], 16, chunks=True, stride=4)
        with torch.inference_mode():
            vecs = [torch.nn.functional.normalize(mean_pool(model(input_ids=torch.tensor([w])).last_hidden_state,
                                                            torch.ones(1, len(w))), dim=-1)[0].numpy() for w in ids]
        want = np.max(vecs, axis=0) if pool == "max" else np.mean(vecs, axis=0)
        assert len(ids) > 3 and np.allclose(whole[0], want / np.linalg.norm(want), atol=1e-5)
    assert cache_file(tmp_path, TrainConfig(backbone=str(tiny_bert))) != \
        cache_file(tmp_path, TrainConfig(backbone=str(tiny_bert), chunks=True))
    assert text_encoding(TrainConfig()) is None  # the head: the cache file runs made before keep their name
