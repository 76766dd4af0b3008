"""API keys stay in the environment: never in a spec, a run, a bundle or a stored error message.

The review's secret detectors (`safety/patterns/secrets.yaml`) find keys of known shapes; keys without
one (a gateway's or a vLLM server's token) are found by value: every key variable this process holds (the
providers' defaults, the `api_key_env` variables of the specs it loaded, any variable named like a
credential). Both are searched for in a spec's own text (comments and description included) and in every
file it names before it is copied into a run or a prompt is sent, in an `api_key_env` that holds a key
instead of a variable's name, and in provider error bodies before they are printed or stored as a
record's `failure_reason`. A found key is never printed: messages name the line and the kind of key.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from distill.errors import ConfigError, Problem
from distill.paths import data_path
from distill.scanning.patterns import load_patterns
from distill.scanning.secrets import scan_secrets
from distill.spec_refs import referenced_files

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
KEY_ENVS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
KEY_LIKE_NAME = re.compile(r"API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
MIN_KEY_CHARS = 8  # shorter values are not keys, and would redact ordinary words
MAX_SCANNED_BYTES = 50 << 20  # per file the spec names
_HELD: set[str] = set()  # key variables named by the specs this process loaded


@lru_cache(maxsize=1)
def _patterns():
    return load_patterns(data_path("safety") / "patterns" / "secrets.yaml")  # the review's secrets stage reads it too


def find_secrets(text: str) -> list[tuple[int, int, str]]:
    """(start, end, what) of every credential the detectors find, placeholders excepted."""
    return [(f.span[0], f.span[1], f.detail) for f in scan_secrets(text, text.lower(), _patterns())]


def redact_secrets(text: str, *, extra: tuple[str, ...] = ()) -> str:
    """`text` with every detected credential, and every value in `extra` (the keys in use), replaced."""
    for value in extra:
        if len(value) >= 8:
            text = text.replace(value, "[REDACTED]")
    for start, end, _ in sorted(find_secrets(text), reverse=True):
        text = text[:start] + "[REDACTED]" + text[end:]
    return text


def hold_key_envs(spec) -> None:
    """Remember the key variables a spec names (`api_key_env`): their values are redacted everywhere."""
    _HELD.update(reference.api_key_env for _, reference in key_references(spec) if reference.api_key_env)


def keys_in_use() -> tuple[str, ...]:
    """The values of every key variable this process holds: the providers' defaults, the variables the
    specs it loaded name, and any variable named like a credential. An error body, a log line or a stored
    failure reason that echoes one is redacted by value: a gateway's token has no known shape."""
    names = {*KEY_ENVS, *_HELD, *(name for name in os.environ if KEY_LIKE_NAME.search(name))}
    values = {os.environ.get(name, "").strip() for name in names}
    return tuple(sorted((v for v in values if len(v) >= MIN_KEY_CHARS), key=len, reverse=True))


def key_references(spec) -> list[tuple[str, object]]:
    """(key path, teacher or judge reference) of every model a spec reaches with a key."""
    found = [("teacher", spec.teacher), ("safety.judge", spec.safety.judge), ("evaluation.judge", spec.evaluation.judge)]
    return [(key, reference) for key, reference in found if reference is not None]


def check_api_key_env(value: str | None, *, file: Path | None = None, key: str = "teacher.api_key_env") -> None:
    """`api_key_env` names an environment variable; a key pasted there instead is refused (and not shown)."""
    if value is None:
        return
    if find_secrets(value) or not ENV_NAME.fullmatch(value):
        raise ConfigError(Problem("holds what looks like an API key (or is not a variable name); it must be the NAME "
                                  "of the environment variable holding the key", file=file, key=key,
                                  hint="e.g. api_key_env: OPENAI_API_KEY; if a real key was pasted here, revoke it"))


def check_spec_text(path: Path) -> None:
    """Refuse a spec whose text contains a credential, before it is copied into a run or a bundle."""
    problems = spec_text_problems(path, [])
    if problems:
        raise ConfigError(*problems)


def spec_text_problems(path: Path, files: list[Path]) -> list[Problem]:
    """Each credential in the spec's text (comments and description included) or in a file it names (word
    lists, rows, templates: what reaches a teacher's prompts), found by shape and by the value of every key
    variable this process holds. Located by file and line; the key itself is never shown."""
    problems: list[Problem] = []
    held = keys_in_use()
    for file in dict.fromkeys([Path(path), *files]):
        try:
            with open(file, "rb") as handle:
                text = handle.read(MAX_SCANNED_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue  # the spec's other checks say what is wrong with the file
        # a held key's value first: where it is also a known shape, the line is reported once, as the held key
        found = [(text.index(value), "the value of a key variable this server or CLI holds") for value in held if value in text]
        found += [(start, what) for start, _, what in find_secrets(text)]
        by_line = {}
        for start, what in found:
            by_line.setdefault(text.count("\n", 0, start) + 1, what)
        problems += [Problem(f"contains what looks like a credential ({what}); keys belong in the environment",
                             file=file, line=line, hint="remove it (and revoke it), and name the variable with api_key_env")
                     for line, what in sorted(by_line.items())]
    return problems


def check_spec_secrets(loaded) -> None:
    """Every key check on a loaded spec before anything is written or sent: its text and the files it
    names, and each api_key_env (teacher, judges). Remembers the key variables it names for redaction."""
    hold_key_envs(loaded.spec)
    problems = spec_text_problems(loaded.path, referenced_files(loaded.document, loaded.directory, server=False))
    for key, reference in key_references(loaded.spec):
        try:
            check_api_key_env(reference.api_key_env, file=loaded.path, key=f"{key}.api_key_env")
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(*problems)
