"""Prompt expansion: deterministic per-record sampling, golden renders, and the template sandbox."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, run_distill
from distill.errors import DistillError, SpecError
from distill.prompts import PromptRenderer
from distill.spec import load_spec
from distill.validate import check_spec, preview, preview_record

GOLDEN = REPO / "tests" / "golden"
TINYSTORIES = REPO / "specs" / "tinystories.yaml"


def render_text(records) -> str:
    lines = []
    for record in records:
        lines.append(f"=== record {record.index} {record.variables}")
        for step in record.steps:
            for message in step.messages:
                lines.append(f"--- {step.name}/{message.role}\n{message.content}")
        if record.student_input:
            lines.append(f"--- student input\n{record.student_input}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("spec", ["tinystories", "tinystories-instruct", "support"])
def test_golden_rendered_prompts(spec: str) -> None:
    """Rendered prompts are golden-tested; refresh with DISTILL_UPDATE_GOLDEN=1 after a deliberate change."""
    records, _ = preview(REPO / "specs" / f"{spec}.yaml", [0, 1, 2, 1234])
    golden = GOLDEN / f"{spec}.txt"
    if os.environ.get("DISTILL_UPDATE_GOLDEN"):
        golden.write_text(render_text(records))
    assert render_text(records) == golden.read_text()


def test_record_depends_only_on_seed_and_index() -> None:
    alone = preview_record(PromptRenderer(load_spec(TINYSTORIES)), 1234)
    renderer = PromptRenderer(load_spec(TINYSTORIES))
    for index in range(1234):
        preview_record(renderer, index)
    assert preview_record(renderer, 1234) == alone


def test_variables_are_diverse_and_use_every_source() -> None:
    renderer = PromptRenderer(load_spec(TINYSTORIES))
    samples = [renderer.sampler.sample(i) for i in range(500)]
    assert len({(s["verb"], s["noun"], s["adjective"]) for s in samples}) == 500
    feature_counts = Counter(len(s["story_features"]) for s in samples)
    assert set(feature_counts) == {0, 1, 2, 3}
    assert all(len(set(s["story_features"])) == len(s["story_features"]) for s in samples)


def test_weighted_range_rows_and_random_order_subsets(tmp_path: Path) -> None:
    (tmp_path / "inputs.csv").write_text("text,lang\nhello,en\nbonjour,fr\nhola,es\n")
    (tmp_path / "spec.yaml").write_text("""\
name: kinds
kind: text
records: 2000
seed: 3
variables:
  tone: {type: weighted, weights: {warm: 9, cold: 1}}
  n: {type: range, min: 2, max: 4}
  message: {type: rows, file: inputs.csv, column: text}
  pick: {type: subset, items: [a, b, c], min: 3, order: random}
steps:
  - name: text
    user: "{{ tone }} {{ n }} {{ message }} {{ pick | join('') }}"
teacher: {provider: offline, model: offline-stand-in}
""")
    renderer = PromptRenderer(load_spec(tmp_path / "spec.yaml"))
    samples = [renderer.sampler.sample(i) for i in range(2000)]
    assert 0.85 < sum(s["tone"] == "warm" for s in samples) / 2000 < 0.95
    assert {s["n"] for s in samples} == {2, 3, 4}
    assert [s["message"] for s in samples[:4]] == ["hello", "bonjour", "hola", "hello"]
    assert len({tuple(s["pick"]) for s in samples}) == 6  # every order of a, b, c
    assert renderer.sampler.combinations() == 2 * 3 * 3 * 6


def test_preview_cli_is_repeatable_and_shows_words_and_features() -> None:
    first = run_distill("preview", "specs/tinystories.yaml", "-n", "3")
    second = run_distill("preview", "specs/tinystories.yaml", "-n", "3")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    stories = first.stdout.split("=== record ")[1:]
    assert len(stories) == 3 and len(set(stories)) == 3
    assert all('The story must use the verb "' in s for s in stories)
    assert "It should also have these features" in first.stdout
    one = run_distill("preview", "specs/tinystories.yaml", "--index", "1234")
    assert one.stdout.startswith("=== record 1234")


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ noun.__class__.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ [].append(1) }}",
]


@pytest.mark.parametrize("template", SANDBOX_ESCAPES)
def test_sandbox_escapes_fail_with_a_clear_error(tmp_path: Path, template: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""\
name: escape
kind: text
records: 1
variables:
  noun: {{type: choice, items: [cat]}}
steps:
  - name: text
    user: "{template}"
teacher: {{provider: offline, model: offline-stand-in}}
""")
    with pytest.raises(DistillError) as caught:
        check_spec(spec)
    assert any(word in str(caught.value) for word in ("sandbox forbids", "undefined", "unsafe", "not safely callable"))
    result = run_distill("validate", spec)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_templates_cannot_read_files_outside_their_folders(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    folder = tmp_path / "spec" / "templates"
    folder.mkdir(parents=True)
    (folder / "inside.j2").write_text("ok")
    (folder / "link.j2").symlink_to(secret)
    spec = tmp_path / "spec" / "spec.yaml"
    base = """\
name: escape
kind: text
records: 1
templates_dir: templates
steps:
  - name: text
    user: "{include}"
teacher: {{provider: offline, model: offline-stand-in}}
"""
    for include in ("{% include '../../secret.txt' %}", "{% include '/etc/passwd' %}", "{% include 'link.j2' %}"):
        spec.write_text(base.format(include=include))
        with pytest.raises(DistillError) as caught:
            check_spec(spec)
        assert "not found in the allowed folders" in str(caught.value)
        assert "TOP SECRET" not in str(caught.value)
    spec.write_text(base.format(include="{% include 'inside.j2' %}"))
    assert check_spec(spec)
    spec.write_text(base.format(include="x").replace("templates_dir: templates", "templates_dir: ../.."))
    with pytest.raises(SpecError, match="outside the spec's folder"):
        check_spec(spec)


def test_random_filter_is_not_available() -> None:
    """Prompts must depend only on (seed, index); Jinja's `random` filter would break that."""
    renderer = PromptRenderer(load_spec(TINYSTORIES))
    assert "random" not in renderer.env.filters
