"""The classical family: word + char TF-IDF with a linear model (LR, NB-SVM, calibrated SVM).

A baseline to beat and an ensemble member whose errors differ from a transformer's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from pipeline.core.config import TrainConfig
from pipeline.core.files import atomic_path, write_json
from pipeline.core.metrics import confidence_histogram
from pipeline.modeling.base import FoldData, FoldOutput


class TfidfClassifier:
    """scikit-learn-style: ``fit(texts, y)`` -> self; ``predict_proba(texts)`` -> (n, k)."""

    def __init__(self, model: str = "lr", C: float = 4.0, word_ngrams: tuple[int, int] = (1, 2),
                 char_ngrams: tuple[int, int] = (2, 5), max_features: int = 200000, random_state: int = 0) -> None:
        self.model = model
        self.C = C
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.max_features = max_features
        self.random_state = random_state

    def _features(self, texts: list[str]) -> sp.csr_matrix:
        return sp.hstack([self.word_.transform(texts), self.char_.transform(texts)]).tocsr()

    def fit(self, texts: list[str], y: np.ndarray) -> TfidfClassifier:
        y = np.asarray(y)
        self.word_ = TfidfVectorizer(ngram_range=tuple(self.word_ngrams), min_df=2, sublinear_tf=True,
                                     max_features=self.max_features, lowercase=True)
        self.char_ = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams), min_df=2,
                                     sublinear_tf=True, max_features=self.max_features, lowercase=True)
        self.word_.fit(texts)
        self.char_.fit(texts)
        X = self._features(texts)
        self.classes_ = np.unique(y)
        if self.model == "nbsvm":
            # one-vs-rest logistic regressions on features scaled by each class's NB log-count ratio
            self.ratios_, self.estimators_ = [], []
            for c in self.classes_:
                pos = (y == c)
                p = (X[pos].sum(0) + 1) / (pos.sum() + 1)
                q = (X[~pos].sum(0) + 1) / ((~pos).sum() + 1)
                r = np.asarray(np.log(p / q)).ravel()
                est = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
                est.fit(X.multiply(r).tocsr(), pos.astype(int))
                self.ratios_.append(r)
                self.estimators_.append(est)
        elif self.model == "svm":
            from sklearn.calibration import CalibratedClassifierCV

            svm = LinearSVC(C=self.C / 10, random_state=self.random_state)
            self.estimator_ = CalibratedClassifierCV(svm, cv=3, method="sigmoid").fit(X, y)
        else:
            self.estimator_ = LogisticRegression(C=self.C, max_iter=3000, random_state=self.random_state).fit(X, y)
        return self

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        X = self._features(texts)
        if self.model == "nbsvm":
            scores = np.column_stack([est.predict_proba(X.multiply(r).tocsr())[:, 1]
                                      for r, est in zip(self.ratios_, self.estimators_)])
            if len(self.classes_) == 2:  # the two one-vs-rest models are mirror images: use class 1's
                return np.column_stack([1 - scores[:, 1], scores[:, 1]])
            return scores / scores.sum(1, keepdims=True)
        return self.estimator_.predict_proba(X)

    def save(self, folder: Path) -> None:
        """Plain files, no pickle: ``model.json`` (settings, vocabularies, classes) and
        ``model.npz`` (idf, coefficients); pipeline/runtime.py's LinearTfidfModel loads them
        and predicts what ``predict_proba`` does."""
        save_model_files(folder, *self.to_arrays())

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        vecs, arrays = [], {}
        for i, v in enumerate((self.word_, self.char_)):
            vocab = sorted(v.vocabulary_, key=v.vocabulary_.get)
            vecs.append({"analyzer": v.analyzer, "ngram_range": list(v.ngram_range), "lowercase": v.lowercase,
                         "sublinear_tf": v.sublinear_tf, "vocabulary": vocab})
            arrays[f"idf_{i}"] = v.idf_
        spec = {"format": "textcomp-linear-tfidf/1", "kind": self.model, "vectorizers": vecs,
                "classes": [int(c) for c in self.classes_]}
        if self.model == "nbsvm":
            arrays["ratios"] = np.stack(self.ratios_)
            arrays["coef"] = np.stack([e.coef_[0] for e in self.estimators_])
            arrays["intercept"] = np.array([e.intercept_[0] for e in self.estimators_])
        elif self.model == "svm":
            cals = self.estimator_.calibrated_classifiers_
            arrays["coef"] = np.stack([c.estimator.coef_ for c in cals])  # (folds, k or 1, features)
            arrays["intercept"] = np.stack([c.estimator.intercept_ for c in cals])
            arrays["cal_a"] = np.stack([[cal.a_ for cal in c.calibrators] for c in cals])
            arrays["cal_b"] = np.stack([[cal.b_ for cal in c.calibrators] for c in cals])
        else:
            arrays["coef"], arrays["intercept"] = self.estimator_.coef_, self.estimator_.intercept_
        return spec, arrays


def fit_classical_fold(cfg: TrainConfig, data: FoldData, metric: str, fold: int) -> FoldOutput:
    t0 = time.perf_counter()
    clf = TfidfClassifier(cfg.classical_model, cfg.C, tuple(cfg.word_ngrams), tuple(cfg.char_ngrams),
                          cfg.max_features, random_state=cfg.seed + fold).fit(data.train_texts, data.train_labels)
    val = clf.predict_proba(data.val_texts)
    test = clf.predict_proba(data.test_texts)
    return one_pass_output(fold, metric, data, val, test, clf.predict_proba(data.train_texts),
                           time.perf_counter() - t0, clf)


def one_pass_output(fold: int, metric: str, data: FoldData, val: np.ndarray, test: np.ndarray,
                    train: np.ndarray, seconds: float, model: object) -> FoldOutput:
    """A fold of a model fitted in one pass (no epochs): one evaluation row of history."""
    from pipeline.core.metrics import score

    s = score(metric, data.val_labels, val)
    history = [{"fold": fold, "kind": "eval", "epoch": 1.0, "step": 1, "metric": s,
                "val_loss": score("logloss", data.val_labels, val), "train_loss":
                score("logloss", data.train_labels, train),
                "confidence": float(val.max(1).mean()), "conf_hist": json.dumps(confidence_histogram(val))}]
    return FoldOutput(val_proba=val, test_proba=test, history=history, best_epoch=1.0, best_score=s,
                      optimizer_steps=0, seconds=seconds, train_samples_per_s=len(data.train_texts) / seconds,
                      batch_size=len(data.train_texts), grad_accum=1, extra={"model": model})


def save_model_files(folder: Path, spec: dict, arrays: dict[str, np.ndarray]) -> None:
    """A fold model as plain files, no pickle: ``model.json`` + ``model.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "model.json", spec)
    with atomic_path(folder / "model.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
