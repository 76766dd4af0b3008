"""The task spec: every shipped spec validates; every kind of bad input gets a located error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_distill
from distill.errors import SpecError
from distill.spec import load_spec, spec_json_schema
from distill.validate import check_spec

SHIPPED_SPECS = sorted((REPO / "specs").glob("*.yaml"))

MINIMAL = """\
name: demo
kind: text
records: 10
variables:
  noun: {type: choice, items: [cat, dog, fox]}
steps:
  - name: text
    user: "Write about a {{ noun }}."
teacher:
  provider: offline
  model: offline-stand-in
"""


def write_spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(SpecError) as caught:
        check_spec(path)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("spec", SHIPPED_SPECS, ids=lambda p: p.name)
def test_every_shipped_spec_validates_and_renders(spec: Path) -> None:
    if "replay" in spec.name and not (REPO.parent / "shared").is_dir():
        pytest.skip("replay spec reads the shared sample beside the checkout")
    result = check_spec(spec)
    assert result.coverage.combinations >= result.loaded.spec.records


def test_minimal_spec_is_valid(tmp_path: Path) -> None:
    result = check_spec(write_spec(tmp_path, MINIMAL))
    assert result.coverage.combinations == 3
    assert result.warnings and "only 3 distinct combinations" in result.warnings[0]


def test_all_schema_problems_reported_at_once_with_place_and_typo_hint(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("  model: offline-stand-in\n", """\
  model: offline-stand-in
  rate_limit:
    rpm: 0
    tmp: 100
""").replace("records: 10", "records: ten"))
    found = problems_of(spec)
    assert f"{spec}:3:10 records: must be a valid integer, unable to parse string as an integer" in found
    assert f"{spec}:13:10 teacher.rate_limit.rpm: must be > 0" in found
    assert f"{spec}:14:5 teacher.rate_limit.tmp: unknown key (did you mean 'tpm'?)" in found


def test_missing_required_key_names_it(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("kind: text\n", ""))
    assert any("kind: required key is missing" in p for p in problems_of(spec))


def test_unknown_variable_type_names_the_valid_ones(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("type: choice", "type: choise"))
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:5:9 variables.noun:") and "'choice', 'weighted', 'subset', 'range', 'rows'" in problem


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL + "records: 20\n")
    assert problems_of(spec) == [f"{spec}:12:1 records: duplicate key 'records' (first defined on line 3)"]


def test_malformed_yaml_is_located(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("records: 10", "records: [10"))
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:") and "malformed YAML" in problem


def test_directory_non_utf8_missing_and_empty(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    assert "is a directory" in problems_of(tmp_path / "dir.yaml")[0]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(MINIMAL.replace("fox", "f\xf6x").encode("latin-1"))
    assert problems_of(latin) == [f"{latin}:5:43 spec is not valid UTF-8 (byte 0xf6)"]
    assert "not found" in problems_of(tmp_path / "nope.yaml")[0]
    assert "spec is empty" in problems_of(write_spec(tmp_path, "# nothing\n", "empty.yaml"))[0]


def test_huge_and_deeply_nested_documents_are_refused(tmp_path: Path) -> None:
    huge = write_spec(tmp_path, MINIMAL + "description: '" + "x" * 1_100_000 + "'\n", "huge.yaml")
    assert "more than the limit" in problems_of(huge)[0]
    deep = write_spec(tmp_path, MINIMAL + "description: " + "[" * 200 + "]" * 200 + "\n", "deep.yaml")
    assert "nested too deeply" in problems_of(deep)[0]
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    assert "too many nodes" in problems_of(write_spec(tmp_path, laughs, "laughs.yaml"))[0]


def test_referenced_files_must_exist_and_stay_inside(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("{type: choice, items: [cat, dog, fox]}", "{type: choice, file: words.txt}")
                      .replace("  noun:", "  other: {type: rows, file: ../outside.jsonl}\n  noun:"))
    found = problems_of(spec)
    assert any(p.startswith(f"{spec}:6:") and "words.txt" in p and "not found" in p for p in found)
    assert any("variables.other.file" in p and "outside the spec's folder" in p for p in found)


def test_rows_file_errors_point_into_that_file(tmp_path: Path) -> None:
    (tmp_path / "inputs.jsonl").write_text('{"text": "hello"}\n{"text": broken}\n')
    spec = write_spec(tmp_path, MINIMAL.replace("{type: choice, items: [cat, dog, fox]}", "{type: rows, file: inputs.jsonl, column: text}"))
    assert problems_of(spec) == [f"{tmp_path / 'inputs.jsonl'}:2:10 invalid JSON: Expecting value"]


def test_undefined_template_variable_is_an_error_not_empty(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("{{ noun }}", "{{ nuon }}"))
    [problem] = problems_of(spec)
    assert problem.startswith(f"{spec}:8:11 steps[0].user: undefined variable while rendering: 'nuon' is undefined")


def test_json_step_schema_must_be_valid(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("    user: \"Write about a {{ noun }}.\"\n", """\
    user: "Write about a {{ noun }}."
  - name: answer
    user: "Answer {{ steps.text }}"
    output: json
    json_schema: {type: objekt}
