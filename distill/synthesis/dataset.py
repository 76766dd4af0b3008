"""Where rows go: `RUN/generate/records.jsonl` as they finish, `RUN/dataset/` at the end.

Every finished record is appended to the JSONL log and fsynced, so a crash loses nothing that was paid
for (the answers are in the cache too). A shard `i/N` takes indices i, i+N, i+2N, ... and writes its own
log, `records.shard-i-of-N.jsonl`; the dataset is built from all logs once every index is covered.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem, RunDirError
from distill.files import replace_dir

COLUMNS = ("id", "variables", "steps", "prompt", "text", "status", "failure_reason", "teacher_provider",
           "teacher_model", "input_tokens", "output_tokens", "cost_usd", "cache_key", "template_hashes",
           "teacher_logprobs")  # the target step's token distribution (TokenLogprobs.to_json), "" when none


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/N' -> (i, N); None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ConfigError(Problem(f"--shard {text!r} is not i/N with 0 <= i < N", key="--shard",
                                  hint="e.g. --shard 0/4 on the first of four machines"))
    return index, count


def shard_indices(records: int, shard: tuple[int, int]) -> list[int]:
    index, count = shard
    return list(range(index, records, count))


def log_path(generate_dir: Path, shard: tuple[int, int]) -> Path:
    index, count = shard
    return generate_dir / ("records.jsonl" if count == 1 else f"records.shard-{index}-of-{count}.jsonl")


class RecordLog:
    """An append-only JSONL of finished rows; the last line for an id wins."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = read_log(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        if self.rows.get(row["id"]) == row:
            return  # already logged exactly so (a re-run): keep the log free of duplicates
        self._handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.rows[row["id"]] = row

    def close(self) -> None:
        self._handle.close()


def read_log(path: Path) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a log cut by a crash; the record is redone from the cache
            rows[row["id"]] = row
    return rows


def collect_rows(generate_dir: Path, records: int, template_hashes: str) -> dict[int, dict[str, Any]]:
    """Rows of the current spec from every log in `generate_dir` (whole run and shards)."""
    rows: dict[int, dict[str, Any]] = {}
    for path in sorted(generate_dir.glob("records*.jsonl")):
        for index, row in read_log(path).items():
            if index < records and row.get("template_hashes") == template_hashes:
                rows[index] = row
    return rows


def write_dataset(rows: list[dict[str, Any]], path: Path) -> None:
    """Save rows (sorted by id) as a `datasets` dataset, replacing `path` only once it is complete."""
    import datasets

    features = datasets.Features({
        **{name: datasets.Value("string") for name in COLUMNS},
        "id": datasets.Value("int64"), "input_tokens": datasets.Value("int64"),
        "output_tokens": datasets.Value("int64"), "cost_usd": datasets.Value("float64"),
    })
    table = {name: [row.get(name, "") for row in sorted(rows, key=lambda r: r["id"])] for name in COLUMNS}
    dataset = datasets.Dataset.from_dict(table, features=features)
    staging = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    dataset.save_to_disk(str(staging))
    replace_dir(staging, path)


def load_saved_dataset(path: Path) -> Any:
    """RUN/dataset as a `datasets.Dataset`. A damaged one (a corrupt dataset_info.json or state.json, a
    truncated arrow file) is a RunDirError naming the damaged file and how to rebuild it."""
    import datasets

    if not path.is_dir():
        raise RunDirError(Problem("no dataset", file=path, hint="run `distill generate SPEC` first"))
    try:
        return datasets.load_from_disk(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # pyarrow's errors are OSErrors and ValueErrors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RunDirError(Problem(f"corrupt run file: {reason}", file=damaged_file(path),
                                  hint=f"delete {path} and run `distill generate SPEC` with this run's --run-id: "
                                       "the dataset is rebuilt from the records log and the answer cache, "
                                       "nothing is paid twice")) from None


def damaged_file(path: Path) -> Path:
    """Which file of a saved dataset is damaged: a JSON file that does not parse, else its data file."""
    for name in ("state.json", "dataset_info.json"):
        try:
            json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path / name
    return next(iter(sorted(path.glob("*.arrow"))), path)
