"""`replay`: answers from recorded teacher outputs instead of a live model.

This is how existing logs of a strong model's answers are imported, and how the pipeline runs on real
teacher-written text without paying (the shared TinyStories sample: story i is the answer for record i).
Sources: JSONL, CSV, Parquet, a plain text file split by `separator`, a `datasets` dataset saved to disk,
or a hub dataset id (where the network allows). Answers are matched by record index (row i's `column`)
or by rendered prompt (rows carry a `prompt` column equal to the request's last user message).
Bytes that are not UTF-8 are kept as they are (`surrogateescape`): the record carries them to the
review, whose decoding check decides, instead of one bad byte stopping the run.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem
from distill.files import parse_jsonl_objects
from distill.providers.offline import approximate_tokens
from distill.providers.protocol import ProviderFault, TeacherReply, TeacherRequest
from distill.spec import ReplaySource

PATH_KEY = "teacher.replay.path"
FINISHED_TEXT = re.compile(r"[.!?\"')\]]\s*$")


class ReplayProvider:
    """Answers each request with a recorded output. Loads the whole source up front, so a wrong path or
    column fails before the run starts."""

    name = "replay"

    def __init__(self, source: ReplaySource, *, spec_dir: Path, model: str):
        self.source = source
        self.model = model
        rows = load_recorded_rows(source, spec_dir=spec_dir)
        self._answers = [_answer(row, source.column, i) for i, row in enumerate(rows)]
        self._by_prompt: dict[str, str] = {}
        if source.match == "prompt":
            for i, row in enumerate(rows):
                if "prompt" not in row:
                    raise ConfigError(Problem(f"row {i} has no 'prompt' column", key="teacher.replay.match",
                                              hint="match: prompt needs a 'prompt' column equal to the last user message"))
                self._by_prompt.setdefault(_normalise(str(row["prompt"])), self._answers[i])

    def __len__(self) -> int:
        return len(self._answers)

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        if self.source.match == "index":
            if not 0 <= request.record_index < len(self._answers):
                raise ProviderFault(f"no recorded answer for record {request.record_index} "
                                    f"(the replay source has {len(self._answers)})", retryable=False)
            text = self._answers[request.record_index]
        else:
            prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
            if (text := self._by_prompt.get(_normalise(prompt))) is None:
                raise ProviderFault(f"no recorded answer for the prompt of record {request.record_index}", retryable=False)
        prompt_text = "\n".join(m.content for m in request.messages)
        return TeacherReply(text, "stop", approximate_tokens(prompt_text), approximate_tokens(text), self.model)

    async def aclose(self) -> None:
        return None


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _answer(row: dict[str, Any], column: str, index: int) -> str:
    if column not in row:
        raise ConfigError(Problem(f"row {index} has no column {column!r}", key="teacher.replay.column",
                                  hint=f"columns: {', '.join(map(str, row))}"))
    value = row[column]
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)  # recorded JSON outputs


def load_recorded_rows(source: ReplaySource, *, spec_dir: Path) -> list[dict[str, Any]]:
    """Every recorded row, in order, as mappings. Plain text files give rows {column: piece}."""
    path = Path(source.path).expanduser()
    path = path if path.is_absolute() else spec_dir / path  # replay data usually lives outside the repo
    if path.is_dir():
        return _load_saved_dataset(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return _load_jsonl(path)
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8", errors="surrogateescape") as handle:
                return list(csv.DictReader(handle))
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        return [{source.column: piece} for piece in split_text(text, source.separator)]
    if _looks_like_hub_id(source.path):
        return _load_hub_dataset(source)
    raise ConfigError(Problem(f"replay source {str(path)!r} does not exist", key=PATH_KEY,
                              hint="give a JSONL/CSV/Parquet/text file or a saved dataset folder, relative to the spec's folder or absolute"))


def split_text(text: str, separator: str) -> list[str]:
    """Pieces of a text file between separators. A last piece with no separator after it that stops
    mid-sentence is dropped: it is the cut-off end of a sample taken from the head of a bigger file."""
    pieces = text.split(separator)
    last = pieces.pop().strip()
    kept = [piece.strip() for piece in pieces if piece.strip()]
    if last and FINISHED_TEXT.search(last):
        kept.append(last)
    return kept


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        return parse_jsonl_objects(handle, path, ConfigError)


def _load_saved_dataset(path: Path) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise ConfigError(Problem(f"{path} is a folder but not a dataset saved with save_to_disk: {exc}", key=PATH_KEY)) from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[next(iter(loaded))]
    return loaded.to_list()


def _looks_like_hub_id(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is not None and not Path(text).suffix


def _load_hub_dataset(source: ReplaySource) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_dataset(source.path, split=source.split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, gated: all mean "cannot use this source"
        raise ConfigError(Problem(f"could not load hub dataset {source.path!r} (split {source.split!r}): "
                                  f"{type(exc).__name__}: {exc}", key=PATH_KEY,
                                  hint="without network access, download it elsewhere and point path at a local file or saved dataset")) from None
    return loaded.to_list()
