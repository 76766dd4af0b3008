"""From a spec to rendered prompts: per-record variable sampling and sandboxed Jinja rendering.

Record i's variables depend only on (seed, i, variable name): each variable draws from its own
`random.Random` seeded with that triple, so a run can be resumed or split into shards, and adding a
variable to a spec does not reshuffle the others.

Templates come from customers. They render in Jinja's immutable sandbox with StrictUndefined (an
undefined variable is an error, never an empty string) and may include or extend only templates inside
the allowed folders: the spec's `templates_dir` and distill's built-in `templates/`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SecurityError

from distill.errors import Problem, SpecError, TemplateError
from distill.files import parse_jsonl_objects
from distill.located_yaml import read_text_file
from distill.paths import data_path
from distill.providers.protocol import Message
from distill.sandbox import BoundedSandbox, ConfinedLoader, RenderLimit, time_limit
from distill.spec import (
    ChoiceVariable,
    LoadedSpec,
    RangeVariable,
    RowsVariable,
    Spec,
    Step,
    SubsetVariable,
    WeightedVariable,
)

TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2")
MAX_DATA_FILE_BYTES = 200_000_000  # rows files may be real user logs


def resolve_inside(base: Path, relative: str, *, what: str, key: str, spec_file: Path) -> Path:
    """`base / relative`, refusing absolute paths and anything that resolves outside `base`."""
    candidate = (base / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(base.resolve()):
        raise SpecError(Problem(f"{what} names a path outside the spec's folder", file=spec_file, key=key,
                                hint="keep referenced files next to the spec"))
    return candidate


# --- variable sources: word lists and rows files, loaded once per spec ---


def read_word_list(path: Path) -> list[str]:
    """One item per line; blank lines and lines starting with `#` are skipped."""
    text = read_text_file(path, what="word list", max_bytes=MAX_DATA_FILE_BYTES)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL or CSV file, as mappings."""
    text = read_text_file(path, what="rows file", max_bytes=MAX_DATA_FILE_BYTES)
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise SpecError(Problem("rows file must be .jsonl or .csv", file=path))
    return parse_jsonl_objects(text.splitlines(), path)


class VariableSampler:
    """Samples record i's variables. Built once per spec: word lists and rows files are read here,
    and every problem with them is reported at once, located at the spec key that names the file."""

    def __init__(self, loaded: LoadedSpec):
        self.spec = loaded.spec
        self._pools: dict[str, list[Any]] = {}
        problems: list[Problem] = []
        for name, variable in self.spec.variables.items():
            try:
                self._pools[name] = self._load_pool(loaded, name, variable)
            except SpecError as exc:
                line, column = loaded.document.locate(("variables", name, "file"))
                for p in exc.problems:
                    if p.line is not None:  # located inside the referenced file: keep that place
                        problems.append(p)
                    else:
                        problems.append(Problem(f"{p.file}: {p.message}" if p.file else p.message, file=loaded.path, line=line,
                                                column=column, key=p.key or f"variables.{name}.file", hint=p.hint))
        if problems:
            raise SpecError(*problems)

    @staticmethod
    def _load_pool(loaded: LoadedSpec, name: str, variable: Any) -> list[Any]:
        key = f"variables.{name}.file"
        if isinstance(variable, ChoiceVariable) and variable.file:
            path = resolve_inside(loaded.directory, variable.file, what="word list", key=key, spec_file=loaded.path)
            words = read_word_list(path)
            if not words:
                raise SpecError(Problem("word list is empty", file=path, key=key))
            return words
        if isinstance(variable, RowsVariable):
            path = resolve_inside(loaded.directory, variable.file, what="rows file", key=key, spec_file=loaded.path)
            rows = read_rows(path)
            if not rows:
                raise SpecError(Problem("rows file has no rows", file=path, key=key))
            if variable.column is None:
                return rows
            missing = next((i for i, row in enumerate(rows) if variable.column not in row), None)
            if missing is not None:
                raise SpecError(Problem(f"column {variable.column!r} is missing in row {missing + 1}", file=path,
                                        key=f"variables.{name}.column", hint=f"columns: {', '.join(rows[missing])}"))
            return [row[variable.column] for row in rows]
        if isinstance(variable, ChoiceVariable):
            return list(variable.items or [])
        return []

    def sample(self, index: int) -> dict[str, Any]:
        return {name: self._draw(name, variable, index) for name, variable in self.spec.variables.items()}

    def _draw(self, name: str, variable: Any, index: int) -> Any:
        rng = random.Random(f"{self.spec.seed}:{index}:{name}")
        if isinstance(variable, ChoiceVariable):
            return rng.choice(self._pools[name])
        if isinstance(variable, WeightedVariable):
            return rng.choices(list(variable.weights), weights=list(variable.weights.values()))[0]
        if isinstance(variable, SubsetVariable):
            top = len(variable.items) if variable.max is None else variable.max
            chosen = rng.sample(range(len(variable.items)), rng.randint(variable.min, top))
            return [variable.items[i] for i in (chosen if variable.order == "random" else sorted(chosen))]
        if isinstance(variable, RangeVariable):
            return rng.randint(variable.min, variable.max)
        if isinstance(variable, RowsVariable):
            pool = self._pools[name]
            return pool[index % len(pool)] if variable.order == "sequential" else rng.choice(pool)
        raise AssertionError(f"unhandled variable type {type(variable).__name__}")

    def combinations(self) -> int:
        """How many distinct variable combinations the spec can produce (sequential rows count once each)."""
        total = 1
        for name, variable in self.spec.variables.items():
            if isinstance(variable, WeightedVariable):
                total *= len(variable.weights)
            elif isinstance(variable, SubsetVariable):
                top = len(variable.items) if variable.max is None else variable.max
                orders = math.factorial if variable.order == "random" else (lambda k: 1)
                total *= sum(math.comb(len(variable.items), k) * orders(k) for k in range(variable.min, top + 1))
            elif isinstance(variable, RangeVariable):
                total *= variable.max - variable.min + 1
            else:
                total *= len(set(map(_freeze, self._pools[name])))
        return total


