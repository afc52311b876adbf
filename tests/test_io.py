import pytest

from pipeline.core.files import atomic_path, write_text


def test_atomic_write_keeps_previous_artifact_on_crash(tmp_path):
    target = tmp_path / "artifact.txt"
    write_text(target, "good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("killed midway")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact.txt"]  # no temp file left behind
