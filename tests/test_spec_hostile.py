"""Hostile spec files: every one ends in a located `error:` line and exit code 2, never a traceback,
a hang or a read without end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_distill
from test_spec import MINIMAL, problems_of, write_spec


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # opening it for reading would block until a writer appears: forever
    result = run_distill("validate", fifo, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"error: {fifo} spec is not a regular file (a named pipe) "
                                      "(give a plain file, not a pipe, socket or device)")


def test_a_symlink_to_dev_zero_is_refused_and_reads_are_capped(tmp_path: Path) -> None:
    link = tmp_path / "spec.yaml"
    link.symlink_to("/dev/zero")
    assert problems_of(link) == [f"{link} spec is not a regular file (a character device) "
                                 "(give a plain file, not a pipe, socket or device)"]
    os.mkfifo(tmp_path / "words.txt")
    spec = write_spec(tmp_path, MINIMAL.replace("{type: choice, items: [cat, dog, fox]}", "{type: choice, file: words.txt}"), "w.yaml")
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:5:30 variables.noun.file: ") and "word list is not a regular file (a named pipe)" in problem


def test_the_size_cap_counts_bytes_read_not_what_stat_says(tmp_path: Path) -> None:
    from distill.errors import SpecError
    from distill.located_yaml import read_regular_file

    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 5000)
    assert read_regular_file(big, what="word list", max_bytes=5000) == b"x" * 5000
    with pytest.raises(SpecError, match="word list is more than the limit of 4,999 bytes"):
        read_regular_file(big, what="word list", max_bytes=4999)


@pytest.mark.parametrize("value, message", [
    ('!!int "forty-two"', "cannot read 'forty-two' as !!int: not a valid int"),
    ('!!timestamp "not-a-date"', "cannot read 'not-a-date' as !!timestamp: not a valid timestamp"),
    ("9" * 5000, "as !!int: a number of 5,000 digits is longer than Python reads (4,300)"),
    ("!!float nope", "cannot read 'nope' as !!float: not a valid float"),
])
def test_yaml_constructor_errors_are_located(tmp_path: Path, value: str, message: str) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("records: 10", f"records: {value}"))
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:3:10 records: ") and message in problem


def test_a_library_that_rewrites_pyyaml_does_not_change_how_a_spec_reads(tmp_path: Path) -> None:
    import yaml

    import distill.serving.tools  # noqa: F401  (lm-format-enforcer: SafeLoader reads timestamps as text)

    assert yaml.safe_load("a: 2026-12-08")["a"] == "2026-12-08"  # what it did to PyYAML's shared table
    test_yaml_constructor_errors_are_located(tmp_path, '!!timestamp "not-a-date"',
                                             "cannot read 'not-a-date' as !!timestamp: not a valid timestamp")


@pytest.mark.parametrize("tagged", [
    "steps: !!python/object/apply:os.system\n  - name: text\n    user: hi\n",
    "steps:\n  - !!python/object:distill.spec.Step\n    name: text\n    user: hi\n",
    "steps: !!omap\n  - name: text\n",
    "steps: !custom [a]\n",
])
def test_unknown_tags_on_lists_and_mappings_are_refused_with_their_line(tmp_path: Path, tagged: str) -> None:
    text = MINIMAL.split("steps:")[0] + tagged + "teacher: {provider: offline, model: m}\n"
    spec = write_spec(tmp_path, text)
    [problem] = problems_of(spec)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "!" in l)
    assert problem.startswith(f"{spec}:{line}:") and "unsupported YAML tag '!" in problem


def test_true_and_one_keys_do_not_collide_silently(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("variables:\n", "variables:\n  1: {type: range, min: 1, max: 2}\n  true: {type: range, min: 1, max: 2}\n"))
    assert problems_of(spec) == [f"{spec}:6:3 variables: key 'true' is read by YAML as the boolean true, not as text (quote it: 'true')"]


def test_a_non_utf8_template_file_is_located(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "user.j2").write_bytes(b"Write about a {{ noun }}.\nna\xefve\n")
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', "user.j2") + "templates_dir: templates\n")
    result = run_distill("validate", spec)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'templates' / 'user.j2'}:2:3 template is not valid UTF-8 (byte 0xef)" in result.stderr


def test_an_invalid_inline_json_schema_points_at_its_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace('    user: "Write about a {{ noun }}."\n', """\
    user: "Write about a {{ noun }}."
    output: json
    json_schema:
      type: object
      properties:
        n: {type: 12}
"""))
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:13:19 steps[0].json_schema.properties.n.type: not a valid JSON Schema: 12 is not valid")
