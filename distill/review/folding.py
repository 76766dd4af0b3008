"""Text as a detector should read it: NFKC, no zero-width characters, look-alike letters folded to Latin.

`ｂｏｂ＠ｍａｉｌｂｏｘ．ｏｒｇ` (full-width), `bоb@mail.org` (a Cyrillic о) and `b\u200bob@mail.org` (a
zero-width space) are all `bob@mail.org` to a reader, so the PII, secret and injection scans run on the
folded text. Every folded character remembers which original character it came from, so a finding on
the folded text is reported, highlighted and redacted on the original span.

The look-alike table is a short hand-written list of the Cyrillic and Greek letters that render like
Latin ones (the subset of Unicode's confusables.txt that matters for addresses, keys and names).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad")
_LOOK_ALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "У": "Y",
    "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Һ": "H", "Ӏ": "I",
    # Greek
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "κ": "k", "ι": "i", "τ": "t", "υ": "u", "χ": "x", "ε": "e",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
    # punctuation people use to hide an address
    "\u2024": ".", "\u2027": ".", "\u3002": ".", "\uff0e": ".", "\u2219": ".", "\u00b7": ".",
})


@dataclass(frozen=True)
class FoldedText:
    """The folded text and, for each of its characters, the index of the original character."""

    text: str
    origin: tuple[int, ...] | None  # None: identical to the original (the ASCII fast path)

    def original_span(self, span: tuple[int, int]) -> tuple[int, int]:
        if self.origin is None:
            return span
        start, end = span
        if end <= start:
            return (self.origin[start], self.origin[start]) if start < len(self.origin) else span
        return self.origin[start], self.origin[end - 1] + 1


_OTHER = re.compile(r"[^\x00-\x7f]+")


def fold(text: str) -> FoldedText:
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and text.translate(_LOOK_ALIKES) == text
                          and _ZERO_WIDTH.isdisjoint(text)):
        return FoldedText(text, None)
    pieces: list[str] = []
    origin: list[int] = []
    done = 0
    for run in _OTHER.finditer(text):  # ASCII stretches are copied as they are
        pieces.append(text[done : run.start()])
        origin.extend(range(done, run.start()))
        for index in range(run.start(), run.end()):
            char = text[index]
            if char in _ZERO_WIDTH:
                continue
            folded = unicodedata.normalize("NFKC", char).translate(_LOOK_ALIKES)
            pieces.append(folded)
            origin.extend([index] * len(folded))
        done = run.end()
    pieces.append(text[done:])
    origin.extend(range(done, len(text)))
    return FoldedText("".join(pieces), tuple(origin))
