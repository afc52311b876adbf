"""`make setup` never installs into a system Python: the active venv/conda env, else .venv."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    """tools/setup_env.py: install tooling, outside the package (it runs before anything is installed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("setup_env", ROOT / "tools" / "setup_env.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["setup_env"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_tool = _load_tool()
Facts, decide, ensure = _tool.Facts, _tool.decide, _tool.ensure


def _facts(tmp: Path, **kw) -> Facts:
    base = dict(prefix="/usr", base_prefix="/usr", stdlib=str(tmp), version=(3, 11), conda=False)
    base.update(kw)
    return Facts(**base)


def _fake_python(tmp: Path, marker: bool) -> Path:
    """An interpreter that answers the probe like Debian's system python3 (prefix /usr, its
    stdlib folder holding PEP 668's EXTERNALLY-MANAGED marker) and runs everything else
    with the real interpreter, so `-m venv` really makes a virtualenv."""
    stdlib = tmp / "stdlib"
    stdlib.mkdir()
    if marker:
        (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use a venv\n")
    facts = {"prefix": "/usr", "base_prefix": "/usr", "stdlib": str(stdlib), "version": [3, 11], "conda": False}
    script = tmp / "python3"
    script.write_text(f"#!/bin/sh\nif [ \"$1\" = -c ]; then echo '{json.dumps(facts)}'; exit 0; fi\n"
                      f"exec {sys.executable} \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_externally_managed_python_gets_a_project_venv(tmp_path):
    fake = _fake_python(tmp_path, marker=True)
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    d = ensure(env, project, str(fake))
    assert d.python == project / ".venv/bin/python" and d.create_venv
    assert "externally managed (PEP 668)" in d.reason
    # a real virtualenv that sees the machine's packages (torch is not downloaded again)
    # (the base interpreter's site-packages on its path: that is where a machine's torch lives;
    # which packages are there differs between machines, so none is named)
    base_site = subprocess.run([sys.executable, "-c", "import sys, sysconfig; print(sysconfig.get_paths("
                                "vars={'base': sys.base_prefix, 'platbase': sys.base_prefix})['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    out = subprocess.run([str(d.python), "-c", f"import sys; print(sys.prefix != sys.base_prefix, {base_site!r} in sys.path)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "True True", out.stderr
    again = ensure(env, project, str(fake))
    assert again.python == d.python and not again.create_venv  # made once, then reused


def test_active_environments_win(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").touch()
    managed = _facts(tmp_path)
    (tmp_path / "EXTERNALLY-MANAGED").touch()
    assert managed.externally_managed
    assert decide({"VIRTUAL_ENV": str(venv)}, tmp_path, managed).python == venv / "bin/python"
    assert decide({"CONDA_PREFIX": str(venv)}, tmp_path, managed).python == venv / "bin/python"
    # python3 itself runs inside a venv (PATH points into it, nothing exported): that one
    inside = _facts(tmp_path, prefix=str(venv), base_prefix="/usr")
    assert not inside.externally_managed  # PEP 668: a virtualenv is exempt
    d = decide({}, tmp_path, inside)
    assert d.python == venv / "bin/python" and not d.create_venv
    conda_base = _facts(tmp_path, prefix=str(venv), base_prefix=str(venv), conda=True)
    assert decide({}, tmp_path, conda_base).python == venv / "bin/python"


def test_plain_system_python_is_not_installed_into(tmp_path):
    d = decide({}, tmp_path, _facts(tmp_path / "nowhere"))
    assert d.python == tmp_path / ".venv/bin/python" and d.create_venv
    assert "no virtualenv or conda environment is active" in d.reason


def test_old_python_is_refused_with_what_to_do(tmp_path):
    import pytest

    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho '{\"prefix\": \"/usr\", \"base_prefix\": \"/usr\", \"stdlib\": \"/x\", "
                    "\"version\": [3, 9], \"conda\": false}'\n")
    fake.chmod(0o755)
    with pytest.raises(SystemExit, match="needs >= 3.11"):
        ensure({}, tmp_path, str(fake))
