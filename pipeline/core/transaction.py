"""A stage's outputs as one transaction, and the manifest that says what they were made from.

A stage writes every output into ``.staging/<stage>/`` (same file system, mirrored layout),
then publishes: (1) it removes its old manifest, (2) renames each staged file onto its place,
(3) writes ``.manifests/<stage>.json`` last — the sha256 of every output and of everything
it read (upstream manifests, raw files, the config sections that matter). Killed before (1),
the previous outputs and manifest stand untouched; killed between (1) and (3), there is no
manifest and every reader refuses; after (3), the new set is complete.

A reader calls ``require``: the upstream manifest must exist, its outputs must hash as
recorded (no mixed set), and what *it* read must still be current (no stale chain), else a
one-line error names the stage to re-run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.core.files import DataError, write_json
from pipeline.core.paths import Paths, check_name

log = logging.getLogger(__name__)


class StaleInput(DataError):
    """An artifact that is missing, half-published, or made from inputs that have changed."""


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value_digest(value: object) -> str:
    """The digest of a config section (or any JSON-able value)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Manifest:
    stage: str
    inputs: dict[str, str]  # "manifest:<stage>" / "file:<path>" / "config:<what>" -> sha256
    outputs: dict[str, str]  # path relative to the work directory -> sha256
    time: str = ""

    @property
    def digest(self) -> str:
        return value_digest({"stage": self.stage, "inputs": self.inputs, "outputs": self.outputs})


def _target(stage: str) -> str:
    return "make " + stage.split("-", 1)[0]  # train-<run> -> make train, ensemble-<name> -> make ensemble


def published(paths: Paths, prefix: str) -> list[str]:
    """Names of the ``<prefix>-<name>`` stages that have published (e.g. every finished run)."""
    return sorted(p.stem.removeprefix(f"{prefix}-") for p in paths.manifests.glob(f"{prefix}-*.json"))


def load_manifest(paths: Paths, stage: str) -> Manifest | None:
    path = paths.manifest(stage)
    if not path.exists():
        return None
    return Manifest(**json.loads(path.read_text()))


def require(paths: Paths, stage: str, check_inputs: bool = True) -> Manifest:
    """The complete, current outputs of ``stage``, or a one-line error naming what to re-run."""
    m = load_manifest(paths, stage)
    if m is None:
        raise StaleInput(f"{paths.manifest(stage)}: no manifest for stage {stage!r} (never run, or killed while "
                         f"publishing); run `{_target(stage)}`")
    for rel, digest in m.outputs.items():
        path = paths.root / rel
        if not path.exists() or file_digest(path) != digest:
            raise StaleInput(f"{path}: not the file stage {stage!r} published (a half-finished publish or an "
                             f"edit by hand); run `{_target(stage)}` again")
    if check_inputs:
        for key, digest in m.inputs.items():
            if not key.startswith("manifest:"):
                continue
            up = key.split(":", 1)[1]
            current = load_manifest(paths, up)
            if current is None or current.digest != digest:
                raise StaleInput(f"stage {stage!r} is stale: {up!r} has changed since it ran; run `{_target(stage)}` "
                                 "again")
    return m


def inputs_of(paths: Paths, stages: list[str], files: dict[str, Path] | None = None,
              config: dict[str, Any] | None = None) -> dict[str, str]:
    """What a stage reads, as digests: upstream manifests (required, so checked), files, config."""
    out = {f"manifest:{s}": require(paths, s).digest for s in stages}
    for name, p in (files or {}).items():
        if not Path(p).exists():
            raise DataError(f"{p}: file not found")
        out[f"file:{name}"] = file_digest(p)
    out.update({f"config:{name}": value_digest(v) for name, v in (config or {}).items()})
    return out


class Transaction:
    """``with publish(paths, "clean", inputs) as tx: write_parquet(tx.path(paths.train_clean), df)``."""

    def __init__(self, paths: Paths, stage: str, inputs: dict[str, str]) -> None:
        self.paths = paths
        self.stage = check_name(stage, "stage")
        self.inputs = inputs
        self.staging = paths.staging(stage)

    def path(self, final: Path) -> Path:
        """Where to write the file that will be published as ``final`` (a folder works too:
        everything written below the staged folder is published below ``final``)."""
        rel = Path(self.paths.inside(final)).resolve().relative_to(self.paths.root.resolve())
        staged = self.staging / rel
        staged.parent.mkdir(parents=True, exist_ok=True)
        return staged

    def commit(self) -> Manifest:
        staged = sorted(p for p in self.staging.rglob("*") if p.is_file()) if self.staging.exists() else []
        outputs = {p.relative_to(self.staging).as_posix(): file_digest(p) for p in staged}
        manifest_path = self.paths.manifest(self.stage)
        manifest_path.unlink(missing_ok=True)  # from here until the new one is written, readers refuse
        for p in staged:
            final = self.paths.root / p.relative_to(self.staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, final)
        m = Manifest(stage=self.stage, inputs=self.inputs, outputs=outputs,
                     time=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(manifest_path, asdict(m))
        self.paths.remove_tree(self.staging)
        return m


@contextmanager
def publish(paths: Paths, stage: str, inputs: dict[str, str]) -> Iterator[Transaction]:
    """Stage the outputs; publish them all, manifest last, only if the block succeeds."""
    tx = Transaction(paths, stage, inputs)
    paths.remove_tree(tx.staging)  # what a killed run left half-written
    try:
        yield tx
        tx.commit()
    finally:
        if tx.staging.exists():
            paths.remove_tree(tx.staging)
