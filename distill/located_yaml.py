"""Safe YAML loading that remembers where every key and value came from.

Customer specs are untrusted: we only build plain data (SafeLoader), refuse duplicate keys, huge files
and deeply nested documents, and keep a (line, column) for every key path so that validation errors can
point at `specs/x.yaml:14:5`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import Problem, SpecError

MAX_BYTES = 1_000_000  # a spec is a page of YAML; anything bigger is a mistake or an attack
MAX_DEPTH = 32
MAX_NODES = 200_000  # also bounds alias fan-out ("billion laughs")

KeyPath = tuple[str | int, ...]


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe constructors in a table of the spec's own: a library that rewrites SafeLoader's shared
    table (lm-format-enforcer reads every timestamp as text) does not change how a spec reads."""


_SpecLoader.yaml_constructors = {**yaml.SafeLoader.yaml_constructors,
                                 "tag:yaml.org,2002:timestamp": yaml.constructor.SafeConstructor.construct_yaml_timestamp}


@dataclass
class LocatedDocument:
    """Plain data plus the 1-based (line, column) of each key path's key and value."""

    data: Any
    file: Path
    key_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: KeyPath, *, prefer_key: bool = False) -> tuple[int | None, int | None]:
        """The best known position for `path`: its value (or key), else the nearest ancestor's."""
        marks = (self.key_marks, self.value_marks) if prefer_key else (self.value_marks, self.key_marks)
        for cut in range(len(path), -1, -1):
            for table in marks:
                if path[:cut] in table:
                    return table[path[:cut]]
        return None, None


def read_text_file(path: Path, *, what: str, max_bytes: int = MAX_BYTES) -> str:
    """Read a UTF-8 text file that a spec names, with located errors for every way it can go wrong.

    Only regular files are read (a FIFO would block forever, `/dev/zero` never ends), and the cap is on
    the bytes actually read, not on what `stat` claims: a file can grow, and devices report size 0."""
    raw = read_regular_file(path, what=what, max_bytes=max_bytes)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(
            Problem(f"{what} is not valid UTF-8 (byte 0x{raw[exc.start]:02x})", file=path, line=line, column=column)
        ) from None


