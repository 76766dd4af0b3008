"""Stage 4: personal data. Emails (also `name [at] domain [dot] com`, `bob @ mail . org` and letter by
letter), phone numbers (validated with `phonenumbers`; numbers it only calls possible, such as ranges
reserved for drama, count when written like one: a + country code, an area code in brackets or a trunk 0;
also dictated in words or split by odd separators next to a word like "call"), street addresses, payment cards (Luhn), IBANs (mod-97), national ids
(pattern file), public IP addresses. The chain runs this on the folded text (NFKC, no zero-width
characters, look-alike letters as Latin), so full-width and Cyrillic disguises do not hide anything.

Every hit carries a placeholder (`[EMAIL]`, `[PHONE]`, ...) so a policy can redact instead of reject.
Documentation placeholders are not personal data: example.com addresses, private and documentation IP
ranges, version numbers that look like IPs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Set
from dataclasses import dataclass

import phonenumbers
from phonenumbers import Leniency, PhoneNumberMatcher

from distill.scanning.patterns import Pattern, scan
from distill.review.pii_context import BIRTH_WORDS, dates_of_birth, ibans, street_addresses
from distill.review.pii_context import national_ids as national_ids_in_context
from distill.review.text_checks import FUNCTION_WORDS, finding
from distill.review.verdict import Finding

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b")
# "at" and "dot" spelled out in English, Spanish, French, German, Portuguese, Italian, Dutch, Russian
_AT_WORD = r"(?:at|at-sign|arroba|arobase|chez|klammeraffe|ät|sobre|chiocciola|apenstaartje|собака)"
_DOT_WORD = r"(?:dot|punto|point|punkt|ponto|punt|точка)"
_AT = rf"(?:\s*[\[({{<]\s*(?:{_AT_WORD}|@)\s*[\])}}>]\s*|\s+{_AT_WORD}\s+)"
_DOT = rf"(?:\s*[\[({{<]\s*(?:{_DOT_WORD}|\.)\s*[\])}}>]\s*|\s+{_DOT_WORD}\s+)"
_HIDDEN_DOT = re.compile(rf"\b{_DOT_WORD}\b|[\[({{<]\.[\])}}>]", re.I)
_TLD = (r"(?:com|org|net|edu|gov|io|co|uk|de|fr|in|info|me|us|ca|au|it|es|nl|be|ch|at|se|no|dk|fi|pl|pt|br|mx|jp|cn|ru|nz|"
        r"za|ie|biz|app|dev)")
_OBFUSCATED = re.compile(rf"\b[A-Za-z0-9._%+-]+{_AT}[A-Za-z0-9-]+(?:{_DOT}[A-Za-z0-9-]+)*{_DOT}{_TLD}\b", re.I)
# `bob @ mail . org`: an address with spaces around its @ and dots (a known domain ending keeps prose out)
_SPACED = re.compile(rf"\b[A-Za-z0-9._%+-]+\s*@\s*[A-Za-z0-9-]+(?:\s*\.\s*[A-Za-z0-9-]+)*\s*\.\s*{_TLD}\b")
# `b o b @ m a i l . o r g`: single characters separated by single spaces
_LETTER_SPACED = re.compile(r"(?<!\S)(?:\S ){5,}\S(?!\S)")
# phone numbers written with words or odd separators: `three one two dash four four eight ...`
_DIGIT_WORDS = {"zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9"}
_COUNTING = ("1234567", "2345678", "3456789", "9876543", "8765432", "7654321")  # counting aloud, not a number
_DIGIT_TOKEN = r"(?:\d|\b(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)\b)"
_SPELLED_PHONE = re.compile(rf"\+?{_DIGIT_TOKEN}(?:(?:[\s().,\-/_*~|:]{{0,3}}|\s*\b(?:dash|hyphen|dot|space)\b\s*){_DIGIT_TOKEN}){{8,14}}", re.I)
_PHONE_CONTEXT = frozenset("call calls calling phone phones text texting ring dial number numbers tel telephone mobile "
                           "cell whatsapp contact reach".split())
_PHONE_CANDIDATE = re.compile(r"(?:\+|\()?\d(?:[\s().\-/~_]{0,2}\d){6,14}")
# words before a number that make it an order, booking or case number rather than a phone
_REFERENCE = re.compile(r"(?:\b(?:order|invoice|ticket|booking|reference|ref|tracking|case|part|isbn|item|sku|confirmation|"
                        r"receipt|transaction|serial|account|member|membership|customer|policy|claim|flight|shipment|"
                        r"parcel|patent|model|batch|lot|id)\b|\bno\.|#)\W{0,3}(?:\w+\W{1,3}){0,2}$", re.I)
# what a written phone number looks like: international (+44 7700 900123) or with a trunk/area prefix
# (07700 900123, (555) 123-4567), in two or more groups; bare digit runs (ids, amounts) are not phones
_PHONE_SHAPE = re.compile(r"(?:\+\d{1,3}|\(\d{2,5}\)|0\d{1,5})(?:[ .\-]?\(?\d{2,5}\)?){1,4}(?:[ .\-]\d{2,5})*")
_CARD = re.compile(r"(?<![\d.])\d(?:(?:[ .\-_/]|\s?\n\s?)?\d){12,18}(?![\d])")  # any one separator between digits
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}:?(?:[0-9A-Fa-f]{1,4})?(?![\w:])")
_VERSION_CONTEXT = re.compile(r"(?:version|release|build|\bv|\bver\.?)\s*$", re.I)
_DIGIT = re.compile(r"\d")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5))")


@dataclass(frozen=True)
class PiiSettings:
    kinds: frozenset[str]
    phone_regions: tuple[str, ...]
    placeholder_domains: frozenset[str]


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return 15 <= len(compact) <= 34 and int(number) % 97 == 1


def _placeholder_domain(domain: str, placeholders: frozenset[str]) -> bool:
    domain = domain.lower()
    return any(domain == p or domain.endswith("." + p) for p in placeholders)


def scan_pii(text: str, lowered: str, settings: PiiSettings, national_ids: list[Pattern], words: list[str] = (),
             present: Set[str] | None = None) -> list[Finding]:
    """`text` is the folded text (see `distill.review.folding`); `words` its lower-cased words;
    `present` the pattern triggers in `lowered`, when the caller found them already."""
    found: list[Finding] = []
    kinds = settings.kinds
    if "email" in kinds:
        found += _emails(text, lowered, settings.placeholder_domains)
    if "phone" in kinds and not _PHONE_CONTEXT.isdisjoint(words) and _enough_digits(text, words):
        found += _spelled_phones(text, settings.phone_regions)
    digits = _DIGIT.search(text) is not None
    if "street_address" in kinds:
        found += street_addresses(text, lowered, words, digits)
    if not digits:
        return found  # every other kind has digits
    if "date_of_birth" in kinds and any(word in lowered for word in BIRTH_WORDS):
        found += dates_of_birth(text)
    if "card" in kinds:
        found += _cards(text)
    if "iban" in kinds:
        found += ibans(text)
    if "ip_address" in kinds:
        found += _ip_addresses(text)
    if "national_id" in kinds:
        by_pattern = scan(text, lowered, national_ids, "pii", "[ID]", present)
        found += by_pattern + [f for f in national_ids_in_context(text) if not any(
            s < f.span[1] and f.span[0] < e for s, e in (g.span for g in by_pattern))]
    if "phone" in kinds:
        taken = [f.span for f in found]
        found += _phones(text, settings.phone_regions, taken)
    return found


def _emails(text: str, lowered: str, placeholders: frozenset[str]) -> list[Finding]:
    found = []
    if "@" in text:
        for match in _EMAIL.finditer(text):
            if not _placeholder_domain(match.group(1), placeholders):
                found.append(finding("pii", "pii.email", match.span(), match.group(), "[EMAIL]"))
    claimed = [f.span for f in found]
    hidden_dot = (any(word in lowered for word in ("dot", "punt", "punkt", "point", "ponto", "точка", ".]", ".)", ".}", ".>"))
                  and _HIDDEN_DOT.search(text) is not None)
    regexes = ((_OBFUSCATED,) if hidden_dot else ()) + ((_SPACED,) if "@" in text else ())
    if regexes:
        for regex in regexes:
            for match in regex.finditer(text):
                plain = _EMAIL.fullmatch(re.sub(r"\s+", "", match.group()))
                if regex is _SPACED and (plain is None or " " not in match.group()
                                         or _placeholder_domain(plain.group(1), placeholders)):
                    continue  # an ordinary address (reported above, or a placeholder)
                if regex is _OBFUSCATED and _prose_parts(match.group()):
                    continue  # "meet me at the point at noon": words of a sentence, not parts of an address
                if not any(s < match.end() and match.start() < e for s, e in claimed):
                    claimed.append(match.span())
                    found.append(finding("pii", "pii.email_obfuscated", match.span(), match.group(), "[EMAIL]"))
    if "@" in text:
        for run in _LETTER_SPACED.finditer(text):
            collapsed = run.group().replace(" ", "")
            email = _EMAIL.search(collapsed)
            if email and not _placeholder_domain(email.group(1), placeholders) and not any(s < run.end() and run.start() < e for s, e in claimed):
                found.append(finding("pii", "pii.email_obfuscated", run.span(), collapsed, "[EMAIL]"))
    return found


def _prose_parts(candidate: str) -> bool:
    """An address spelled out whose name or domain labels are function words ("me", "the")."""
    parts = re.split(rf"{_AT}|{_DOT}", candidate, flags=re.I)
    return any(part.strip().lower() in FUNCTION_WORDS for part in parts[:-1])


def _enough_digits(text: str, words: list[str]) -> bool:
    """Nine digits or digit words at least: the cheap test before the spelled-phone regex."""
    digits = len(_DIGIT.findall(text))
    return digits >= 9 or digits + sum(1 for word in words if word in _DIGIT_WORDS) >= 9


def _spelled_phones(text: str, regions: tuple[str, ...]) -> list[Finding]:
    """Numbers dictated in words or with unusual separators, next to a word like "call" or "phone"."""
    found = []
    for match in _SPELLED_PHONE.finditer(text):
        raw = match.group()
        if _PHONE_CANDIDATE.fullmatch(raw.strip()):
            continue  # an ordinary number: `_phones` validates it
        digits = "".join(_DIGIT_WORDS.get(token.lower(), token) for token in re.findall(_DIGIT_TOKEN, raw, re.I))
        if any(run in digits for run in _COUNTING):
            continue  # "one, two, three, four, five...": counting, not a number to call
        candidates = ["+" + digits] if raw.startswith("+") else [digits, "+" + digits]
        for candidate in candidates:
            number = _parse_phone(candidate, regions)
            if number is not None:
                where = phonenumbers.region_code_for_number(number)
                found.append(finding("pii", "pii.phone_obfuscated", match.span(), f"{raw.strip()} ({where})", "[PHONE]"))
                break
    return found


def _parse_phone(digits: str, regions: tuple[str, ...]) -> phonenumbers.PhoneNumber | None:
    for region in (None,) if digits.startswith("+") else regions:
        try:
            number = phonenumbers.parse(digits, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return number
    return None


def _cards(text: str) -> list[Finding]:
    found = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) and luhn_valid(digits):
            found.append(finding("pii", "pii.card", match.span(), f"card ending {digits[-4:]}", "[CARD]"))
    return found


def _ip_addresses(text: str) -> list[Finding]:
    found = []
    candidates = list(_IPV4.finditer(text)) if "." in text else []
    if "::" in text or text.count(":") >= 5:
        candidates += list(_IPV6.finditer(text))
    for match in candidates:
        try:
            address = ipaddress.ip_address(match.group())
        except ValueError:
            continue
        if not address.is_global or _VERSION_CONTEXT.search(text, max(0, match.start() - 12), match.start()):
            continue  # private, loopback and documentation ranges are examples, not someone's address
        found.append(finding("pii", "pii.ip_address", match.span(), match.group(), "[IP]"))
    return found


def _phone_like(text: str, candidate: re.Match[str]) -> bool:
    """Not an order or invoice number (`INV-2024-004512`, `booking reference 7741 2290 33`) and not a list
    of small numbers (`4 8 15 16 23 42`): a one-digit group stands only first, after a country code, or
    in a number dictated digit by digit."""
    start = candidate.start()
    if start >= 2 and text[start - 1] in "-#" and text[start - 2].isalnum():
        return False
    if _REFERENCE.search(text, max(0, start - 30), start):
        return False
    groups = re.findall(r"\d+", candidate.group())
    first = 2 if candidate.group().startswith("+") else 1
    return all(len(g) == 1 for g in groups) or all(len(g) > 1 for g in groups[first:])


def _phones(text: str, regions: tuple[str, ...], taken: list[tuple[int, int]]) -> list[Finding]:
    """`phonenumbers` is ~1 ms per call, so it only sees windows around digit runs long enough to dial."""
    found = []
    seen: set[tuple[int, int]] = set()
    for candidate in _PHONE_CANDIDATE.finditer(text):
        start, end = candidate.span()
        if any(s <= start < e or s < end <= e for s, e in taken):
            continue  # already a card, IBAN or id
        if not _phone_like(text, candidate):
            continue
        window_start = max(0, start - 4)
        window = text[window_start : end + 4].replace("_", "-").replace("~", "-")
        for region in regions:
            matches = list(PhoneNumberMatcher(window, region, leniency=Leniency.VALID))
            if not matches:  # a number in a range phonenumbers calls invalid (e.g. reserved for drama) still dials
                matches = [m for m in PhoneNumberMatcher(window, region, leniency=Leniency.POSSIBLE)
                           if _PHONE_SHAPE.fullmatch(m.raw_string)]
            if matches:
                number = matches[0]
                span = (window_start + number.start, window_start + number.end)
                if span not in seen:
                    seen.add(span)
                    where = phonenumbers.region_code_for_number(number.number)
                    found.append(finding("pii", "pii.phone", span, f"{number.raw_string} ({where})", "[PHONE]"))
                break
    return found

