"""Every path a spec names, found from the schema, and the rule that keeps each inside the spec's folder.

The fields that name files carry a `PathRef` (distill.spec); `path_references` walks a spec's raw data
with the schema and returns each value with its key path, so a field added tomorrow is confined the day
it is declared. The CLI confines the fields it always confined (word lists, rows, templates, the policy);
the service (`server=True`) confines every one: an upload may read only what it uploaded.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, NamedTuple, Union

from pydantic import BaseModel

from distill.errors import Problem
from distill.located_yaml import LocatedDocument, dotted_key
from distill.paths import data_path
from distill.spec import PathRef, Spec

JOB_PREFIX = "job:"  # `base_model: job:<id>`: a model the service made (see docs/service.md)
TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2")


class Reference(NamedTuple):
    key: tuple  # the key path in the spec, e.g. ("variables", "noun", "file")
    value: str
    ref: PathRef

    @property
    def dotted(self) -> str:
        return dotted_key(self.key)


def path_references(data: Any, model: type[BaseModel] = Spec) -> list[Reference]:
    """Every value of a `PathRef` field in `data` (a spec's raw mapping, valid or not), in document order."""
    found: dict[tuple, Reference] = {}
    for reference in _walk(model, data, ()):
        found.setdefault(reference.key, reference)
    return list(found.values())


def path_fields(model: type[BaseModel] = Spec, prefix: str = "") -> dict[str, PathRef]:
    """The dotted names of every path-taking field in the schema (`[]` for list items, `*` for mapping values)."""
    fields: dict[str, PathRef] = {}
    for name, info in model.model_fields.items():
        fields.update(_fields_of(_field_type(info), f"{prefix}{name}"))
    return fields


def _fields_of(tp: Any, name: str) -> dict[str, PathRef]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        ref = _ref_of(tp)
        return {name: ref} if ref else _fields_of(typing.get_args(tp)[0], name)
    if origin in (Union, types.UnionType):
        return {k: v for member in typing.get_args(tp) for k, v in _fields_of(member, name).items()}
    if origin is list:
        return _fields_of(typing.get_args(tp)[0], f"{name}[]")
    if origin is dict:
        return _fields_of(typing.get_args(tp)[1], f"{name}.*")
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return path_fields(tp, f"{name}.")
    return {}


def _field_type(info) -> Any:
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _ref_of(tp: Any) -> PathRef | None:
    return next((m for m in typing.get_args(tp)[1:] if isinstance(m, PathRef)), None)


def _walk(tp: Any, data: Any, key: tuple):
    origin = typing.get_origin(tp)
    if origin is Annotated:
        ref = _ref_of(tp)
        if ref is not None and isinstance(data, (str, Path)):
            yield Reference(key, str(data), ref)
        elif ref is None:
            yield from _walk(typing.get_args(tp)[0], data, key)
    elif origin in (Union, types.UnionType):
        for member in _members(typing.get_args(tp), data):
            yield from _walk(member, data, key)
    elif origin is list and isinstance(data, list):
        for index, item in enumerate(data):
            yield from _walk(typing.get_args(tp)[0], item, (*key, index))
    elif origin is dict and isinstance(data, dict):
        for name, item in data.items():
            yield from _walk(typing.get_args(tp)[1], item, (*key, name))
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(data, dict):
        for name, info in tp.model_fields.items():
            if name in data:
                yield from _walk(_field_type(info), data[name], (*key, name))


def _members(members: tuple, data: Any) -> list:
    """A tagged union's member by the data's `type` (all members when the tag is missing or unknown)."""
    models = [typing.get_args(m)[0] if typing.get_origin(m) is Annotated else m for m in members]
    tag = data.get("type") if isinstance(data, dict) else None
    tagged = [m for m in models if isinstance(m, type) and issubclass(m, BaseModel) and "type" in m.model_fields
              and typing.get_args(m.model_fields["type"].annotation) == (tag,)]
    return tagged or list(members)


# --- the rules ---


def inside(folder: Path, value: str) -> Path | None:
    """`folder / value` when `value` is relative and resolves (links followed) inside `folder`, else None."""
    if not value or PurePosixPath(value).is_absolute() or Path(value).is_absolute() or "\\" in value:
        return None
    candidate = (folder / value).resolve()
    return candidate if candidate.is_relative_to(folder.resolve()) else None


def is_hub_id(path: str) -> bool:
    """`owner/name` with no file suffix: a dataset on a hub rather than a local file."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and "." not in parts[1] and not path.startswith(".")


def shipped_names(ref: PathRef) -> list[str]:
    folder = data_path("safety") / ref.shipped if ref.shipped else data_path("safety")
    return sorted(p.stem for p in folder.glob(f"*{ref.suffix}"))


def reference_problems(document: LocatedDocument, folder: Path, *, server: bool) -> list[Problem]:
    """Each path the spec names that leaves the spec's folder (every one on the service, the CLI's
    confined fields locally), names an unknown shipped policy or probe set, or names a missing file.
    Messages never repeat the path itself: on the service it could be another tenant's server path."""
    problems = []
    for reference in path_references(document.data):
        message = _rule(reference, folder, server=server)
        if message is not None:
            line, column = document.locate(reference.key)
            message, hint = message
            problems.append(Problem(message, file=document.file, line=line, column=column, key=reference.dotted, hint=hint))
    return problems


