"""BENCHMARKS.md's summary is what benchmarks/summary.py makes of benchmarks/results/*.json,
every row's JSON exists, and the README stays one screen that links every topic page."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import summary  # noqa: E402


def test_the_summary_table_is_regenerated_from_the_results_and_every_row_cites_an_existing_json():
    text = (ROOT / "BENCHMARKS.md").read_text()
    table = text.split(summary.START, 1)[1].split(summary.END, 1)[0].strip()
    assert table == summary.table(), "BENCHMARKS.md is stale: run `make bench-summary`"
    rows = [ln for ln in table.splitlines()[2:]]
    assert len(rows) >= 10
    for row in rows:
        src = re.search(r"\]\((benchmarks/results/[^)]+\.json)\)", row)
        assert src and (ROOT / src.group(1)).exists(), row
        assert "(no reader yet)" not in row, f"a results file has no reader in benchmarks/summary.py: {row}"


def test_every_note_linked_from_benchmarks_exists():
    text = (ROOT / "BENCHMARKS.md").read_text()
    links = re.findall(r"\]\((benchmarks/notes/[^)]+)\)", text)
    assert links and all((ROOT / link).exists() for link in links)
    assert {p.name for p in (ROOT / "benchmarks/notes").glob("*.md")} == {Path(link).name for link in links}


def test_the_readme_is_one_screen_with_the_own_data_command_early_and_every_topic_page_linked():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert any("make all DATA=" in ln for ln in lines[:40])
    linked = set(re.findall(r"\]\(docs/([^)#]+)\)", "\n".join(lines)))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}
    blocks = re.findall(r"```bash\n(.*?)```", "\n".join(lines), re.S)
    assert blocks[0].strip().splitlines()[0].startswith("make all") and \
        blocks[0].strip().splitlines()[1].startswith("make test")
