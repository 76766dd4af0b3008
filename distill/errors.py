"""User-facing errors.

A `DistillError` is a mistake the user can fix: it names the place (file, line, column, key path)
and, where we know it, the fix. The CLI prints it without a traceback and exits non-zero. Anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def __init__(self, *problems: Problem | str):
        self.problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        super().__init__("\n".join(str(p) for p in self.problems))


class SpecError(DistillError):
    """The task spec (or a file it references) is invalid."""


class TemplateError(DistillError):
    """A prompt template fails to load or render, or tries to leave its sandbox."""


class RunDirError(DistillError):
    """The run directory is missing, from another spec, or in a state the stage cannot use."""


class ConfigError(DistillError):
    """A flag, environment variable or setting is wrong (e.g. a missing API key)."""
