"""The registry of model families: the one place that knows each family by name.

``family(name)`` returns the family for ``train.family``. Each family here is small: its
traits, its cost formula for the planner, its search space for tune, and the calls into the
module that does its work (imported when used, so the planner and the stages that never fit
a model load no torch). To add a family: a module with its fit code, a class here, an entry in
``FAMILIES`` and its name in ``pipeline.core.config.FAMILIES``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.config import FAMILIES as CONFIG_FAMILIES
from pipeline.core.config import Config, ConfigError, TrainConfig
from pipeline.modeling.base import Cost, Family, FoldContext, FoldData, FoldOutput

if TYPE_CHECKING:
    import optuna

PLAIN_MODEL_FILES = ("model.json", "model.npz")  # a fold model without pickle: settings + arrays
TOKENIZER_AND_CONFIG = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")


def _clip(v: float, lo_hi: list[float]) -> float:
    return min(max(v, lo_hi[0]), lo_hi[1])


class _Linear:
    """What the two one-pass families (no epochs, a linear model on fixed features) share."""

    epoch_trained = False
    exports_onnx = False
    tuned_by_default = True
    distills = False
    pretrains = False

    def prepare(self, tc: TrainConfig) -> object | None:
        return None

    def encode_seconds(self, cost: Cost, rows: int) -> float:
        return 0.0

    def probe_pretrain(self, tc: TrainConfig, texts: list[str], steps: int) -> dict[str, Any]:
        return {}

    def pretrain_seconds(self, measured: dict[str, Any], steps: int) -> float:
        return 0.0

    def search(self, trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", *cfg.tune.C, log=True)}  # the regularisation is the knob

    def baseline(self, cfg: Config) -> dict[str, Any]:
        return {"C": _clip(cfg.train.C, cfg.tune.C)}

    def copy_model(self, src: Path, dst: Path, fp16: bool, onnx: bool = False) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for name in PLAIN_MODEL_FILES:
            shutil.copy2(src / name, dst / name)

    def bundle_shared(self, member: dict[str, Any], staging: Path, rel: str) -> dict[str, str]:
        """Files every fold model of a bundle member shares (none), keyed as manifest.json names them."""
        return {}


class Classical(_Linear):
    """Word + char TF-IDF with logistic regression, NB-SVM or a calibrated linear SVM."""

    name = "classical"
    never_cut = True
    uses_backbone = False
    order = 0

    def describe(self, tc: TrainConfig) -> str:
        return tc.classical_model

    def fit(self, tc: TrainConfig, data: FoldData, ctx: FoldContext, shared: object | None) -> FoldOutput:
        from pipeline.modeling import classical

        return classical.fit_classical_fold(tc, data, ctx.metric, ctx.fold)

    def save(self, model: object, tc: TrainConfig, folder: Path, shared: object | None) -> None:
        model.save(folder)

    def probe(self, tc: TrainConfig, texts: list[str], labels: np.ndarray, n_classes: int, metric: str,
              steps: int, max_lens: list[int], columns: list[list[str]] | None = None) -> dict[str, Any]:
        from pipeline.modeling import probe

        return probe.probe_classical(tc, texts, labels, metric, columns)

    def fold_seconds(self, cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                     evals_per_epoch: int = 1) -> float:
        pred = cost.fit_row_s if cost.pred_row_s is None else cost.pred_row_s
        return cost.fit_fixed_s + cost.fit_row_s * rows + pred * (n_val + n_test)


class Embedding(_Linear):
    """A frozen sentence encoder's mean-pooled vectors + a logistic regression per fold."""

    name = "embedding"
    never_cut = False
    uses_backbone = True
    order = 1
    tuned_by_default = False  # not in tune.families by default: its C is cheap to tune when it is

    def describe(self, tc: TrainConfig) -> str:
        return tc.backbone

    def fit(self, tc: TrainConfig, data: FoldData, ctx: FoldContext, shared: object | None) -> FoldOutput:
        from pipeline.modeling import embedding

        return embedding.fit_embedding_fold(tc, data, ctx.metric, ctx.fold, ctx.cache_dir)

    def save(self, model: object, tc: TrainConfig, folder: Path, shared: object | None) -> None:
        from pipeline.modeling import embedding

        embedding.save_head(model, tc, folder)

    def probe(self, tc: TrainConfig, texts: list[str], labels: np.ndarray, n_classes: int, metric: str,
              steps: int, max_lens: list[int], columns: list[list[str]] | None = None) -> dict[str, Any]:
        from pipeline.modeling import probe

        return probe.probe_embedding(tc, texts[:probe.PROBE_ROWS])

    def fold_seconds(self, cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                     evals_per_epoch: int = 1) -> float:
        return cost.fit_row_s * (rows + n_val + n_test)  # the encoder's pass is paid once per run

    def encode_seconds(self, cost: Cost, rows: int) -> float:
        return cost.infer_row_s * rows * cost.windows_at(cost.max_len)  # train.chunks: every window is embedded

    def bundle_shared(self, member: dict[str, Any], staging: Path, rel: str) -> dict[str, str]:
        """The frozen encoder, once for every fold's head."""
        from pipeline.modeling.backbones import resolve_backbone

        Transformer().copy_model(Path(resolve_backbone(member["backbone"])), staging / rel / "encoder", fp16=False)
        return {"encoder": f"{rel}/encoder"}


