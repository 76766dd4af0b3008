"""Commands on a spec before anything is spent: validate, schema, preview, init."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import MAX_COUNT, MAX_RECORDS


def validate(spec: Annotated[Path, typer.Argument(help="The task spec YAML file.")]) -> None:
    """Check a spec fully: schema, referenced files, JSON schemas, and templates rendered for sample records."""
    from distill.review.signoff import spec_signoff_outlook
    from distill.validate import check_spec

    result = check_spec(spec)
    signoff, signoff_warning = spec_signoff_outlook(result.loaded)
    for warning in result.warnings + ([signoff_warning] if signoff_warning else []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{spec}: ok ({result.loaded.spec.kind}, {result.loaded.spec.records:,} records, "
          f"{len(result.loaded.spec.steps)} step(s)); {result.coverage.summary()}")
    if signoff:
        print(signoff)


def schema() -> None:
    """Print the spec's JSON Schema (point your editor's YAML plugin at it for completion and checks)."""
    from distill.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))


def preview(
    spec: Annotated[Path, typer.Argument(help="The task spec YAML file.")],
    n: Annotated[int, typer.Option("-n", min=1, max=MAX_COUNT, help="How many records, from the first.")] = 3,
    index: Annotated[Optional[list[int]], typer.Option("--index", min=0, max=MAX_RECORDS, help="Show this record (repeatable).")] = None,
) -> None:
    """Print the rendered prompts (every step) of the first N records, or of chosen record indices."""
    from distill.validate import preview as render_preview

    records, coverage = render_preview(spec, index or list(range(n)))
    for record in records:
        print(f"=== record {record.index}")
        print("variables: " + json.dumps(record.variables, ensure_ascii=False))
        for step in record.steps:
            for message in step.messages:
                print(f"--- {step.name} / {message.role}")
                print(message.content)
        if record.student_input:
            print("--- student input")
            print(record.student_input)
        print()
    print(f"coverage: {coverage.summary()}", file=sys.stderr)
    if coverage.warning:
        print(f"warning: {coverage.warning}", file=sys.stderr)


def init(
    name: Annotated[str, typer.Argument(help="Name of the new task (lowercase letters, digits, - _ .).")],
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the spec and its template.")] = Path("."),
) -> None:
    """Write a commented starter spec and template that validate as written."""
    from distill.starter import write_starter

    for path in write_starter(name, directory):
        print(path)
