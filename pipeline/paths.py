"""Every artifact path, spelled once. No other module builds a path by hand."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RAW_FILES = ("train.csv", "test.csv", "sample_submission.csv")


@dataclass(frozen=True)
class Paths:
    root: Path  # the work directory: artifacts live below it
    raw: Path  # the competition's folder (train.csv, test.csv, sample_submission.csv)

    @classmethod
    def make(cls, root: Path | str = ".", data: Path | str | None = None) -> Paths:
        root = Path(root).resolve()
        raw = Path(data).expanduser().resolve() if data else root / "data" / "raw"
        return cls(root=root, raw=raw)

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
        return self.figures / f"{name}.png"

    @property
    def inspect_md(self) -> Path:
        return self.reports / "inspect.md"

    @property
    def inspect_json(self) -> Path:
        return self.reports / "inspect.json"

    def stage_config(self, stage: str) -> Path:
        return self.reports / "configs" / f"{stage}.yaml"

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

    def augmented(self, method: str) -> Path:
        return self.interim / "augmented" / f"{method}.parquet"

    @property
    def bt_cache(self) -> Path:
        return self.interim / "augmented" / "cache"

    # model selection and tuning
    @property
    def selection_csv(self) -> Path:
        return self.reports / "model_selection.csv"

    @property
    def selected_json(self) -> Path:
        return self.reports / "selected.json"

    @property
    def plan_json(self) -> Path:
        return self.reports / "plan.json"

    def tune_dir(self, study: str) -> Path:
        return self.root / "tune" / study

    @property
    def generated_configs(self) -> Path:
        return self.root / "configs" / "generated"

    # runs, ensembles, submission
    def run_dir(self, run: str) -> Path:
        return self.root / "models" / run

    @property
    def models(self) -> Path:
        return self.root / "models"

    def ensemble_dir(self, name: str) -> Path:
        return self.root / "ensembles" / name

    @property
    def submission(self) -> Path:
        return self.root / "submissions" / "submission.csv"

    @property
    def submission_json(self) -> Path:
        return self.root / "submissions" / "submission.json"
