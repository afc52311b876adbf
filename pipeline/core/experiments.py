"""Experiment files: ``configs/exp/<name>.yaml``, each a diff over the base config.

A candidate (``select.candidates``) is a name under configs/exp/ of the work directory or,
failing that, of the directory make runs in (the project's own configs), or a path to a YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, read_yaml


def candidate_path(name: str, root: Path) -> Path:
    """The experiment file of a candidate."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    places = [root / "configs" / "exp" / f"{name}.yaml", Path.cwd() / "configs" / "exp" / f"{name}.yaml"]
    return next((p for p in places if p.exists()), places[0])


def candidate_diff(name: str, root: Path) -> tuple[dict[str, Any], Path]:
    """The candidate's diff (its run name defaults to the file's stem) and where it came from."""
    path = candidate_path(name, root)
    if not path.exists():
        raise ConfigError(f"select.candidates: {path} not found")
    diff = read_yaml(path)
    diff.setdefault("train", {}).setdefault("run", path.stem)
    return diff, path


def base_config_files(workdir: Path, extra: list[str]) -> list[Path]:
    """configs/base.yaml of the work directory, else of the directory make runs in, then ``extra``."""
    base = next((b for b in (workdir / "configs" / "base.yaml", Path.cwd() / "configs" / "base.yaml") if b.exists()),
                None)
    files = [base] if base else []
    return files + [Path(p) for p in extra if p]
