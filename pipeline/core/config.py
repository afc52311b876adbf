"""Typed configuration: dataclasses own the defaults, YAML files hold diffs.

A run's config is ``configs/base.yaml`` (optional) overlaid by an experiment file that
holds only its diffs, overlaid by ``key=value`` overrides (``train.lr=2e-5``). Every key
must already exist and keep its type, so a typo fails at load time, not at epoch 3.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.paths import PathError, check_name

FAMILIES = ("transformer", "classical", "embedding")  # the model families (pipeline/modeling/families.py)


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _name(what: str, value: Any) -> None:
    """A config value that becomes a folder or file name: no way out of the project."""
    try:
        check_name(value, what)
    except PathError as e:
        raise ConfigError(str(e)) from None


@dataclass
class DataConfig:
    id_col: str | None = None  # id column; default: first column of sample_submission.csv
    label_col: str | None = None  # label column; default: the train column test lacks
    label_cols: list[str] = field(default_factory=list)  # multi-label: the 0/1 label columns (default: detected)
    text_col: str | None = None  # text column; default: the longest free-text column
    text_cols: list[str] = field(default_factory=list)  # several text columns, a pair first (default: detected)
    extra_cols: list[str] = field(default_factory=list)  # columns joined into the model input
    extra_template: str = "{col}: {value}"  # how an extra column is spelled in the input
    sep: str = " | "  # joins extra columns and the text
    ignore_cols: list[str] = field(default_factory=list)  # columns dropped from both files (e.g. one only test has)
    metric: str | None = None  # a name in pipeline.core.metrics.METRICS; default from the submission kind
    submission: str | None = None  # label, proba or ranked; default from the metric, else from the sample's values
    empty_text: str = "keep"  # keep (as "") or drop: train rows whose text is empty or NaN
    nan_label: str = "error"  # error or drop: train rows without a label
    min_class_rows: int = 0  # drop train rows of a class with fewer rows (logged); 0: keep every class
    embedded_train_rows: int = 3000  # rows of the embedded default's train.csv
    embedded_test_rows: int = 1500  # rows of the embedded default's test.csv
    embedded_seed: int = 2026  # seed of the embedded default's split

    def validate(self) -> None:
        from pipeline.core.metrics import NAMES  # the registry: reading a config loads no scikit-learn
        from pipeline.runtime import SUBMISSION_KINDS

        _choice("data.metric", self.metric, NAMES, allow_none=True)
        _choice("data.submission", self.submission, SUBMISSION_KINDS, allow_none=True)
        _choice("data.empty_text", self.empty_text, ("keep", "drop"))
        _choice("data.nan_label", self.nan_label, ("error", "drop"))
        if self.label_cols and len(self.label_cols) < 2:
            raise ConfigError("data.label_cols names the labels of a multi-label competition (two or more); "
                              "set data.label_col for one")
        if self.label_cols and self.label_col:
            raise ConfigError("data.label_col and data.label_cols are both set: keep one")
        if self.text_cols and self.text_col:
            raise ConfigError("data.text_col and data.text_cols are both set: keep one")
        if self.min_class_rows < 0:
            raise ConfigError(f"data.min_class_rows must be >= 0, got {self.min_class_rows}")
        _positive("data.embedded_train_rows", self.embedded_train_rows)
        _positive("data.embedded_test_rows", self.embedded_test_rows)


@dataclass
class InspectConfig:
    tokenizer: str | None = None  # tokenizer dir/name for token lengths; default: train.backbone
    coverage: float = 0.99  # share of texts the suggested max_len must cover
    top_tokens: int = 15  # most frequent tokens listed per class
    adversarial: bool = True  # train-vs-test adversarial-validation AUC

    def validate(self) -> None:
        if not 0.5 <= self.coverage < 1:
            raise ConfigError(f"inspect.coverage must be in [0.5, 1), got {self.coverage}")


@dataclass
class CleanConfig:
    html: bool = True  # strip HTML tags and unescape entities
    urls: str | None = "[URL]"  # replace URLs by this placeholder; None keeps them, "" drops them
    mentions: str | None = None  # replace @mentions by this placeholder (e.g. "[USER]"); None keeps them
    # (kept by default: replacing them never beat keeping them by more than the fold noise: docs/stages.md)
    mojibake: bool = True  # repair mis-decoded text with ftfy
    unicode_form: str | None = "NFKC"  # unicode normalisation form, or None
    whitespace: bool = True  # collapse runs of whitespace, strip ends
    lowercase: bool = False  # lower-case everything (hurts cased backbones)
    spelling: bool = False  # symspellpy word-level spelling correction (slow, can cost score)
    duplicates: str = "majority"  # keep, majority (conflicting labels -> majority label), drop_conflicts

    def validate(self) -> None:
        _choice("clean.unicode_form", self.unicode_form, ("NFC", "NFKC", "NFD", "NFKD"), allow_none=True)
        _choice("clean.duplicates", self.duplicates, ("keep", "majority", "drop_conflicts"))


@dataclass
class FoldsConfig:
    n_splits: int = 5  # number of folds
    seed: int = 42  # seed of the split (separate from training seeds)
    group_cols: list[str] = field(default_factory=list)  # rows sharing a value of any of these share a fold (qid1, qid2)

    def validate(self) -> None:
        if self.n_splits < 2:
            raise ConfigError(f"folds.n_splits must be >= 2, got {self.n_splits}")


@dataclass
class TrainConfig:
    run: str = "minilm"  # run name: models/<run>/
    family: str = "transformer"  # transformer (fine-tuned), classical (TF-IDF), embedding (frozen encoder + LR)
    backbone: str = "packaged:minilm"  # local dir, hub name, packaged:minilm or packaged:mpnet
    max_len: int = 64  # max tokens per text (a pair: both texts together)
    truncation: str = "head"  # long texts: head (the first max_len tokens), tail, head_tail (head_tokens + the end); a pair cuts each side
    head_tokens: int | None = None  # head_tail: tokens kept from the start, the rest of max_len from the end; None: a quarter (128 of 512, Sun et al. 2019)
    chunks: bool = False  # read long texts whole: overlapping max_len windows, pooled per text (the embedding family embeds each)
    chunk_training: bool = True  # with chunks: train on every window too (each with its text's label and fold)
    stride: int = 32  # chunks: tokens two windows share
    max_chunks: int | None = None  # chunks: at most this many windows per text (the first ones and the last; the texts cut are logged)
    chunk_pool: str = "mean"  # chunks: a text's windows pooled by the mean of their logits (or vectors), or max
    pos_weight: bool = False  # multi-label: weight each label's positives by negatives/positives (rare labels)
    epochs: int = 2  # training epochs per fold
    batch_size: int = 32  # micro-batch size in rows; with token batches, the rows per step the LR is set for
    token_batches: bool = False  # fill each micro-batch to batch_size x max_len padded tokens: short texts make larger batches (LR x sqrt(rows / batch_size)), peak memory as a max_len batch
    batch_tokens: int | None = None  # token batches filled to this many padded tokens instead of batch_size x max_len
    token_batch_rows: float = 2.0  # token batches hold at most this x batch_size rows (2x kept the CV on the disaster tweets, 4.7x lost 0.0057 F1)
    grad_accum: int = 1  # micro-batches per optimizer step
    eval_batch_size: int = 128  # batch size for validation and test prediction
    eval_batch_tokens: int | None = None  # prediction batches filled to this many padded tokens instead
    lr: float = 5e-5  # peak learning rate of the top encoder layer
    head_lr: float | None = None  # learning rate of the classification head; default lr
    llrd: float = 1.0  # layer-wise LR decay: layer i gets lr * llrd ** (top - i)
    weight_decay: float = 0.01  # AdamW weight decay (never on biases and LayerNorm)
    schedule: str = "cosine"  # cosine, linear, constant, onecycle
    warmup_ratio: float = 0.1  # share of optimizer steps spent warming up
    warmup_steps: int | None = None  # overrides warmup_ratio when set
    min_lr_ratio: float = 0.0  # floor of the decay, as a share of the peak
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    dropout: float | None = None  # backbone hidden/attention dropout override
    head_dropout: float | None = None  # classifier dropout override
    freeze_embeddings: bool = False  # never train the embeddings
    freeze_layers: int = 0  # never train the lowest N encoder layers
    freeze_encoder_epochs: int = 0  # train only the head for the first N epochs
    clip_norm: float | None = 1.0  # gradient clipping by global norm; None disables
    precision: str = "auto"  # auto (bf16 on capable GPUs and on CPUs with AMX tiles, else fp32/fp16), fp32, bf16, fp16
    group_by_length: bool = True  # length-grouped batches inside shuffled mega-batches
    pad_to_multiple_of: int | None = None  # pad batch length to a multiple (8 helps tensor cores)
    compile: bool = False  # torch.compile the model
    ema: float | None = None  # EMA decay of weights used for evaluation (e.g. 0.999)
    patience: int | None = None  # early stopping after N evaluations without improvement
    evals_per_epoch: int = 1  # validation passes per epoch
    log_every: int = 20  # optimizer steps between logged training-loss points
    seed: int = 42  # training seed; fold k uses seed + k
    seeds: list[int] | None = None  # transformer: train each fold once per seed and average (e.g. [42, 43, 44])
    pseudo_teacher: str | None = None  # pseudo-labels: confident test rows from this run's fold-k model, in fold k
    pseudo_threshold: float = 0.95  # a test row joins fold k's training when the teacher's top probability >= this
    pretrain_steps: int = 0  # masked-LM steps on the competition's own texts before fine-tuning (0: start from the backbone)
    pretrain_lr: float = 5e-5  # peak LR of the masked-LM steps (warmup, then linear decay); the fresh MLM head at 10x
    pretrain_batch_size: int = 32  # texts (windows of max_len tokens) per masked-LM step
    pretrain_mask: float = 0.15  # share of each text's tokens the masked-LM predicts (BERT's 80/10/10 replacement)
    teacher: str | None = None  # distillation: a run or an ensemble (run:<name>, ensemble:<name>, or the name) whose OOF probabilities are soft targets
    distill_temperature: float = 2.0  # softens the teacher's and the student's distributions (Hinton et al. 2015)
    distill_alpha: float = 0.7  # weight of the soft targets; 1 - alpha on the labels
    processes: int | None = None  # train's processes (DDP under torchrun): None = one per visible GPU, 1 on CPU
    folds: list[int] | None = None  # train only these folds (fan-out across machines)
    searched_folds: list[int] = field(default_factory=list)  # folds whose labels select/tune saw (set by the plan)
    max_train_rows: int | None = None  # subsample each fold's training rows (screening)
    augment: list[str] = field(default_factory=list)  # augmented sets added to training folds
    device: str = "auto"  # auto, cpu, cuda
    save_checkpoints: bool = True  # keep each fold's best model under models/<run>/fold<k>/model
    # classical family
    classical_model: str = "lr"  # lr (logistic regression), nbsvm, svm (calibrated linear SVM)
    C: float = 4.0  # inverse regularisation strength
    pair_features: bool = True  # text pairs: shared-word and char-trigram ratios, length ratio, word and char TF-IDF cosines beside the blocks
    tfidf_blocks: bool = True  # the TF-IDF blocks of each text column; false: a pair's similarity features alone
    pair_tfidf: str = "joint"  # text pairs: one TF-IDF over the texts joined (joint), or one per text column (per_column)
    word_ngrams: list[int] = field(default_factory=lambda: [1, 2])  # word n-gram range
    char_ngrams: list[int] = field(default_factory=lambda: [2, 5])  # char_wb n-gram range
    max_features: int = 200000  # per vectorizer
    # embedding family
    pair_rank: int = 32  # text pairs: products of the two texts' first k principal components (a bilinear similarity); 0: none
    pair_sides: bool = False  # text pairs: each text's own vector u, v too, beside |u - v|, u * v, the cosine and the products

    def token_budget(self) -> int | None:
        """Padded tokens a training micro-batch is filled to; None: batches of batch_size rows."""
        if self.batch_tokens is not None:
            return self.batch_tokens
        return self.batch_size * self.max_len if self.token_batches else None

    def token_batch_max_rows(self) -> int | None:
        """The most rows a token batch holds (None: rows are not capped, or batches are in rows)."""
        return max(1, round(self.batch_size * self.token_batch_rows)) if self.token_budget() else None

    def validate(self) -> None:
        _name("train.run", self.run)
        _choice("train.family", self.family, FAMILIES)
        _choice("train.schedule", self.schedule, ("cosine", "linear", "constant", "onecycle"))
        _choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _choice("train.device", self.device, ("auto", "cpu", "cuda"))
        _choice("train.classical_model", self.classical_model, ("lr", "nbsvm", "svm"))
        _choice("train.pair_tfidf", self.pair_tfidf, ("joint", "per_column"))
        _choice("train.truncation", self.truncation, ("head", "tail", "head_tail"))
        _positive("train.stride", self.stride)
        from pipeline.runtime import CHUNK_POOLS

        _choice("train.chunk_pool", self.chunk_pool, CHUNK_POOLS)
        if self.head_tokens is not None:
            _positive("train.head_tokens", self.head_tokens)
            if self.truncation == "head_tail" and self.head_tokens >= self.max_len:
                raise ConfigError(f"train.head_tokens ({self.head_tokens}) leaves no tail at train.max_len="
                                  f"{self.max_len}: set it below, or unset it (a quarter of the room)")
        if self.max_chunks is not None and self.max_chunks < 2:
            raise ConfigError(f"train.max_chunks must be >= 2 (the first window and the last) or unset, got "
                              f"{self.max_chunks}")
        if self.chunks and self.stride >= self.max_len // 2:
            raise ConfigError(f"train.stride ({self.stride}) must be below half of train.max_len ({self.max_len})")
        if self.pseudo_teacher is not None:
            _name("train.pseudo_teacher", self.pseudo_teacher)
        if not 0.5 <= self.pseudo_threshold <= 1:
            raise ConfigError(f"train.pseudo_threshold must be in [0.5, 1], got {self.pseudo_threshold}")
        if self.pair_rank < 0:
            raise ConfigError(f"train.pair_rank must be >= 0, got {self.pair_rank}")
        if self.pretrain_steps < 0:
            raise ConfigError(f"train.pretrain_steps must be >= 0, got {self.pretrain_steps}")
        _positive("train.pretrain_batch_size", self.pretrain_batch_size)
        if self.pretrain_lr <= 0:
            raise ConfigError(f"train.pretrain_lr must be > 0, got {self.pretrain_lr}")
        if not 0 < self.pretrain_mask < 1:
            raise ConfigError(f"train.pretrain_mask must be in (0, 1), got {self.pretrain_mask}")
        if self.teacher is not None:
            kind, _, name = self.teacher.rpartition(":")
            if kind not in ("", "run", "ensemble"):
                raise ConfigError(f"train.teacher must be run:<name>, ensemble:<name> or a name; got {self.teacher!r}")
            _name("train.teacher", name)
            if kind in ("", "run") and name == self.run:
                raise ConfigError(f"train.teacher={self.teacher!r}: a run cannot be its own teacher")
        if self.distill_temperature <= 0:
            raise ConfigError(f"train.distill_temperature must be > 0, got {self.distill_temperature}")
        if not 0 <= self.distill_alpha <= 1:
            raise ConfigError(f"train.distill_alpha must be in [0, 1], got {self.distill_alpha}")
        for name in ("max_len", "epochs", "batch_size", "grad_accum", "eval_batch_size", "evals_per_epoch", "log_every"):
            _positive(f"train.{name}", getattr(self, name))
        if self.token_batch_rows < 1:
            raise ConfigError(f"train.token_batch_rows must be >= 1, got {self.token_batch_rows}")
        for name in ("batch_tokens", "eval_batch_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < self.max_len:
                raise ConfigError(f"train.{name} ({getattr(self, name)}) must hold one text of train.max_len "
                                  f"({self.max_len}) tokens")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.llrd <= 1:
            raise ConfigError(f"train.llrd must be in (0, 1], got {self.llrd}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"train.ema must be in (0, 1), got {self.ema}")
        for name in ("dropout", "head_dropout"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1:
                raise ConfigError(f"train.{name} must be in [0, 1), got {v}")
        for name in ("word_ngrams", "char_ngrams"):
            v = getattr(self, name)
            if len(v) != 2 or not 1 <= v[0] <= v[1]:
                raise ConfigError(f"train.{name} must be [min, max] with 1 <= min <= max, got {v}")


@dataclass
class AugmentConfig:
    methods: list[str] = field(default_factory=list)  # backtranslation and/or nlpaug methods (see augment.py)
    engines: list[str] = field(default_factory=lambda: ["bergamot", "apertium"])  # back-translation engines, by preference
    threads: int = 2  # bergamot: sentences translated at once (its engine releases the GIL)
    pivots: list[str] = field(default_factory=lambda: ["zh"])  # marian pivot languages (one copy each)
    apertium_pivot: str = "spa"  # apertium's pivot (a pair eng-<pivot> must be installed)
    marian_forward: str = "Helsinki-NLP/opus-mt-en-{pivot}"  # en->pivot model: local dir or hub name
    marian_backward: str = "Helsinki-NLP/opus-mt-{pivot}-en"  # pivot->en model: local dir or hub name
    batch_size: int = 64  # sentences per generate() call
    num_beams: int = 1  # 1 = greedy (or sampling when do_sample)
    do_sample: bool = False  # sample for diversity
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling mass
    max_new_tokens_ratio: float = 1.5  # generated tokens <= ratio * source tokens + 8
    ct2_quantization: str = "default"  # ctranslate2 engine: default, int8, int8_float16, float16 ...
    chunk_size: int = 512  # texts per cache chunk (a crash keeps finished chunks)
    drop_identical: bool = True  # drop outputs equal to the source (case/space-insensitive)
    min_len_ratio: float = 0.5  # drop outputs shorter than this share of the source (chars)
    max_len_ratio: float = 2.0  # drop outputs longer than this multiple of the source
    min_similarity: float | None = None  # drop outputs whose char TF-IDF cosine to the source is lower
    n_per_row: int = 1  # nlpaug copies per row
    aug_p: float = 0.1  # nlpaug share of words/characters changed
    seed: int = 42  # augmentation seed

    def validate(self) -> None:
        for e in self.engines:
            _choice("augment.engines[]", e, ("bergamot", "apertium", "marian", "ctranslate2"))
        for m in self.methods:
            _choice("augment.methods[]", m, AUGMENT_METHODS)
        _positive("augment.batch_size", self.batch_size)
        _positive("augment.n_per_row", self.n_per_row)
        if not 0 < self.aug_p <= 1:
            raise ConfigError(f"augment.aug_p must be in (0, 1], got {self.aug_p}")
        if not 0 <= self.min_len_ratio <= 1 <= self.max_len_ratio:
            raise ConfigError("augment.min_len_ratio must be in [0, 1] and augment.max_len_ratio >= 1")


AUGMENT_METHODS = ("backtranslation", "random_swap", "random_delete", "random_crop", "keyboard", "ocr",
                   "spelling", "synonym")


@dataclass
class SelectConfig:
    candidates: list[str] = field(default_factory=lambda: ["tfidf", "minilm"])  # configs/exp/<name>.yaml
    folds: list[int] = field(default_factory=lambda: [0])  # folds screened
    max_train_rows: int | None = 1500  # subsample of each screened fold's training rows
    epochs: int = 1  # epochs per transformer candidate
    top_k: int = 2  # candidates passed on to tune/train
    pinned: list[str] = field(default_factory=list)  # overrides the ranking when set

    def validate(self) -> None:
        _positive("select.top_k", self.top_k)
        if not self.candidates:
            raise ConfigError("select.candidates must name at least one experiment")


@dataclass
class TuneConfig:
    enabled: bool = True  # run the search; off means train uses the candidates' configs as they are
    n_trials: int = 4  # trials per tuned candidate
    timeout_s: float | None = 600  # wall-time budget per tuned candidate
    storage: str | None = None  # Optuna storage URL; default sqlite file under tune/
    sampler_seed: int = 42  # TPE sampler seed
    pruner: str = "median"  # median, hyperband, none
    folds: list[int] = field(default_factory=lambda: [0])  # folds a trial trains on
    max_train_rows: int | None = 1500  # subsample of a trial's training rows
    families: list[str] = field(default_factory=lambda: ["transformer", "classical"])  # families tuned
    lr: list[float] = field(default_factory=lambda: [1e-5, 1e-4])  # log-uniform range
    batch_size: list[int] = field(default_factory=lambda: [16, 32])  # effective batch choices
    epochs: list[int] = field(default_factory=lambda: [3, 5])  # integer range
    weight_decay: list[float] = field(default_factory=lambda: [0.01, 0.1])
    label_smoothing: list[float] = field(default_factory=lambda: [0.0, 0.2])
    warmup_ratio: list[float] = field(default_factory=lambda: [0.0, 0.2])
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.2])
    llrd: list[float] = field(default_factory=lambda: [0.8, 1.0])
    C: list[float] = field(default_factory=lambda: [0.5, 20.0])  # classical family, log-uniform

    def validate(self) -> None:
        _choice("tune.pruner", self.pruner, ("median", "hyperband", "none"))
        _positive("tune.n_trials", self.n_trials)


@dataclass
class EnsembleConfig:
    name: str = "blend"  # ensembles/<name>/
    runs: list[str] | None = None  # runs blended; default every run under models/
    method: str = "auto"  # auto (one-SE rule on nested CV), weighted, mean, rank, vote, best_single, stack
    objective: str = "metric"  # metric or logloss (smooth surrogate) for the weight search
    stack_C: float = 1.0  # inverse L2 strength of the stacking logistic regression

    def validate(self) -> None:
        _name("ensemble.name", self.name)
        for i, run in enumerate(self.runs or []):
            _name(f"ensemble.runs[{i}]", run)
        _choice("ensemble.method", self.method, ("auto", "weighted", "mean", "rank", "vote", "best_single", "stack"))
        _choice("ensemble.objective", self.objective, ("metric", "logloss"))


@dataclass
class SubmitConfig:
    source: str = "ensemble"  # ensemble, or run:<name> to submit one run
    clip: float = 1e-6  # probabilities clipped to [clip, 1 - clip]

    def validate(self) -> None:
        # only the project's own runs and ensembles: never a path
        if self.source != "ensemble":
            if not self.source.startswith("run:"):
                raise ConfigError(f"submit.source must be 'ensemble' or 'run:<name>', got {self.source!r}")
            _name("submit.source run", self.source[4:])


@dataclass
class PackageConfig:
    name: str | None = None  # dist/<name>/; default <competition folder>-<YYYYMMDD>
    fp16: bool = False  # store transformer weights in fp16 (half the size; probabilities move ~1e-3)
    verify: bool = True  # run the bundle's predict.py on test.csv and compare with submission.csv
    onnx: bool = False  # also an int8 ONNX export per transformer fold (predict.py --onnx; needs onnxruntime)
    members: str | None = None  # None: what submission.csv came from; a run's name, or student (the distilled run), alone

    def validate(self) -> None:
        if self.name is not None:
            _name("package.name", self.name)
        if self.members is not None:
            _name("package.members", self.members)


PRESETS = ("fast", "medium", "best")


@dataclass
class BudgetConfig:
    time: str | None = None  # wall-time budget of `make all`: 90s, 30m, 2h, 1h30m; None runs the profile as it stands
    preset: str = "medium"  # fast (classical + a short transformer), medium (the profile), best (every candidate that fits)
    margin: float = 0.1  # share of the budget kept free for estimation error
    probe_steps: int = 6  # optimizer steps timed per transformer candidate, at spread padded lengths (after a warm-up pass)
    paces: str | None = None  # a paces file (make all writes reports/paces.json): plan for that machine, measure nothing
    # candidate pairings, in configs/ (base.yaml, exp/<candidate>.yaml), never in code:
    medium_extra: list[str] = field(default_factory=list)  # what PRESET=medium adds to the profile's candidates
    best_extra: list[str] = field(default_factory=list)  # what PRESET=best adds (each where its backbone is set up)
    pair_extra: list[str] = field(default_factory=list)  # what every preset adds on a text-pair competition
    twin: str | None = None  # a fine-tune's frozen-encoder candidate: what it becomes when it does not fit

    def validate(self) -> None:
        _choice("budget.preset", self.preset, PRESETS)
        if self.time is not None:
            try:
                seconds = parse_duration(self.time)
            except ValueError as e:
                raise ConfigError(f"budget.time: {e}") from None
            if seconds <= 0:
                raise ConfigError(f"budget.time must be > 0, got {self.time!r}")
        if not 0 <= self.margin < 0.5:
            raise ConfigError(f"budget.margin must be in [0, 0.5), got {self.margin}")
        _positive("budget.probe_steps", self.probe_steps)


def parse_duration(text: str | float | int) -> float:
    """``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or a number of seconds -> seconds."""
    import re

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|min|s)", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 2h or 1h30m")
    unit = {"h": 3600, "m": 60, "min": 60, "s": 1}
    return float(sum(float(n) * unit[u] for n, u in parts))


@dataclass
class ReportConfig:
    overfit_evals: int = 2  # validation loss rising this many evaluations in a row while train loss falls
    underfit_ratio: float = 0.8  # final train loss above this share of the first one = still high
    underfit_slope: float = 0.05  # ... and falling less than this share over the last quarter = slowly
    spike_factor: float = 2.0  # a train-loss point this many times the running minimum is a spike
    update_ratio_high: float = 1e-2  # median update/weight ratio above this (notes: ~1e-3) = LR too high
    update_ratio_low: float = 1e-5  # ... below this = LR too low
    confidence_margin: float = 0.1  # mean validation confidence within this of chance = not separating
    fold_deviation: float = 0.03  # a fold's score this far from the others' mean = unstable
    adversarial_auc: float = 0.7  # inspect's adversarial AUC above this = train/test mismatch
    top_mistakes: int = 15  # most confident mistakes listed per run


@dataclass
class TrackConfig:
    enabled: bool = True  # log train runs, ensembles and submissions to MLflow (pipeline/core/tracking.py)
    experiment: str | None = None  # the MLflow experiment; None: textcomp-<competition>


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    package: PackageConfig = field(default_factory=PackageConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    track: TrackConfig = field(default_factory=TrackConfig)

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "validate"):
                section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(name: str, value: Any, allowed: tuple, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` coerced to ``tp`` where lossless (int -> float), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(key, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _apply(obj: Any, updates: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r} (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} must be a mapping, got {value!r}")
            _apply(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def parse_override(text: str) -> dict[str, Any]:
    """``train.lr=2e-5`` -> ``{"train": {"lr": 2e-5}}``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML reads 2e-5 as a string (no dot); numbers are what an override means there.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def load_config(
    files: list[Path] | tuple[Path, ...] = (),
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Defaults, then each YAML file's diffs in order, then overrides; validated."""
    return _build(list(files), [], list(overrides))


def _build(files: list[Path], diffs: list[dict[str, Any]], overrides: list[str]) -> Config:
    cfg = Config()
    for path in files:
        try:
            _apply(cfg, read_yaml(path))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for diff in diffs:
        _apply(cfg, diff)
    for text in overrides:
        _apply(cfg, parse_override(text))
    cfg.validate()
    # Where it came from, so a stage can layer a generated diff under the user's overrides.
    object.__setattr__(cfg, "_sources", (files, diffs, overrides))
    return cfg


def with_diff(cfg: Config, diff: dict[str, Any]) -> Config:
    """``cfg`` rebuilt with ``diff`` applied after its files but before its key=value
    overrides: a generated experiment (select/tune) never outranks what the user typed."""
    files, diffs, overrides = getattr(cfg, "_sources", ([], [], []))
    if not hasattr(cfg, "_sources"):
        base = Config()
        _apply(base, diff_dict(cfg))
        _apply(base, diff)
        return base.validate()
    return _build(files, [*diffs, diff], overrides)


def diff_dict(cfg: Config, base: Config | None = None) -> dict[str, Any]:
    """The sections and keys where ``cfg`` differs from ``base`` (defaults if None)."""
    a, b = cfg.to_dict(), (base or Config()).to_dict()
    out: dict[str, Any] = {}
    for section, values in a.items():
        changed = {k: v for k, v in values.items() if b[section].get(k) != v}
        if changed:
            out[section] = changed
    return out


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
