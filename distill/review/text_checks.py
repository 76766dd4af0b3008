"""Stages 1-3 of the chain: decoding and size, Unicode normalisation, quality heuristics.

Everything here is a precompiled regex or a single pass over the text: the cheap chain must do a
200-word record in well under a millisecond. The ASCII fast path skips the Unicode checks entirely.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Set
from dataclasses import dataclass

import ftfy
import ftfy.badness

from distill.review.codes import CODES
from distill.scanning.patterns import Pattern, scan
from distill.review.verdict import Finding


def finding(stage: str, code: str, span: tuple[int, int], detail: str = "", replacement: str | None = None) -> Finding:
    """A finding for a built-in code; the chain fills in the policy's action."""
    return Finding(stage=stage, code=code, category=CODES[code][0], span=span, detail=detail, replacement=replacement)


# --- 1. decoding and size ---

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_URL = re.compile(r"^(?:(?:https?|ftp)://|data:[\w.+-]+/[\w.+-]+[;,])", re.I)  # data: URIs embed files in one token


def decode(raw: str | bytes) -> tuple[str, list[Finding]]:
    """Text from bytes or a str that may carry lone surrogates (undecodable bytes kept by
    `surrogateescape`). Undecodable parts become U+FFFD so later stages can still read the rest."""
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8"), []
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="replace")
            start = len(raw[: exc.start].decode("utf-8", errors="replace"))
            return text, [finding("decoding", "decoding.invalid_utf8", (start, start + 1), f"invalid byte 0x{raw[exc.start]:02x}")]
    bad = _SURROGATE.search(raw)
    if bad is None:
        return raw, []
    text = _SURROGATE.sub("\ufffd", raw)
    return text, [finding("decoding", "decoding.invalid_utf8", bad.span(), f"undecodable byte at character {bad.start()}")]


def check_decoding(text: str, *, max_chars: int, max_token_chars: int) -> list[Finding]:
    found = []
    if not text.strip():
        return [finding("decoding", "decoding.empty", (0, len(text)), f"{len(text)} whitespace characters" if text else "empty")]
    if len(text) > max_chars:
        found.append(finding("decoding", "decoding.too_long", (max_chars, len(text)), f"{len(text):,} characters, limit {max_chars:,}"))
    replacement = text.find("\ufffd")
    if replacement >= 0:
        found.append(finding("decoding", "decoding.replacement_char", (replacement, replacement + 1), f"{text.count(chr(0xFFFD))} U+FFFD"))
    control = _CONTROL.search(text)
    if control:
        found.append(finding("decoding", "decoding.control_chars", control.span(), f"U+{ord(control.group()):04X}"))
    if len(text) <= max_token_chars or max(map(len, text.split())) <= max_token_chars:
        return found  # a split is several times cheaper than the regex, and most texts have no long run
    for match in re.finditer(r"\S{%d,}" % (max_token_chars + 1), text):
        if not _URL.match(match.group()):
            found.append(finding("decoding", "decoding.absurd_token", match.span(), f"{match.end() - match.start()} characters without a space"))
            break
    return found


# --- 2. normalisation ---

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u00ad]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_WORD = re.compile(r"\w+")
_SCRIPTS = ("LATIN", "CYRILLIC", "GREEK")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Typography of plain prose. None of it hides or disguises text, and no mojibake is made of it alone
# (a UTF-8 lead byte misread as Latin-1 or cp1252 is one of U+00C2..U+00F4), so text whose only
# non-ASCII characters are these skips the Unicode checks like ASCII does.
_PROSE_TYPOGRAPHY = frozenset("\u2018\u2019\u201c\u201d\u2013\u2014\u00ab\u00bb")


def _is_emoji_part(char: str) -> bool:
    code = ord(char)
    return code >= 0x1F000 or 0x2600 <= code <= 0x27BF or code in (0xFE0F, 0x2640, 0x2642, 0x2695, 0x2696, 0x2708)


def _legit_joiner(text: str, index: int) -> bool:
    """A zero-width joiner inside an emoji sequence (family, profession, flag emoji) is meant to be there."""
    if text[index] != "\u200d" or index == 0 or index + 1 >= len(text):
        return False
    return _is_emoji_part(text[index - 1]) and _is_emoji_part(text[index + 1])


def _legit_tag_sequence(text: str, start: int, end: int) -> bool:
    """Subdivision flags (England, Scotland, Wales) are U+1F3F4, tag letters, then U+E007F."""
    return start > 0 and text[start - 1] == "\U0001f3f4" and text[end - 1] == "\U000e007f" and end - start <= 7