class Transformer:
    """A Hugging Face encoder fine-tuned per fold (pipeline.modeling.transformer)."""

    name = "transformer"
    epoch_trained = True  # (its rows also grow with augmentation in the planner's estimate)
    never_cut = False
    uses_backbone = True
    order = 2
    exports_onnx = True
    tuned_by_default = True
    distills = True  # train.teacher: the labels and a teacher's OOF probabilities (step.DistillLoss)
    pretrains = True  # train.pretrain_steps: masked-LM steps on the competition's texts first (modeling.pretrain)

    def describe(self, tc: TrainConfig) -> str:
        return tc.backbone

    def prepare(self, tc: TrainConfig) -> object | None:
        from pipeline.modeling.transformer import load_tokenizer

        return load_tokenizer(tc)

    def fit(self, tc: TrainConfig, data: FoldData, ctx: FoldContext, shared: object | None) -> FoldOutput:
        from pipeline.modeling.transformer import FoldTrainer, load_tokenizer, train_fold_with_oom_retry

        tokenizer = shared if shared is not None else load_tokenizer(tc)

        def make(c: TrainConfig) -> FoldTrainer:
            return FoldTrainer(c, ctx.n_classes, ctx.metric, ctx.fold, checkpoint_dir=ctx.checkpoint_dir,
                               on_eval=ctx.on_eval)

        return train_fold_with_oom_retry(tc, make, data, tokenizer)

    def save(self, model: object, tc: TrainConfig, folder: Path, shared: object | None) -> None:
        from pipeline.modeling.distributed import is_main

        if is_main():  # under torchrun / accelerate launch one process writes
            model.save_pretrained(folder, safe_serialization=True)
            shared.save_pretrained(folder)

    def probe(self, tc: TrainConfig, texts: list[str], labels: np.ndarray, n_classes: int, metric: str,
              steps: int, max_lens: list[int], columns: list[list[str]] | None = None) -> dict[str, Any]:
        from pipeline.modeling import probe

        n = probe.PROBE_ROWS
        return probe.probe_transformer(tc, texts[:n], labels[:n], n_classes, steps, max_lens)

    def fold_seconds(self, cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                     evals_per_epoch: int = 1) -> float:
        windows = cost.windows_at(max_len)  # train.chunks: every window of a long text is predicted
        steps, step_s = cost.steps(rows * (windows if cost.chunk_training else 1.0), max_len)
        test_row_s = cost.infer_row_s if cost.test_infer_row_s is None else cost.test_infer_row_s
        infer = (n_val * epochs * evals_per_epoch * cost.infer_row_s + n_test * test_row_s) * windows
        return steps * epochs * step_s + infer * cost.length_scale(max_len) + cost.load_s * (1 + epochs)

    def encode_seconds(self, cost: Cost, rows: int) -> float:
        return 0.0

    def probe_pretrain(self, tc: TrainConfig, texts: list[str], steps: int) -> dict[str, Any]:
        from pipeline.modeling import probe

        return probe.probe_pretrain(tc, texts[:probe.PROBE_ROWS], steps)

    def pretrain_seconds(self, measured: dict[str, Any], steps: int) -> float:
        """The build's steps at the measured pace, its model built, and a checkpoint every tenth."""
        from pipeline.modeling.pretrain import CHECKPOINTS

        return steps * float(measured["mlm_step_s"]) + float(measured["load_s"]) * (1 + min(steps, CHECKPOINTS))

    def search(self, trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
        t = cfg.tune
        effective = trial.suggest_categorical("batch_size", list(t.batch_size))
        micro = min(effective, cfg.train.batch_size)
        return {
            "lr": trial.suggest_float("lr", *t.lr, log=True),
            "batch_size": micro,
            "grad_accum": max(1, effective // micro),  # same effective batch on a smaller micro-batch
            "epochs": trial.suggest_int("epochs", *t.epochs),
            "weight_decay": trial.suggest_float("weight_decay", *t.weight_decay),
            "label_smoothing": trial.suggest_float("label_smoothing", *t.label_smoothing),
            "warmup_ratio": trial.suggest_float("warmup_ratio", *t.warmup_ratio),
            "dropout": trial.suggest_float("dropout", *t.dropout),
            "llrd": trial.suggest_float("llrd", *t.llrd),
        }

    def baseline(self, cfg: Config) -> dict[str, Any]:
        t, tc = cfg.tune, cfg.train
        effective = tc.batch_size * tc.grad_accum
        return {"lr": _clip(tc.lr, t.lr), "batch_size": min(t.batch_size, key=lambda b: abs(b - effective)),
                "epochs": int(_clip(tc.epochs, t.epochs)), "weight_decay": _clip(tc.weight_decay, t.weight_decay),
                "label_smoothing": _clip(tc.label_smoothing, t.label_smoothing),
                "warmup_ratio": _clip(tc.warmup_ratio, t.warmup_ratio), "dropout": _clip(tc.dropout or 0.1, t.dropout),
                "llrd": _clip(tc.llrd, t.llrd)}

    def copy_model(self, src: Path, dst: Path, fp16: bool, onnx: bool = False) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_AND_CONFIG:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
        if fp16:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(src))
            model.half().save_pretrained(dst, safe_serialization=True)
        else:
            for p in src.glob("*.safetensors"):
                shutil.copy2(p, dst / p.name)
        if onnx:
            from pipeline.modeling.onnx import export_onnx

            export_onnx(src, dst)

    def bundle_shared(self, member: dict[str, Any], staging: Path, rel: str) -> dict[str, str]:
        return {}


FAMILIES: dict[str, Family] = {f.name: f for f in (Classical(), Embedding(), Transformer())}
assert tuple(sorted(FAMILIES)) == tuple(sorted(CONFIG_FAMILIES)), "config.FAMILIES and the registry disagree"


def family(name: str) -> Family:
    """The family called ``name`` (``train.family``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"train.family must be one of {', '.join(FAMILIES)}; got {name!r}") from None
