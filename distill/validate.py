"""Every cheap check on a spec, run before the first paid request: `distill validate` and `preview`.

`check_spec` collects all problems at once (schema, referenced files, JSON schemas, templates rendered
for a sample of records) and a coverage summary of how many distinct prompts the variables can make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from distill.errors import DistillError, Problem, SpecError
from distill.keys import check_api_key_env, hold_key_envs, key_references, spec_text_problems
from distill.located_yaml import load_located_yaml
from distill.prompts import PromptRenderer, RenderedStep, placeholder_output, step_json_schema
from distill.spec import LoadedSpec, Spec, load_spec, located_problems
from distill.spec_refs import TEMPLATE_SUFFIXES, inside, is_hub_id, path_references, reference_problems, referenced_files

SAMPLE_RECORDS = 20  # records rendered by `validate`; enough to hit every template branch in practice


@dataclass(frozen=True)
class Coverage:
    combinations: int
    records: int

    @property
    def expected_distinct(self) -> float:
        """Expected distinct combinations among `records` uniform draws."""
        if self.combinations == 0:
            return 0.0
        return self.combinations * (1 - (1 - 1 / self.combinations) ** self.records)

    @property
    def warning(self) -> str | None:
        if self.records > self.combinations:
            return (f"the spec asks for {self.records:,} records but its variables allow only {self.combinations:,} "
                    f"distinct combinations: prompts will repeat; add variables or word-list entries")
        return None

    def summary(self) -> str:
        return (f"{self.combinations:,} distinct variable combinations for {self.records:,} records "
                f"(~{self.expected_distinct:,.0f} expected distinct)")


@dataclass
class SpecCheck:
    loaded: LoadedSpec
    coverage: Coverage
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PreviewRecord:
    index: int
    variables: dict[str, Any]
    steps: tuple[RenderedStep, ...]
    student_input: str


def check_spec(path: str | Path, *, sample_records: int = SAMPLE_RECORDS, server: bool = False,
               more: Callable[[LoadedSpec], list[Problem]] | None = None) -> SpecCheck:
    """Validate a spec fully, every problem in one pass. Raises SpecError with them all, located.

    `server`: every path the spec names must stay inside its folder (the service's rule for uploads);
    `more`: the caller's own checks on a schema-valid spec (the service's tenant rules)."""
    path = Path(path)
    document = load_located_yaml(path)  # unreadable or malformed YAML: nothing else can be checked
    if not isinstance(document.data, dict):
        raise SpecError(Problem("a spec must be a mapping of keys (name, kind, records, steps, teacher, ...)", file=path, line=1, column=1))
    try:
        loaded, schema_problems = LoadedSpec(Spec.model_validate(document.data), path, document), []
        hold_key_envs(loaded.spec)  # their values are searched for below, and redacted from now on
    except ValidationError as exc:
        loaded, schema_problems = None, located_problems(exc, document, Spec)
    problems = reference_problems(document, path.parent, server=server)
    problems += spec_text_problems(path, [*referenced_files(document, path.parent, server=server),
                                       *_template_files(document, path.parent)])
    if loaded is None:
        raise SpecError(*problems, *schema_problems)
    reported = {p.key for p in problems}
    problems += _key_env_problems(loaded) + (more(loaded) if more else [])
    renderer, schemas = _renderer_and_schemas(loaded, problems, reported)
    problems += _stage_problems(loaded, reported)
    for i in range(min(sample_records, loaded.spec.records) if renderer else 0):
        try:
            preview_record(renderer, i, schemas)
        except DistillError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise SpecError(*problems)
    coverage = Coverage(renderer.sampler.combinations(), loaded.spec.records)
    return SpecCheck(loaded, coverage, [coverage.warning] if coverage.warning else [])


def _renderer_and_schemas(loaded: LoadedSpec, problems: list[Problem], reported: set) -> tuple[PromptRenderer | None, list]:
    """The prompt renderer (it reads word lists and rows files) and each step's JSON schema; their
    problems are added to `problems`, but not again for a key already reported."""
    renderer = None
    try:
        renderer = PromptRenderer(loaded)
    except DistillError as exc:
        problems.extend(p for p in exc.problems if p.key not in reported or p.key is None)
    schemas = []
    for i in range(len(loaded.spec.steps)):
        try:
            schemas.append(step_json_schema(loaded, i))
        except DistillError as exc:
            problems.extend(p for p in exc.problems if p.key not in reported or p.key is None)
            schemas.append(None)
    replay = loaded.spec.teacher.replay
    if (replay is not None and "teacher.replay.path" not in reported and not is_hub_id(replay.path)
            and not (loaded.directory / replay.path).exists()):
        problems.append(Problem("replay data not found", file=loaded.path, line=loaded.document.locate(("teacher", "replay", "path"))[0],
                                key="teacher.replay.path", hint="give a file or folder relative to the spec"))
    return renderer, schemas


def _stage_problems(loaded: LoadedSpec, reported: set) -> list[Problem]:
    """What the review stage would refuse, found now: the safety policy must load."""
    from distill.review.policy import spec_policy

    if "safety.policy" in reported:
        return []
    try:
        spec_policy(loaded)
    except DistillError as exc:
        line, column = loaded.document.locate(("safety", "policy"))
        return [p if p.file is not None else Problem(p.message, file=loaded.path, line=line, column=column,
                                                      key=p.key or "safety.policy", hint=p.hint) for p in exc.problems]
    return []


def _key_env_problems(loaded: LoadedSpec) -> list[Problem]:
    """Every api_key_env must be a variable's name (a key pasted there is refused)."""
    problems = []
    for key, reference in key_references(loaded.spec):
        try:
            check_api_key_env(reference.api_key_env, file=loaded.path, key=f"{key}.api_key_env")
        except DistillError as exc:
            problems += exc.problems
    return problems


