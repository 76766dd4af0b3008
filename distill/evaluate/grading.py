"""Teacher-as-judge grading in the TinyStories "GPT-Eval" protocol.

The student completes held-out beginnings cut mid-sentence, several samples each. For every completion
the judge gets a two-turn exchange: turn 1 asks for a free-text assessment, turn 2 (the rubric) asks for
0-10 grades and the writer's age group as JSON. The answer is validated against a schema built from the
rubric; an unusable answer is sent back once with what was wrong, and if the second answer is unusable
too the completion counts as failed: it is left out of the means, never scored as zero.

The teacher's own continuations of the same beginnings are graded the same way as the ceiling.

Intervals: completions of one beginning are not independent (they share the beginning), so each
dimension is first averaged per beginning, and the 95% interval is a Student t-interval over those
per-beginning means (mean +- t(0.975, n-1) * sd / sqrt(n), n = beginnings with at least one grade).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from distill.errors import Problem, TemplateError
from distill.paths import data_path
from distill.providers.protocol import Message, Provider, ProviderFault, TeacherRequest
from distill.sandbox import BoundedSandbox

AGE_GROUPS = ("A", "B", "C", "D", "E", "F")  # 3 or under, 4-5, 6-7, 8-9, 10-12, 13-16
Source = Literal["student", "teacher"]


# --- the rubric: three templates ---


@dataclass(frozen=True)
class Rubric:
    """The judge's prompts. `grading` sets `dimensions` and `age_groups`, which define the answer's schema."""

    assessment: jinja2.Template
    grading: jinja2.Template
    retry: jinja2.Template
    task_dimensions: dict[str, str] | None = None  # the spec's own dimensions (name -> what a 10 looks like)

    def context(self, beginning: str, completion: str, instruct: bool) -> dict[str, Any]:
        """What the assessment and grading templates see."""
        return {"beginning": beginning, "completion": completion, "instruct": instruct,
                "task_dimensions": self.task_dimensions}

    def fields(self, context: dict[str, Any]) -> tuple[list[str], bool]:
        module = self.grading.make_module(context)
        dimensions = list(getattr(module, "dimensions", []))
        if not dimensions or not all(isinstance(d, str) and d.isidentifier() for d in dimensions):
            raise TemplateError(Problem("the grading rubric must `{% set dimensions = [...] %}` to a list of names",
                                        file=self.grading.filename))
        return dimensions, bool(getattr(module, "age_groups", False))


def load_rubric(grading: str | Path | None = None, *, folders: Sequence[Path] = (),
                dimensions: dict[str, str] | None = None) -> Rubric:
    """The built-in rubric from `templates/eval/`, with `grading` (a template name or path) replacing
    the grading prompt. `folders` are searched before the built-in templates (a spec's templates_dir).
    `dimensions` (the spec's `evaluation.dimensions`) replace the built-in rubric's grades."""
    search = [*map(str, folders), str(data_path("templates"))]
    # a spec's rubric is customer text: the same bounded sandbox as prompt templates
    env = BoundedSandbox(loader=jinja2.FileSystemLoader(search), undefined=jinja2.StrictUndefined,
                         autoescape=False, trim_blocks=True, lstrip_blocks=True)

    def load(name: str | Path) -> jinja2.Template:
        try:
            path = Path(name)
            if path.is_file():  # a path the caller resolved (a spec's rubric file next to the spec)
                return env.overlay(loader=jinja2.FileSystemLoader([str(path.parent)])).get_template(path.name)
            return env.get_template(str(name))
        except jinja2.TemplateNotFound:
            raise TemplateError(Problem(f"rubric template {str(name)!r} not found in {', '.join(search)}",
                                        key="evaluation.rubric")) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(Problem(f"template syntax error: {exc.message}", file=exc.filename or str(name),
                                        line=exc.lineno)) from None

    return Rubric(load("eval/assessment.jinja"), load(grading or "eval/grading.jinja"), load("eval/retry.jinja"),
                  task_dimensions=dict(dimensions) if dimensions else None)


def grades_model(dimensions: Sequence[str], age_groups: bool) -> type[BaseModel]:
    """The pydantic model a judge's JSON must match: each dimension 0-10, age group A-F if asked."""
    fields: dict[str, Any] = {d: (float, Field(ge=0, le=10)) for d in dimensions}
    if age_groups:
        fields["age_group"] = (Literal[AGE_GROUPS], ...)  # type: ignore[valid-type]
    return create_model("Grades", __config__=ConfigDict(extra="ignore"), **fields)


# --- held-out beginnings ---


def cut_beginning(story: str, rng: random.Random) -> tuple[str, str] | None:
    """Split a story mid-sentence between 30% and 60% of its words: (beginning, teacher's rest).

    The cut is never right after a sentence end, so the student must first finish the sentence. None
    for a story too short to cut (under 12 words).
    """
    words = list(re.finditer(r"\S+", story))
    if len(words) < 12:
        return None
    candidates = [i for i in range(int(len(words) * 0.3), int(len(words) * 0.6) + 1)
                  if not re.search(r"[.!?:;\"”]$", words[i - 1].group())]
    if not candidates:
        return None
    i = rng.choice(candidates)
    cut = words[i - 1].end()
    return story[:cut], story[cut:]


# --- grading ---


@dataclass(frozen=True)
class GradingItem:
    """One completion to grade. `group` is the beginning's index (the unit the intervals resample)."""

    source: Source
    group: int
    sample: int
    beginning: str
    completion: str


@dataclass
class GradeOutcome:
    item: GradingItem
    assessment: str | None = None
    grades: dict[str, Any] | None = None  # validated answer; None when failed
    failure: str | None = None  # why it failed (after its one retry)
    retried: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.item), "assessment": self.assessment, "grades": self.grades,
                "failure": self.failure, "retried": self.retried}


