"""Markdown the stages write, and the static HTML made from it, safe for data from the files.

Competition files are untrusted: a tweet, a keyword, a label or a column name can hold
``<script>``, ``"><img onerror=…>`` or ``[a](javascript:…)``. Two layers keep them text:
- data strings enter Markdown through ``md_escape`` / ``md_table``, which backslash-escape
  every character Markdown gives meaning to, so no data string forms a link, an image,
  emphasis, code or a table cell boundary;
- the HTML is rendered by markdown-it-py with raw HTML off (a ``<script>`` anywhere shows as
  text), links and images only to relative paths or http(s), and a Content-Security-Policy
  that forbids scripts, frames, objects and forms.
"""

from __future__ import annotations

import html
import math
import numbers
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from markdown_it import MarkdownIt

_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&\"'$])")
CSP = ("default-src 'none'; script-src 'none'; object-src 'none'; frame-src 'none'; form-action 'none'; "
       "base-uri 'none'; style-src 'unsafe-inline'; img-src 'self' file: data:")
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
         "font-size:13px}th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4}")


def md_escape(value: object) -> str:
    """A data string as literal Markdown text: one line, every Markdown character escaped."""
    text = " ".join(str(value).split())
    return _SPECIAL.sub(r"\\\1", text)


def md_cell(value: object, seconds: bool = False) -> str:
    """A table cell: seconds to 0.1 s, other fractions (scores) to 4 decimals, whole numbers as
    integers, a missing or non-finite number as "-"."""
    if value is None:
        return "-"
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        x = float(value)
        if not math.isfinite(x):
            return "-"
        if seconds:
            return f"{x:.1f}"
        return str(int(x)) if x.is_integer() else f"{x:.4f}"
    return md_escape(value)


def is_seconds(header: object) -> bool:
    """A column of durations, by its name: seconds, *_s, wall, time (s)."""
    h = str(header).lower()
    return "second" in h or h.endswith("_s") or h.endswith("(s)") or h in ("wall", "time", "estimate", "actual")


def md_table(rows: Iterable[Sequence[Any]], header: Sequence[Any]) -> str:
    """A Markdown table whose every cell (header included) is escaped data."""
    secs = [is_seconds(h) for h in header]
    lines = ["| " + " | ".join(md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(v, s) for v, s in zip(row, secs, strict=False)) + " |" for row in rows]
    return "\n".join(lines)


def safe_url(url: str) -> bool:
    """Relative paths and http(s) only: no javascript:, data:, file:, vbscript: or //host."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme:
        return parts.scheme.lower() in ("http", "https")
    return not url.startswith("//") and not url.startswith("\\")


def _renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.validateLink = safe_url
    return md


def to_html(markdown: str, title: str) -> str:
    """Static HTML of a Markdown page; links to sibling .md pages point at their .html."""
    md = _renderer()
    tokens = md.parse(markdown)
    for tok in tokens:
        for child in tok.children or []:
            if child.type == "link_open":
                href = str(child.attrGet("href") or "")
                if not urlsplit(href).scheme:
                    child.attrSet("href", re.sub(r"\.md(#|$)", r".html\1", href))
    body = md.renderer.render(tokens, md.options, {})
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n{body}</body></html>\n")