def _freeze(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- sandboxed templates ---


def template_folders(loaded: LoadedSpec) -> list[Path]:
    folders = []
    if loaded.spec.templates_dir:
        folders.append(resolve_inside(loaded.directory, loaded.spec.templates_dir, what="templates_dir",
                                      key="templates_dir", spec_file=loaded.path))
    folders.append(data_path("templates"))
    return folders


def is_template_file(reference: str) -> bool:
    return reference.endswith(TEMPLATE_SUFFIXES) and "\n" not in reference and "{" not in reference


@dataclass(frozen=True)
class RenderedStep:
    name: str
    messages: tuple[Message, ...]


class PromptRenderer:
    """Renders a spec's steps for one record at a time, in the sandbox."""

    def __init__(self, loaded: LoadedSpec):
        self.loaded = loaded
        self.spec = loaded.spec
        self.sampler = VariableSampler(loaded)
        self.env = BoundedSandbox(
            loader=ConfinedLoader(template_folders(loaded)),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates: dict[str, tuple[jinja2.Template, str]] = {}
        self._over_limit: dict[str, TemplateError] = {}  # a template that hit a bound is not run again

    def _problem(self, message: str, key: str, hint: str | None = None) -> Problem:
        """A problem located at the spec key that names the template (e.g. `steps[1].user`)."""
        path = tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", key))
        line, column = self.loaded.document.locate(path)
        return Problem(message, file=self.loaded.path, line=line, column=column, key=key, hint=hint)

    def template(self, reference: str, *, key: str) -> tuple[jinja2.Template, str]:
        """Compile a template file or inline text once; returns it with its source's sha256."""
        if reference in self._over_limit:
            raise self._over_limit[reference]
        if reference not in self._templates:
            try:
                with time_limit():  # Jinja constant-folds while compiling: compiling runs code too
                    if is_template_file(reference):
                        source = self.env.loader.get_source(self.env, reference)[0]
                        compiled = self.env.get_template(reference)
                    else:
                        source, compiled = reference, self.env.from_string(reference)
            except jinja2.TemplateNotFound as exc:
                folders = ", ".join(str(f) for f in template_folders(self.loaded))
                raise TemplateError(self._problem(f"template {exc.name!r} not found in the allowed folders ({folders})", key)) from None
            except jinja2.TemplateSyntaxError as exc:
                if exc.filename:
                    raise TemplateError(Problem(f"template syntax error: {exc.message}", file=exc.filename, line=exc.lineno)) from None
                raise TemplateError(self._problem(f"template syntax error: {exc.message} (template line {exc.lineno})", key)) from None
            except (RenderLimit, MemoryError, RecursionError, OverflowError) as exc:
                raise self._limit_error(reference, key, "compiling", exc) from None
            self._templates[reference] = (compiled, hashlib.sha256(source.encode()).hexdigest())
        return self._templates[reference]

    def _limit_error(self, reference: str, key: str, doing: str, exc: BaseException) -> TemplateError:
        """A located error for a template that went over a bound; remembered so it fails fast next time."""
        what = {MemoryError: "ran out of memory", OverflowError: "made a number too large to represent",
                RecursionError: "is nested too deeply" if doing == "compiling" else "recursed too deeply (a macro calling itself?)",
                }.get(type(exc), str(exc))
        name = f"template {reference!r}" if is_template_file(reference) else "inline template"
        error = TemplateError(self._problem(f"{name} {what} while {doing}", key,
                                            hint="templates must render small prompts quickly; remove the runaway loop, repetition or recursion"))
        self._over_limit[reference] = error
        return error

    @cached_property
    def template_hashes(self) -> dict[str, str]:
        """sha256 of each template source the spec uses, by key path."""
        hashes = {}
        for i, step in enumerate(self.spec.steps):
            for part in ("system", "user"):
                reference = getattr(step, part)
                if reference is not None:
                    hashes[f"steps[{i}].{part}"] = self.template(reference, key=f"steps[{i}].{part}")[1]
        if self.spec.student_input:
            hashes["student_input"] = self.template(self.spec.student_input, key="student_input")[1]
        return hashes

    def context(self, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        return {**variables, "record_index": index, "steps": dict(outputs)}

    def render(self, reference: str, context: dict[str, Any], *, key: str) -> str:
        compiled, _ = self.template(reference, key=key)
        try:
            with time_limit():
                return self.env.render_bounded(compiled, context).strip()
        except (RenderLimit, MemoryError, RecursionError, OverflowError) as exc:
            raise self._limit_error(reference, key, "rendering", exc) from None
        except jinja2.UndefinedError as exc:
            raise TemplateError(self._problem(f"undefined variable while rendering: {exc.message}", key,
                                              hint=f"available: {', '.join(sorted(context))}")) from None
        except jinja2.TemplateNotFound as exc:
            folders = ", ".join(str(f) for f in template_folders(self.loaded))
            raise TemplateError(self._problem(f"included template {exc.name!r} not found in the allowed folders ({folders})", key)) from None
        except SecurityError as exc:
            raise TemplateError(self._problem(f"template tried something the sandbox forbids: {exc}", key)) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(self._problem(f"template failed to render: {exc}", key)) from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            # a filter or operator given the wrong kind of value (`1 / 0`, `5|indent`): the template's mistake
            raise TemplateError(self._problem(f"template failed to render: {type(exc).__name__}: {exc}", key)) from None

    def variables(self, index: int) -> dict[str, Any]:
        """Record `index`'s sampled variables (the same for every run of the spec)."""
        return self.sampler.sample(index)

    def render_step(self, step_index: int, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> RenderedStep:
        """Messages for step `step_index` of record `index`, given the earlier steps' outputs."""
        step: Step = self.spec.steps[step_index]
        context = self.context(index, variables, outputs)
        messages = []
        if step.system is not None:
            messages.append(Message("system", self.render(step.system, context, key=f"steps[{step_index}].system")))
        messages.append(Message("user", self.render(step.user, context, key=f"steps[{step_index}].user")))
        return RenderedStep(step.name, tuple(messages))

    def render_student_input(self, index: int, variables: dict[str, Any], outputs: dict[str, Any]) -> str:
        """What the student sees for an instruct record ("" for text specs)."""
        if not self.spec.student_input:
            return ""
        return self.render(self.spec.student_input, self.context(index, variables, outputs), key="student_input")


def placeholder_output(step: Step, schema: dict[str, Any] | None) -> Any:
    """A stand-in for a step's output before the teacher has answered (preview, validation)."""
    if step.output == "text":
        return f"<output of step {step.name!r}>"
    return _example_from_schema(schema or {}, step.name)


def _example_from_schema(schema: dict[str, Any], label: str) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return {name: _example_from_schema(sub, f"{label}.{name}") for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [_example_from_schema(schema.get("items", {}), f"{label}[0]")]
    return {"integer": 0, "number": 0.0, "boolean": False}.get(kind, f"<{label}>")


def step_json_schema(loaded: LoadedSpec, step_index: int) -> dict[str, Any] | None:
    """A json step's schema: inline in the spec, or a .json file next to it. Checked as JSON Schema."""
    import jsonschema

    step = loaded.spec.steps[step_index]
    key = f"steps[{step_index}].json_schema"
    if step.json_schema is None or isinstance(step.json_schema, dict):
        schema = step.json_schema
    else:
        path = resolve_inside(loaded.directory, step.json_schema, what="JSON schema file", key=key, spec_file=loaded.path)
        try:
            schema = json.loads(read_text_file(path, what="JSON schema file"))
        except json.JSONDecodeError as exc:
            raise SpecError(Problem(f"invalid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno)) from None
    if schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            inside = tuple(exc.absolute_path)
            if isinstance(step.json_schema, dict):  # inline: point at the offending part of the spec
                line, column = loaded.document.locate(("steps", step_index, "json_schema", *inside))
                where = {"file": loaded.path, "line": line, "column": column}
            else:
                where = {"file": path}
            place = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inside)
            raise SpecError(Problem(f"not a valid JSON Schema: {exc.message}", key=key + place, **where)) from None
    return schema
