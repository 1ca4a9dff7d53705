"""Masking secret values in log lines before they leave the runner.

Every exact occurrence of a secret value of at least `MIN_MASKED_LENGTH` characters is
replaced by `MASK`. Shorter values are left alone: masking "1" or "yes" would shred
ordinary output while protecting nothing. A value that spans several lines is also
masked line by line, because logs are shipped one line at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
MIN_MASKED_LENGTH = 4


class SecretMasker:
    """Callable `masker(text) -> text` with every known secret value replaced."""

    def __init__(self, values: Iterable[str]) -> None:
        needles = set()
        for value in values:
            for part in (value, *value.splitlines()):
                if len(part) >= MIN_MASKED_LENGTH:
                    needles.add(part)
        # Longest first, so a secret containing another is masked whole.
        ordered = sorted(needles, key=lambda s: (-len(s), s))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
