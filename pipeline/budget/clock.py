"""The budget's clock, and whether a timing was taken while other processes shared the CPU."""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

from pipeline.budget.plans import STAGES_AFTER_TRAIN

if TYPE_CHECKING:
    from pipeline.budget.plans import Plan

GRACE = 0.05  # share of the budget a run may overrun to finish its last fold(s)
SHARED = 0.10  # other processes' share of the machine's CPU above which a timing measured them too


def disturbed(share: float | None) -> bool:
    """Whether a timing that other processes took ``share`` of the CPU during measured them too."""
    return share is not None and share > SHARED


CGROUP_V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"  # -1 unless a quota is set


def machine_cpu_s(stat: str = "/proc/stat", cpu_max: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """CPU seconds every process on this machine has used so far (Linux ``/proc/stat``; steal
    time counts: another guest had the core), else None. None too where this process does not
    see the whole machine: a container whose ``/proc/stat`` counts more cores than it may run
    on, or that a CPU quota caps, would count other tenants' work as a disturbance."""
    try:
        with open(stat) as f:
            lines = f.read().splitlines()
        ticks = [int(x) for x in lines[0].split()[1:9]]
        cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
        if cores != len(os.sched_getaffinity(0)) or len(ticks) < 5:
            return None
        if os.path.exists(cpu_max):  # cgroup v2: "max 100000" unless a quota is set
            with open(cpu_max) as f:
                if not f.read().strip().startswith("max"):
                    return None
        if os.path.exists(CGROUP_V1_QUOTA):  # cgroup v1: -1 unless a quota is set
            with open(CGROUP_V1_QUOTA) as f:
                if f.read().strip() != "-1":
                    return None
    except (OSError, ValueError, IndexError, AttributeError):  # no sched_getaffinity off Linux
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


class Others:
    """``with Others() as o: ...`` -> ``o.share``: the share of the machine's CPU that other
    processes used while the block ran (0 = it had the machine to itself; 0.5 on 2 cores = one
    core busy with something else), so a timing taken then is known to be slow for a reason
    that may not last. None where the machine's counters cannot be read."""

    def __init__(self) -> None:
        self.share: float | None = None

    def __enter__(self) -> Others:
        self._t, self._busy, self._own = time.perf_counter(), machine_cpu_s(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, wall = machine_cpu_s(), time.perf_counter() - self._t
        if busy is None or self._busy is None or wall <= 0:
            return
        other = (busy - self._busy) - (time.process_time() - self._own)
        self.share = round(min(1.0, max(0.0, other / (wall * (os.cpu_count() or 1)))), 3)


T0_ENV = "TEXTCOMP_T0"  # make's start time (epoch seconds), exported once per `make` invocation


def started() -> float | None:
    v = os.environ.get(T0_ENV, "").strip()
    try:
        return float(v) if v else None
    except ValueError:
        return None


class Deadline:
    """When train must stop so that what follows it still fits in the budget.

    Only for the `make` invocation that made the plan (same T0): a stage rerun by hand later
    follows the plan's settings but not its clock."""

    def __init__(self, end: float | None, plan: Plan | None = None) -> None:
        self.end = end
        self.plan = plan

    @classmethod
    def load(cls, plan: Plan | None) -> Deadline:
        t0 = started()
        if not plan or t0 is None or plan.t0 != t0:
            return cls(None, plan)
        return cls(t0 + plan.budget_s - plan.estimate(STAGES_AFTER_TRAIN), plan)

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.time()

    def grace(self) -> float:
        """How far past the deadline a run may go to finish its last folds (an incomplete run
        is not blended, so stopping it one fold short throws all of it away): 5% of the budget."""
        return GRACE * float(self.plan.budget_s if self.plan else 0.0)
