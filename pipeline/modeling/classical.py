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

from pipeline.core.config import ConfigError, TrainConfig
from pipeline.core.files import atomic_path, write_json
from pipeline.core.metrics import confidence, confidence_histogram
from pipeline.modeling.base import FoldData, FoldOutput
from pipeline.runtime import JOINT, JOINT_SEP, tfidf_features

PAIR_VERSION = 2  # runtime.pair_features' version new models use (word + character similarities)


def _binary_lr(X: sp.csr_matrix, y: np.ndarray, C: float, random_state: int, max_iter: int) -> LogisticRegression | float:
    """A binary logistic regression, or, where the rows hold one value only (a label with no
    positive in a fold), that value's share: a constant prediction."""
    if len(np.unique(y)) < 2:
        return float(np.clip(y.mean(), 1e-4, 1 - 1e-4))
    return LogisticRegression(C=C, max_iter=max_iter, random_state=random_state).fit(X, y)


def _coef(est: LogisticRegression | float, n_features: int) -> tuple[np.ndarray, float]:
    if isinstance(est, float):
        return np.zeros(n_features), float(np.log(est / (1 - est)))
    return est.coef_[0], float(est.intercept_[0])


class TfidfClassifier:
    """scikit-learn-style: ``fit(texts, y, pairs)`` -> self; ``predict_proba(texts, pairs)`` -> (n, k).

    Features: word + char TF-IDF blocks per text column (``pairs``: the columns after the first;
    ``joint``: one pair of blocks over a pair's texts joined), and for a text pair ``runtime.pair_features`` (``blocks`` false: those alone, a similarity
    member that reads only how alike the two texts are). ``y``: class indices (n,), or a multi-label
    0/1 matrix (n, L): one binary model per label (one-vs-rest LR, or NB-SVM with per-label NB
    ratios)."""

    def __init__(self, model: str = "lr", C: float = 4.0, word_ngrams: tuple[int, int] = (1, 2),
                 char_ngrams: tuple[int, int] = (2, 5), max_features: int = 200000, random_state: int = 0,
                 pair_features: bool = True, blocks: bool = True, joint: bool = True) -> None:
        self.model = model
        self.C = C
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.max_features = max_features
        self.random_state = random_state
        self.pair_features = pair_features
        self.blocks = blocks
        self.joint = joint

    def _features(self, texts: list[str], pairs: list[list[str]] | None = None) -> sp.csr_matrix:
        if not self.blocks and not (self.pair_features and pairs):
            raise ConfigError("train.tfidf_blocks=false leaves a model the pair features only, and this "
                              "competition has one text column (or train.pair_features=false): set it true")
        return tfidf_features(self.vectorizers_, self.columns_, texts, pairs, PAIR_VERSION if self.pair_features else 0,
                              self.blocks)

    def _fit_vectorizers(self, cols: list[list[str]]) -> None:
        self.vectorizers_, self.columns_ = [], []
        if self.joint and len(cols) > 1:  # one bag of words over the pair's texts joined
            cols = {JOINT: [JOINT_SEP.join(parts) for parts in zip(*cols)]}
        else:
            cols = dict(enumerate(cols))
        for c, col in cols.items():
            word = TfidfVectorizer(ngram_range=tuple(self.word_ngrams), min_df=2, sublinear_tf=True,
                                   max_features=self.max_features, lowercase=True)
            char = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams), min_df=2,
                                   sublinear_tf=True, max_features=self.max_features, lowercase=True)
            word.fit(col)
            char.fit(col)
            self.vectorizers_ += [word, char]
            self.columns_ += [c, c]
        self.word_, self.char_ = self.vectorizers_[0], self.vectorizers_[1]

    def fit(self, texts: list[str], y: np.ndarray, pairs: list[list[str]] | None = None) -> TfidfClassifier:
        y = np.asarray(y)
        self.multilabel_ = y.ndim == 2
        self.pairs_ = bool(pairs)
        self._fit_vectorizers([texts, *(pairs or [])])
        X = self._features(texts, pairs)
        if self.multilabel_:
            return self._fit_multilabel(X, y)
        self.classes_ = np.unique(y)
        if self.model == "nbsvm":
            # one-vs-rest logistic regressions on features scaled by each class's NB log-count ratio
            self.ratios_, self.estimators_ = [], []
            for c in self.classes_:
                r, est = self._nb_fit(X, y == c)
                self.ratios_.append(r)
                self.estimators_.append(est)
        elif self.model == "svm":
            from sklearn.calibration import CalibratedClassifierCV

            svm = LinearSVC(C=self.C / 10, random_state=self.random_state)
            self.estimator_ = CalibratedClassifierCV(svm, cv=3, method="sigmoid").fit(X, y)
        else:
            self.estimator_ = LogisticRegression(C=self.C, max_iter=3000, random_state=self.random_state).fit(X, y)
        return self

    def _nb_fit(self, X: sp.csr_matrix, pos: np.ndarray) -> tuple[np.ndarray, LogisticRegression | float]:
        p = (X[pos].sum(0) + 1) / (pos.sum() + 1)
        q = (X[~pos].sum(0) + 1) / ((~pos).sum() + 1)
        r = np.asarray(np.log(p / q)).ravel()
        return r, _binary_lr(X.multiply(r).tocsr(), pos.astype(int), self.C, self.random_state, 2000)

    def _fit_multilabel(self, X: sp.csr_matrix, y: np.ndarray) -> TfidfClassifier:
        if self.model == "svm":
            raise ConfigError("train.classical_model=svm is single-label; a multi-label competition takes lr "
                              "(one-vs-rest) or nbsvm (NB ratios per label)")
        self.classes_ = np.arange(y.shape[1])
        self.ratios_, self.estimators_ = [], []
        for j in range(y.shape[1]):
            if self.model == "nbsvm":
                r, est = self._nb_fit(X, y[:, j] == 1)
            else:
                r, est = np.ones(X.shape[1]), _binary_lr(X, y[:, j], self.C, self.random_state, 3000)
            self.ratios_.append(r)
            self.estimators_.append(est)
        return self

    def predict_proba(self, texts: list[str], pairs: list[list[str]] | None = None) -> np.ndarray:
        X = self._features(texts, pairs)
        if self.multilabel_ or self.model == "nbsvm":
            scores = np.column_stack([est.predict_proba(X.multiply(r).tocsr())[:, 1] if not isinstance(est, float)
                                      else np.full(X.shape[0], est) for r, est in zip(self.ratios_, self.estimators_)])
            if self.multilabel_:
                return scores
            if len(self.classes_) == 2:  # the two one-vs-rest models are mirror images: use class 1's
                return np.column_stack([1 - scores[:, 1], scores[:, 1]])
            return scores / scores.sum(1, keepdims=True)
        return self.estimator_.predict_proba(X)

    def save(self, folder: Path) -> None:
        """Plain files, no pickle: ``model.json`` (settings, vocabularies, classes) and
        ``model.npz`` (idf, coefficients); pipeline/runtime.py's LinearTfidfModel loads them
        and predicts what ``predict_proba`` does."""
        save_model_files(folder, *self.to_arrays())

    def to_arrays(self) -> tuple[dict[str, object], dict[str, np.ndarray]]:
        vecs, arrays = [], {}
        for i, (v, c) in enumerate(zip(self.vectorizers_, self.columns_)):
            vocab = sorted(v.vocabulary_, key=v.vocabulary_.get)
            vecs.append({"analyzer": v.analyzer, "ngram_range": list(v.ngram_range), "lowercase": v.lowercase,
                         "sublinear_tf": v.sublinear_tf, "vocabulary": vocab, "column": c})
            arrays[f"idf_{i}"] = v.idf_
        kind = self.model
        spec = {"format": "textcomp-linear-tfidf/1", "kind": kind, "vectorizers": vecs,
                "classes": [int(c) for c in self.classes_], "multilabel": self.multilabel_,
                "pair_features": PAIR_VERSION if self.pair_features and self.pairs_ else 0,
                "tfidf_blocks": self.blocks}
        if kind == "nbsvm" or self.multilabel_:  # one binary model per class (nbsvm) or per label
            n = len(self.ratios_[0])
            if kind == "nbsvm":
                arrays["ratios"] = np.stack(self.ratios_)
            arrays["coef"] = np.stack([_coef(e, n)[0] for e in self.estimators_])
            arrays["intercept"] = np.array([_coef(e, n)[1] for e in self.estimators_])
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
                          cfg.max_features, random_state=cfg.seed + fold, pair_features=cfg.pair_features,
                          blocks=cfg.tfidf_blocks, joint=cfg.pair_tfidf == "joint")
    clf.fit(data.train_texts, data.train_labels, data.train_pairs)
    val = clf.predict_proba(data.val_texts, data.val_pairs)
    test = clf.predict_proba(data.test_texts, data.test_pairs)
    return one_pass_output(fold, metric, data, val, test, clf.predict_proba(data.train_texts, data.train_pairs),
                           time.perf_counter() - t0, clf)


def one_pass_output(fold: int, metric: str, data: FoldData, val: np.ndarray, test: np.ndarray,
                    train: np.ndarray, seconds: float, model: object) -> FoldOutput:
    """A fold of a model fitted in one pass (no epochs): one evaluation row of history."""
    from pipeline.core.metrics import score

    s = score(metric, data.val_labels, val)
    history = [{"fold": fold, "kind": "eval", "epoch": 1.0, "step": 1, "metric": s,
                "val_loss": score("logloss", data.val_labels, val), "train_loss":
                score("logloss", data.train_labels, train),
                "confidence": float(confidence(val, data.multilabel).mean()),
                "conf_hist": json.dumps(confidence_histogram(val, multilabel=data.multilabel))}]
    return FoldOutput(val_proba=val, test_proba=test, history=history, best_epoch=1.0, best_score=s,
                      optimizer_steps=0, seconds=seconds, train_samples_per_s=len(data.train_texts) / seconds,
                      batch_size=len(data.train_texts), grad_accum=1, extra={"model": model})


def save_model_files(folder: Path, spec: dict, arrays: dict[str, np.ndarray]) -> None:
    """A fold model as plain files, no pickle: ``model.json`` + ``model.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "model.json", spec)
    with atomic_path(folder / "model.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
