"""Stage 9: decontamination. A record that shares an n-gram (13 words by default, lower-cased,
punctuation ignored) with an evaluation text is removed, so the student is never trained on its own
test. Evaluation texts come from files: the held-out sets the evaluation stage uses and any files
the spec names under `safety.decontaminate`.

N-grams are 64-bit polynomial hashes of word ids, checked for all records at once with `np.isin`;
at 64 bits, a million evaluation n-grams give a false match about once in 10^10 record n-grams.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.errors import Problem, SpecError

_WORD = re.compile(r"\w+")
_MULT = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class Overlap:
    record: int
    span: tuple[int, int]  # characters of the first shared n-gram in the record
    source: str  # file (and line) of the evaluation text
    ngram: str


def read_eval_texts(paths: list[Path]) -> list[tuple[str, str]]:
    """(source, text) pairs from .jsonl (every string field), .json (strings or objects), and text
    files (split on `<|endoftext|>` when present)."""
    texts = []
    for path in paths:
        if not path.is_file():
            raise SpecError(Problem(f"evaluation file {path} not found", key="safety.decontaminate",
                                    hint="list files that exist, relative to the spec"))
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".jsonl":
            for number, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    texts += [(f"{path.name}:{number}", value) for value in _strings(json.loads(line))]
        elif path.suffix == ".json":
            texts += [(path.name, value) for value in _strings(json.loads(raw))]
        else:
            texts += [(path.name, part) for part in raw.split("<|endoftext|>") if part.strip()]
    return texts


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


class NgramIndex:
    """Hashed word n-grams of the evaluation texts."""

    def __init__(self, n: int = 13):
        self.n = n
        self._ids: dict[str, int] = {}
        self._hashes: list[np.ndarray] = []
        self._sources: list[np.ndarray] = []
        self.source_names: list[str] = []
        self._sorted: np.ndarray | None = None
        self._sorted_sources: np.ndarray | None = None

    def hashes(self, text: str) -> np.ndarray:
        ids = self._ids
        words = np.fromiter((ids.setdefault(w, len(ids) + 1) for w in _WORD.findall(text.lower())), dtype=np.uint64)
        count = len(words) - self.n + 1
        if count <= 0:
            return np.zeros(0, dtype=np.uint64)
        h = np.zeros(count, dtype=np.uint64)
        for k in range(self.n):
            h = h * _MULT + words[k : k + count]
        return h

    def add(self, source: str, text: str) -> None:
        h = self.hashes(text)
        self._hashes.append(h)
        self._sources.append(np.full(len(h), len(self.source_names), dtype=np.int32))
        self.source_names.append(source)
        self._sorted = None

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            flat = np.concatenate(self._hashes) if self._hashes else np.zeros(0, dtype=np.uint64)
            sources = np.concatenate(self._sources) if self._sources else np.zeros(0, dtype=np.int32)
            order = np.argsort(flat, kind="stable")
            self._sorted, self._sorted_sources = flat[order], sources[order]
        return self._sorted, self._sorted_sources

    def __len__(self) -> int:
        return sum(len(h) for h in self._hashes)

    def find(self, ids: list[int], texts: list[str]) -> list[Overlap]:
        """The first shared n-gram of each record that has one."""
        index, sources = self._index()
        if not len(index):
            return []
        overlaps = []
        for record, text in zip(ids, texts):
            h = self.hashes(text)
            if not len(h):
                continue
            where = np.searchsorted(index, h)
            hit = (where < len(index)) & (index[np.minimum(where, len(index) - 1)] == h)
            if hit.any():
                first = int(np.argmax(hit))
                words = list(_WORD.finditer(text))
                span = (words[first].start(), words[first + self.n - 1].end())
                source = self.source_names[int(sources[where[first]])]
                overlaps.append(Overlap(record, span, source, text[span[0] : span[1]]))
        return overlaps


def build_index(paths: list[Path], n: int = 13, extra_texts: list[tuple[str, str]] = ()) -> NgramIndex:
    index = NgramIndex(n)
    for source, text in [*read_eval_texts(paths), *extra_texts]:
        index.add(source, text)
    return index
