"""API keys stay in the environment: never in a spec, a run, a bundle or a stored error message.

The review's secret detectors (`safety/patterns/secrets.yaml`) find keys in three places: a spec's own
text before it is copied into a run or a bundle, an `api_key_env` that holds a key instead of the name
of the variable holding one, and provider error bodies that echo the key back before they are stored as a
record's `failure_reason`. A found key is never printed: messages name the line and the kind of key.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from distill.errors import ConfigError, Problem

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
KEY_ENVS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


@lru_cache(maxsize=1)
def _patterns():
    from distill.review.patterns import load_patterns
    from distill.review.policy import safety_file

    return load_patterns(safety_file("patterns", "secrets", ".yaml"))


def find_secrets(text: str) -> list[tuple[int, int, str]]:
    """(start, end, what) of every credential the detectors find, placeholders excepted."""
    from distill.review.secrets import scan_secrets

    return [(f.span[0], f.span[1], f.detail) for f in scan_secrets(text, text.lower(), _patterns())]


def redact_secrets(text: str, *, extra: tuple[str, ...] = ()) -> str:
    """`text` with every detected credential, and every value in `extra` (the keys in use), replaced."""
    for value in extra:
        if len(value) >= 8:
            text = text.replace(value, "[REDACTED]")
    for start, end, _ in sorted(find_secrets(text), reverse=True):
        text = text[:start] + "[REDACTED]" + text[end:]
    return text


def keys_in_use() -> tuple[str, ...]:
    """The API keys this process holds: an error body that echoes one must not be stored."""
    return tuple(v for name in KEY_ENVS if (v := os.environ.get(name, "").strip()))


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
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    found = find_secrets(text)
    if found:
        problems = [Problem(f"contains what looks like a credential ({what}); keys belong in the environment",
                            file=path, line=text.count("\n", 0, start) + 1,
                            hint="remove it (and revoke it), and name the variable with api_key_env")
                    for start, _, what in found]
        raise ConfigError(*problems)


def check_spec_secrets(loaded) -> None:
    """Every key check on a loaded spec: its text, and the teacher's and judge's api_key_env."""
    check_spec_text(loaded.path)
    check_api_key_env(loaded.spec.teacher.api_key_env, file=loaded.path)
    judge = loaded.spec.safety.judge
    check_api_key_env(judge.api_key_env if judge else None, file=loaded.path, key="safety.judge.api_key_env")
