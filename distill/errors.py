"""User-facing errors.

A `DistillError` is a mistake the user can fix: it names the place (file, line, column, key path)
and, where we know it, the fix. The CLI prints it without a traceback and exits non-zero. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One located problem: `specs/x.yaml:14:5 teacher.rate_limit.rpm: must be > 0`."""

    message: str
    file: str | Path | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        place = ""
        if self.file is not None:
            place = str(self.file)
            if self.line is not None:
                place += f":{self.line}"
                if self.column is not None:
                    place += f":{self.column}"
        parts = [p for p in (place, f"{self.key}:" if self.key else "") if p]
        text = " ".join(parts + [self.message]) if parts else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class DistillError(Exception):
    """An error the user can act on. Carries one or more located problems."""

    title = "refused"  # what a customer is shown in place of the class name

    def __init__(self, *problems: Problem | str):
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems))


class SpecError(DistillError):
    """The task spec (or a file it references) is invalid."""

    title = "invalid spec"


class TemplateError(DistillError):
    """A prompt template fails to load or render, or tries to leave its sandbox."""

    title = "template error"


class RunDirError(DistillError):
    """The run directory is missing, from another spec, or in a state the stage cannot use."""

    title = "run directory error"


class ConfigError(DistillError):
    """A flag, environment variable or setting is wrong (e.g. a missing API key)."""

    title = "invalid setting"


# --- what a customer may see: no server paths, no Python class names ---

_ABSOLUTE = re.compile(r"(?<![\w.:/])/(?:[\w.@+-]+/)*[\w.@+-]+")  # a POSIX absolute path in running text
_CLASS_PREFIX = re.compile(r"\b(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Warning|Exit)\b:\s*")


def scrub_text(text: str | None, folder: Path | None = None) -> str | None:
    """`text` as a customer may see it: paths inside `folder` (the customer's spec folder) relative to it,
    every other absolute path replaced by `[server path]`, and `SomeError: ` prefixes dropped."""
    if text is None:
        return None
    base = str(Path(folder).resolve()) if folder is not None else None

    def relative(match: re.Match) -> str:
        path = match.group(0)
        if base and (path == base or path.startswith(base + "/")):
            return path[len(base) + 1:] or "."
        return "[server path]"

    return _ABSOLUTE.sub(relative, _CLASS_PREFIX.sub("", text))


def public_problem(problem: Problem, folder: Path | None = None) -> Problem:
    """`problem` with its file named relative to `folder` and its text scrubbed (`scrub_text`)."""
    file = problem.file
    if file is not None:
        file = scrub_text(str(file), folder)
        file = None if file == "[server path]" else file
    return replace(problem, file=file, message=scrub_text(problem.message, folder), hint=scrub_text(problem.hint, folder))
