"""What a run was made with: the Python, the platform, the git revision, the packages."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]

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


def git_state() -> tuple[str | None, bool | None]:
    """The project's full commit and whether its tracked files differ from it (None without git)."""
    try:
        head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, None
    if head.returncode != 0:
        return None, None
    return head.stdout.strip(), bool(dirty.stdout.strip())


def git_diff_digest() -> str | None:
    """The digest of the uncommitted changes to tracked files (None on a clean tree or without
    git): two dirty trees with the same digest hold the same code."""
    import hashlib

    try:
        diff = subprocess.run(["git", "-C", str(PROJECT), "diff", "HEAD", "--binary"], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if diff.returncode != 0 or not diff.stdout:
        return None
    return hashlib.sha256(diff.stdout).hexdigest()[:16]
