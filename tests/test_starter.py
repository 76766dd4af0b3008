"""`distill init`'s starter spec validates as written, and every top-level key it writes carries the
description `distill schema` gives that key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from distill.spec import spec_json_schema
from distill.starter import write_starter
from distill.validate import check_spec


def comment_above(lines: list[str], key: str) -> str:
    """The comment lines right above the line that sets top-level `key`, joined into one text."""
    index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
    block = []
    for line in reversed(lines[:index]):
        if not line.startswith("#"):
            break
        block.insert(0, line.removeprefix("#").strip())
    return " ".join(block)


def test_the_starter_validates_and_each_top_level_key_carries_its_schema_description(tmp_path: Path) -> None:
    spec_file, _ = write_starter("my-task", tmp_path)
    assert check_spec(spec_file).loaded.spec.name == "my-task"
    text = spec_file.read_text()
    keys = list(yaml.safe_load(text))
    assert {"name", "kind", "records", "steps", "teacher", "safety"} <= set(keys)
    described = spec_json_schema()["properties"]
    lines = text.splitlines()
    for key in keys:
        description = " ".join(textwrap.wrap(described[key]["description"], 98))
        assert description in comment_above(lines, key), key
