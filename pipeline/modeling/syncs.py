"""Counting the host's reads of device values, for the tests and the GPU check.

On a GPU every Python-level read of a tensor's value (``.item()``, ``.cpu()``, ``.tolist()``,
``float(t)``, ``if t:`` ...) blocks the host until the device has finished all the work queued
before it: the next step's kernels cannot be queued while this one runs. ``HostSyncs`` counts
those calls (on CPU too: the same calls a GPU would wait on), each against the innermost marked
region, and ``training_loop_syncs`` fits a fold with the trainer's regions marked: inside an
epoch only the doctor's reads and the evaluations may read the device.
"""

from __future__ import annotations

import functools
import traceback
from typing import Any

import torch

SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class HostSyncs:
    """A context that counts reads of tensor values by region (``mark``). On a CUDA device it
    also counts the synchronisations CUDA itself reports (``torch.cuda.set_sync_debug_mode``):
    those made inside torch's own operators, which no Python-level patch sees."""

    def __init__(self) -> None:
        self.cuda_counts: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.where: list[tuple[str, str]] = []
        self.regions: list[str] = ["outside"]
        self._saved: dict[str, Any] = {}
        self._marks: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> HostSyncs:
        for name in SYNC_METHODS:
            orig = getattr(torch.Tensor, name)
            self._saved[name] = orig

            def counted(t: torch.Tensor, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
                region = self.regions[-1]
                self.counts[region] = self.counts.get(region, 0) + 1
                # the first caller outside torch's own Python (Tensor.__contains__ calls .item())
                frame = next((f for f in reversed(traceback.extract_stack(limit=8)[:-1])
                              if "/torch/" not in f.filename), None)
                self.where.append((region, f"{_name} at {frame.filename}:{frame.lineno}" if frame else _name))
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, counted)
        if torch.cuda.is_available():
            import warnings

            self._warnings = warnings.catch_warnings()
            self._warnings.__enter__()
            warnings.simplefilter("always")
            shown = warnings.showwarning

            def show(message: Any, *a: Any, **k: Any) -> None:
                if "synchroniz" in str(message):
                    region = self.regions[-1]
                    self.cuda_counts[region] = self.cuda_counts.get(region, 0) + 1
                else:
                    shown(message, *a, **k)

            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
            self._warnings.__exit__(*exc)
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
        for obj, attr, inner in reversed(self._marks):
            setattr(obj, attr, inner)
        self._marks = []

    def mark(self, obj: Any, attr: str, region: str) -> None:
        """Count the reads inside ``obj.attr`` (a method or function) against ``region``."""
        inner = getattr(obj, attr)

        @functools.wraps(inner)
        def wrapped(*a: Any, **k: Any) -> Any:
            self.regions.append(region)
            try:
                return inner(*a, **k)
            finally:
                self.regions.pop()

        self._marks.append((obj, attr, inner))
        setattr(obj, attr, wrapped)


def training_loop_syncs(trainer: Any, data: Any, tokenizer: Any) -> tuple[HostSyncs, Any]:
    """Fit ``trainer`` (a FoldTrainer) on ``data``, counting host reads inside an epoch
    ("loop"), the doctor's reads ("doctor") and evaluations ("eval")."""
    from pipeline.modeling import step as step_
    from pipeline.modeling.transformer import FoldTrainer

    syncs = HostSyncs()
    with syncs:
        syncs.mark(FoldTrainer, "_epoch", "loop")
        syncs.mark(step_.Meter, "read", "doctor")
        syncs.mark(FoldTrainer, "_evaluate", "eval")
        out = trainer.fit(data, tokenizer)
    return syncs, out
