"""What turns a test.csv into a submission once the models exist: cleaning, model inputs,
fold-model inference, the blend and the submission's shape.

This file is self-contained on purpose: it imports no other module of ``pipeline`` (only the
standard library, numpy, pandas, scikit-learn, torch and transformers, plus ftfy / symspellpy
when the cleaning settings ask for them). ``make package`` copies it into the offline
inference bundle as ``textcomp_runtime.py``, so the bundle's ``predict.py`` runs the very code
the pipeline ran: a cleaning step or a threshold cannot differ between training and Kaggle.
The pipeline imports its pieces from here (clean, contract, ensemble, submit, classical).
"""

from __future__ import annotations

import html as _html
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^<>]{0,200}>")
URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
MENTION = re.compile(r"(?<![\w@])@\w{1,30}")
_WORD_TOKEN = r"[A-Za-z]+"


# -- cleaning -------------------------------------------------------------------------------
class TextCleaner:
    """scikit-learn-style cleaner: ``fit`` loads what the steps need, ``transform`` applies them.

    ``changes_`` counts, per step, how many rows the last ``transform`` changed.
    """

    def __init__(self, html: bool = True, urls: str | None = "[URL]", mentions: str | None = "[USER]",
                 mojibake: bool = True, unicode_form: str | None = "NFKC", whitespace: bool = True,
                 lowercase: bool = False, spelling: bool = False) -> None:
        self.html = html
        self.urls = urls
        self.mentions = mentions
        self.mojibake = mojibake
        self.unicode_form = unicode_form
        self.whitespace = whitespace
        self.lowercase = lowercase
        self.spelling = spelling

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("html", "urls", "mentions", "mojibake", "unicode_form", "whitespace",
                                              "lowercase", "spelling")}

    def fit(self, texts: Any = None) -> TextCleaner:
        self.speller_ = _load_speller() if self.spelling else None
        self.steps_ = self._steps()
        return self

    def _steps(self) -> list[tuple[str, Callable[[str], str]]]:
        steps: list[tuple[str, Callable[[str], str]]] = []
        if self.mojibake:
            import ftfy

            # Quotes and ligatures are left as they are: only mis-decoding is repaired here.
            cfg = ftfy.TextFixerConfig(uncurl_quotes=False, fix_latin_ligatures=False, unescape_html=False,
                                       normalization=None, fix_character_width=False)
            steps.append(("mojibake", lambda t: ftfy.fix_text(t, cfg)))
        if self.html:
            steps.append(("html", lambda t: _html.unescape(HTML_TAG.sub(" ", t))))
        if self.urls is not None:
            steps.append(("urls", lambda t: URL.sub(self.urls, t)))
        if self.mentions is not None:
            steps.append(("mentions", lambda t: MENTION.sub(self.mentions, t)))
        if self.unicode_form:
            steps.append(("unicode", lambda t: unicodedata.normalize(self.unicode_form, t)))
        if self.spelling:
            steps.append(("spelling", self._correct))
        if self.lowercase:
            steps.append(("lowercase", str.lower))
        if self.whitespace:
            steps.append(("whitespace", lambda t: " ".join(t.split())))
        return steps

    def _correct(self, text: str) -> str:
        from symspellpy import Verbosity

        def fix(m: re.Match) -> str:
            word = m.group(0)
            if len(word) < 4 or word.isupper() or word[0].isupper():
                return word  # acronyms and names: a dictionary does not know them
            hits = self.speller_.lookup(word.lower(), Verbosity.TOP, max_edit_distance=1)
            return hits[0].term if hits else word

        return re.sub(_WORD_TOKEN, fix, text)

    def transform(self, texts: list[str] | pd.Series) -> list[str]:
        if not hasattr(self, "steps_"):
            raise RuntimeError("TextCleaner.transform called before fit")
        out = ["" if (t is None or (isinstance(t, float) and np.isnan(t)) or t is pd.NA) else str(t) for t in texts]
        self.changes_: dict[str, int] = {}
        for name, fn in self.steps_:
            new = [fn(t) for t in out]
            self.changes_[name] = sum(a != b for a, b in zip(out, new))
            out = new
        return out

    def fit_transform(self, texts: list[str] | pd.Series) -> list[str]:
        return self.fit(texts).transform(texts)


def _load_speller() -> Any:
    import importlib.util

    from symspellpy import SymSpell

    spec = importlib.util.find_spec("symspellpy")
    dictionary = Path(spec.submodule_search_locations[0]) / "frequency_dictionary_en_82_765.txt"
    speller = SymSpell(max_dictionary_edit_distance=1)
    if not speller.load_dictionary(str(dictionary), term_index=0, count_index=1):
        raise FileNotFoundError(f"symspellpy dictionary not found at {dictionary}")
    return speller