def _template_files(document, folder: Path) -> list[Path]:
    """Template files the spec names, found where the renderer looks (templates_dir, then the folder)."""
    data = document.data
    templates_dir = data.get("templates_dir") if isinstance(data.get("templates_dir"), str) else None
    roots = [r for r in ((inside(folder, templates_dir) if templates_dir else None), folder.resolve()) if r is not None]
    files = []
    for reference in path_references(data):
        if reference.ref.kind == "template" and reference.value.endswith(TEMPLATE_SUFFIXES):
            files += [p for root in roots if (p := inside(root, reference.value)) is not None and p.is_file()][:1]
    return files


def preview_record(renderer: PromptRenderer, index: int, schemas: list[dict | None] | None = None) -> PreviewRecord:
    """Render every step of one record, with placeholders standing in for the teacher's outputs."""
    spec = renderer.spec
    if schemas is None:
        schemas = [step_json_schema(renderer.loaded, i) for i in range(len(spec.steps))]
    variables = renderer.sampler.sample(index)
    outputs: dict[str, Any] = {}
    steps = []
    turn = {"turn": 1, "history": []} if spec.chat else {}  # what a chat spec's user step sees on turn 1
    for i, step in enumerate(spec.steps):
        steps.append(renderer.render_step(i, index, {**variables, **turn}, outputs))
        outputs[step.name] = placeholder_output(step, schemas[i])
    return PreviewRecord(index, variables, tuple(steps), renderer.render_student_input(index, variables, outputs))


def preview(path: str | Path, indices: list[int]) -> tuple[list[PreviewRecord], Coverage]:
    loaded = load_spec(path)
    renderer = PromptRenderer(loaded)
    schemas = [step_json_schema(loaded, i) for i in range(len(loaded.spec.steps))]
    for index in indices:
        if not 0 <= index < loaded.spec.records:
            raise SpecError(Problem(f"record index {index} is outside 0..{loaded.spec.records - 1}", file=loaded.path, key="records"))
    records = [preview_record(renderer, i, schemas) for i in indices]
    return records, Coverage(renderer.sampler.combinations(), loaded.spec.records)