def read_regular_file(path: Path, *, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file, at most `max_bytes` of them; anything else is a located SpecError."""
    try:
        info = os.stat(path)  # follows symlinks: a link to /dev/zero is a device
    except FileNotFoundError:
        raise SpecError(Problem(f"{what} not found", file=path)) from None
    except OSError as exc:
        raise SpecError(Problem(f"{what} cannot be read: {exc.strerror}", file=path)) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(Problem(f"{what} is a directory, expected a file", file=path))
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(Problem(f"{what} is not a regular file ({file_kind(info.st_mode)})", file=path,
                                hint="give a plain file, not a pipe, socket or device"))
    try:
        # O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it does not block
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SpecError(Problem(f"{what} cannot be read: {exc.strerror}", file=path)) from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise SpecError(Problem(f"{what} is not a regular file", file=path))
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise SpecError(Problem(f"{what} is more than the limit of {max_bytes:,} bytes", file=path))
    return raw


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def load_located_yaml(path: Path) -> LocatedDocument:
    """Parse one YAML document safely; every failure is a SpecError located in `path`."""
    text = read_text_file(path, what="spec")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise SpecError(Problem(f"malformed YAML: {exc.problem or exc.context}", file=path, line=line, column=column)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; located by offset only
        line = text[: exc.position].count("\n") + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise SpecError(Problem(f"malformed YAML: character U+{exc.character:04X} is not allowed", file=path, line=line,
                                column=column)) from None
    except yaml.YAMLError as exc:
        raise SpecError(Problem(f"malformed YAML: {exc}", file=path)) from None
    except RecursionError:
        raise SpecError(Problem(f"document is nested too deeply (limit {MAX_DEPTH} levels)", file=path)) from None
    if root is None:
        raise SpecError(Problem("spec is empty", file=path, line=1, column=1))
    document = LocatedDocument(data=None, file=path)
    document.data = _build(root, (), document, depth=0, budget=[MAX_NODES, _SpecLoader("")])
    return document


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, path: KeyPath, doc: LocatedDocument, *, depth: int, budget: list) -> Any:
    """Plain data from `node`; `budget` is [nodes left, the constructor for scalars] for the whole document."""
    if depth > MAX_DEPTH:
        line, column = _mark(node)
        raise SpecError(Problem(f"document is nested too deeply (limit {MAX_DEPTH} levels)", file=doc.file, line=line, column=column))
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(Problem(f"document has too many nodes (limit {MAX_NODES:,}; aliases count every time)", file=doc.file))
    doc.value_marks.setdefault(path, _mark(node))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in (_MAP, _SEQ):
        line, column = _mark(node)
        raise SpecError(Problem(f"unsupported YAML tag {_short_tag(node.tag)!r}: a spec holds plain mappings, lists and values",
                                file=doc.file, line=line, column=column, key=dotted_key(path) or None))
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, doc, depth=depth, budget=budget)
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), doc, depth=depth + 1, budget=budget) for i, item in enumerate(node.value)]
    return _scalar(node, path, doc, budget[1])


_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SCALAR_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp", "binary")}


def _short_tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _scalar(node: yaml.Node, path: KeyPath, doc: LocatedDocument, constructor: yaml.SafeLoader) -> Any:
    line, column = _mark(node)
    key = dotted_key(path) or None
    if node.tag not in _SCALAR_TAGS:
        raise SpecError(Problem(f"unsupported YAML tag {_short_tag(node.tag)!r}: a spec holds plain values",
                                file=doc.file, line=line, column=column, key=key))
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        reason = exc.problem
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors raise plain Python errors on values their tag cannot read
        digits = sum(c.isdigit() for c in node.value)
        reason = (f"a number of {digits:,} digits is longer than Python reads (4,300)" if "digits" in str(exc)
                  else f"not a valid {_short_tag(node.tag)[2:]}")
    value = node.value if len(node.value) <= 40 else node.value[:40] + "..."
    raise SpecError(Problem(f"cannot read {value!r} as {_short_tag(node.tag)}: {reason}", file=doc.file, line=line,
                            column=column, key=key, hint="write a valid value, or quote it (without a tag) to keep it as text")) from None


def _build_mapping(node: yaml.MappingNode, path: KeyPath, doc: LocatedDocument, *, depth: int, budget: list) -> dict:
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            raise SpecError(Problem("YAML merge keys (<<) are not supported in specs", file=doc.file, line=_mark(key_node)[0], column=_mark(key_node)[1]))
        key = _build(key_node, path + ("<key>",), doc, depth=depth + 1, budget=budget)
        if isinstance(key, bool):  # YAML 1.1 reads true/yes/on as a boolean, which Python equates with 1
            line, column = _mark(key_node)
            raise SpecError(Problem(f"key {key_node.value!r} is read by YAML as the boolean {str(key).lower()}, not as text",
                                    file=doc.file, line=line, column=column, key=dotted_key(path) or None,
                                    hint=f"quote it: '{key_node.value}'"))
        if not isinstance(key, (str, int)):
            line, column = _mark(key_node)
            raise SpecError(Problem(f"mapping keys must be text, got {type(key).__name__}", file=doc.file, line=line, column=column))
        child = path + (key,)
        if key in result:
            line, column = _mark(key_node)
            first_line, _ = doc.key_marks[child]
            raise SpecError(
                Problem(f"duplicate key {key!r} (first defined on line {first_line})", file=doc.file, line=line, column=column, key=dotted_key(child))
            )
        doc.key_marks[child] = _mark(key_node)
        result[key] = _build(value_node, child, doc, depth=depth + 1, budget=budget)
    return result


def dotted_key(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


