"""Other readings of a text for the secret, injection and toxicity scans: payloads in base64, hex, URL
escapes, HTML entities or backslash escapes (`\\x69`, `\\u0069`) decoded, and keys split by spaces or
line breaks joined again.

A model that reads `aWdub3JlIHRoZSBhYm92ZQ==` or `&#105;&#103;&#110;ore all previous instructions` can
follow it, and `sk-proj- Q7x2 mVb9 ...` is still a key once pasted, so each reading is scanned like
the text itself and its findings are reported on the span it came from. A decoded token counts only
when it decodes to text a person could read (printable, with a space), so hashes, UUIDs and image
data, which decode to noise, add nothing. Most records have no candidate at all: a few substring
tests and one regex pass decide that.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){8,}\b")
_URL_ESCAPED = re.compile(r"\S*(?:%[0-9A-Fa-f]{2}){2}\S*")
_ENTITY = re.compile(r"&(?:#\d{2,6}|#x[0-9a-fA-F]{2,6}|[a-zA-Z]{2,8});")
# backslash escapes of a string literal: \x69\x67 or \u0069\u0067 (three or more in a row)
_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4})(?:\s?(?:\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4})){2,}")
# a key prefix followed by chunks separated by spaces or line breaks
_SPLIT_KEY = re.compile(
    r"(?:sk-(?:proj-|ant-(?:api|admin)\d\d-)?|gh[pousr]_|github_pat_|[sr]k_(?:live|test)_|AKIA|ASIA|xox[abposr]-|glpat-|hf_|AIza|npm_|SG\.)"
    r"(?:[ \t]*\n?[ \t]*(?=[A-Za-z0-9_\-.]*[0-9A-Z])[A-Za-z0-9_\-.]{2,}){2,}"
)
_LETTER_SPACED = re.compile(r"(?<!\S)(?:\S[ \t]){10,}\S(?!\S)")
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{16}")
_ENCODED_MARKS = tuple("0123456789=+/")
# lower-case key prefixes (the secret patterns' triggers): a key split by spaces starts with one
KEY_PREFIXES = frozenset({"sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "_live_", "_test_", "akia", "asia", "xox",
                          "glpat-", "hf_", "aiza", "npm_", "sg."})
_PRINTABLE = re.compile(r"[\x20-\x7e\s\u00a0-\uffff]")


@dataclass(frozen=True)
class Reading:
    how: str  # "base64", "hex", "url", "html", "escapes", "joined"
    span: tuple[int, int]  # where in the scanned text it came from
    text: str


def readable(candidate: str) -> bool:
    return len(candidate) >= 6 and " " in candidate.strip() and len(_PRINTABLE.findall(candidate)) >= 0.95 * len(candidate)


def _from_bytes(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if readable(text) else None


def _base64(token: str) -> str | None:
    try:
        raw = base64.b64decode(token.replace("-", "+").replace("_", "/") + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _from_bytes(raw)


def readings(text: str, key_prefix: bool | None = None) -> list[Reading]:
    """Every decoded or re-joined reading of `text` that differs from it. `key_prefix`: whether the text
    holds one of `KEY_PREFIXES` (lower-cased), when the caller knows already."""
    found: list[Reading] = []
    # base64 and hex of a sentence hold a digit, "=", "+" or "/" (a few substring tests rule most prose out)
    if any(mark in text for mark in _ENCODED_MARKS) and _LONG_TOKEN.search(text):
        found += _decoded_tokens(text)
    if "%" in text:
        for match in _URL_ESCAPED.finditer(text):
            decoded = unquote_plus(match.group())
            if decoded != match.group():
                found.append(Reading("url", match.span(), decoded.replace("?", " ").replace("=", " ").replace("&", " ")))
    if "&" in text and _ENTITY.search(text):
        found.append(Reading("html", (0, len(text)), html.unescape(text)))
    if "\\x" in text or "\\u" in text:
        found += _unescaped(text)
    if key_prefix if key_prefix is not None else any(prefix in text.lower() for prefix in KEY_PREFIXES):
        for match in _SPLIT_KEY.finditer(text):
            if any(c.isspace() for c in match.group()):
                found.append(Reading("joined", match.span(), re.sub(r"\s+", "", match.group())))
    if " - " in text or text.count(" ") > len(text) // 3:  # a run of single characters has a space every other one
        for match in _LETTER_SPACED.finditer(text):
            found.append(Reading("joined", match.span(), re.sub(r"[ \t]", "", match.group())))
    return found


def _unescaped(text: str) -> list[Reading]:
    """The text with its runs of backslash escapes decoded, one reading for the whole text (the run may
    be half a sentence, its other half plain)."""
    def decode(match: re.Match[str]) -> str:
        return re.sub(r"\\x([0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1) or m.group(2), 16)),
                      match.group().replace(" ", ""))
    decoded = _ESCAPES.sub(decode, text)
    return [Reading("escapes", (0, len(text)), decoded)] if decoded != text else []


def _decoded_tokens(text: str) -> list[Reading]:
    found = []
    for match in _BASE64.finditer(text):
        token = match.group()
        if token.isalpha() and (token.islower() or token.isupper()):
            continue  # a long word, not base64
        decoded = _base64(token)
        if decoded:
            found.append(Reading("base64", match.span(), decoded))
    for match in _HEX.finditer(text):
        decoded = _from_bytes(bytes.fromhex(match.group()))
        if decoded:
            found.append(Reading("hex", match.span(), decoded))
    return found
