"""The command line every stage shares: where the data is, which config, which overrides."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.budget import planfile
from pipeline.core.config import Config, ConfigError, diff_dict, dump_yaml, load_config
from pipeline.core.environment import environment
from pipeline.core.experiments import base_config_files
from pipeline.core.files import DataError, write_text
from pipeline.core.paths import PathError, Paths

log = logging.getLogger("pipeline")


ENV_PREFIX = "TEXTCOMP_"  # how make hands DATA, PROFILE, CONFIG, SET, FOLDS, WORKDIR over (never via a shell)


def env_args(env: dict[str, str] | None = None) -> list[str]:
    """Arguments from make's variables, placed before the command line's own (which win).

    Each value is one argument as it stands, spaces and quotes included; only SET is split,
    shell-style, by shlex here (never by a shell)."""
    import shlex

    env = dict(os.environ if env is None else env)
    get = lambda k: env.get(ENV_PREFIX + k, "")  # noqa: E731
    args: list[str] = []
    if get("WORKDIR"):
        args += ["--workdir", get("WORKDIR")]
    if get("DATA"):
        args += ["--data", get("DATA")]
    for key in ("PROFILE", "CONFIG"):
        if get(key):
            args += ["--config", auto_profile(get("PACES")) if key == "PROFILE" and get(key) == "auto" else get(key)]
    sets = shlex.split(get("SET"))
    # TIME / PRESET come first: a SET="budget.time=..." typed by hand still wins
    if get("PRESET"):
        sets.insert(0, f"budget.preset={get('PRESET')}")
    if get("TIME"):
        sets.insert(0, "budget.time=" + json.dumps(get("TIME")))  # a quoted YAML string: 90 stays "90"
    if get("PACES"):
        sets.insert(0, "budget.paces=" + json.dumps(get("PACES")))
    if get("FOLDS"):
        sets.append(f"train.folds=[{get('FOLDS')}]")
    if sets:
        args += ["--set", *sets]
    return args


def auto_profile(paces: str = "") -> str:
    """PROFILE=auto (make's default): configs/gpu.yaml where torch sees a CUDA device, else cpu.yaml;
    with PACES=<file>, the profile of the machine that file was recorded on."""
    if paces:
        try:
            return "configs/gpu.yaml" if json.loads(Path(paces).read_text())["machine"]["device"] == "cuda" \
                else "configs/cpu.yaml"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the plan stage says what is wrong with the file
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    return "configs/gpu.yaml" if gpu else "configs/cpu.yaml"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None,
                        help="competition folder with train.csv, test.csv, sample_submission.csv "
                             "(default: data/raw, or the embedded default when that is empty)")
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML file(s) of diffs over configs/base.yaml, applied in order")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides such as train.lr=2e-5 (must name an existing key)")
    parser.add_argument("--workdir", default=".", help="where artifacts are written (default: .)")
    parser.add_argument("--force", action="store_true", help="redo work even if outputs are up to date")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for noisy in ("matplotlib", "PIL", "urllib3", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_resolved(path: Path, cfg: Config, argv: list[str] | None) -> None:
    """The resolved config a stage ran with, its command line and environment."""
    header = {"command": " ".join(["python -m pipeline", *(argv or sys.argv[1:])]),
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(),
              "changed_from_defaults": diff_dict(cfg)}
    write_text(path, dump_yaml({"run": header, "config": cfg.to_dict()}))


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """make's variables first, then the command line: a --data or --workdir given by hand
    replaces make's, --config files and --set overrides are added after make's."""
    first = parser.parse_args(env_args())
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    args.config = [*first.config, *args.config]
    args.set = [*first.set, *args.set]
    for key in ("data", "workdir"):
        if getattr(args, key) == parser.get_default(key):
            setattr(args, key, getattr(first, key))
    return args


def up_to_date(stage: str, cfg: Config, paths: Paths, inputs: Callable[[Config, Paths], dict[str, str]]) -> bool:
    """The stage's published outputs are intact and were made from exactly today's inputs."""
    from pipeline.core.transaction import StaleInput, load_manifest, require

    m = load_manifest(paths, stage)
    if m is None:
        return False
    try:
        require(paths, stage)
        return m.inputs == inputs(cfg, paths)
    except (StaleInput, DataError, ConfigError):
        return False


def stage_main(stage: str, doc: str | None, run: Callable[..., Any], argv: list[str] | None = None,
               extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
               inputs: Callable[[Config, Paths], dict[str, str]] | None = None,
               manifest: Callable[[Config], str] | None = None) -> int:
    """Parse, load config, set up logging, call ``run(cfg, paths, **extra)``; errors become one line.

    With ``inputs`` (what the stage reads, as digests), a stage whose published outputs were
    made from exactly those inputs is not run again: make's DAG, by content rather than by
    timestamps, so a changed DATA, SET or config file re-runs what it touches and nothing else."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline {stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    if extra_args:
        extra_args(parser)
    args = _parse(parser, argv)
    setup_logging(args.quiet)
    extra = {k: v for k, v in vars(args).items()
             if k not in {"data", "config", "set", "workdir", "quiet"}}
    try:
        paths = Paths.make(args.workdir, args.data)
        cfg = load_config(base_config_files(paths.root, args.config), args.set)
        if stage not in ("inspect", "clean", "plan"):
            cfg = planfile.apply(cfg, paths)  # the time budget's plan, under the user's SET overrides
        published = manifest(cfg) if manifest else stage
        if inputs is not None and not extra.get("force") and up_to_date(published, cfg, paths, inputs):
            log.info("%s: up to date (its inputs have not changed since it ran); nothing to do (--force redoes it)",
                     stage)
            planfile.record(paths, stage)
            return 0
        write_resolved(paths.stage_config(stage), cfg, argv)
        run(cfg, paths, **extra)
        planfile.record(paths, stage)
    except (ConfigError, DataError, PathError, FileNotFoundError) as e:
        # one line, whatever a path in it holds
        log.error("%s", str(e).replace("\n", "\\n") if str(e) else type(e).__name__)
        return 2
    return 0
