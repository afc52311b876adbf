"""Every artifact path, spelled once. No other module builds a path by hand.

A name that becomes a folder or file (a run, an ensemble, a study, an augmentation method)
goes through ``check_name``: ``[A-Za-z0-9][A-Za-z0-9._-]*``, so no ``..``, no slash, no
absolute path. Every resolved artifact path must lie under the work directory's artifact
folders, and ``remove_tree`` is the only deletion of a folder: it refuses anything else.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

RAW_FILES = ("train.csv", "test.csv", "sample_submission.csv")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# the folders (under the work directory) that stages write into and may delete inside
ARTIFACT_DIRS = ("data/interim", "data/processed", "data/embedded", "data/holdout", "reports", "models",
                 "ensembles", "submissions", "tune", "configs/generated", "dist", ".staging", ".manifests")


class PathError(ValueError):
    """A user-given name or path that would reach outside the project's artifact folders."""


def check_name(name: object, what: str = "name") -> str:
    """A user-given name that becomes a folder or file name, or a one-line error."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise PathError(f"{what}={name!r}: must match [A-Za-z0-9][A-Za-z0-9._-]* (at most 100 characters), "
                        "since it becomes a folder name under the project")
    return name


@dataclass(frozen=True)
class FoldPaths:
    """One fold of a run: ``models/<run>/fold<k>/``."""

    dir: Path

    @property
    def oof(self) -> Path:
        return self.dir / "oof.parquet"

    @property
    def test(self) -> Path:
        return self.dir / "test.parquet"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def meta(self) -> Path:
        """Written last: the fold is done (its config fingerprint inside)."""
        return self.dir / "meta.json"

    @property
    def model(self) -> Path:
        return self.dir / "model"

    @property
    def resume(self) -> Path:
        """The in-progress checkpoint a killed fold resumes from (removed once the fold is done)."""
        return self.dir / "resume"

    @property
    def resume_fingerprint(self) -> Path:
        return self.resume / "fingerprint"

    def seed(self, seed: int) -> FoldPaths:
        """``fold<k>/seed<s>/``: one seed's model and predictions when train.seeds has several."""
        return FoldPaths(self.dir / f"seed{int(seed)}")

    @property
    def seed_proba(self) -> Path:
        """(in a seed folder) the seed's validation and test probabilities."""
        return self.dir / "proba.npz"

    def seed_dirs(self) -> list[Path]:
        return sorted((p for p in self.dir.glob("seed*") if p.is_dir()), key=lambda p: int(p.name[4:]))


@dataclass(frozen=True)
class RunPaths:
    """One run: ``models/<run>/`` (published together by train's transaction)."""

    dir: Path

    def fold(self, k: int) -> FoldPaths:
        return FoldPaths(self.dir / f"fold{int(k)}")

    @property
    def oof(self) -> Path:
        return self.dir / "oof.parquet"

    @property
    def test(self) -> Path:
        return self.dir / "test.parquet"

    @property
    def cv(self) -> Path:
        return self.dir / "cv.json"

    @property
    def history(self) -> Path:
        return self.dir / "history.csv"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def env(self) -> Path:
        return self.dir / "env.json"

    @property
    def config(self) -> Path:
        return self.dir / "config.yaml"


@dataclass(frozen=True)
class EnsemblePaths:
    """One blend: ``ensembles/<name>/``."""

    dir: Path

    @property
    def oof(self) -> Path:
        return self.dir / "oof.parquet"

    @property
    def test(self) -> Path:
        return self.dir / "test.parquet"

    @property
    def methods(self) -> Path:
        return self.dir / "methods.csv"

    @property
    def oof_nested(self) -> Path:
        """Each fold's rows blended by the blend fitted on the other folds: what a student
        distils from (train.teacher), every row's probability from models that never saw it."""
        return self.dir / "oof_nested.parquet"

    @property
    def weights(self) -> Path:
        return self.dir / "weights.json"

    @property
    def cv(self) -> Path:
        return self.dir / "cv.json"


