"""inspect: what a competitor would otherwise work out by hand in a notebook.

Usage: python -m pipeline inspect [--data DIR] [--config YAML] [--set KEY=VALUE ...]
Reads:  the competition folder (train.csv, test.csv, sample_submission.csv)
Writes: reports/inspect.md, reports/inspect.json, reports/figures/inspect_*.png
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import Config
from pipeline.core.contract import Competition, Schema, load_competition
from pipeline.core.files import save_figure, write_json, write_text
from pipeline.core.paths import Paths
from pipeline.core.sources import competition_files, resolve_raw
from pipeline.core.textstats import URL, WORD, near_key, norm_key, pattern_counts
from pipeline.core.transaction import inputs_of, publish
from pipeline.modeling.families import family
from pipeline.reporting.markdown import md_escape, md_table
from pipeline.runtime import untruncated

log = logging.getLogger(__name__)
STOP = set("the a an and or to of in on for is are was were be been it this that i you he she we they my "
           "me at with as by from so but not no just have has had do did will would can could your our "
           "their its im it's i'm rt amp".split())


@dataclass
class InspectResult:
    report: dict[str, Any]
    markdown: Path
    json: Path


def load_tokenizer(name: str | None) -> Any | None:
    """The configured tokenizer, or None (token lengths then fall back to words) if it cannot load."""
    if not name:
        return None
    from pipeline.modeling.backbones import resolve_backbone

    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_backbone(name))
    except Exception as e:  # noqa: BLE001 - any load failure means "report without token counts"
        log.warning("tokenizer %r did not load (%s): token lengths fall back to word counts", name,
                    str(e).splitlines()[0][:200])
        return None


def duplicate_stats(train: pd.DataFrame, text: str, label: str) -> dict[str, Any]:
    keys = train[text].fillna("").map(norm_key)
    exact = keys.duplicated(keep=False)
    near = train[text].fillna("").map(near_key)
    groups = train.assign(_k=keys).groupby("_k")[label].agg(["nunique", "size"])
    conflicts = groups[groups["nunique"] > 1]
    examples = []
    for key in conflicts.sort_values("size", ascending=False).index[:5]:
        rows = train[keys == key]
        examples.append({"text": str(rows[text].iloc[0])[:160],
                         "labels": {str(k): int(v) for k, v in rows[label].value_counts().items()}})
    return {
        "exact_duplicate_rows": int(exact.sum()),
        "exact_duplicate_groups": int((groups["size"] > 1).sum()),
        "extra_copies": int(keys.duplicated().sum()),
        "near_duplicate_rows": int(near.duplicated(keep=False).sum()),
        "conflicting_groups": int(len(conflicts)),
        "conflicting_rows": int(conflicts["size"].sum()),
        "conflict_examples": examples,
    }


def length_stats(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [50, 90, 95, 99])
    return {"mean": round(float(values.mean()), 1), "p50": float(q[0]), "p90": float(q[1]),
            "p95": float(q[2]), "p99": float(q[3]), "max": float(values.max())}


def token_lengths(texts: list[str], tokenizer: Any | None) -> np.ndarray:
    if tokenizer is None:
        return np.array([len(t.split()) for t in texts])
    enc = untruncated(tokenizer, texts)
    return np.array([len(x) for x in enc])


def suggest_max_len(tok_lens: np.ndarray, coverage: float) -> int:
    """Smallest multiple of 8 covering ``coverage`` of the texts (tensor cores like multiples of 8)."""
    need = float(np.quantile(tok_lens, coverage))
    return int(max(8, math.ceil(need / 8) * 8))


def top_tokens(texts: pd.Series, k: int) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for t in texts.fillna("").astype(str):
        t = URL.sub(" ", t)
        counts.update(w for w in (m.lower() for m in WORD.findall(t)) if w not in STOP)
    return counts.most_common(k)


def adversarial_auc(train_texts: pd.Series, test_texts: pd.Series, seed: int = 0) -> float:
    """AUC of a classifier telling train from test: ~0.5 means no shift."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    texts = pd.concat([train_texts, test_texts]).fillna("").astype(str).tolist()
    y = np.r_[np.zeros(len(train_texts)), np.ones(len(test_texts))]
    X = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50000, sublinear_tf=True).fit_transform(texts)
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    p = cross_val_predict(LogisticRegression(C=1.0, max_iter=1000), X, y, cv=cv, method="predict_proba")[:, 1]
    return round(float(roc_auc_score(y, p)), 4)


