"""`distill init NAME`: a commented starter spec and template that validate as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import jinja2

from distill.errors import ConfigError, Problem
from distill.paths import data_path
from distill.spec import Spec

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def write_starter(name: str, directory: Path) -> list[Path]:
    """Write `<directory>/<name>.yaml` and `<directory>/templates/<name>/task.j2`; never overwrite."""
    if not NAME_PATTERN.match(name):
        raise ConfigError(Problem(f"task name {name!r} must be lowercase letters, digits, '.', '_' or '-' (at most 64)", key="NAME"))
    spec_file = directory / f"{name}.yaml"
    template_file = directory / "templates" / name / "task.j2"
    for path in (spec_file, template_file):
        if path.exists():
            raise ConfigError(Problem("already exists; choose another name or directory", file=path))
    starter = jinja2.Environment(loader=jinja2.FileSystemLoader(data_path("templates") / "starter"), keep_trailing_newline=True)
    starter.globals["comment"] = field_comment
    template_file.parent.mkdir(parents=True, exist_ok=True)
    template_file.write_text(starter.get_template("task.j2").render())
    spec_file.write_text(starter.get_template("spec.yaml.j2").render(name=name, spec_file=spec_file.name, template=f"{name}/task.j2"))
    return [spec_file, template_file]


def field_comment(name: str, width: int = 100) -> str:
    """The spec's top-level field `name` described as `distill schema` describes it, as YAML comment lines."""
    description = Spec.model_fields[name].description
    if not description:
        raise KeyError(f"the spec field {name!r} has no description: give it a docstring in distill/spec.py")
    return "\n".join("# " + line for line in textwrap.wrap(description, width - 2))