@dataclass(frozen=True)
class TunePaths:
    """One candidate's search: ``tune/<run>/``."""

    dir: Path

    @property
    def study_db(self) -> Path:
        return self.dir / "study.db"

    @property
    def trials(self) -> Path:
        return self.dir / "trials.csv"

    @property
    def best(self) -> Path:
        return self.dir / "best.json"

    @property
    def history_png(self) -> Path:
        return self.dir / "history.png"

    @property
    def importance_png(self) -> Path:
        return self.dir / "importance.png"


@dataclass(frozen=True)
class Paths:
    root: Path  # the work directory: artifacts live below it
    raw: Path  # the competition's folder (train.csv, test.csv, sample_submission.csv)

    @classmethod
    def make(cls, root: Path | str = ".", data: Path | str | None = None) -> Paths:
        root = Path(root).resolve()
        raw = Path(data).expanduser().resolve() if data else root / "data" / "raw"
        return cls(root=root, raw=raw)

    def inside(self, path: Path) -> Path:
        """``path`` if it resolves (symlinks followed) under one of the artifact folders."""
        resolved = Path(path).resolve()
        for d in ARTIFACT_DIRS:
            base = (self.root / d).resolve()
            if resolved == base or resolved.is_relative_to(base):
                return Path(path)
        raise PathError(f"{path}: outside the project's artifact folders ({', '.join(ARTIFACT_DIRS)}) under "
                        f"{self.root}; refused")

    def remove_tree(self, path: Path) -> None:
        """Delete a folder the stages made: only strictly inside an artifact folder."""
        target = self.inside(path)
        if any(Path(target).resolve() == (self.root / d).resolve() for d in ARTIFACT_DIRS):
            raise PathError(f"{path}: refusing to delete a whole artifact folder")
        shutil.rmtree(target, ignore_errors=True)

    # stage transactions (pipeline/transaction.py)
    def staging(self, stage: str) -> Path:
        return self.root / ".staging" / check_name(stage, "stage")

    @property
    def manifests(self) -> Path:
        return self.root / ".manifests"

    def manifest(self, stage: str) -> Path:
        return self.manifests / f"{check_name(stage, 'stage')}.json"

    # raw inputs (never written)
    @property
    def train_csv(self) -> Path:
        return self.raw / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.raw / "test.csv"

    @property
    def sample_csv(self) -> Path:
        return self.raw / "sample_submission.csv"

    # the embedded default competition, built from a packaged corpus when data/raw is empty
    @property
    def embedded(self) -> Path:
        return self.root / "data" / "embedded"

    @property
    def holdout_labels(self) -> Path:
        return self.root / "data" / "holdout" / "test_labels.csv"

    # reports
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"

    def figure(self, name: str) -> Path:
        return self.figures / f"{check_name(name, 'figure')}.png"

    @property
    def inspect_md(self) -> Path:
        return self.reports / "inspect.md"

    @property
    def inspect_json(self) -> Path:
        return self.reports / "inspect.json"

    @property
    def augment_json(self) -> Path:
        return self.reports / "augment.json"

    @property
    def lr_find_png(self) -> Path:
        return self.reports / "lr_find.png"

    @property
    def lr_find_json(self) -> Path:
        return self.reports / "lr_find.json"

    @property
    def doctor_json(self) -> Path:
        return self.reports / "doctor.json"

    @property
    def index_md(self) -> Path:
        return self.reports / "index.md"

    @property
    def index_html(self) -> Path:
        return self.reports / "index.html"

    @property
    def inspect_html(self) -> Path:
        return self.reports / "inspect.html"

    @property
    def run_pages(self) -> Path:
        """reports/runs/: one page per run (the doctor's findings, error analysis)."""
        return self.reports / "runs"

    def stage_config(self, stage: str) -> Path:
        return self.reports / "configs" / f"{check_name(stage, 'stage')}.yaml"

    # interim / processed data
    @property
    def interim(self) -> Path:
        return self.root / "data" / "interim"

    @property
    def train_clean(self) -> Path:
        return self.interim / "train_clean.parquet"

    @property
    def test_clean(self) -> Path:
        return self.interim / "test_clean.parquet"

    @property
    def clean_log(self) -> Path:
        return self.interim / "clean_log.csv"

    @property
    def clean_json(self) -> Path:
        return self.reports / "clean.json"

    @property
    def schema_json(self) -> Path:
        return self.interim / "schema.json"

    @property
    def folds_csv(self) -> Path:
        return self.root / "data" / "processed" / "folds.csv"

    @property
    def folds_fingerprint(self) -> Path:
        return self.folds_csv.with_suffix(".json")

    @property
    def folds_report(self) -> Path:
        return self.reports / "folds.json"

    @property
    def embeddings_cache(self) -> Path:
        return self.interim / "embeddings"

    @property
    def pretrained_cache(self) -> Path:
        """Encoders pretrained on this competition's texts (train.pretrain_steps), one folder per
        (backbone, texts digest, steps, masked-LM settings): pipeline.modeling.pretrain."""
        return self.interim / "pretrained"

    def augmented(self, method: str) -> Path:
        return self.interim / "augmented" / f"{check_name(method, 'augment method')}.parquet"

    @property
    def bt_cache(self) -> Path:
        return self.interim / "augmented" / "cache"

    @property
    def ct2_cache(self) -> Path:
        """CTranslate2 conversions of the Marian models (converted once, offline)."""
        return self.interim / "augmented" / "ct2"

    @property
    def embedded_meta(self) -> Path:
        return self.embedded / "meta.json"

    # model selection and tuning
    @property
    def selection_csv(self) -> Path:
        return self.reports / "model_selection.csv"

    @property
    def selected_json(self) -> Path:
        return self.reports / "selected.json"

    @property
    def runs_json(self) -> Path:
        """The runs train --plan trains (what select and tune chose)."""
        return self.reports / "runs.json"

    @property
    def plan_json(self) -> Path:
        """The time-budget plan: per stage and run, estimated and actual seconds, and the cuts."""
        return self.reports / "plan.json"

    @property
    def paces_json(self) -> Path:
        """What this machine measured for the plan (make plan PACES=<file> plans from one)."""
        return self.reports / "paces.json"

    @property
    def throughput_json(self) -> Path:
        """Measured throughput of each candidate on this machine (the planner's cache)."""
        return self.interim / "throughput.json"

    def tune_dir(self, study: str) -> Path:
        return self.inside(self.root / "tune" / check_name(study, "tune study"))

    def tune(self, study: str) -> TunePaths:
        return TunePaths(self.tune_dir(study))

    def tune_studies(self) -> list[TunePaths]:
        """Every search that wrote its summary (tune/<run>/best.json)."""
        return [TunePaths(p.parent) for p in sorted((self.root / "tune").glob("*/best.json"))]

    def generated_config(self, run: str) -> Path:
        return self.generated_configs / f"{check_name(run, 'train.run')}.yaml"

    @property
    def generated_configs(self) -> Path:
        return self.root / "configs" / "generated"

    # runs, ensembles, submission
    def run_dir(self, run: str) -> Path:
        return self.inside(self.models / check_name(run, "train.run"))

    def bundle_dir(self, name: str) -> Path:
        return self.inside(self.root / "dist" / check_name(name, "package.name"))

    def fold_dir(self, run: str, k: int) -> Path:
        return self.run(run).fold(k).dir

    def run(self, run: str) -> RunPaths:
        return RunPaths(self.run_dir(run))

    def runs_with_cv(self) -> list[RunPaths]:
        """Run folders holding a cv.json (published or not: the caller checks manifests)."""
        return [RunPaths(p.parent) for p in sorted(self.models.glob("*/cv.json"))]

    @property
    def models(self) -> Path:
        return self.root / "models"

    def ensemble_dir(self, name: str) -> Path:
        return self.inside(self.root / "ensembles" / check_name(name, "ensemble.name"))

    def ensemble(self, name: str) -> EnsemblePaths:
        return EnsemblePaths(self.ensemble_dir(name))

    def ensembles_with_cv(self) -> list[EnsemblePaths]:
        return [EnsemblePaths(p.parent) for p in sorted((self.root / "ensembles").glob("*/cv.json"))]

    @property
    def submission(self) -> Path:
        return self.root / "submissions" / "submission.csv"

    @property
    def submission_json(self) -> Path:
        return self.root / "submissions" / "submission.json"