PERCENT_ENCODED = re.compile(r"(?:[^%\s]|%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]{2}(?:[^%\s]|%[0-9A-Fa-f]{2})*")


def percent_decoded(value: str) -> str:
    """An extra column's value as a person reads it: ``blown%20up`` -> ``blown up`` when the value
    is one whitespace-free token whose every ``%`` starts a ``%XX`` escape (URL encoding, as the
    disaster tweets spell their keyword column); any other value unchanged (``100%``, ``a %20 b``)."""
    return urllib.parse.unquote(value) if PERCENT_ENCODED.fullmatch(value) else value


def model_inputs(df: pd.DataFrame, extra_cols: list[str], template: str, sep: str) -> list[str]:
    """The text a model sees: extra columns (e.g. keyword, percent-decoded) joined before the
    cleaned text."""
    texts = df["text"].fillna("").astype(str)
    if not extra_cols:
        return texts.tolist()
    parts = []
    for col in extra_cols:
        vals = df[col].astype("string").fillna("")
        parts.append([template.format(col=col, value=percent_decoded(v)) if v else "" for v in vals])
    out = []
    for i, text in enumerate(texts):
        pieces = [p[i] for p in parts if p[i]]
        out.append(sep.join([*pieces, text]))
    return out


# -- the classical family's fold models, in plain arrays (no pickle) ---------------------------
def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z) without overflow


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def linear_proba(X: Any, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """A fitted logistic regression's probabilities: one row of ``coef`` = binary, else softmax."""
    z = np.asarray(X @ coef.T) + intercept
    if coef.shape[0] == 1:
        p = _sigmoid(z[:, 0])
        return np.column_stack([1 - p, p])
    return _softmax_rows(z)


def _vectorizer(spec: dict[str, Any], idf: np.ndarray) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vocab = {term: i for i, term in enumerate(spec["vocabulary"])}
    vec = TfidfVectorizer(analyzer=spec["analyzer"], ngram_range=tuple(spec["ngram_range"]),
                          lowercase=spec["lowercase"], sublinear_tf=spec["sublinear_tf"], vocabulary=vocab)
    vec.idf_ = idf  # the fitted inverse document frequencies; transform needs nothing else
    return vec


class LinearTfidfModel:
    """A fitted TF-IDF + linear model, rebuilt from ``model.json`` + ``model.npz``.

    kinds: ``lr`` (multinomial or binary logistic regression), ``nbsvm`` (one-vs-rest logistic
    regressions on NB-scaled features), ``svm`` (sigmoid-calibrated linear SVMs, averaged
    over the calibration folds, as scikit-learn's CalibratedClassifierCV does).
    """

    def __init__(self, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.spec = spec
        self.arrays = arrays
        self.vectorizers = [_vectorizer(v, arrays[f"idf_{i}"]) for i, v in enumerate(spec["vectorizers"])]

    @classmethod
    def load(cls, folder: Path) -> LinearTfidfModel:
        spec = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        with np.load(Path(folder) / "model.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(spec, arrays)

    def features(self, texts: list[str]) -> Any:
        import scipy.sparse as sp

        return sp.hstack([v.transform(texts) for v in self.vectorizers]).tocsr()

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        X, a, kind = self.features(texts), self.arrays, self.spec["kind"]
        n_classes = len(self.spec["classes"])
        if kind == "lr":
            return linear_proba(X, a["coef"], a["intercept"])
        if kind == "nbsvm":
            scores = np.column_stack([_sigmoid(np.asarray(X.multiply(a["ratios"][c]).tocsr() @ a["coef"][c])
                                               + a["intercept"][c]) for c in range(n_classes)])
            if n_classes == 2:  # the two one-vs-rest models are mirror images: use class 1's
                return np.column_stack([1 - scores[:, 1], scores[:, 1]])
            return scores / scores.sum(1, keepdims=True)
        if kind == "svm":
            out = np.zeros((X.shape[0], n_classes))
            for j in range(a["coef"].shape[0]):  # one calibrated SVM per calibration fold
                d = np.asarray(X @ a["coef"][j].T) + a["intercept"][j]
                p = _sigmoid(-(a["cal_a"][j] * d + a["cal_b"][j]))
                if n_classes == 2:
                    proba = np.column_stack([1 - p[:, 0], p[:, 0]])
                else:
                    denom = p.sum(1, keepdims=True)
                    proba = np.divide(p, denom, out=np.full_like(p, 1.0 / n_classes), where=denom != 0)
                proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
                out += proba
            return out / a["coef"].shape[0]
        raise ValueError(f"unknown classical model kind {kind!r}")


# -- transformer fold models ----------------------------------------------------------------
def load_transformer(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype="auto")
    return model.float().to(device).eval(), tokenizer


def _batches(tokenizer: Any, texts: list[str], max_len: int, batch_size: int,
             pad_to_multiple_of: int | None) -> Any:
    """(row indices, input_ids, attention_mask) per batch: rows of similar length together
    (longest first), each batch padded to its own longest text, as the pipeline predicts."""
    import math

    ids = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)["input_ids"]
    order = np.argsort(-np.array([len(x) for x in ids]), kind="stable")
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        if pad_to_multiple_of:
            width = int(math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of)
        input_ids = np.full((len(idx), width), pad, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for r, i in enumerate(idx):
            input_ids[r, :len(ids[i])] = ids[i]
            mask[r, :len(ids[i])] = 1
        yield idx, input_ids, mask


def predict_transformer(model: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 128,
                        device: str = "cpu", pad_to_multiple_of: int | None = None) -> np.ndarray:
    """Softmax probabilities in the texts' order (float32 logits, softmax in torch)."""
    import torch

    logits = torch.empty((len(texts), model.config.num_labels), dtype=torch.float32)
    with torch.inference_mode():
        for idx, input_ids, mask in _batches(tokenizer, texts, max_len, batch_size, pad_to_multiple_of):
            out = model(input_ids=torch.from_numpy(input_ids).to(device),
                        attention_mask=torch.from_numpy(mask).to(device)).logits
            logits[torch.from_numpy(idx)] = out.float().cpu()
    return torch.softmax(logits, -1).numpy()


def load_encoder(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """A frozen encoder (no classification head) for the embedding family."""
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(folder)).float().to(device).eval(), AutoTokenizer.from_pretrained(str(folder))


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The mean of ``hidden`` (batch, tokens, dim) over the tokens where ``mask`` is 1: padding
    does not count. How sentence-transformers pools the all-* models."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def embed(model: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 128,
          device: str = "cpu") -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them for the all-* models: the mean
    of the last hidden states over real tokens, L2-normalised. (n, hidden) float32."""
    import torch

    out = None
    with torch.inference_mode():
        for idx, input_ids, mask in _batches(tokenizer, texts, max_len, batch_size, None):
            m = torch.from_numpy(mask).to(device)
            hidden = model(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=m).last_hidden_state
            pooled = mean_pool(hidden, m)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
    return out


class EmbeddingHead:
    """The embedding family's fold model: a logistic regression over the frozen encoder's
    embeddings, in ``model.json`` + ``model.npz`` (coef, intercept)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef, self.intercept = coef, intercept

    @classmethod
    def load(cls, folder: Path) -> EmbeddingHead:
        with np.load(Path(folder) / "model.npz", allow_pickle=False) as z:
            return cls(z["coef"], z["intercept"])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return linear_proba(np.asarray(X, dtype=np.float64), self.coef, self.intercept)


ONNX_FILE = "model.int8.onnx"


def load_onnx(folder: Path) -> tuple[Any, Any]:
    """An int8 ONNX export of a fold model (package.onnx=true) on onnxruntime's CPU provider."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(Path(folder) / ONNX_FILE), providers=["CPUExecutionProvider"])
    return session, AutoTokenizer.from_pretrained(str(folder))


def predict_onnx(session: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 128,
                 pad_to_multiple_of: int | None = None) -> np.ndarray:
    logits = None
    for idx, input_ids, mask in _batches(tokenizer, texts, max_len, batch_size, pad_to_multiple_of):
        out = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
        if logits is None:
            logits = np.empty((len(texts), out.shape[1]), dtype=np.float32)
        logits[idx] = out
    return _softmax_rows(logits.astype(np.float64))


def _embedding_member(bundle: Path, member: dict[str, Any], texts: list[str], device: str, batch: int,
                      onnx: bool) -> list[np.ndarray]:
    X = embed(*load_encoder(bundle / member["encoder"], device), texts, member["max_len"], batch, device)
    return [EmbeddingHead.load(bundle / rel).predict_proba(X) for rel in member["folds"]]  # one encoder, every head


def _classical_member(bundle: Path, member: dict[str, Any], texts: list[str], device: str, batch: int,
                      onnx: bool) -> list[np.ndarray]:
    return [LinearTfidfModel.load(bundle / rel).predict_proba(texts) for rel in member["folds"]]


def _transformer_member(bundle: Path, member: dict[str, Any], texts: list[str], device: str, batch: int,
                        onnx: bool) -> list[np.ndarray]:
    folds = []
    for rel in member["folds"]:
        folder = bundle / rel
        if onnx:
            if not (folder / ONNX_FILE).is_file():
                raise FileNotFoundError(f"{folder / ONNX_FILE}: missing; the bundle was made without package.onnx=true")
            folds.append(predict_onnx(*load_onnx(folder), texts, member["max_len"], batch,
                                      member.get("pad_to_multiple_of")))
        else:
            model, tokenizer = load_transformer(folder, device)
            folds.append(predict_transformer(model, tokenizer, texts, member["max_len"], batch, device,
                                             member.get("pad_to_multiple_of")))
            del model
    return folds


# The bundle's registry of families (this file imports nothing from the pipeline, so it keeps
# its own): each predicts every fold model of a member.
MEMBER_PREDICTORS = {"embedding": _embedding_member, "classical": _classical_member,
                     "transformer": _transformer_member}


def member_proba(bundle: Path, member: dict[str, Any], texts: list[str], device: str = "cpu",
                 batch_size: int | None = None, onnx: bool = False) -> np.ndarray:
    """One ensemble member's test probabilities from a bundle: the mean over its fold models,
    as the pipeline averages them (``member``: its entry in manifest.json)."""
    predict = MEMBER_PREDICTORS[member["family"]]
    return np.mean(predict(Path(bundle), member, texts, device, batch_size or member["batch_size"], onnx), axis=0)


# -- blending -------------------------------------------------------------------------------
def mix(probas: np.ndarray, w: np.ndarray) -> np.ndarray:
    """probas: (models, n, k); w: (models,) -> (n, k)."""
    return np.tensordot(w, probas, axes=1)


def rank_mean(probas: np.ndarray) -> np.ndarray:
    """Average of per-model ranks (scaled to [0, 1]) per class, rows renormalised."""
    from scipy.stats import rankdata

    ranks = np.stack([np.column_stack([rankdata(p[:, c]) / len(p) for c in range(p.shape[1])]) for p in probas])
    out = ranks.mean(0)
    if out.shape[1] == 2:
        return np.column_stack([1 - out[:, 1], out[:, 1]])
    return out / out.sum(1, keepdims=True)


def vote(probas: np.ndarray) -> np.ndarray:
    """Share of models voting for each class (argmax per model)."""
    k = probas.shape[2]
    votes = np.stack([np.eye(k)[p.argmax(1)] for p in probas])
    return votes.mean(0)


def stack_features(probas: np.ndarray) -> np.ndarray:
    """(models, n, k) -> (n, features): each member's log-probabilities (binary: its logit)."""
    p = np.clip(np.asarray(probas, dtype=np.float64), 1e-6, 1 - 1e-6)
    if p.shape[2] == 2:
        return np.column_stack([np.log(q[:, 1] / q[:, 0]) for q in p])
    return np.column_stack([np.log(q) for q in p])


def stack_proba(stacker: dict[str, Any], probas: np.ndarray) -> np.ndarray:
    """The stacking model's probabilities: a logistic regression over ``stack_features``."""
    z = stack_features(probas) @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"])
    if z.shape[1] == 1:
        p = _sigmoid(z[:, 0])
        return np.column_stack([1 - p, p])
    return _softmax_rows(z)


def blend(method: str, weights: np.ndarray, probas: np.ndarray, stacker: dict[str, Any] | None = None) -> np.ndarray:
    if method == "rank":
        return rank_mean(probas)
    if method == "vote":
        return vote(probas)
    if method == "stack":
        return stack_proba(stacker, probas)
    return mix(probas, weights)


# -- the submission -------------------------------------------------------------------------
def build_submission(ids: pd.Series, proba: np.ndarray, *, id_col: str, pred_cols: list[str], classes: list[str],
                     kind: str, threshold: float | None, clip: float) -> pd.DataFrame:
    """The submission frame for ``ids`` (in their order) from class probabilities (n, k)."""
    sub = pd.DataFrame({id_col: ids.to_numpy()})
    if kind == "label":
        if len(classes) == 2 and threshold is not None:
            idx = (proba[:, 1] >= threshold).astype(int)
        else:
            idx = proba.argmax(1)
        sub[pred_cols[0]] = [classes[i] for i in idx]
        return sub
    proba = np.clip(proba, clip, 1 - clip)
    if len(pred_cols) == 1:
        sub[pred_cols[0]] = proba[:, 1]
        return sub
    proba = proba / proba.sum(1, keepdims=True)
    index = {str(c): i for i, c in enumerate(classes)}
    for col in pred_cols:
        sub[col] = proba[:, index[str(col)]]
    return sub


def read_csv_strings(path: Path) -> pd.DataFrame:
    """A competition CSV as strings: ids stay verbatim ('000123'), only an empty cell is missing."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    df.columns = [str(c).strip() for c in df.columns]
    return df