def label_keys(train: pd.DataFrame, s: Schema) -> pd.Series:
    """One label per row as text: the class, or a multi-label row's positive labels joined by +."""
    if not s.multilabel:
        return train[s.label_col].astype(str)
    pos = np.column_stack([(train[c].astype(str) == v[1]).to_numpy() for c, v in zip(s.label_cols, s.label_values)])
    names = np.array(s.label_cols, dtype=object)
    return pd.Series(["+".join(names[r]) or "(none)" for r in pos], index=train.index)


def class_masks(train: pd.DataFrame, s: Schema) -> dict[str, np.ndarray]:
    """Rows of each class (single label) or with each label positive (multi-label)."""
    if s.multilabel:
        return {c: (train[c].astype(str) == v[1]).to_numpy() for c, v in zip(s.label_cols, s.label_values)}
    return {str(c): (train[s.label_col].astype(str) == str(c)).to_numpy() for c in s.classes}


CANDIDATE_MAX_LENS = (64, 128, 256, 512)


def long_text_shares(tokens: np.ndarray) -> dict[str, float]:
    """The share of train texts longer than each candidate max_len (tokens, specials included)."""
    return {str(m): round(float((tokens > m).mean()), 4) for m in CANDIDATE_MAX_LENS}


# The share of texts over max_len from which reading only their head costs score more than the
# fold noise. Measured on the long-document shape mixed with short texts (benchmarks/long_reading.py
# --family share: word TF-IDF + LR on each text's first 64 tokens against the whole text, 2,000
# rows, 5 folds; the gain of reading whole, its SE): a share of 2% -0.009 (0.006), 5% +0.002
# (0.008), 10% -0.002 (0.007) and +0.023 (0.011) in a second draw, 15% +0.019 (0.008), 20% +0.021
# (0.009) and +0.027 (0.013), 30% +0.041 (0.009), 50% +0.080 (0.008). From 10% the gain can
# exceed twice its noise; below, it is noise. A label that lives at a text's end makes a smaller
# share matter: the planner weighs the share against what reading whole costs.
LONG_SHARE = 0.10
READING_STRIDE = 32  # train.stride's default: the windows counted below


def suggest_truncation(tokens: np.ndarray, max_len: int) -> str:
    """What to do with texts longer than train.max_len, from their share."""
    share = float((tokens > max_len).mean())
    if share < LONG_SHARE:
        return f"head: {share:.0%} of the texts are longer than train.max_len={max_len}"
    return (f"{share:.0%} of the texts are longer than train.max_len={max_len}: train.chunks=true reads them whole "
            "(every window, pooled per text); train.truncation=head_tail keeps their start and end at the cost of "
            "one input (or raise train.max_len)")


def reading(tokens: np.ndarray, max_len: int, suggested: int) -> dict[str, Any]:
    """How long texts should be read, for the planner: the share of texts longer than
    ``max_len`` (model inputs, specials included; a pair's texts together), whether that share
    is a real one (``LONG_SHARE``), the mean windows a text takes under train.chunks at each
    candidate max_len (what chunks multiply a pass by), and the readings in order of
    preference: chunks (the whole text), head_tail (its start and end, one input), head."""
    from pipeline.modeling.probe import n_windows

    share = float((tokens > max_len).mean()) if len(tokens) else 0.0
    long = share >= LONG_SHARE
    windows = {str(m): round(float(np.mean([n_windows(int(t), m, READING_STRIDE) for t in tokens])), 3)
               if len(tokens) else 1.0 for m in sorted({*CANDIDATE_MAX_LENS, max_len})}
    return {"max_len": max_len, "share_over": round(share, 4), "threshold": LONG_SHARE, "long": long,
            "windows": windows, "stride": READING_STRIDE,
            "readings": ["chunks", "head_tail", "head"] if long else ["head"],
            # a GPU reads long texts at the backbone's limit first (512 for BERT-sized encoders)
            "gpu_max_len": min(512, max(max_len, suggested)) if long else max_len}


