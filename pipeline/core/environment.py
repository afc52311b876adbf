"""What a run was made with: the Python, the platform, the git revision, the packages."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = ("torch", "transformers", "scikit-learn", "pandas", "numpy", "optuna", "nlpaug", "ftfy")


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        rev = None
    return {"python": platform.python_version(), "platform": platform.platform(), "git": rev,
            "packages": versions}


def git_commit() -> str | None:
    return environment()["git"]
