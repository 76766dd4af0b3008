"""Personal data that needs its context to be told apart from ordinary numbers and dates: national
identity numbers (checksummed with `python-stdnum`, found next to the word that names them), dates
of birth (a date next to "born", "birthday", "DOB"), and street addresses, including abbreviations
("1420 N. Maple Ave."), lower case, line breaks, prose ("number 42 on Elm Street") and European
street-first forms ("Hauptstraße 12", "12 rue des Lilas", "Calle Mayor 5").

An address in a sentence about a public place ("The White House is at 1600 Pennsylvania Avenue") is
not someone's address unless the sentence also says it is someone's home.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from stdnum import iban as stdnum_iban
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.ch import ssn as ch_ssn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.se import personnummer

from distill.review.text_checks import FUNCTION_WORDS, finding
from distill.review.verdict import Finding

# keyword (lower case) -> (what it is, validator of the compacted number)
_ID_KEYWORDS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "dni": ("Spanish DNI", dni.is_valid), "nie": ("Spanish NIE", nie.is_valid),
    "bsn": ("Dutch BSN", bsn.is_valid), "burgerservicenummer": ("Dutch BSN", bsn.is_valid),
    "sécurité sociale": ("French NIR", nir.is_valid), "securite sociale": ("French NIR", nir.is_valid),
    "insee": ("French NIR", nir.is_valid), "nir": ("French NIR", nir.is_valid),
    "steuer-id": ("German tax id", idnr.is_valid), "steuerid": ("German tax id", idnr.is_valid),
    "steueridentifikationsnummer": ("German tax id", idnr.is_valid), "idnr": ("German tax id", idnr.is_valid),
    "codice fiscale": ("Italian fiscal code", codicefiscale.is_valid),
    "aadhaar": ("Aadhaar number", aadhaar.is_valid), "aadhar": ("Aadhaar number", aadhaar.is_valid),
    "cpf": ("Brazilian CPF", cpf.is_valid),
    "sin": ("Canadian SIN", sin.is_valid), "social insurance": ("Canadian SIN", sin.is_valid),
    "pesel": ("Polish PESEL", pesel.is_valid), "personnummer": ("Swedish personal number", personnummer.is_valid),
    "ahv": ("Swiss AHV number", ch_ssn.is_valid),
    "ssn": ("US social security number", lambda n: _ssn_shape(n)), "social security": ("US social security number", lambda n: _ssn_shape(n)),
    "my social": ("US social security number", lambda n: _ssn_shape(n)),
    "national insurance": ("UK national insurance number", lambda n: bool(_NINO.fullmatch(n))),
    "nino": ("UK national insurance number", lambda n: bool(_NINO.fullmatch(n))),
}
_KEYWORD = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, _ID_KEYWORDS), key=len, reverse=True)) + r")(?!\w)", re.I)
_ID_CANDIDATE = re.compile(r"(?<!\w)[A-Za-z]{0,2}\d(?:[ .\-/]?\d){5,17}(?:[ ]?[A-Za-z])?(?!\w)")
_NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")
_CODICE_FISCALE = re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b", re.I)  # checksummed: any case


def _ssn_shape(number: str) -> bool:
    """Nine digits an SSN could be: no 000/666/9xx area, no 00 group, no 0000 serial."""
    return (len(number) == 9 and number.isdigit() and number[:3] not in ("000", "666") and number[0] != "9"
            and number[3:5] != "00" and number[5:] != "0000")


def national_ids(text: str) -> list[Finding]:
    found = []
    for keyword in _KEYWORD.finditer(text):
        what, valid = _ID_KEYWORDS[keyword.group(1).lower()]
        window_end = min(len(text), keyword.end() + 40)
        for candidate in _ID_CANDIDATE.finditer(text, keyword.end(), window_end):
            compact = re.sub(r"[ .\-/]", "", candidate.group()).upper()
            if any(ch.isdigit() for ch in compact) and _valid(valid, compact):
                found.append(finding("pii", "pii.national_id", candidate.span(), what, "[ID]"))
                break
    for match in _CODICE_FISCALE.finditer(text):
        if codicefiscale.is_valid(match.group().upper()) and not any(f.span[0] <= match.start() < f.span[1] for f in found):
            found.append(finding("pii", "pii.national_id", match.span(), "Italian fiscal code", "[ID]"))
    return found


def _valid(validator: Callable[[str], bool], number: str) -> bool:
    try:
        return bool(validator(number))
    except Exception:  # stdnum validators raise on shapes they do not know; that is "not this id"
        return False


# --- IBANs: any case, spaces or dashes between groups; mod-97 and the country's length (python-stdnum)

_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:(?:[ \-.]|\s?\n\s?)?[A-Za-z0-9]){11,30}\b")  # any one separator, a line break too


def ibans(text: str) -> list[Finding]:
    found = []
    for match in _IBAN.finditer(text):
        raw = match.group()
        # shrink from the right until it validates: the regex may swallow a following word
        for end in range(len(raw), 14, -1):
            compact = re.sub(r"[\s\-.]", "", raw[:end]).upper()
            if _valid(lambda n: stdnum_iban.is_valid(n, check_country=False) and _iban_length_ok(n), compact):
                found.append(finding("pii", "pii.iban", (match.start(), match.start() + end), raw[:end], "[IBAN]"))
                break
    return found


def _iban_length_ok(number: str) -> bool:
    return 15 <= len(number) <= 34


# --- dates of birth

_MONTH = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
          r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|"
          r"novembre|décembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre|noviembre|diciembre|"
          r"januar|februar|märz|juni|juli|oktober|dezember)\.?")
_DATE = (rf"(?:\d{{1,2}}[./-]\d{{1,2}}[./-](?:\d{{4}}|\d{{2}})|\d{{4}}-\d{{1,2}}-\d{{1,2}}|"
         rf"\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?\s+(?:of\s+|de\s+)?{_MONTH},?\s+(?:de\s+)?\d{{4}}|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})")
_BIRTH = re.compile(
    rf"\b(?:born|birthday|birth\s*date|date\s+of\s+birth|dob|d\.o\.b\.?|né|née|nacid[oa]|nascid[oa]|geboren|"
    rf"geburtsdatum|date\s+de\s+naissance|fecha\s+de\s+nacimiento|data\s+de\s+nascimento)\b[^\n]{{0,20}}?({_DATE})",
    re.I,
)
BIRTH_WORDS = ("born", "birth", "dob", "d.o.b", "né", "née", "nacid", "nascid", "geboren", "geburt", "naissance", "nacimiento", "nascimento")


def dates_of_birth(text: str) -> list[Finding]:
    return [finding("pii", "pii.date_of_birth", match.span(1), match.group(1), "[DATE]") for match in _BIRTH.finditer(text)]


# --- street addresses

_TYPES = (r"(?:street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|ter|"
          r"close|crescent|cres|square|sq|highway|hwy|parkway|pkwy|row|gardens|circle|cir|mews)")
_DIRECTION = r"(?:(?:n|s|e|w|ne|nw|se|sw|north|south|east|west)\.?\s+)"
_NAME_WORD = r"[A-Za-z0-9][\w'’\-]*\.?"
_NUMBER_WORDS = (r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
                 r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred)")
_HOUSE_FIRST = re.compile(rf"\b\d{{1,5}}[A-Za-z]?,?\s+{_DIRECTION}?((?:{_NAME_WORD}\s+){{1,3}}){_TYPES}\b\.?", re.I)
# a house number in words ("seventeen Harbour View Drive") only next to a word saying it is an address
_HOUSE_IN_WORDS = re.compile(
    rf"\b{_NUMBER_WORDS}(?:[\s-]{_NUMBER_WORDS}){{0,2}},?\s+((?:[A-Z][\w'’\-]*\s+){{1,3}})(?i:{_TYPES})\b\.?")
_ADDRESS_WORDS = ("address", "lives at", "live at", "live on", "lives on", "home is", "house is")
_NAME_FIRST = re.compile(rf"\b((?:[A-Z][\w'’\-]*\s+){{1,3}})(?i:{_TYPES})\.?,?\s+(?:number\s+|no\.?\s*)?\d{{1,5}}[a-z]?\b")
_NUMBER_ON = re.compile(rf"\bnumber\s+\d{{1,5}}[a-z]?\s+(?:on|in)\s+((?:[A-Z][\w'’\-]*\s+){{1,3}}){_TYPES}\b", re.I)
_EUROPEAN = re.compile(
    r"\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|straat|laan|gracht|plein|kade|steeg|"
    r"gatan|vägen|vej|gade)\s+\d{1,4}[a-z]?\b"
    r"|\b\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|chemin|allée|impasse|quai|cours)\s+(?:[\w'’\-]+\s?){1,5}"
    r"|\b(?:calle|c/|avenida|avda\.?|paseo|plaza|carrer|via|viale|piazza|corso|rua|travessa|largo)\s+(?:[A-ZÁÉÍÓÚ][\w'’\-]*\s+){1,4}\d{1,4}\b"
    r"|(?<!\w)(?:ul\.|ulica|al\.|aleja|os\.|osiedle|ulice|nám\.)\s*(?:[A-ZŁŚŻŹĆŃÓ][\w'’\-]*\s+){1,3}\d{1,4}[a-z]?(?:/\d{1,4})?",
    re.I,
)
_PUBLIC_PLACE = re.compile(
    r"\b(?:white\s+house|building|museum|tower|palace|cathedral|church|station|stadium|library|hall|university|college|"
    r"hospital|embassy|parliament|prime\s+minister|president|headquarters|hotel|theat(?:re|er)|gallery|zoo|airport|"
    r"castle|monument|memorial|stories|novel|fictional|landmark|hiding\s+place|birthplace|former\s+home|house\s+museum)\b", re.I)
_PERSONAL = re.compile(
    r"\b(?:my|our|i\s+live|i'm\s+at|lives\s+at|live\s+at|living\s+at|home|apartment|apt|flat|unit|deliver|ship\s+to|send|"
    r"mail\s+to|visit\s+me|address\s+is|moved\s+to|drop\s+it\s+off|find\s+(?:me|us)|(?:i|we)\s+(?:am|are|stay|'m|'re)\s+at|"
    r"come\s+(?:to|over)|meet\s+(?:me|us)\s+at)\b", re.I)
_SENTENCE = re.compile(r"[^.!?]*(?:[.!?](?=\s|$)|$)")


_TYPE_WORDS = frozenset(_TYPES[3:-1].split("|"))
_EUROPEAN_MARKERS = ("stra", "weg ", "gasse", "platz", "allee", "laan ", "gracht", "rue ", "calle ", "avenida ", "via ", "viale ",
                     "piazza ", "corso ", "rua ", "plaza ", "paseo ", "carrer ", "gatan ", "vägen ", "vej ", "gade ", "avenue ",
                     "boulevard ", "chemin ", "allée ", "impasse ", "quai ", "ul.", "ulica ", "aleja ", "osiedle ", "ulice ")


def street_addresses(text: str, lowered: str, words: list[str], digits: bool) -> list[Finding]:
    """`lowered` and `words`: the text lower-cased and its lower-cased words; `digits`: whether it has
    any (a record naming no kind of street costs one set test)."""
    regexes = []
    if not _TYPE_WORDS.isdisjoint(words):
        regexes += [_HOUSE_FIRST, _NAME_FIRST, _NUMBER_ON] if digits else []
        regexes += [_HOUSE_IN_WORDS] if any(word in lowered for word in _ADDRESS_WORDS) else []
    if digits and any(marker in lowered for marker in _EUROPEAN_MARKERS):
        regexes.append(_EUROPEAN)
    found: list[Finding] = []
    spans: list[tuple[int, int]] = []
    for regex in regexes:
        for match in regex.finditer(text):
            if regex is not _EUROPEAN and _has_function_word(match.group(1)):
                continue  # "2 miles down the road" is a distance, not an address
            if any(s < match.end() and match.start() < e for s, e in spans) or _public_place(text, match.start(), match.end()):
                continue
            spans.append(match.span())
            found.append(finding("pii", "pii.street_address", match.span(), match.group().strip(), "[ADDRESS]"))
    return found


def _has_function_word(words: str) -> bool:
    return any(word.lower().strip(".") in FUNCTION_WORDS for word in words.split())


def _public_place(text: str, start: int, end: int) -> bool:
    """The sentence around the address names a public place and does not say it is someone's home."""
    left = max(text.rfind(".", 0, max(0, start - 1)), text.rfind("\n\n", 0, start)) + 1
    right = text.find(". ", end)
    sentence = text[left : right if right >= 0 else len(text)]
    return bool(_PUBLIC_PLACE.search(sentence)) and not _PERSONAL.search(sentence)
