"""The HTML reports (review, eval, inspect) rendered from templates/reports/, autoescaped: record and
sample texts are untrusted and reach the page only as escaped text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from distill.paths import data_path

REVIEW = "review.html.j2"
EVAL = "eval.html.j2"
INSPECT_INDEX = "inspect_index.html.j2"
INSPECT_LAYER = "inspect_layer.html.j2"
INSPECT_STYLE = "inspect_style.html.j2"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("templates") / "reports")),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(context)


def template_files(*names: str) -> list[Path]:
    """The template files behind `names`: their hashes go into the freshness record of the stage that
    renders them."""
    return [data_path("templates") / "reports" / name for name in names]