def analyse(comp: Competition, cfg: Config) -> dict[str, Any]:
    s = comp.schema
    train, test = comp.train, comp.test
    # token lengths in the tokenizer of the configured model, where it has one
    tokenizer = load_tokenizer(cfg.inspect.tokenizer or (cfg.train.backbone if family(cfg.train.family).uses_backbone
                                                         else None))
    tr_text = train[s.text_col].fillna("").astype(str)
    te_text = test[s.text_col].fillna("").astype(str)
    tr_tok, te_tok = token_lengths(tr_text.tolist(), tokenizer), token_lengths(te_text.tolist(), tokenizer)
    # what a model is fed: a pair's texts together (each other text's tokens, its own specials left out)
    inputs_tok = tr_tok.copy()
    for col in s.texts[1:]:
        inputs_tok += np.maximum(0, token_lengths(train[col].fillna("").astype(str).tolist(), tokenizer) - 1)
    lengths: dict[str, Any] = {}
    for split, texts, tok in (("train", tr_text, tr_tok), ("test", te_text, te_tok)):
        lengths[split] = {"chars": length_stats(texts.str.len().to_numpy()),
                          "words": length_stats(texts.str.split().str.len().to_numpy()),
                          "tokens": length_stats(tok)}
    labels = label_keys(train, s)
    masks = class_masks(train, s)
    lengths["tokens_by_class"] = {c: length_stats(tr_tok[m]) for c, m in masks.items()}
    # single label: rows per class; multi-label: positive rows per label
    balance = {c: {"count": int(m.sum()), "share": round(float(m.sum()) / len(train), 4)} for c, m in masks.items()}
    from scipy.stats import ks_2samp

    shift: dict[str, Any] = {"ks_token_length": round(float(ks_2samp(tr_tok, te_tok).statistic), 4),
                             "mean_chars_train": round(float(tr_text.str.len().mean()), 1),
                             "mean_chars_test": round(float(te_text.str.len().mean()), 1)}
    if cfg.inspect.adversarial:
        shift["adversarial_auc"] = adversarial_auc(tr_text, te_text, cfg.folds.seed)
    return {
        "files": {k: str(v) for k, v in comp.files.items()},
        "schema": s.to_dict(),
        "rows": {"train": len(train), "test": len(test), "sample_submission": len(comp.sample)},
        "columns": {"train": list(train.columns), "test": list(test.columns)},
        "nulls": {"train": {c: int(v) for c, v in train.isna().sum().items()},
                  "test": {c: int(v) for c, v in test.isna().sum().items()}},
        "duplicates": duplicate_stats(train.assign(_label=labels), s.text_col, "_label"),
        "test_duplicates_of_train": int(te_text.map(norm_key).isin(set(tr_text.map(norm_key))).sum()),
        "label_balance": balance,
        "lengths": lengths,
        "tokenizer": getattr(tokenizer, "name_or_path", None) and str(cfg.inspect.tokenizer or cfg.train.backbone),
        "suggested_max_len": suggest_max_len(tr_tok, cfg.inspect.coverage),
        "coverage": cfg.inspect.coverage,
        "patterns": {"train": pattern_counts(tr_text), "test": pattern_counts(te_text)},
        "top_tokens": {c: top_tokens(tr_text[m], cfg.inspect.top_tokens) for c, m in masks.items()},
        "long_texts": long_text_shares(inputs_tok),
        "suggested_truncation": suggest_truncation(inputs_tok, cfg.train.max_len),
        "reading": reading(inputs_tok, cfg.train.max_len, suggest_max_len(inputs_tok, cfg.inspect.coverage)),
        "shift": shift,
        "_token_lengths": {"train": tr_tok.tolist(), "test": te_tok.tolist(),
                           "labels": [str(v) for v in labels.tolist()],
                           "by_class": {c: tr_tok[m].tolist() for c, m in masks.items()}},
    }


