"""The freshness record: each stage's settings, the files it reads (by content) and its upstream output."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO
from distill.review.policy import spec_policy
from distill.rundir import RunDir, compare_inputs
from distill.spec import load_spec
from distill.stages import file_label, generate_inputs, input_record, review_inputs, run_stage

SPEC = """\
name: fresh
kind: text
records: 4
templates_dir: tpl
variables:
  noun: {type: choice, file: words.txt}
  topic: {type: rows, file: rows.jsonl, column: topic}
steps:
  - name: plan
    user: plan.j2
    output: json
    json_schema: plan.schema.json
  - name: story
    user: "Write about {{ noun }}: {{ steps.plan.title }}"
teacher: {provider: offline, model: offline-stand-in}
safety: {policy: policy.yaml}
"""


@pytest.fixture
def spec_folder(tmp_path: Path) -> Path:
    """A spec reading every kind of file: word list, rows file, a template importing another, a JSON
    schema, a policy of its own naming a lexicon of its own."""
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "plan.j2").write_text('{% import "parts.j2" as parts %}Plan a story about {{ topic }}. {{ parts.tone() }}\n')
    (tmp_path / "tpl" / "parts.j2").write_text("{% macro tone() %}Keep it gentle.{% endmacro %}\n")
    (tmp_path / "words.txt").write_text("cat\ndog\n")
    (tmp_path / "rows.jsonl").write_text('{"topic": "the sea"}\n{"topic": "a hill"}\n')
    (tmp_path / "plan.schema.json").write_text('{"type": "object", "properties": {"title": {"type": "string"}}}\n')
    (tmp_path / "lexicons").mkdir()
    (tmp_path / "lexicons" / "violence.yaml").write_text((REPO / "safety" / "lexicons" / "violence.yaml").read_text())
    policy = (REPO / "safety" / "children.yaml").read_text()
    policy = policy.replace("lexicons: [profanity, violence,", f"lexicons: [profanity, {tmp_path / 'lexicons' / 'violence.yaml'},")
    (tmp_path / "policy.yaml").write_text(policy)
    (tmp_path / "spec.yaml").write_text(SPEC)
    return tmp_path


def record_review(run: RunDir, loaded) -> dict:
    return review_inputs(run.path, policy=spec_policy(loaded), judge_model=None, eval_files=[], auto_signoff=True)


def test_each_input_file_is_named_when_it_changes(spec_folder: Path) -> None:
    loaded = load_spec(spec_folder / "spec.yaml")
    run = RunDir.create(loaded, root=spec_folder / "runs")
    run_stage(run, "generate", generate_inputs(run.path, loaded), lambda: "done")
    run_stage(run, "review", record_review(run, loaded), lambda: "done")
    assert run.stale_reasons("generate", generate_inputs(run.path, loaded)) == []
    assert run.stale_reasons("review", record_review(run, loaded)) == []

    read_by = {"words.txt": "generate", "rows.jsonl": "generate", "tpl/plan.j2": "generate", "tpl/parts.j2": "generate",
               "plan.schema.json": "generate", "policy.yaml": "review", "lexicons/violence.yaml": "review"}
    for name, stage in read_by.items():
        path = spec_folder / name
        original = path.read_text()
        path.write_text(original + ("\n" if name.endswith((".json", ".jsonl")) else "# edited\n"))
        loaded = load_spec(spec_folder / "spec.yaml")
        generate = run.stale_reasons("generate", generate_inputs(run.path, loaded))
        review = run.stale_reasons("review", record_review(run, loaded))
        expected = [f"{file_label(path)} changed"]
        assert (generate, review) == ((expected, []) if stage == "generate" else ([], expected)), name
        path.write_text(original)

    loaded = load_spec(spec_folder / "spec.yaml")
    assert run.stale_reasons("generate", generate_inputs(run.path, loaded)) == []


def test_settings_and_upstream_output_make_a_stage_stale(spec_folder: Path) -> None:
    loaded = load_spec(spec_folder / "spec.yaml")
    run = RunDir.create(loaded, root=spec_folder / "runs")
    dataset = run.path / "dataset" / "data.arrow"

    def write_dataset() -> str:
        dataset.parent.mkdir(exist_ok=True)
        dataset.write_text("rows")
        return "done"

    run_stage(run, "generate", generate_inputs(run.path, loaded), write_dataset)
    run_stage(run, "review", record_review(run, loaded), lambda: "done")
    dataset.write_text("other rows")  # e.g. `distill generate` ran again on its own
    assert run.stale_reasons("review", record_review(run, loaded)) == ["the output of generate changed"]

    changed = loaded._replace(spec=loaded.spec.model_copy(update={"records": 5}))
    assert run.stale_reasons("generate", generate_inputs(run.path, changed)) == ["settings changed: records"]
    more_files = review_inputs(run.path, policy=spec_policy(loaded), judge_model=None, eval_files=[spec_folder / "words.txt"],
                               auto_signoff=True)
    assert run.stale_reasons("review", more_files) == [f"it now reads {file_label(spec_folder / 'words.txt')}",
                                                       "the output of generate changed"]


def test_run_stage_skips_fresh_work_and_records_waiting(spec_folder: Path, capsys) -> None:
    loaded = load_spec(spec_folder / "spec.yaml")
    run = RunDir.create(loaded, root=spec_folder / "runs")
    calls = []
    inputs = generate_inputs(run.path, loaded)
    assert run_stage(run, "generate", inputs, lambda: calls.append(1) or "done", skip_if_fresh=True) == (True, "done")
    assert run_stage(run, "generate", inputs, lambda: calls.append(1) or "done", skip_if_fresh=True) == (False, None)
    assert "[generate] skipped: inputs unchanged" in capsys.readouterr().err
    assert run_stage(run, "generate", inputs, lambda: calls.append(1) or "done", skip_if_fresh=True,
                     upstream_ran="plan") == (True, "done")
    assert "[generate] running: plan ran before it" in capsys.readouterr().err
    assert len(calls) == 2

    review = record_review(run, loaded)
    assert run_stage(run, "review", review, lambda: None) == (True, None)  # waits for a human sign-off
    assert RunDir.open(run.path).stale_reasons("review", review) == ["it waits for a human sign-off"]
    run.start_stage("eval")  # a stage killed while running is not fresh
    assert RunDir.open(run.path).stale_reasons("eval", review) == ["it was interrupted"]


def test_run_check_says_what_would_run_and_runs_nothing(spec_folder: Path) -> None:
    from conftest import run_distill

    checked = run_distill("run", spec_folder / "spec.yaml", "--runs-dir", spec_folder / "runs", "--check", timeout=300)
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert checked.stdout.splitlines() == ["generate: it has not run yet", "review: generate runs before it; it has not run yet",
                                           "train: review runs before it; it has not run yet",
                                           "eval: train runs before it; it has not run yet",
                                           "release: eval runs before it; it has not run yet"]
    assert "5 stage(s) would run" in checked.stderr
    assert not (spec_folder / "runs" / "fresh" / "main" / "dataset").exists()


def test_a_report_template_change_renders_the_report_again_without_running_the_stage(spec_folder: Path, capsys) -> None:
    loaded = load_spec(spec_folder / "spec.yaml")
    run = RunDir.create(loaded, root=spec_folder / "runs")
    review = record_review(run, loaded)
    assert "templates/reports/review.html.j2" in review["presentation"]
    assert not any(label.startswith("templates/reports/") for label in review["files"])  # not an input

    template = spec_folder / "report.html.j2"
    template.write_text("<h1>{{ title }}</h1>\n")
    inputs_now = lambda: input_record(run.path, "generate", {"records": 4}, [spec_folder / "words.txt"], presentation=[template])
    runs, renders = [], []
    run_stage(run, "generate", inputs_now(), lambda: runs.append(1) or "done")
    template.write_text("<h1 class='big'>{{ title }}</h1>\n")
    assert RunDir.open(run.path).stale_reasons("generate", inputs_now()) == []  # presentation: not stale
    assert run_stage(run, "generate", inputs_now(), lambda: runs.append(1) or "done", skip_if_fresh=True,
                     rerender=lambda: renders.append(1)) == (False, None)
    assert (len(runs), len(renders)) == (1, 1)
    assert f"[generate] report rendered again: {file_label(template)} changed" in capsys.readouterr().err
    run_stage(run, "generate", inputs_now(), lambda: runs.append(1) or "done", skip_if_fresh=True,
              rerender=lambda: renders.append(1))
    assert (len(runs), len(renders)) == (1, 1)  # rendered once per change

    older = {**inputs_now(), "files": {**inputs_now()["files"], file_label(template): "0" * 64}}
    older.pop("presentation")  # recorded when report templates still counted as inputs: not stale either
    assert compare_inputs(older, inputs_now()) == []
