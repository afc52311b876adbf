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

    def __init__(self, html: bool = True, urls: str | None = "[URL]", mentions: str | None = None,
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


def text_column(i: int) -> str:
    """The cleaned tables' name of text column ``i``: text, text_1, text_2 ..."""
    return "text" if i == 0 else f"text_{i}"


def text_columns(df: pd.DataFrame) -> list[str]:
    """The text columns of a cleaned table, in order."""
    n = 1
    while text_column(n) in df.columns:
        n += 1
    return [text_column(i) for i in range(n)]


def other_texts(df: pd.DataFrame, names: list[str] | None = None) -> list[list[str]] | None:
    """The text columns after the first (a pair's second text), one list each; None for one text.
    Three or more text columns: each is prefixed with its column's name (``names``: every text
    column's; ``model_inputs`` names the first), since they are joined into the pair's second text."""
    cols = text_columns(df)[1:]
    out = [df[c].fillna("").astype(str).tolist() for c in cols]
    if len(out) >= 2 and names:
        out = [[f"{name}: {v}" for v in col] for name, col in zip(names[1:], out)]
    return out or None


PAIR_FEATURES = ("word_jaccard", "length_ratio", "word_tfidf_cosine", "char3_jaccard", "char_tfidf_cosine")


def pair_features(a: list[str], b: list[str], vectorizer: Any = None, char_vectorizer: Any = None,
                  version: int = 2) -> np.ndarray:
    """What a text pair's relation looks like to a linear model, per row (``PAIR_FEATURES``): the
    shared-word ratio (Jaccard of lower-cased word sets), the length ratio (shorter / longer, in
    characters), the cosine of the two texts' TF-IDF vectors under ``vectorizer`` (0 without
    one), and (``version`` 2) the shared character-trigram ratio and the cosine under
    ``char_vectorizer``. Version 1 (models trained before the character features) is the first three."""
    words = re.compile(r"\w+")
    out = np.zeros((len(a), 3 if version == 1 else len(PAIR_FEATURES)))
    for i, (x, y) in enumerate(zip(a, b)):
        wx, wy = set(words.findall(x.lower())), set(words.findall(y.lower()))
        out[i, 0] = len(wx & wy) / len(wx | wy) if wx | wy else 0.0
        out[i, 1] = min(len(x), len(y)) / max(len(x), len(y), 1)
        if version > 1:
            cx, cy = _trigrams(x), _trigrams(y)
            out[i, 3] = len(cx & cy) / len(cx | cy) if cx | cy else 0.0
    for col, vec in ((2, vectorizer), (4, char_vectorizer if version > 1 else None)):
        if vec is not None:
            va, vb = vec.transform(a), vec.transform(b)  # rows are L2-normalised
            out[:, col] = np.asarray(va.multiply(vb).sum(1)).ravel()
    return out


def _trigrams(text: str) -> set[str]:
    t = " ".join(text.lower().split())
    return {t[i:i + 3] for i in range(max(0, len(t) - 2))}


def model_inputs(df: pd.DataFrame, extra_cols: list[str], template: str, sep: str,
                 names: list[str] | None = None) -> list[str]:
    """The text a model sees: extra columns (e.g. keyword, percent-decoded) joined before the
    cleaned text. With three or more text columns (``names``: each one's own name) the first is
    named as ``other_texts`` names the others: every column once."""
    texts = df["text"].fillna("").astype(str)
    if names and len(names) >= 3 and len(text_columns(df)) >= 3:
        texts = names[0] + ": " + texts
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


def linear_proba(X: Any, coef: np.ndarray, intercept: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """A fitted logistic regression's probabilities: one row of ``coef`` = binary, else softmax;
    ``multilabel``: one binary regression per label (row of ``coef``), a sigmoid each."""
    z = np.asarray(X @ coef.T) + intercept
    if multilabel:
        return _sigmoid(z)
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


JOINT, JOINT_SEP = -1, " || "  # a vectorizer over every text column joined (train.pair_tfidf=joint)


def tfidf_features(vectorizers: list[Any], columns: list[int], texts: list[str], pairs: list[list[str]] | None,
                   with_pair_features: int, blocks: bool = True) -> Any:
    """The classical family's features: each vectorizer over its text column (0: the first;
    ``JOINT``: all of them joined, one bag of words for the pair), then, for a text pair,
    ``pair_features`` of that version (the first word and char vectorizers for the cosines);
    ``blocks`` false: the pair features alone (a similarity member)."""
    import scipy.sparse as sp

    cols = [texts, *(pairs or [])]
    if JOINT in columns:
        joined = [JOINT_SEP.join(parts) for parts in zip(*cols)]
    parts = [v.transform(joined if c == JOINT else cols[c]) for v, c in zip(vectorizers, columns)] if blocks else []
    if with_pair_features and pairs:
        char = vectorizers[1] if len(vectorizers) > 1 and columns[1] in (0, JOINT) else None
        parts.append(sp.csr_matrix(pair_features(texts, pairs[0], vectorizers[0], char, int(with_pair_features))))
    return sp.hstack(parts).tocsr()


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
        self.multilabel = bool(spec.get("multilabel", False))

    @classmethod
    def load(cls, folder: Path) -> LinearTfidfModel:
        spec = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        with np.load(Path(folder) / "model.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(spec, arrays)

    def features(self, texts: list[str], pairs: list[list[str]] | None = None) -> Any:
        return tfidf_features(self.vectorizers, [v.get("column", 0) for v in self.spec["vectorizers"]], texts, pairs,
                              int(self.spec.get("pair_features") or 0), bool(self.spec.get("tfidf_blocks", True)))

    def predict_proba(self, texts: list[str], pairs: list[list[str]] | None = None) -> np.ndarray:
        X, a, kind = self.features(texts, pairs), self.arrays, self.spec["kind"]
        n_classes = len(self.spec["classes"])
        if kind == "lr":
            return linear_proba(X, a["coef"], a["intercept"], self.multilabel)
        if kind == "nbsvm":
            scores = np.column_stack([_sigmoid(np.asarray(X.multiply(a["ratios"][c]).tocsr() @ a["coef"][c])
                                               + a["intercept"][c]) for c in range(n_classes)])
            if self.multilabel:  # one NB-scaled regression per label, a probability each
                return scores
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


def encode_texts(tokenizer: Any, texts: list[str], max_len: int, pairs: list[list[str]] | None = None,
                 truncation: str = "head", head_tokens: int | None = None, chunks: bool = False, stride: int = 32,
                 max_chunks: int | None = None) -> tuple[list[list[int]], list[list[int]] | None, np.ndarray | None]:
    """Token ids per model input, the inputs' token type ids (a pair, where the model has them),
    and, with ``chunks``, the row each window belongs to (None without).

    One text is cut to ``max_len`` tokens at its head, its tail, or head + tail (the first
    ``head_tokens`` and the rest of the room from the end; unset, a quarter of the room: Sun et
    al. 2019's best split, 128 + 382 of 512), or read whole in overlapping windows of ``max_len``
    tokens that share ``stride`` (``max_chunks``, where set, keeps the first windows and the
    last; the texts it cuts are logged). A pair is encoded as a pair and keeps both sides: each
    text gets its share of the room, the longer cut first (``longest_first``), each side cut by
    the same rule (head, tail, head + tail in proportion) or, with ``chunks``, windowed at its
    share, the k-th window of the pair reading the two sides at the same relative position. With
    three or more text columns the others are joined into the pair's second text with the
    separator token. Shared by training and the bundle: one tokenisation."""
    second = None
    if pairs:
        sep = f" {tokenizer.sep_token} " if getattr(tokenizer, "sep_token", None) else " | "
        second = pairs[0] if len(pairs) == 1 else [sep.join(parts) for parts in zip(*pairs)]
        if truncation == "head" and not chunks:  # the tokenizer's own cut (what every pair run before these options did)
            enc = tokenizer(list(texts), list(second), truncation="longest_first", max_length=max_len, padding=False)
            return enc["input_ids"], enc.get("token_type_ids"), None
        return _encode_pairs(tokenizer, texts, second, max_len, truncation, head_tokens, chunks, stride, max_chunks)
    if truncation == "head" and not chunks:  # the tokenizer's own cut (what every run before these options did)
        return tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)["input_ids"], None, None
    prefix, suffix = _specials(tokenizer)
    room = max(1, max_len - len(prefix) - len(suffix))
    bodies = untruncated(tokenizer, texts, add_special_tokens=False)
    ids, owner, cut = [], [], 0
    for row, body in enumerate(bodies):
        if chunks:
            pieces = _windows(body, room, stride, None)
            if max_chunks and len(pieces) > max_chunks:
                pieces, cut = pieces[:max_chunks - 1] + pieces[-1:], cut + 1
        else:
            pieces = [_cut(body, room, truncation, head_tokens)]
        ids += [prefix + p + suffix for p in pieces]
        owner += [row] * len(pieces)
    _log_cut(cut, len(bodies), max_chunks)
    return ids, None, (np.array(owner, dtype=np.int64) if chunks else None)


def head_share(room: int, head_tokens: int | None) -> int:
    """Tokens head + tail keeps from the start of a text cut to ``room`` tokens: ``head_tokens``
    (at most the room), unset a quarter of the room (128 of BERT's 510: Sun et al. 2019)."""
    return min(room, head_tokens) if head_tokens is not None else int(room / 4 + 0.5)


def _cut(body: list[int], room: int, truncation: str, head_tokens: int | None) -> list[int]:
    """One text's tokens cut to ``room``: its head, its tail, or head + tail."""
    if len(body) <= room:
        return body
    if truncation == "tail":
        return body[len(body) - room:]
    if truncation == "head_tail":
        head = head_share(room, head_tokens)
        return body[:head] + body[len(body) - (room - head):] if head < room else body[:room]
    return body[:room]


def pair_shares(a: int, b: int, room: int) -> tuple[int, int]:
    """Tokens each text of a pair keeps of ``room``, as ``longest_first`` cuts them: the longer
    loses tokens first, until both fit or both are at half the room."""
    if a + b <= room:
        return a, b
    short = min(a, b, room // 2)
    long_ = room - short
    return (long_, short) if a >= b else (short, long_)


def _encode_pairs(tokenizer: Any, texts: list[str], second: list[str], max_len: int, truncation: str,
                  head_tokens: int | None, chunks: bool, stride: int,
                  max_chunks: int | None) -> tuple[list[list[int]], list[list[int]] | None, np.ndarray | None]:
    """Pairs cut by tail or head + tail, or read in windows: both sides kept (encode_texts)."""
    prefix, middle, suffix, types = _pair_specials(tokenizer)
    room = max_len - len(prefix) - len(middle) - len(suffix)
    if room < 2:
        raise ValueError(f"train.max_len={max_len} leaves no room for the two texts of a pair; raise it")
    firsts = untruncated(tokenizer, texts, add_special_tokens=False)
    seconds = untruncated(tokenizer, second, add_special_tokens=False)
    ids, type_ids, owner, cut = [], [], [], 0
    for row, (a, b) in enumerate(zip(firsts, seconds)):
        sa, sb = pair_shares(len(a), len(b), room)
        if chunks:
            wa = _windows(a, sa, _side_stride(stride, sa, max_len), None) if sa else [[]]
            wb = _windows(b, sb, _side_stride(stride, sb, max_len), None) if sb else [[]]
            n = max(len(wa), len(wb))
            picks = list(range(n))
            if max_chunks and n > max_chunks:
                picks, cut = picks[:max_chunks - 1] + picks[-1:], cut + 1
            pieces = [(wa[_aligned(k, n, len(wa))], wb[_aligned(k, n, len(wb))]) for k in picks]
        else:
            def side(body: list[int], share: int) -> list[int]:
                head = None if head_tokens is None else int(head_tokens * share / room + 0.5)
                return _cut(body, share, truncation, head)

            pieces = [(side(a, sa), side(b, sb))]
        for pa, pb in pieces:
            ids.append(prefix + pa + middle + pb + suffix)
            if types is not None:
                tp, ta, tm, tb, ts = types
                type_ids.append(tp + [ta] * len(pa) + tm + [tb] * len(pb) + ts)
        owner += [row] * len(pieces)
    _log_cut(cut, len(firsts), max_chunks)
    return ids, (type_ids if types is not None else None), (np.array(owner, dtype=np.int64) if chunks else None)


def _side_stride(stride: int, share: int, max_len: int) -> int:
    """The tokens two windows of one side of a pair share: ``stride`` in proportion to the side's
    share of the input (less than half of it, so windows move on)."""
    return min(int(stride * share / max_len + 0.5), max(0, (share - 1) // 2))


def _aligned(k: int, n: int, m: int) -> int:
    """The window of a side with ``m`` windows that the k-th of ``n`` pair windows reads: the
    same relative position (the first with the first, the last with the last)."""
    return 0 if n <= 1 or m <= 1 else int(k * (m - 1) / (n - 1) + 0.5)


def _log_cut(cut: int, n: int, max_chunks: int | None) -> None:
    if cut:
        import logging

        logging.getLogger("textcomp.runtime").warning(
            "train.max_chunks=%d: %d of %d texts need more windows; their middle windows are not read (unset "
            "train.max_chunks to read every text whole)", max_chunks, cut, n)


def untruncated(tokenizer: Any, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of whole texts, without transformers' warning that some are longer than the
    model takes (they are cut or windowed after)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return tokenizer(list(texts), add_special_tokens=add_special_tokens, truncation=False,
                         padding=False)["input_ids"]
    finally:
        hf_logging.set_verbosity(verbosity)


def _specials(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts around one text ([CLS] ... [SEP], <s> ... </s>),
    read off its own output: the same for every text."""
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(body) + 1):
        if full[i:i + len(body)] == body:
            return full[:i], full[i + len(body):]
    return [], []


def _pair_specials(tokenizer: Any) -> tuple[list[int], list[int], list[int], tuple | None]:
    """The special tokens around and between a pair's texts ([CLS] a [SEP] b [SEP], <s> a </s></s>
    b </s>) and the token types of each part (None where the tokenizer gives none), read off
    its own output for a one-token pair."""
    enc = tokenizer("a", "b", add_special_tokens=True)
    full, types = enc["input_ids"], enc.get("token_type_ids")
    a = tokenizer("a", add_special_tokens=False)["input_ids"]
    b = tokenizer("b", add_special_tokens=False)["input_ids"]
    for i in range(len(full) - len(a) + 1):
        if full[i:i + len(a)] != a:
            continue
        for j in range(i + len(a), len(full) - len(b) + 1):
            if full[j:j + len(b)] == b:
                parts = full[:i], full[i + len(a):j], full[j + len(b):]
                if types is None:
                    return *parts, None
                return *parts, (types[:i], types[i], types[i + len(a):j], types[j], types[j + len(b):])
    raise ValueError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')}: cannot tell where a pair's two texts "
                     "sit in its encoding; set train.truncation=head and train.chunks=false")


def _windows(body: list[int], room: int, stride: int, max_chunks: int | None = None) -> list[list[int]]:
    """Windows of ``room`` tokens sharing ``stride`` that cover ``body``, its end always read
    (``max_chunks``: the first ones and the last)."""
    if len(body) <= room:
        return [body]
    step = max(1, room - stride)
    starts = list(range(0, len(body) - room + 1, step))
    if starts[-1] + room < len(body):
        starts.append(len(body) - room)  # the end is always read
    if max_chunks and len(starts) > max_chunks:
        starts = starts[:max_chunks - 1] + starts[-1:]
    return [body[s:s + room] for s in starts]


def _batches(ids: list[list[int]], types: list[list[int]] | None, pad: int, batch_size: int,
             pad_to_multiple_of: int | None) -> Any:
    """(indices, input_ids, attention_mask, token_type_ids or None) per batch: inputs of similar
    length together (longest first), each batch padded to its own longest, as the pipeline predicts."""
    import math

    order = np.argsort(-np.array([len(x) for x in ids]), kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(ids[i]) for i in idx)
        if pad_to_multiple_of:
            width = int(math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of)
        input_ids = np.full((len(idx), width), pad, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        type_ids = np.zeros((len(idx), width), dtype=np.int64) if types is not None else None
        for r, i in enumerate(idx):
            input_ids[r, :len(ids[i])] = ids[i]
            mask[r, :len(ids[i])] = 1
            if type_ids is not None:
                type_ids[r, :len(types[i])] = types[i]
        yield idx, input_ids, mask, type_ids


# How a long text's windows make its own output (train.chunk_pool). A mean weighted by each
# window's tokens was measured too and dropped: every window of a long text is full (the last one
# ends at the text's end), so it is the mean (benchmarks/long_reading.py: the same scores).
CHUNK_POOLS = ("mean", "max")


def per_row(values: np.ndarray, owner: np.ndarray | None, n_rows: int, pool: str = "mean") -> np.ndarray:
    """Windows' outputs (logits, or a frozen encoder's vectors) pooled per row for chunked long
    texts: their mean, or each column's maximum (``pool``); the values themselves without windows."""
    if owner is None:
        return values
    if pool not in CHUNK_POOLS:
        raise ValueError(f"train.chunk_pool must be one of {', '.join(CHUNK_POOLS)}; got {pool!r}")
    if pool == "max":
        out = np.full((n_rows, values.shape[1]), -np.inf, dtype=np.float64)
        np.maximum.at(out, owner, values)
        return out.astype(np.float32)
    out = np.zeros((n_rows, values.shape[1]), dtype=np.float64)
    np.add.at(out, owner, values)
    return (out / np.bincount(owner, minlength=n_rows)[:, None]).astype(np.float32)


def split_encoding(encoding: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """A member's ``encoding`` (train.truncation / head_tokens / chunks / stride / max_chunks /
    chunk_pool as trained) as ``encode_texts``' arguments and the windows' pooling."""
    enc = dict(encoding or {})
    return enc, enc.pop("pool", "mean")


def activate(logits: Any, multilabel: bool) -> Any:
    """Probabilities from logits (torch): a softmax over classes, or a sigmoid per label."""
    import torch

    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, -1)


def predict_transformer(model: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 128,
                        device: str = "cpu", pad_to_multiple_of: int | None = None,
                        pairs: list[list[str]] | None = None, multilabel: bool = False,
                        encoding: dict[str, Any] | None = None) -> np.ndarray:
    """Probabilities in the texts' order (float32 logits; softmax, or sigmoid per label);
    ``encoding``: train.truncation / head_tokens / chunks / stride / max_chunks as trained."""
    import torch

    enc, pool = split_encoding(encoding)
    ids, types, owner = encode_texts(tokenizer, texts, max_len, pairs, **enc)
    logits = torch.empty((len(ids), model.config.num_labels), dtype=torch.float32)
    with torch.inference_mode():
        for idx, input_ids, mask, type_ids in _batches(ids, types, tokenizer.pad_token_id or 0, batch_size,
                                                        pad_to_multiple_of):
            extra = {"token_type_ids": torch.from_numpy(type_ids).to(device)} if type_ids is not None else {}
            out = model(input_ids=torch.from_numpy(input_ids).to(device),
                        attention_mask=torch.from_numpy(mask).to(device), **extra).logits
            logits[torch.from_numpy(idx)] = out.float().cpu()
    return activate(torch.from_numpy(per_row(logits.numpy(), owner, len(texts), pool)), multilabel).numpy()


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
          device: str = "cpu", encoding: dict[str, Any] | None = None) -> np.ndarray:
    """Sentence embeddings as sentence-transformers makes them for the all-* models: the mean
    of the last hidden states over real tokens, L2-normalised. (n, hidden) float32. With
    ``encoding``'s chunks a long text is read whole: every window embedded, the windows pooled
    (``pool``, train.chunk_pool: their mean, or each dimension's maximum) and normalised again."""
    import torch

    enc, pool = split_encoding(encoding)
    ids, _, owner = encode_texts(tokenizer, texts, max_len, None, **enc)
    out = None
    with torch.inference_mode():
        for idx, input_ids, mask, _ in _batches(ids, None, tokenizer.pad_token_id or 0, batch_size, None):
            m = torch.from_numpy(mask).to(device)
            hidden = model(input_ids=torch.from_numpy(input_ids).to(device), attention_mask=m).last_hidden_state
            pooled = mean_pool(hidden, m)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            if out is None:
                out = np.empty((len(ids), pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
    if out is None:
        return np.empty((0, 0), dtype=np.float32)
    if owner is None:
        return out
    rows = per_row(out, owner, len(texts), pool)
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# A pair's features are weighted by this before the logistic regression: it is then fitted at
# train.C = 4 as the raw features at C = 0.5 (the same solution, the intercept unpenalised),
# which measured best (benchmarks/relation_members.py, frozen MiniLM, 3,000 pairs, 5 folds: log
# loss at C 0.5 / 4 on the relation shape 0.6384 / 0.6429, on the pair shape 0.6306 / 0.6603).
PAIR_WEIGHT = 8 ** -0.5


def fit_pair_relation(u: np.ndarray, v: np.ndarray, rank: int, sides: bool = False,
                      weight: float = PAIR_WEIGHT) -> dict[str, Any]:
    """What ``embedding_features`` needs to read a pair's relation, fitted on training pairs'
    vectors: the first ``rank`` principal components of both texts' vectors (with their
    centre); ``sides``: whether each text's own vector is a feature too; ``weight``: the
    features' scale (``PAIR_WEIGHT``)."""
    both = np.vstack([u, v]).astype(np.float64)
    center = both.mean(0)
    components = np.linalg.svd(both - center, full_matrices=False)[2][:rank]
    return {"components": components, "center": center, "weight": np.array(weight), "sides": sides}


def _products(u: np.ndarray, v: np.ndarray, relation: dict[str, Any]) -> np.ndarray:
    """The symmetric products a_i b_j + a_j b_i (i <= j) of the two texts' principal components:
    a bilinear similarity u' W v that a linear model learns (whether both texts sit on the same
    side of a direction, which |u - v| and u * v, one dimension at a time, cannot tell)."""
    a = (u - relation["center"]) @ relation["components"].T
    b = (v - relation["center"]) @ relation["components"].T
    i, j = np.triu_indices(a.shape[1])
    return a[:, i] * b[:, j] + a[:, j] * b[:, i]


def embedding_features(vectors: list[np.ndarray], relation: dict[str, Any] | None = None) -> np.ndarray:
    """The embedding family's features from each text column's vectors: one column as it is; a
    pair (u, v) as SBERT's classifier sees it, [u, v, |u - v|, u * v], and their cosine, then,
    with a ``relation`` (``fit_pair_relation``), the products of their principal components
    (without u and v where it says so), all weighted by its weight; more columns side by side."""
    if len(vectors) == 1:
        return vectors[0]
    if len(vectors) == 2:
        u, v = vectors
        sides = [u, v] if relation is None or relation["sides"] else []
        parts = [*sides, np.abs(u - v), u * v, (u * v).sum(1, keepdims=True)]
        if relation is None:
            return np.hstack(parts)
        return np.hstack([*parts, _products(u, v, relation)]) * float(relation["weight"])
    return np.hstack(vectors)


RELATION_ARRAYS = ("components", "center", "weight")


class EmbeddingHead:
    """The embedding family's fold model: a logistic regression over the frozen encoder's
    embeddings (``embedding_features``, a pair's fitted ``relation`` with it), in ``model.json``
    + ``model.npz`` (coef, intercept, the relation's arrays); multi-label: one binary
    regression per label."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, multilabel: bool = False,
                 relation: dict[str, Any] | None = None) -> None:
        self.coef, self.intercept, self.multilabel, self.relation = coef, intercept, multilabel, relation

    @classmethod
    def load(cls, folder: Path) -> EmbeddingHead:
        spec = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
        with np.load(Path(folder) / "model.npz", allow_pickle=False) as z:
            relation = None
            if spec.get("relation"):
                relation = {k: z[f"relation_{k}"] for k in RELATION_ARRAYS}
                relation["sides"] = bool(spec["relation"]["sides"])
            return cls(z["coef"], z["intercept"], bool(spec.get("multilabel", False)), relation)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``model.json``'s fields and ``model.npz``'s arrays (no pickle)."""
        arrays = {"coef": self.coef, "intercept": self.intercept}
        spec: dict[str, Any] = {"multilabel": self.multilabel, "relation": None}
        if self.relation is not None:
            arrays.update({f"relation_{k}": np.asarray(self.relation[k]) for k in RELATION_ARRAYS})
            spec["relation"] = {"rank": int(len(self.relation["components"])), "sides": bool(self.relation["sides"])}
        return spec, arrays

    def features(self, vectors: list[np.ndarray]) -> np.ndarray:
        return embedding_features(vectors, self.relation)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return linear_proba(np.asarray(X, dtype=np.float64), self.coef, self.intercept, self.multilabel)


ONNX_FILE = "model.int8.onnx"


def load_onnx(folder: Path) -> tuple[Any, Any]:
    """An int8 ONNX export of a fold model (package.onnx=true) on onnxruntime's CPU provider."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(Path(folder) / ONNX_FILE), providers=["CPUExecutionProvider"])
    return session, AutoTokenizer.from_pretrained(str(folder))


def predict_onnx(session: Any, tokenizer: Any, texts: list[str], max_len: int, batch_size: int = 128,
                 pad_to_multiple_of: int | None = None, multilabel: bool = False,
                 encoding: dict[str, Any] | None = None) -> np.ndarray:
    """As ``predict_transformer``, on the int8 export (one text column: the export takes no
    token type ids)."""
    enc, pool = split_encoding(encoding)
    ids, _, owner = encode_texts(tokenizer, texts, max_len, None, **enc)
    logits = None
    for idx, input_ids, mask, _ in _batches(ids, None, tokenizer.pad_token_id or 0, batch_size, pad_to_multiple_of):
        out = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
        if logits is None:
            logits = np.empty((len(ids), out.shape[1]), dtype=np.float32)
        logits[idx] = out
    z = per_row(logits, owner, len(texts), pool).astype(np.float64)
    return _sigmoid(z) if multilabel else _softmax_rows(z)


def _embedding_member(bundle: Path, member: dict[str, Any], texts: list[str], pairs: list[list[str]] | None,
                      device: str, batch: int, onnx: bool) -> list[np.ndarray]:
    encoder = load_encoder(bundle / member["encoder"], device)
    vectors = [embed(*encoder, col, member["max_len"], batch, device, member.get("encoding"))
               for col in [texts, *(pairs or [])]]
    heads = [EmbeddingHead.load(bundle / rel) for rel in member["folds"]]
    return [head.predict_proba(head.features(vectors)) for head in heads]  # one encoder pass, every head


def _classical_member(bundle: Path, member: dict[str, Any], texts: list[str], pairs: list[list[str]] | None,
                      device: str, batch: int, onnx: bool) -> list[np.ndarray]:
    return [LinearTfidfModel.load(bundle / rel).predict_proba(texts, pairs) for rel in member["folds"]]


def _transformer_member(bundle: Path, member: dict[str, Any], texts: list[str], pairs: list[list[str]] | None,
                        device: str, batch: int, onnx: bool) -> list[np.ndarray]:
    folds, multilabel, encoding = [], bool(member.get("multilabel")), member.get("encoding")
    for rel in member["folds"]:
        folder = bundle / rel
        if onnx:
            if not (folder / ONNX_FILE).is_file():
                raise FileNotFoundError(f"{folder / ONNX_FILE}: missing; the bundle was made without package.onnx=true")
            folds.append(predict_onnx(*load_onnx(folder), texts, member["max_len"], batch,
                                      member.get("pad_to_multiple_of"), multilabel, encoding))
        else:
            model, tokenizer = load_transformer(folder, device)
            folds.append(predict_transformer(model, tokenizer, texts, member["max_len"], batch, device,
                                             member.get("pad_to_multiple_of"), pairs, multilabel, encoding))
            del model
    return folds


# The bundle's registry of families (this file imports nothing from the pipeline, so it keeps
# its own): each predicts every fold model of a member.
MEMBER_PREDICTORS = {"embedding": _embedding_member, "classical": _classical_member,
                     "transformer": _transformer_member}


def member_proba(bundle: Path, member: dict[str, Any], texts: list[str], device: str = "cpu",
                 batch_size: int | None = None, onnx: bool = False,
                 pairs: list[list[str]] | None = None) -> np.ndarray:
    """One ensemble member's test probabilities from a bundle: the mean over its fold models,
    as the pipeline averages them (``member``: its entry in manifest.json)."""
    predict = MEMBER_PREDICTORS[member["family"]]
    return np.mean(predict(Path(bundle), member, texts, pairs, device, batch_size or member["batch_size"], onnx),
                   axis=0)


# -- blending -------------------------------------------------------------------------------
def mix(probas: np.ndarray, w: np.ndarray) -> np.ndarray:
    """probas: (models, n, k); w: (models,) -> (n, k); or w: (k, models), a weight set per
    output column (multi-label: per label)."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        return np.einsum("km,mnk->nk", w, probas)
    return np.tensordot(w, probas, axes=1)


def rank_mean(probas: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Average of per-model ranks (scaled to [0, 1]) per class, rows renormalised (multi-label:
    per label, as they are)."""
    from scipy.stats import rankdata

    ranks = np.stack([np.column_stack([rankdata(p[:, c]) / len(p) for c in range(p.shape[1])]) for p in probas])
    out = ranks.mean(0)
    if multilabel:
        return out
    if out.shape[1] == 2:
        return np.column_stack([1 - out[:, 1], out[:, 1]])
    return out / out.sum(1, keepdims=True)


def vote(probas: np.ndarray) -> np.ndarray:
    """Share of models voting for each class (argmax per model)."""
    k = probas.shape[2]
    votes = np.stack([np.eye(k)[p.argmax(1)] for p in probas])
    return votes.mean(0)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def stack_features(probas: np.ndarray) -> np.ndarray:
    """(models, n, k) -> (n, features): each member's log-probabilities (binary: its logit)."""
    p = np.clip(np.asarray(probas, dtype=np.float64), 1e-6, 1 - 1e-6)
    if p.shape[2] == 2:
        return np.column_stack([np.log(q[:, 1] / q[:, 0]) for q in p])
    return np.column_stack([np.log(q) for q in p])


def stack_proba(stacker: dict[str, Any], probas: np.ndarray) -> np.ndarray:
    """The stacking model's probabilities: a logistic regression over ``stack_features``; for a
    multi-label competition one per label, over the members' logits of that label."""
    if "per_label" in stacker:
        cols = []
        for j, s in enumerate(stacker["per_label"]):
            z = _logit(probas[:, :, j]).T @ np.asarray(s["coef"]).ravel() + float(np.asarray(s["intercept"]).ravel()[0])
            cols.append(_sigmoid(z))
        return np.column_stack(cols)
    z = stack_features(probas) @ np.asarray(stacker["coef"]).T + np.asarray(stacker["intercept"])
    if z.shape[1] == 1:
        p = _sigmoid(z[:, 0])
        return np.column_stack([1 - p, p])
    return _softmax_rows(z)


def blend(method: str, weights: np.ndarray, probas: np.ndarray, stacker: dict[str, Any] | None = None,
          multilabel: bool = False) -> np.ndarray:
    if method == "rank":
        return rank_mean(probas, multilabel)
    if method == "vote":
        return vote(probas)
    if method == "stack":
        return stack_proba(stacker, probas)
    return mix(probas, weights)


# -- the submission -------------------------------------------------------------------------
SUBMISSION_KINDS = ("label", "proba", "ranked")  # a label per row, probabilities, the top-k labels space-separated


def expected_class(proba: np.ndarray) -> np.ndarray:
    """Per row, the expected class index sum_i i * p_i: the score ordinal labels are cut on."""
    proba = np.asarray(proba, dtype=np.float64)
    return proba @ np.arange(proba.shape[1])


def decisions(proba: np.ndarray, threshold: float | list[float] | None = None, multilabel: bool = False) -> np.ndarray:
    """What a label submission says, from probabilities and the threshold tuned on the OOF.

    Multi-label: 0/1 per label, p >= the label's threshold (0.5 without one). One label: the
    argmax without a threshold; with a number, binary ``p(second class) >= threshold``; with a
    list, the k - 1 cut points on the expected class index (ordinal labels, cut as essay-scoring
    competitions cut a regression): class i where cut[i-1] <= expected < cut[i]."""
    proba = np.asarray(proba, dtype=np.float64)
    if multilabel:
        t = 0.5 if threshold is None else np.asarray(threshold, dtype=np.float64)
        return (proba >= t).astype(np.int64)
    if threshold is None:
        return proba.argmax(1)
    if np.ndim(threshold) == 0:
        return (proba[:, 1] >= float(threshold)).astype(np.int64)
    return np.searchsorted(np.asarray(threshold, dtype=np.float64), expected_class(proba), side="right")


def top_classes(proba: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the k most probable classes, most probable first (ties: the
    lower index first)."""
    proba = np.asarray(proba, dtype=np.float64)
    return np.argsort(-proba, axis=1, kind="stable")[:, :k]


def build_submission(ids: pd.Series, proba: np.ndarray, *, id_col: str, pred_cols: list[str], classes: list[str],
                     kind: str, threshold: float | list[float] | None, clip: float, multilabel: bool = False,
                     label_values: list[list[str]] | None = None, top_k: int | None = None) -> pd.DataFrame:
    """The submission frame for ``ids`` (in their order) from class probabilities (n, k); for a
    multi-label competition from per-label probabilities (n, L): one column per label, a
    probability or the label's spelling of 0/1 at its threshold. ``kind`` ranked: the ``top_k``
    most probable labels of each row, space-separated (a MAP@k competition)."""
    sub = pd.DataFrame({id_col: ids.to_numpy()})
    if multilabel:
        decided = decisions(proba, threshold, multilabel=True)
        index = {str(c): j for j, c in enumerate(classes)}
        for col in pred_cols:
            j = index[str(col)]
            if kind == "label":
                sub[col] = np.where(decided[:, j] == 1, label_values[j][1], label_values[j][0])
            else:
                sub[col] = np.clip(proba[:, j], clip, 1 - clip)
        return sub
    if kind == "ranked":
        sub[pred_cols[0]] = [" ".join(classes[i] for i in row) for row in top_classes(proba, top_k or 1)]
        return sub
    if kind == "label":
        sub[pred_cols[0]] = [classes[i] for i in decisions(proba, threshold)]
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
