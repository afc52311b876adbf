"""tune against a real PostgreSQL server started by the test (skipped where there is none)."""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import run_stage

BIN = Path("/usr/lib/postgresql")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(BIN.glob(f"*/bin/{name}"))
    return str(cands[-1]) if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    import tempfile

    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server binaries on this machine")
    pytest.importorskip("psycopg2")
    top = Path(tempfile.mkdtemp(prefix="textcomp-pg-"))  # pytest's tmp dirs are private to root
    data = top / "pg"
    data.mkdir()
    run_as = []
    if os.geteuid() == 0:  # postgres refuses to run as root: use the postgres account
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a postgres account")
        shutil.chown(data, "postgres")
        os.chmod(top, 0o755)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-o", f"-p {port} -k {data} -h 127.0.0.1", "-w", "start",
                    "-l", str(data / "log")], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        time.sleep(0.2)
        shutil.rmtree(top, ignore_errors=True)


def test_two_tune_runs_share_one_postgres_study(prepared, tmp_path, postgres):
    data, workdir = prepared
    (tmp_path / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n")
    assert run_stage("select", workdir, data, f"select.candidates=[{tmp_path}/lr.yaml]") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=2", f"tune.storage={postgres}") == 0
    # a second worker (here: a second workdir) pointed at the same storage joins the same study
    other = tmp_path / "other"
    shutil.copytree(workdir, other)
    shutil.rmtree(other / "tune")
    assert run_stage("tune", other, data, "tune.n_trials=3", f"tune.storage={postgres}") == 0
    best = json.loads((other / "tune/lr/best.json").read_text())
    assert best["trials"] == 3
    assert best["study"] == json.loads((workdir / "tune/lr/best.json").read_text())["study"]  # same data, same key
    import optuna

    assert len(optuna.load_study(study_name=best["study"], storage=postgres).trials) == 3
    assert not (other / "tune/lr/study.db").exists()
