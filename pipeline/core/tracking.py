"""The experiment tracker: every train run, ensemble and submission logged to MLflow.

Each is one MLflow run in the experiment ``textcomp-<competition>`` (or ``track.experiment``):
the resolved config as params (the keys that differ from the defaults, plus the fingerprint),
the CV and its companions as metrics (per fold as steps), the run's files as artifacts, and
tags for the kind, the competition, the config and data fingerprints, the commit and whether the
tree was dirty. Query with MLflow's own API (``mlflow.search_runs``) or browse with ``make
mlflow-ui``.

The store: ``MLFLOW_TRACKING_URI`` where it is set (a team's tracking server, a shared database),
else a SQLite file inside the work directory, ``mlruns/mlflow.db``, with artifacts under
``mlruns/artifacts/``. ``track.enabled=false`` or ``TEXTCOMP_TRACK=0`` turns it off.

A run never fails because tracking did: the first error is one warning (once per ``make``
invocation, however many stages hit it), and the process stops trying.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.core.config import Config, diff_dict
from pipeline.core.environment import git_state
from pipeline.core.paths import Paths
from pipeline.core.transaction import load_manifest, value_digest

log = logging.getLogger(__name__)
_failed = False  # after one error this process stops trying (a dead server would cost a timeout per call)


def enabled(cfg: Config) -> bool:
    return cfg.track.enabled and os.environ.get("TEXTCOMP_TRACK", "1") != "0" and not _failed


def store_dir(paths: Paths) -> Path:
    return paths.root / "mlruns"


def tracking_uri(paths: Paths) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_dir(paths) / 'mlflow.db'}"


def competition_of(paths: Paths) -> str:
    """The competition's name as the user gave it: DATA's folder name, or the slug of Kaggle's
    ``<slug>.zip``; "embedded" for the embedded default (an empty data/raw); for files dropped
    into data/raw, the zip's slug there, else the work directory's name."""
    from pipeline.core.sources import _visible

    raw = paths.raw
    if raw.suffix.lower() == ".zip":
        return raw.stem
    if raw != paths.root / "data" / "raw":
        return raw.name
    entries = _visible(raw) if raw.is_dir() else []
    if not entries:
        return "embedded"
    zips = [p for p in entries if p.suffix.lower() == ".zip"]
    return zips[0].stem if len(zips) == 1 and len(entries) == 1 else paths.root.name


def experiment_name(cfg: Config, competition: str) -> str:
    return cfg.track.experiment or f"textcomp-{competition}"


def config_params(cfg: Config) -> dict[str, str]:
    """The config as MLflow params: each key that differs from the defaults, flattened."""
    out = {f"{section}.{k}": _short(v) for section, values in diff_dict(cfg).items() for k, v in values.items()}
    out["config_fingerprint"] = value_digest(cfg.to_dict())[:12]
    return out


def _short(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def _client(paths: Paths) -> Any:
    from mlflow.tracking import MlflowClient

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        store_dir(paths).mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri(paths))


def _experiment_id(client: Any, paths: Paths, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    local = None if os.environ.get("MLFLOW_TRACKING_URI") else (store_dir(paths) / "artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=local)


def log_run(cfg: Config, paths: Paths, kind: str, name: str, *, metrics: dict[str, float | None] | None = None,
            steps: dict[str, list[tuple[int, float]]] | None = None, params: dict[str, Any] | None = None,
            tags: dict[str, str] | None = None, artifacts: Iterable[Path] = (),
            competition: str | None = None) -> str | None:
    """One finished train run / ensemble / submission as an MLflow run; its id, or None when
    tracking is off or failed (a warning, never an error)."""
    if not enabled(cfg):
        return None
    try:
        from mlflow.entities import Metric, Param

        client = _client(paths)
        competition = competition or competition_of(paths)
        exp = _experiment_id(client, paths, experiment_name(cfg, competition))
        commit, dirty = git_state()
        clean = load_manifest(paths, "clean")
        all_tags = {"mlflow.runName": name, "textcomp.kind": kind, "textcomp.competition": competition,
                    "textcomp.config_fingerprint": value_digest(cfg.to_dict())[:12],
                    "textcomp.data_fingerprint": clean.digest[:12] if clean else "-",
                    "textcomp.dirty": str(dirty), "textcomp.workdir": str(paths.root),
                    **({"mlflow.source.git.commit": commit} if commit else {}), **(tags or {})}
        run = client.create_run(exp, run_name=name, tags=all_tags)
        rid = run.info.run_id
        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None]
        ms += [Metric(k, float(v), now, int(s)) for k, pts in (steps or {}).items() for s, v in pts]
        ps = [Param(k, _short(v)) for k, v in {**config_params(cfg), **(params or {})}.items()]
        for i in range(0, len(ps), 100):  # log_batch takes at most 100 params, 1000 metrics a call
            client.log_batch(rid, params=ps[i:i + 100])
        for i in range(0, len(ms), 1000):
            client.log_batch(rid, metrics=ms[i:i + 1000])
        log_artifacts(paths, rid, artifacts, client)
        client.set_terminated(rid)
        log.info("tracker: %s %s logged (run %s, %s)", kind, name, rid[:8], _where(paths))
        return rid
    except Exception as e:  # noqa: BLE001 - tracking is a record, never the reason a run fails
        _warn(paths, e)
        return None


def log_artifacts(paths: Paths, run_id: str | None, files: Iterable[Path], client: Any = None) -> None:
    """Files (or folders) attached to an existing tracker run; a failure is the one warning."""
    if not run_id or _failed:
        return
    try:
        client = client or _client(paths)
        for f in files:
            f = Path(f)
            if f.is_dir():
                client.log_artifacts(run_id, str(f), artifact_path=f.name)
            elif f.exists():
                client.log_artifact(run_id, str(f))
    except Exception as e:  # noqa: BLE001
        _warn(paths, e)


def _where(paths: Paths) -> str:
    uri = tracking_uri(paths)
    return uri if os.environ.get("MLFLOW_TRACKING_URI") else f"`make mlflow-ui` or mlflow ui --backend-store-uri {uri}"


def _warn(paths: Paths, e: Exception) -> None:
    """One warning per make invocation (its clock, TEXTCOMP_T0, marks it), else per process."""
    global _failed
    _failed = True
    marker = paths.root / ".make" / "tracker-warned"
    t0 = os.environ.get("TEXTCOMP_T0")
    try:
        if t0 and marker.exists() and marker.read_text() == t0:
            return
        if t0:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(t0)
    except OSError:
        pass
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    log.warning("tracker: not logged to %s (%s: %s); the run itself is unaffected (track.enabled=false or "
                "TEXTCOMP_TRACK=0 turns tracking off)", tracking_uri(paths), type(e).__name__, first)


def search(paths: Paths, experiment: str, filter_string: str = "") -> Any:
    """MLflow's own ``search_runs`` over this work directory's store (a DataFrame)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(paths))
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string)


def main(argv: list[str] | None = None) -> int:
    """`make mlflow-ui`: ``mlflow ui`` on this work directory's store. The UI is the full
    ``mlflow`` package (the project installs ``mlflow-skinny``, which logs and queries)."""
    import shutil
    import sys

    paths = Paths.make(os.environ.get("TEXTCOMP_WORKDIR") or ".")
    cmd = ["mlflow", "ui", "--backend-store-uri", tracking_uri(paths), "--port", os.environ.get("PORT", "5000")]
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    sys.stdout.write(" ".join(cmd) + "\n")
    try:
        os.execv(exe, cmd)
    except OSError as e:
        sys.stderr.write(f"error: {exe}: {e}; the browser UI needs the full package: pip install mlflow\n")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
