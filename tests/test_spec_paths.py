"""Every path a spec names, found from the schema: confined to the spec's folder (all of them for an
upload on the service), policies and presets checked by `validate`, every problem in one pass, keys found
by shape and by value in the spec and every file it names, and customer errors without server paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_distill
from distill.errors import Problem, SpecError, public_problem, scrub_text
from distill.keys import check_spec_secrets, keys_in_use, redact_secrets
from distill.spec import PRESET_NAMES, Spec, load_spec
from distill.spec_refs import path_fields
from distill.validate import check_spec
from test_spec import MINIMAL, write_spec

# Every path-taking field of the schema. A new one must be added here, and to `hostile_spec` below, which
# proves the service confines it.
PATH_FIELDS = {
    "templates_dir", "variables.*.file", "steps[].system", "steps[].user", "steps[].json_schema", "student_input",
    "teacher.replay.path", "safety.policy", "safety.decontaminate[]", "student.base_model", "evaluation.probe_sets[]",
    "evaluation.rubric", "evaluation.extra_texts[]",
}
# kind: chat's templates, schemas and tool results (confined by the same rule; a text spec has none of them)
CHAT_PATH_FIELDS = {"chat.system", "chat.assistant", "chat.reply_schema", "chat.tools[].result.template",
                    "chat.tools[].result.rows", "chat.tools[].result.teacher"}


def normalised(key: str) -> str:
    """`variables.noun.file` -> `variables.*.file`, `steps[1].user` -> `steps[].user`."""
    key = re.sub(r"\[\d+\]", "[]", key)
    return re.sub(r"^variables\.[^.]+\.", "variables.*.", key)


def hostile_spec(folder: Path, target: str, base: str = MINIMAL) -> Path:
    """`base` with every path-taking field naming `target` (template fields as a template file)."""
    data = yaml.safe_load(base)
    data.update(templates_dir=target, student_input=f"{target}.j2")
    data["variables"] = {"noun": {"type": "choice", "file": target}, "row": {"type": "rows", "file": target}}
    data["steps"] = [{"name": "text", "system": f"{target}.j2", "user": f"{target}.j2"},
                     {"name": "data", "user": "hi", "output": "json", "json_schema": target}]
    data["teacher"]["replay"] = {"path": target}
    data["safety"] = {"policy": target, "decontaminate": [target]}
    data["student"] = {"base_model": target}
    data["evaluation"] = {"probe_sets": [target], "rubric": target, "extra_texts": [target]}
    folder.mkdir(parents=True, exist_ok=True)
    return write_spec(folder, yaml.safe_dump(data))


def test_every_path_field_is_found_from_the_schema() -> None:
    assert {normalised(name.replace("[]", "[0]")) for name in path_fields(Spec)} == PATH_FIELDS | CHAT_PATH_FIELDS
    # a field typed Path anywhere in the schema must be marked, or it would escape the confinement rule
    assert str(Spec.model_json_schema()).count("'format': 'path'") == 1  # student.base_model, marked


@pytest.mark.parametrize("target", ["/etc/passwd", "../../etc/passwd", "../elsewhere", str(REPO / "distill")])
def test_the_service_rule_refuses_every_path_field_at_once(tmp_path: Path, target: str) -> None:
    spec = hostile_spec(tmp_path / "upload", target)
    with pytest.raises(SpecError) as caught:
        check_spec(spec, server=True)
    keys = {normalised(p.key) for p in caught.value.problems if p.key and "outside the spec's folder" in p.message}
    assert keys == PATH_FIELDS
    assert not any(target in str(p) for p in caught.value.problems)  # the path is never repeated back


def test_the_cli_confines_what_it_always_confined_and_the_policy(tmp_path: Path) -> None:
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "spec").mkdir()
    spec = write_spec(tmp_path / "spec", MINIMAL + "safety: {policy: ../../etc/passwd}\nstudent: {base_model: ../models/base}\n")
    with pytest.raises(SpecError) as caught:
        check_spec(spec)
    assert [p.key for p in caught.value.problems] == ["safety.policy"]  # a local base model outside stays allowed


@pytest.mark.parametrize("policy, message", [
    ("/etc/passwd", "outside the spec's folder"), ("../../etc/passwd", "outside the spec's folder"),
    ("nosuch", "unknown name 'nosuch'"), ("missing.yaml", "does not exist"),
])
def test_validate_refuses_a_policy_that_is_not_shipped_nor_in_the_folder(tmp_path: Path, policy: str, message: str) -> None:
    spec = write_spec(tmp_path, MINIMAL + f"safety: {{policy: {policy}}}\n")
    result = run_distill("validate", spec)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{spec}:12:18 safety.policy: " in result.stderr and message in result.stderr


def test_a_policy_file_in_the_folder_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("name: mine\nnot_a_key: 1\n")
    spec = write_spec(tmp_path, MINIMAL + "safety: {policy: policy.yaml}\n")
    with pytest.raises(SpecError) as caught:
        check_spec(spec)
    assert any(p.key == "not_a_key" and p.file == tmp_path / "policy.yaml" for p in caught.value.problems)


def test_every_problem_comes_in_one_pass(tmp_path: Path) -> None:
    text = (MINIMAL.replace("records: 10", "records: -1").replace("{type: choice, items: [cat, dog, fox]}", "{type: choice, file: gone.txt}")
            + "student: {preset: gigantic}\nsafety: {policy: nosuch, decontaminate: [missing.txt]}\n")
    with pytest.raises(SpecError) as caught:
        check_spec(write_spec(tmp_path, text))
    keys = {p.key for p in caught.value.problems}
    assert {"records", "student.preset", "safety.policy", "safety.decontaminate[0]"} <= keys


def test_presets_in_the_schema_are_the_trainers_presets() -> None:
    from distill.train.presets import PRESETS

    assert set(PRESET_NAMES) == {*PRESETS, "custom"}


# --- keys ---

GATEWAY_TOKEN = "gw-9f8e7d6c5b4a3f2e1d0c9b8a"  # a gateway's token: no known shape


def test_a_held_keys_value_in_the_description_or_a_comment_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MY_GATEWAY", GATEWAY_TOKEN)
    text = MINIMAL.replace("provider: offline", "provider: openai\n  api_key_env: MY_GATEWAY")
    for pasted in (f"description: token {GATEWAY_TOKEN}\n", f"# {GATEWAY_TOKEN}\n"):
        spec = write_spec(tmp_path, pasted + text)
        with pytest.raises(SpecError) as caught:
            check_spec(spec)
        [problem] = caught.value.problems
        assert problem.line == 1 and "credential" in problem.message and GATEWAY_TOKEN not in str(problem)


def test_an_aws_key_pair_in_the_description_is_refused(tmp_path: Path) -> None:
    pair = "AKIAJ4K7QX2ZLM3NPR5T / aws_secret_access_key: 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"
    spec = write_spec(tmp_path, f"description: 'my keys {pair}'\n" + MINIMAL)
    result = run_distill("validate", spec)
    assert result.returncode == 2 and "AWS access key id" in result.stderr and "tR8vQ2" not in result.stderr


@pytest.mark.parametrize("secret", ["sk-proj-" + "a1B2c3D4e5F6g7H8i9J0k1L2", GATEWAY_TOKEN])
def test_a_key_in_a_word_list_or_template_is_refused_before_any_prompt(tmp_path: Path, monkeypatch, secret: str) -> None:
    monkeypatch.setenv("MY_GATEWAY", GATEWAY_TOKEN)
    (tmp_path / "words.txt").write_text(f"cat\n{secret}\n")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "user.j2").write_text(f"Write about a {{{{ noun }}}} {secret}")
    text = (MINIMAL.replace("{type: choice, items: [cat, dog, fox]}", "{type: choice, file: words.txt}")
            .replace('user: "Write about a {{ noun }}."', "user: user.j2") + "templates_dir: t\n")
    text = text.replace("provider: offline", "provider: openai\n  api_key_env: MY_GATEWAY")
    spec = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        check_spec(spec)
    assert {(Path(p.file).name, p.line) for p in caught.value.problems} == {("words.txt", 2), ("user.j2", 1)}
    with pytest.raises(Exception) as refused:  # what `distill run` and `generate` check before the first request
        check_spec_secrets(load_spec(spec))
    assert len(refused.value.problems) == 2


def test_errors_are_redacted_by_the_value_of_every_key_variable_held(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MY_GATEWAY", GATEWAY_TOKEN)
    spec = write_spec(tmp_path, MINIMAL.replace("provider: offline", "provider: openai\n  api_key_env: MY_GATEWAY"))
    check_spec_secrets(load_spec(spec))  # every run checks its spec first: the variable is held from then on
    assert GATEWAY_TOKEN in keys_in_use()
    reason = redact_secrets(f"openai: HTTP 401: invalid token {GATEWAY_TOKEN}", extra=keys_in_use())
    assert GATEWAY_TOKEN not in reason and "[REDACTED]" in reason


# --- what customers see ---


def test_customer_errors_name_spec_files_relative_and_no_other_server_path(tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "job_a" / "spec"
    problem = Problem(f"template 'x.j2' not found in the allowed folders ({folder / 't'}, {REPO / 'templates'})",
                      file=folder / "words" / "nouns.txt", hint="SpecError: see /etc/passwd")
    public = public_problem(problem, folder)
    assert public.file == "words/nouns.txt"
    assert public.message == "template 'x.j2' not found in the allowed folders (t, [server path])"
    assert public.hint == "see [server path]"
    assert scrub_text(f"ValueError: {tmp_path}/x") == "[server path]"


def test_a_teachers_401_echoing_a_key_of_no_known_shape_is_redacted_everywhere(tmp_path: Path) -> None:
    from teacher_server import TeacherServer
    from test_synthesis_generate import KEY_ENV
    from test_synthesis_generate import write_spec as teacher_spec

    with TeacherServer() as server:
        server.add_fault("server_error", status=401, times=None)  # its error body echoes the key it was sent
        spec = teacher_spec(tmp_path, server.openai_base_url, records=8, json_step=False)
        result = run_distill("generate", spec, "--runs-dir", tmp_path / "runs", env={KEY_ENV: GATEWAY_TOKEN})
    assert result.returncode == 2 and "HTTP 401" in result.stderr
    assert GATEWAY_TOKEN not in result.stdout + result.stderr
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and GATEWAY_TOKEN.encode() in p.read_bytes()]
    assert written == []