OUTSIDE = ("names a path outside the spec's folder", "give a path relative to the spec, inside its folder "
           "(no absolute paths, no '..'); upload the file with the spec")


def _rule(reference: Reference, folder: Path, *, server: bool) -> tuple[str, str | None] | None:
    value, ref = reference.value, reference.ref
    confined = server or ref.local_only
    if ref.kind == "named":
        return _named_rule(reference, folder, confined=confined)
    if ref.kind == "template":
        file_like = value.endswith(TEMPLATE_SUFFIXES) or reference.key[-1] == "rubric"
        if not file_like or "\n" in value or "{" in value:
            return None  # inline template text
        return OUTSIDE if confined and (PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts) else None
    if ref.kind == "replay" and is_hub_id(value):
        return None
    if ref.kind == "model" and value.startswith(JOB_PREFIX):
        return None if server else (f"'{JOB_PREFIX}<id>' names a job of the service; on the command line give "
                                    "a local model directory", None)
    if confined and inside(folder, value) is None:
        return OUTSIDE
    if ref.kind == "file" and reference.key[0] in ("safety", "evaluation"):
        path = Path(value) if Path(value).is_absolute() else folder / value
        if not path.is_file():
            return ("names a file that does not exist", "list files that exist, relative to the spec")
    return None


def _named_rule(reference: Reference, folder: Path, *, confined: bool) -> tuple[str, str | None] | None:
    """A shipped name (`children`, `story`), or a file: inside the spec's folder where confined."""
    value, ref = reference.value, reference.ref
    names = shipped_names(ref)
    if "/" not in value and "\\" not in value and not value.endswith((ref.suffix, ".yml")):
        if value in names:
            return None
        return (f"unknown name {value!r}", f"shipped: {', '.join(names)}; or a {ref.suffix} file in the spec's folder")
    path = inside(folder, value) if confined else (Path(value) if Path(value).is_absolute() else folder / value)
    if path is None:
        return OUTSIDE
    if not path.is_file():
        return ("names a file that does not exist", f"shipped: {', '.join(names)}; or a {ref.suffix} file in the spec's folder")
    return None


def referenced_files(document: LocatedDocument, folder: Path, *, server: bool, limit: int = 500) -> list[Path]:
    """The regular files a spec names (a folder's files for templates_dir), for the key scan: everything
    but replay data and model weights (read by no teacher, and large). `server`: only files inside the
    folder (a problem about any other file would tell a tenant about the server's files)."""
    files: list[Path] = []
    for reference in path_references(document.data):
        if reference.ref.kind in ("replay", "model") or "\n" in reference.value or "{" in reference.value:
            continue
        path = inside(folder, reference.value) if server or reference.ref.local_only else (
            Path(reference.value) if Path(reference.value).is_absolute() else folder / reference.value)
        if path is None:
            continue
        if path.is_dir() and reference.key == ("templates_dir",):
            files += sorted(p for p in path.rglob("*") if p.is_file())[:limit]
        elif path.is_file():
            files.append(path)
    return files