def check_normalisation(text: str, *, repair_mojibake: bool) -> tuple[str, list[Finding]]:
    """Findings about invisible and deceptive characters, and the text with safe repairs made:
    mojibake fixed (ftfy's encoding fix only, which leaves quotes and other style alone), zero-width
    and tag characters removed so later stages see what a model would act on."""
    if text.isascii() or _PROSE_TYPOGRAPHY.issuperset(_NON_ASCII.findall(text)):
        return text, []
    found: list[Finding] = []
    checked = text
    if ftfy.badness.is_bad(text):
        fixed = ftfy.fix_encoding(text)
        if fixed != text:
            first = next((i for i, (a, b) in enumerate(zip(text, fixed)) if a != b), 0)
            found.append(finding("normalisation", "normalisation.mojibake", (first, len(text)), "repaired with ftfy.fix_encoding"))
            if repair_mojibake:
                checked = fixed
    hidden = [m for m in _ZERO_WIDTH.finditer(checked) if not _legit_joiner(checked, m.start())]
    if hidden:
        found.append(finding("normalisation", "normalisation.zero_width", hidden[0].span(),
                             f"{len(hidden)} zero-width character(s), first U+{ord(hidden[0].group()):04X}"))
        drop = {m.start() for m in hidden}
        checked = "".join(c for i, c in enumerate(checked) if i not in drop)
    for match in _BIDI.finditer(text):
        found.append(finding("normalisation", "normalisation.bidi_control", match.span(), f"U+{ord(match.group()):04X}"))
        break
    tags = [m for m in _TAGS.finditer(checked) if not _legit_tag_sequence(checked, m.start(), m.end())]
    if tags:
        smuggled = "".join(chr(ord(c) - 0xE0000) for m in tags for c in m.group() if 0x20 <= ord(c) - 0xE0000 < 0x7F)
        found.append(finding("normalisation", "normalisation.tag_chars", tags[0].span(), f"hidden text: {smuggled[:80]!r}"))
        checked = _TAGS.sub(lambda m: m.group() if _legit_tag_sequence(checked, m.start(), m.end()) else "", checked)
    for match in _WORD.finditer(checked):
        word = match.group()
        if not word.isascii() and len({s for s in map(_script, word) if s}) > 1:
            found.append(finding("normalisation", "normalisation.homoglyph", match.span(), f"{word!r} mixes scripts"))
    return checked, found


def _script(char: str) -> str | None:
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    for script in _SCRIPTS:
        if name.startswith(script):
            return script
    return "OTHER"


# --- 3. quality ---

FUNCTION_WORDS = frozenset(
    "a an the and or but if so of to in on at by for with from up down out over under into about as "
    "is are was were be been am do does did have has had will would can could should may might must "
    "i you he she it we they me him her us them my your his its our their this that these those there "
    "here what who when where why how not no yes all some any one very just then than too also".split()
)
# Symbols: not letters, digits, space or prose punctuation. Joiners, variation selectors and tag
# characters are parts of one emoji and do not count again.
_SYMBOL = re.compile(r"[^\w\s.,!?;:'\"()\-\u2018\u2019\u201c\u201d\u2026\u2014\u2013\u200d\ufe0f\U000e0000-\U000e007f]")
# The same test for ASCII text as one C-speed pass: delete what is not a symbol, count what is left.
_NOT_ASCII_SYMBOLS = str.maketrans("", "", "".join(chr(c) for c in range(128) if not _SYMBOL.match(chr(c))))
_SENTENCE_END = frozenset(".!?\"')]}>*;\u201d\u2019\u2026\u00bb`")
_ENDS_WITH_URL = re.compile(r"\bhttps?://\S+$")
_THE_END = re.compile(r"\bthe end\W*$", re.I)
# A last line that reads as code or a shell command ends where the code ends, not with a full stop.
_CODE_LINE = re.compile(r"[=#{}|$]|&&|\(\)|::|\w\.\w+\(")


@dataclass(frozen=True)
class QualitySettings:
    max_repeated_ngram_share: float
    max_symbol_ratio: float
    language: str | None
    min_function_word_share: float
    check_truncation: bool


def check_quality(text: str, lowered: str, words: list[str], settings: QualitySettings, refusals: list[Pattern],
                  present: Set[str] | None = None) -> list[Finding]:
    """`words` are the text's lower-cased words (the chain splits once for all stages); `present` the
    refusal triggers in `lowered`, when the caller found them already."""
    found = []
    span = (0, len(text))
    if len(words) >= 12:
        repeated = 1 - len(set(zip(words, words[1:], words[2:]))) / (len(words) - 2)
        if repeated > settings.max_repeated_ngram_share:
            found.append(finding("quality", "quality.repetition", span, f"{repeated:.0%} of word 3-grams are repeats"))
    visible = len(text) - text.count(" ") - text.count("\n")
    if visible >= 20:
        symbols = len(text.translate(_NOT_ASCII_SYMBOLS)) if text.isascii() else len(_SYMBOL.findall(text))
        if symbols / visible > settings.max_symbol_ratio:
            found.append(finding("quality", "quality.symbol_ratio", span, f"{symbols / visible:.0%} symbols"))
    if settings.language == "en" and len(words) >= 15:  # fewer words say little about the language
        share = sum(map(FUNCTION_WORDS.__contains__, words)) / len(words)
        if share < settings.min_function_word_share:
            found.append(finding("quality", "quality.language", span, f"only {share:.0%} English function words"))
    stripped = text.rstrip()
    if settings.check_truncation and stripped and len(words) >= 5:
        last = stripped[-1]
        if (last not in _SENTENCE_END and not _is_emoji_part(last) and not _THE_END.search(stripped[-12:])
                and not _ENDS_WITH_URL.search(stripped[-300:]) and not _CODE_LINE.search(stripped[stripped.rfind("\n") + 1 :])):
            found.append(finding("quality", "quality.truncated", (len(stripped) - 1, len(stripped)), f"ends with {stripped[-12:]!r}"))
    found += scan(text, lowered, refusals, "quality", present=present)[:1]
    return found
