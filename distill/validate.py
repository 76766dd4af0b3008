"""Every cheap check on a spec, run before the first paid request: `distill validate` and `preview`.

`check_spec` collects all problems at once (schema, referenced files, JSON schemas, templates rendered
for a sample of records) and a coverage summary of how many distinct prompts the variables can make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import DistillError, Problem, SpecError
from distill.prompts import PromptRenderer, RenderedStep, placeholder_output, step_json_schema
from distill.spec import LoadedSpec, load_spec

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


def check_spec(path: str | Path, *, sample_records: int = SAMPLE_RECORDS) -> SpecCheck:
    """Validate a spec fully. Raises SpecError with every problem found, located."""
    loaded = load_spec(path)
    problems: list[Problem] = []
    try:
        renderer = PromptRenderer(loaded)  # reads word lists and rows files
    except DistillError as exc:
        problems.extend(exc.problems)
        renderer = None
    schemas = []
    for i in range(len(loaded.spec.steps)):
        try:
            schemas.append(step_json_schema(loaded, i))
        except DistillError as exc:
            problems.extend(exc.problems)
            schemas.append(None)
    replay = loaded.spec.teacher.replay
    if replay is not None and not _is_hub_id(replay.path) and not (loaded.directory / replay.path).exists():
        problems.append(Problem(f"replay data {replay.path!r} not found (looked in {loaded.directory})",
                                file=loaded.path, line=loaded.document.locate(("teacher", "replay", "path"))[0],
                                key="teacher.replay.path"))
    for i in range(min(sample_records, loaded.spec.records) if renderer else 0):
        try:
            preview_record(renderer, i, schemas)
        except DistillError as exc:
            problems.extend(p for p in exc.problems if p not in problems)
    if problems:
        raise SpecError(*problems)
    coverage = Coverage(renderer.sampler.combinations(), loaded.spec.records)
    return SpecCheck(loaded, coverage, [coverage.warning] if coverage.warning else [])


def _is_hub_id(path: str) -> bool:
    """`owner/name` with no file suffix: a dataset on a hub rather than a local file."""
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and "." not in parts[1] and not path.startswith(".")


def preview_record(renderer: PromptRenderer, index: int, schemas: list[dict | None] | None = None) -> PreviewRecord:
    """Render every step of one record, with placeholders standing in for the teacher's outputs."""
    spec = renderer.spec
    if schemas is None:
        schemas = [step_json_schema(renderer.loaded, i) for i in range(len(spec.steps))]
    variables = renderer.sampler.sample(index)
    outputs: dict[str, Any] = {}
    steps = []
    for i, step in enumerate(spec.steps):
        steps.append(renderer.render_step(i, index, variables, outputs))
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