async def grade_items(
    provider: Provider,
    items: Sequence[GradingItem],
    rubric: Rubric,
    *,
    judge_model: str,
    instruct: bool,
    concurrency: int = 8,
    params: dict[str, Any] | None = None,
    on_done: Callable[[GradeOutcome], None] | None = None,
) -> list[GradeOutcome]:
    """Grade every item with the two-turn exchange, `concurrency` exchanges at a time, in item order."""
    params = {"temperature": 0.0, "max_tokens": 600, **(params or {})}
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, item: GradingItem) -> GradeOutcome:
        async with gate:
            outcome = await _grade_one(provider, item, rubric, judge_model=judge_model, instruct=instruct,
                                       params=params, index=index)
        if on_done is not None:
            on_done(outcome)
        return outcome

    return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))


async def _grade_one(provider: Provider, item: GradingItem, rubric: Rubric, *, judge_model: str, instruct: bool,
                     params: dict[str, Any], index: int) -> GradeOutcome:
    context = rubric.context(item.beginning, item.completion, instruct)
    dimensions, age_groups = rubric.fields(context)
    model = grades_model(dimensions, age_groups)
    outcome = GradeOutcome(item)
    tag = f"eval-{item.source}-{item.group}-{item.sample}"

    def request(messages: list[Message], turn: str, schema: dict | None = None) -> TeacherRequest:
        return TeacherRequest(messages=tuple(messages), model=judge_model, params=params, json_schema=schema,
                              record_index=index, step=f"eval.{turn}", custom_id=f"{tag}-{turn}")

    messages = [Message("user", rubric.assessment.render(context).strip())]
    assessment, fault = await _ask(provider, request(messages, "assessment"))
    if assessment is None:
        outcome.failure = f"assessment: {fault}"
        return outcome
    outcome.assessment = assessment
    messages += [Message("assistant", assessment), Message("user", rubric.grading.render(context).strip())]
    schema = model.model_json_schema()
    answer, fault = await _ask(provider, request(messages, "grading", schema))
    grades, problem = _parse(model, answer) if answer is not None else (None, fault)
    if grades is None and answer is not None:
        # A different request (the bad answer and what was wrong with it), so a cache cannot replay it.
        outcome.retried = True
        retry = rubric.retry.render(problem=problem, dimensions=dimensions, age_groups=age_groups).strip()
        messages += [Message("assistant", answer), Message("user", retry)]
        answer, fault = await _ask(provider, request(messages, "grading-retry", schema))
        grades, problem = _parse(model, answer) if answer is not None else (None, fault)
    if grades is None:
        outcome.failure = f"grading: {problem}"
    outcome.grades = grades
    return outcome


async def _ask(provider: Provider, request: TeacherRequest) -> tuple[str | None, str | None]:
    """The reply's text, or (None, why). A retryable fault is tried once more, after its Retry-After."""
    for attempt in (1, 2):
        try:
            reply = await provider.complete(request)
        except ProviderFault as fault:
            if not fault.retryable or attempt == 2:
                return None, fault.reason
            await asyncio.sleep(min(fault.retry_after or 1.0, 30.0))
            continue
        if reply.text.strip():
            return reply.text, None
        if attempt == 2:
            return None, f"empty reply (finish reason {reply.finish_reason})"
    raise AssertionError("unreachable")


def _parse(model: type[BaseModel], answer: str) -> tuple[dict[str, Any] | None, str | None]:
    """Validated grades from a judge's answer (a JSON object, possibly fenced), or (None, what was wrong)."""
    match = re.search(r"\{.*\}", answer, flags=re.DOTALL)
    if match is None:
        return None, "no JSON object found"
    try:
        data = json.loads(match.group())
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at character {exc.pos})"
    try:
        return model.model_validate(data).model_dump(), None
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors())
        return None, errors


# --- aggregation ---


def summarize_grades(outcomes: Sequence[GradeOutcome]) -> dict[str, Any]:
    """Per source: per dimension mean and 95% t-interval over per-beginning means, age groups, counts."""
    summary: dict[str, Any] = {}
    for source in ("student", "teacher"):
        mine = [o for o in outcomes if o.item.source == source]
        if not mine:
            continue
        graded = [o for o in mine if o.grades is not None]
        dimensions = [k for k in (graded[0].grades if graded else {}) if k != "age_group"]
        scores = {}
        for dim in dimensions:
            by_group: dict[int, list[float]] = {}
            for o in graded:
                by_group.setdefault(o.item.group, []).append(float(o.grades[dim]))
            scores[dim] = mean_interval([sum(v) / len(v) for v in by_group.values()], scale=(0.0, 10.0))
        ages = Counter(o.grades["age_group"] for o in graded if "age_group" in o.grades)
        summary[source] = {
            "scores": scores,
            "age_groups": {g: ages.get(g, 0) for g in AGE_GROUPS} if ages else {},
            "graded": len(graded),
            "failed": len(mine) - len(graded),
            "retried": sum(o.retried for o in mine),
            "failures": dict(Counter(o.failure.split(":")[0] for o in mine if o.failure)),
        }
    return summary


def mean_interval(values: Sequence[float], confidence: float = 0.95,
                  scale: tuple[float, float] | None = None) -> dict[str, float | int | None]:
    """Mean with a Student t-interval; the interval is None for fewer than two values. With a `scale`
    (the grades' range), the interval is clipped to it: a mean of 0-10 grades cannot lie outside 0-10."""
    from scipy.stats import t

    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if scale is not None:
        low, high = max(scale[0], low), min(scale[1], high)
    return {"mean": mean, "low": low, "high": high, "n": n}