def plot(report: dict[str, Any], paths: Paths, place: Callable[[Path], Path] = lambda p: p) -> dict[str, Path]:
    """The data report's figures, written where ``place`` says (a transaction's staging), keyed to their final paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(5, 3))
    bal = report["label_balance"]
    ax.bar(list(bal), [v["count"] for v in bal.values()], color="#4c72b0")
    ax.set_title("label balance (train)")
    ax.set_ylabel("rows")
    out["labels"] = paths.figure("inspect_labels")
    save_figure(place(out["labels"]), fig)

    tl = report["_token_lengths"]
    unit = "tokens" if report["tokenizer"] else "words"
    fig, ax = plt.subplots(figsize=(6, 3.2))
    hi = max(max(tl["train"], default=1), max(tl["test"], default=1))
    bins = np.linspace(0, hi + 1, 40)
    ax.hist(tl["train"], bins=bins, alpha=0.6, density=True, label="train")
    ax.hist(tl["test"], bins=bins, alpha=0.6, density=True, label="test")
    ax.axvline(report["suggested_max_len"], color="k", ls="--", label=f"max_len {report['suggested_max_len']}")
    ax.set_xlabel(unit)
    ax.set_title(f"length in {unit}: train vs test")
    ax.legend()
    out["lengths"] = paths.figure("inspect_lengths")
    save_figure(place(out["lengths"]), fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(bal)
    ax.boxplot([tl["by_class"][c] or [0] for c in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel(unit)
    ax.set_title(f"length in {unit} by class (train)")
    out["length_by_class"] = paths.figure("inspect_length_by_class")
    save_figure(place(out["length_by_class"]), fig)
    return out


def _table(rows: list[list[Any]], header: list[str]) -> str:
    return md_table(rows, header)


def render(report: dict[str, Any], figures: dict[str, Path], paths: Paths) -> str:
    s, d, sh = report["schema"], report["duplicates"], report["shift"]
    rel = {k: Path(v).relative_to(paths.reports).as_posix() for k, v in figures.items()}
    unit = "tokens" if report["tokenizer"] else "words (no tokenizer loaded)"
    e = md_escape  # everything below that came from the files (names, classes, texts) goes through it
    md = [f"# Data report\n\nCompetition folder: {e(Path(report['files']['train']).parent)}\n",
          "## Shape\n",
          _table([["train", report["rows"]["train"], len(report["columns"]["train"])],
                  ["test", report["rows"]["test"], len(report["columns"]["test"])],
                  ["sample_submission", report["rows"]["sample_submission"], len(s["pred_cols"]) + 1]],
                 ["file", "rows", "columns"]),
          f"\nid {e(s['id_col'])} · label {e(s['label_col'])} · text {e(s['text_col'])} · "
          f"{len(s['classes'])} classes ({e(', '.join(map(str, s['classes'])))}) · submission: {s['submission']} "
          f"({e(', '.join(s['pred_cols']))}) · metric: **{s['metric']}**\n"]
    md += [f"- {e(n)}\n" for n in s["notes"]]
    nulls = [[c, report["nulls"]["train"].get(c, "-"), report["nulls"]["test"].get(c, "-")]
             for c in report["columns"]["train"]]
    md += ["\n## Nulls per column\n", _table(nulls, ["column", "train", "test"]),
           "\n## Duplicates\n",
           f"- exact duplicate texts (case/space-insensitive): {d['exact_duplicate_rows']} rows in "
           f"{d['exact_duplicate_groups']} groups ({d['extra_copies']} extra copies)\n"
           f"- near-exact duplicates (letters and digits only, URLs removed): {d['near_duplicate_rows']} rows\n"
           f"- duplicates whose labels conflict: **{d['conflicting_groups']} groups, {d['conflicting_rows']} rows**\n"
           f"- test texts that also appear in train: {report['test_duplicates_of_train']}\n"]
    if d["conflict_examples"]:
        md += ["\n", _table([[e["text"], e["labels"]] for e in d["conflict_examples"]], ["text", "labels"]), "\n"]
    bal = report["label_balance"]
    md += ["\n## Label balance\n", _table([[c, v["count"], f"{v['share']:.1%}"] for c, v in bal.items()],
                                         ["class", "rows", "share"]),
           f"\n\n![labels]({rel['labels']})\n",
           "\n## Lengths\n"]
    rows = []
    for split in ("train", "test"):
        for unit_name in ("chars", "words", "tokens"):
            st = report["lengths"][split][unit_name]
            rows.append([split, unit_name, st["mean"], st["p50"], st["p95"], st["p99"], st["max"]])
    md += [_table(rows, ["split", "unit", "mean", "p50", "p95", "p99", "max"]),
           f"\n\nSuggested **max_len = {report['suggested_max_len']}** ({unit}, covers "
           f"{report['coverage']:.0%} of train texts, rounded up to a multiple of 8).\n",
           "\nTexts longer than a max_len (tokens): "
           + ", ".join(f"{m}: {v:.1%}" for m, v in report["long_texts"].items())
           + f". Long texts: {e(report['suggested_truncation'])}.\n",
           _reading_line(report["reading"]),
           f"\n![lengths]({rel['lengths']})\n\n![by class]({rel['length_by_class']})\n",
           "\n## Noise (rows containing each)\n"]
    pt = report["patterns"]
    md += [_table([[k, pt["train"][k], pt["test"][k]] for k in pt["train"]], ["pattern", "train", "test"]),
           "\n\n## Most frequent words per class\n"]
    md += [f"- **{e(c)}**: {e(', '.join(f'{w} ({n})' for w, n in toks))}\n" for c, toks in report["top_tokens"].items()]
    md += ["\n## Train vs test shift\n",
           f"- token-length KS statistic: {sh['ks_token_length']}\n"
           f"- mean chars train/test: {sh['mean_chars_train']} / {sh['mean_chars_test']}\n"]
    if "adversarial_auc" in sh:
        verdict = "no meaningful shift" if sh["adversarial_auc"] < 0.6 else "train and test differ: trust CV less"
        md += [f"- adversarial-validation AUC (TF-IDF + logistic regression, 3-fold): "
               f"**{sh['adversarial_auc']}** ({verdict})\n"]
    return re.sub(r"\n+## ", "\n\n## ", "".join(md)).strip() + "\n"


def _reading_line(r: dict[str, Any]) -> str:
    if not r["long"]:
        return (f"\nReading: {r['share_over']:.1%} of the model inputs are longer than max_len {r['max_len']} "
                f"(under the {r['threshold']:.0%} that costs score): the head is read.\n")
    windows = ", ".join(f"{m}: {w:g}" for m, w in r["windows"].items())
    return (f"\nReading: **{r['share_over']:.1%} of the model inputs are longer than max_len {r['max_len']}** "
            f"(from {r['threshold']:.0%} reading only the head costs score): read them whole in windows "
            f"(`train.chunks=true`; windows per text at each max_len: {windows}), else head + tail "
            f"(`train.truncation=head_tail`); on a GPU, max_len {r['gpu_max_len']} first.\n")


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    raw = resolve_raw(paths, cfg.data)
    return inputs_of(paths, [], files=competition_files(raw),
                     config={"data": asdict(cfg.data), "inspect": asdict(cfg.inspect), "backbone": cfg.train.backbone,
                             "max_len": cfg.train.max_len, "seed": cfg.folds.seed})


def run(cfg: Config, paths: Paths, force: bool = False) -> InspectResult:
    inputs = stage_inputs(cfg, paths)
    comp = load_competition(resolve_raw(paths, cfg.data), cfg.data, paths.interim / "contract.logged")
    report = analyse(comp, cfg)
    with publish(paths, "inspect", inputs) as tx:  # the page, its JSON and its figures together
        figures = plot(report, paths, tx.path)
        md = render(report, figures, paths)
        report.pop("_token_lengths")
        write_json(tx.path(paths.inspect_json), report)
        write_text(tx.path(paths.inspect_md), md)
    d = report["duplicates"]
    log.info("inspect: %d train / %d test rows; %d duplicate rows, %d conflicting groups; suggested max_len %d; "
             "adversarial AUC %s -> %s", report["rows"]["train"], report["rows"]["test"],
             d["exact_duplicate_rows"], d["conflicting_groups"], report["suggested_max_len"],
             report["shift"].get("adversarial_auc"), paths.inspect_md)
    return InspectResult(report=report, markdown=paths.inspect_md, json=paths.inspect_json)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("inspect", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
