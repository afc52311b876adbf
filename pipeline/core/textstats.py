"""Patterns shared by inspect (counting) and clean (fixing)."""

from __future__ import annotations

import re

import pandas as pd

from pipeline.runtime import HTML_TAG, MENTION, URL  # the patterns clean fixes, shared with the bundle

HTML_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,6});")
HASHTAG = re.compile(r"(?<![\w#])#\w+")
EMOJI = re.compile("[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U0001F900-\U0001F9FF\u2B50\u2B55\uFE0F]")
NON_ASCII = re.compile(r"[^\x00-\x7F]")
WORD = re.compile(r"[A-Za-z][A-Za-z']+")


def norm_key(text: str) -> str:
    """Key under which two texts count as the same (case and spacing ignored)."""
    return " ".join(str(text).lower().split())


def near_key(text: str) -> str:
    """Key for near-exact duplicates: the letters and digits of every script, case-folded, URLs
    removed (Cyrillic, Greek, Arabic or CJK texts are keyed by their words, not by stray digits)."""
    return "".join(ch for ch in URL.sub("", str(text)).casefold() if ch.isalnum())


def has_mojibake(text: str) -> bool:
    from ftfy.badness import is_bad

    return bool(is_bad(text))


def pattern_counts(texts: pd.Series) -> dict[str, int]:
    """Rows containing each kind of noise."""
    t = texts.fillna("").astype(str)
    return {
        "html_tags": int(t.str.contains(HTML_TAG).sum()),
        "html_entities": int(t.str.contains(HTML_ENTITY).sum()),
        "urls": int(t.str.contains(URL).sum()),
        "mentions": int(t.str.contains(MENTION).sum()),
        "hashtags": int(t.str.contains(HASHTAG).sum()),
        "emoji": int(t.str.contains(EMOJI).sum()),
        "non_ascii": int(t.str.contains(NON_ASCII).sum()),
        "mojibake": int(sum(has_mojibake(x) for x in t)),
    }
