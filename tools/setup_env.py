"""Where `make setup` installs: the active virtualenv or conda environment, else `.venv` here.

Usage: python3 tools/setup_env.py which         # print the interpreter every make target uses
       python3 tools/setup_env.py ensure        # the same, creating .venv first when it is the choice

Standard library only: it runs before anything is installed. A system Python is never
installed into (Debian 12 / Ubuntu 24.04 refuse it, PEP 668 "externally-managed-environment",
and it would need root); `.venv` is made with --system-site-packages, so a torch that the
machine already has (a GPU image's CUDA build) is used instead of downloaded again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PROBE = ("import json, os, sys, sysconfig; print(json.dumps({'prefix': sys.prefix, 'base_prefix': sys.base_prefix, "
         "'stdlib': sysconfig.get_path('stdlib'), 'version': list(sys.version_info[:2]), "
         "'conda': os.path.isdir(os.path.join(sys.prefix, 'conda-meta'))}))")


@dataclass(frozen=True)
class Facts:
    """What an interpreter says about itself."""
    prefix: str
    base_prefix: str
    stdlib: str
    version: tuple[int, int]
    conda: bool

    @property
    def in_venv(self) -> bool:
        return self.prefix != self.base_prefix

    @property
    def externally_managed(self) -> bool:
        # PEP 668: the marker sits in the stdlib directory; a virtualenv is exempt
        return not self.in_venv and (Path(self.stdlib) / "EXTERNALLY-MANAGED").exists()


@dataclass(frozen=True)
class Decision:
    python: Path
    create_venv: bool
    reason: str


def probe(python: str) -> Facts:
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    d = json.loads(out.strip().splitlines()[-1])
    return Facts(d["prefix"], d["base_prefix"], d["stdlib"], tuple(d["version"]), bool(d["conda"]))


def _bin(prefix: str | Path) -> Path:
    return Path(prefix) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def decide(env: Mapping[str, str], project: Path, facts: Facts) -> Decision:
    """Active virtualenv > active conda env > the interpreter itself when it is a venv or conda
    env > the project's .venv (made when missing)."""
    if env.get("VIRTUAL_ENV") and _bin(env["VIRTUAL_ENV"]).exists():
        return Decision(_bin(env["VIRTUAL_ENV"]), False, f"the active virtualenv {env['VIRTUAL_ENV']}")
    if env.get("CONDA_PREFIX") and _bin(env["CONDA_PREFIX"]).exists():
        return Decision(_bin(env["CONDA_PREFIX"]), False, f"the active conda environment {env['CONDA_PREFIX']}")
    if facts.in_venv or facts.conda:
        kind = "virtualenv" if facts.in_venv else "conda environment"
        return Decision(_bin(facts.prefix), False, f"python3 runs in the {kind} {facts.prefix}")
    venv = project / ".venv"
    why = ("python3 is externally managed (PEP 668)" if facts.externally_managed
           else "no virtualenv or conda environment is active")
    return Decision(_bin(venv), not _bin(venv).exists(), f"{why}: the project's own {venv}")


def create_venv(base_python: str, venv: Path) -> None:
    cmd = [base_python, "-m", "venv", "--system-site-packages", str(venv)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode == 0:
        return
    shutil.rmtree(venv, ignore_errors=True)
    uv = shutil.which("uv")
    if uv and subprocess.run([uv, "venv", "--seed", "--system-site-packages", "--python", base_python,
                              str(venv)]).returncode == 0:
        return
    last = (done.stderr.strip().splitlines() or ["failed"])[-1]
    raise SystemExit(f"error: could not create {venv} with `{' '.join(cmd)}` ({last}); on Debian/Ubuntu "
                     "`apt install python3-venv`, or install uv, or activate any virtualenv/conda env and rerun")


def ensure(env: Mapping[str, str], project: Path, base_python: str) -> Decision:
    facts = probe(base_python)
    if facts.version < (3, 11):
        raise SystemExit(f"error: {base_python} is Python {facts.version[0]}.{facts.version[1]}; textcomp needs "
                         ">= 3.11 (set PYTHON=/path/to/python3.11 or activate an environment that has it)")
    d = decide(env, project, facts)
    if d.create_venv:
        create_venv(base_python, d.python.parents[1])
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["which", "ensure"])
    p.add_argument("--base", default=sys.executable, help="the interpreter a new .venv is made from")
    p.add_argument("--project", default=str(PROJECT))
    args = p.parse_args(argv)
    project = Path(args.project)
    if args.action == "which":
        d = decide(os.environ, project, probe(args.base))
    else:
        d = ensure(os.environ, project, args.base)
        sys.stderr.write(f"setup: installing into {d.python} ({d.reason})\n")
    sys.stdout.write(f"{d.python}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
