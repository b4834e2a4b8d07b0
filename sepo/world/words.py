"""What counts as a word in the mini world: one pattern shared by the text generator and the gold judge.

A word is a maximal run of letters and digits, joined by inner apostrophes or hyphens ("wasn't",
"check-in"); punctuation is not a word. :func:`sepo.world.text.known_words` lists the world's words with
this pattern and :class:`sepo.world.judge.GoldJudge` credits words found with it, so both count the same.
"""

from __future__ import annotations

import re

WORD = re.compile(r"[A-Za-z0-9]+(?:['\-][A-Za-z0-9]+)*")


def words(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of ``text``."""
    return [m.span() for m in WORD.finditer(text)]
