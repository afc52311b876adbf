"""python -m pipeline <stage> [options]: run one stage of the competition pipeline."""

from __future__ import annotations

import importlib
import sys

STAGES = {
    "inspect": ("pipeline.stages.inspection", "data report: shape, duplicates, balance, lengths, noise, shift"),
    "clean": ("pipeline.stages.clean", "switchable text cleaning of train and test"),
    "plan": ("pipeline.stages.plan", "fit the flow to a time budget (TIME=30m) from measured throughput"),
    "folds": ("pipeline.stages.folds", "stratified k-fold split with duplicates kept together"),
    "augment": ("pipeline.stages.augment", "back-translation and nlpaug augmentation of training rows"),
    "select": ("pipeline.stages.selection", "screen candidate models on a short budget and rank them"),
    "tune": ("pipeline.stages.tune", "Optuna hyper-parameter search with pruning"),
    "train": ("pipeline.stages.train", "k-fold training: out-of-fold and test predictions"),
    "lr-find": ("pipeline.stages.lr_find", "learning-rate range test with a suggested LR"),
    "ensemble": ("pipeline.stages.ensemble", "weights fitted on out-of-fold predictions, threshold tuning"),
    "submit": ("pipeline.stages.submit", "write and validate submission.csv"),
    "report": ("pipeline.stages.report", "one page for the whole competition"),
    "package": ("pipeline.stages.package", "offline inference bundle (predict.py + models) for code competitions"),
}


def usage() -> str:
    width = max(map(len, STAGES))
    lines = ["usage: python -m pipeline <stage> [--help] [options]", "", "stages:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in STAGES.items()]
    lines += ["", "Each stage is also `python -m pipeline.<module>` and `make <stage>`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage() + "\n")
        return 0 if argv else 2
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        sys.stderr.write(f"error: unknown stage {stage!r}\n\n{usage()}\n")
        return 2
    module = importlib.import_module(STAGES[stage][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