"""))
    line = spec.read_text().splitlines().index("    json_schema: {type: objekt}") + 1
    [problem] = [p for p in problems_of(spec) if "not a valid JSON Schema" in p]
    assert problem.startswith(f"{spec}:{line}:25 steps[1].json_schema.type: not a valid JSON Schema: 'objekt' is not valid")


def test_json_schema_command_describes_the_spec() -> None:
    schema = spec_json_schema()
    assert schema["title"] == "distill task spec"
    assert {"name", "kind", "records", "variables", "steps", "teacher"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False
    printed = run_distill("schema")
    assert printed.returncode == 0 and json.loads(printed.stdout)["title"] == "distill task spec"


def test_cli_validate_exits_nonzero_without_traceback(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace("records: 10", "records: -1"))
    result = run_distill("validate", spec)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {spec}:3:10 records: must be > 0"


def test_cli_validate_ok_prints_coverage() -> None:
    result = run_distill("validate", "specs/tinystories.yaml")
    assert result.returncode == 0, result.stderr
    assert "distinct variable combinations" in result.stdout


def test_init_writes_a_starter_that_validates(tmp_path: Path) -> None:
    result = run_distill("init", "my-task", "--dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert check_spec(tmp_path / "my-task.yaml").loaded.spec.name == "my-task"
    again = run_distill("init", "my-task", "--dir", tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_loaded_spec_fingerprint_tracks_content(tmp_path: Path) -> None:
    first = load_spec(write_spec(tmp_path, MINIMAL, "a.yaml")).fingerprint()
    same = load_spec(write_spec(tmp_path, "# a comment\n" + MINIMAL, "b.yaml")).fingerprint()
    other = load_spec(write_spec(tmp_path, MINIMAL.replace("seed", "x").replace("records: 10", "records: 11"), "c.yaml")).fingerprint()
    assert first == same != other


@pytest.mark.parametrize("spec", SHIPPED_SPECS, ids=lambda p: p.name)
def test_student_and_training_sections_make_a_train_config(spec: Path) -> None:
    """The spec mirrors the trainer's settings: every shipped spec flattens into a valid TrainConfig."""
    from distill.train import spec_train_config
    from distill.train.config import DEFAULT_LEARNING_RATE

    loaded = load_spec(spec)
    config = spec_train_config(loaded)
    assert config.context_length == loaded.spec.student.context_length
    optimizer = loaded.spec.training.optimizer
    assert config.optimizer == (("muon" if config.from_scratch else "adamw") if optimizer == "auto" else optimizer)
    assert config.learning_rate == (loaded.spec.training.learning_rate or DEFAULT_LEARNING_RATE[config.optimizer])
