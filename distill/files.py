"""Reading, writing and hashing the files stages hand off through.

Writes are atomic (readers see the old content or the new, never half of it); JSON is written sorted and
indented so the same value gives the same bytes; files are hashed by content with `hashlib.file_digest`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from distill.errors import DistillError, Problem, RunDirError, SpecError


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"  # how write_atomic names its temporary files: `.NAME.RANDOM.tmp`


def is_temp(path: Path) -> bool:
    """A half-written file a killed writer may have left: hidden, or named like write_atomic's temporaries."""
    return path.name.startswith(TEMP_PREFIX) or path.name.endswith(TEMP_SUFFIX)


def remove_temps(folder: Path) -> None:
    """Delete the temporary files a killed writer left in `folder` (not its sub-folders)."""
    if Path(folder).is_dir():
        for path in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            if path.is_file():
                path.unlink(missing_ok=True)


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a finished directory in under `target`: readers see the old one or the new one, and a crash
    never leaves a half-written directory under the real name."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def json_text(value: Any) -> str:
    """The one JSON layout distill writes: sorted keys, two-space indent, a final newline."""
    return json.dumps(value, indent=2, sort_keys=True, default=str) + "\n"


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json_text(value))


def read_json(path: Path, *, missing: Any = ...) -> Any:
    """A JSON file's value; `missing` is returned for a file that does not exist (default: raise)."""
    path = Path(path)
    if missing is not ... and not path.exists():
        return missing
    return read_json_file(path, shape=object)


def read_jsonl(path: Path) -> list[Any]:
    """The complete lines of an append-only JSONL file ([] when it is missing). A half-written last
    line (the writer died mid-line) is cut off the file, so the next append starts on a clean line."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    values = []
    for number, line in enumerate(raw[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RunDirError(Problem(f"corrupt line: {exc.msg}", file=path, line=number, column=exc.colno,
                                          hint="restore the file from a copy, or delete it to recompute it")) from None
    return values


def append_jsonl(path: Path, values: Iterable[Any], *, sync: bool = True) -> None:
    """Append complete lines. Written lines survive the process being killed; `sync` also waits for
    the disk (an OS crash), which costs milliseconds, so per-answer appends skip it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(value, ensure_ascii=False) + "\n" for value in values))
        handle.flush()
        if sync:
            os.fsync(handle.fileno())


def fingerprint(*parts: Any) -> str:
    """A stable sha256 of JSON-serialisable values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tree_sha256(folder: Path) -> str | None:
    """One sha256 over every file under `folder` (relative paths and contents); None when it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def read_json_file(path: Path, *, made_by: str | None = None, shape: type = dict) -> Any:
    """A JSON file a stage wrote; a missing, corrupt or wrong-shaped one is a located RunDirError."""
    fix = f"re-run `{made_by}` to rewrite it" if made_by else "restore it from a copy"
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(Problem("missing", file=path, hint=fix)) from None
    except json.JSONDecodeError as exc:
        raise RunDirError(Problem(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno,
                                  hint=fix)) from None
    except UnicodeDecodeError:
        raise RunDirError(Problem("not UTF-8 text (binary or corrupt)", file=path, hint=fix)) from None
    if not isinstance(value, shape):
        raise RunDirError(Problem(f"wrong shape: expected a JSON {'object' if shape is dict else shape.__name__}, "
                                  f"found {type(value).__name__}", file=path, hint=fix))
    return value


def read_record(path: Path, record: type, *, made_by: str) -> Any:
    """A stage's typed hand-off (a pydantic model) from its JSON file. A missing, corrupt or wrong-shaped
    file is a RunDirError naming the file and the first key that does not fit."""
    from pydantic import ValidationError

    value = read_json_file(path, made_by=made_by)
    try:
        return record.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or None
        raise RunDirError(Problem(f"wrong shape: {error['msg'].lower()} (expected a {record.__name__})", file=path,
                                  key=key, hint=f"re-run `{made_by}` to rewrite it")) from None


def parse_jsonl_objects(lines: Iterable[str], path: Path, error: type[DistillError] = SpecError) -> list[dict[str, Any]]:
    """JSON objects, one per non-blank line; a bad line raises `error` located at its line and column."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(Problem(f"invalid JSON: {exc.msg}", file=path, line=number, column=exc.colno)) from None
        if not isinstance(row, dict):
            raise error(Problem("each line must be a JSON object", file=path, line=number, column=1))
        rows.append(row)
    return rows
