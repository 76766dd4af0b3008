"""What each stage reads, so that one record says whether it is up to date.

    generate  the spec (less the later sections), word lists, rows files, templates, JSON schemas, replay data
    review    the safety section, the policy file and every file it names, decontamination texts; the dataset
    train     the student and training settings; the signed-off review
    eval      the evaluation settings, the policy and its files, probe sets, rubric and judge templates, extra
              texts; the model
    release   the release section, the card and license templates; the evaluation

The review and eval report templates are presentation, not inputs: they are hashed apart ("presentation"),
and a changed one re-renders the report from the stage's record (`rerender`) without running the stage.

Each `*_inputs` function turns a stage's settings into an input record: the settings (hashed per key),
the files it reads (hashed by content, under a label such as `templates/tinystories/story.j2`) and the
fingerprint of the upstream stage's output as it is on disk now. `RunDir.stale_reasons` compares a
record with the one the stage last completed with; `distill run`, the stage commands and the service
all go through `run_stage` (from `distill.stage_table`, where each stage is wired), so they agree on
what is fresh. A stale stage makes every later one stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from jinja2 import meta

from distill.evaluate.probes import probe_set_path
from distill.files import file_sha256, fingerprint, tree_sha256
from distill.paths import data_path
from distill.prompts import PromptRenderer, is_template_file, resolve_inside, template_folders
from distill.release.cards import template_files as card_templates
from distill.reports import EVAL, REVIEW
from distill.reports import template_files as report_templates
from distill.review import signoff_state
from distill.review.policy import referenced_files, spec_policy
from distill.rundir import RunDir, StageState
from distill.spec import LoadedSpec

STAGES = ("generate", "review", "train", "eval", "release")
LATER_SECTIONS = {"safety", "student", "training", "evaluation", "release"}  # not read by generate


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the record ---


def input_record(run_dir: Path, stage: str, settings: dict[str, Any], files: Iterable[Path],
                 presentation: Iterable[Path] = ()) -> dict[str, Any]:
    """The inputs of `stage`: settings hashed per key, files hashed by content, the upstream output;
    and, apart, the templates its report is rendered from (`presentation`), which never make it stale."""
    index = STAGES.index(stage)
    upstream = STAGES[index - 1] if index else None
    record = {
        "settings": {key: fingerprint(value) for key, value in settings.items()},
        "files": hash_files(files),
        "upstream_stage": upstream,
        "upstream": output_fingerprint(Path(run_dir), upstream) if upstream else None,
    }
    if presentation:
        record["presentation"] = hash_files(presentation)
    return record


def hash_files(files: Iterable[Path]) -> dict[str, str]:
    hashed = {file_label(path): file_sha256(path) if path.is_file() else (tree_sha256(path) or "missing") for path in files}
    return dict(sorted(hashed.items()))


def file_label(path: Path) -> str:
    """How a file is named in messages and records: relative to distill's data folders or the working
    directory when it lies under them, else its absolute path."""
    path = Path(path).resolve()
    for root in (data_path("templates").parent, Path.cwd()):
        if path.is_relative_to(root.resolve()):
            return path.relative_to(root.resolve()).as_posix()
    return path.as_posix()


def output_fingerprint(run_dir: Path, stage: str) -> str | None:
    """A stage's output as it is on disk now (a person's review decisions and sign-off included)."""
    if stage == "generate":
        return tree_sha256(run_dir / "dataset")
    if stage == "review":
        return fingerprint(signoff_state(run_dir))
    if stage == "train":
        return tree_sha256(run_dir / "train" / "model")
    if stage == "eval":
        path = run_dir / "eval" / "eval.json"
        return file_sha256(path) if path.is_file() else None
    return tree_sha256(run_dir / "release")


def run_stage(run: RunDir, stage: str, inputs: dict[str, Any], work: Callable[[], Any], *,
              skip_if_fresh: bool = False, upstream_ran: str | None = None,
              state_of: Callable[[Any], StageState | None] = lambda result: "waiting" if result is None else "done",
              on_start: Callable[[], None] | None = None, rerender: Callable[[], None] | None = None) -> tuple[bool, Any]:
    """Run `work`, then record `inputs` as what `stage` completed with.

    With `skip_if_fresh` (`distill run`) a stage that completed with these very inputs is skipped;
    `upstream_ran` names an earlier stage that ran just now, which makes this one stale too. Says why
    the stage runs or is skipped. `state_of(result)` is the state to record: by default "waiting" when
    work returned None (a human must sign off), else "done"; None records nothing (work stopped
    early and resumes next time). `on_start` is told when the work starts. A skipped stage whose report
    templates changed has its report rendered again by `rerender`. Returns (ran, result)."""
    recorded = RunDir.open(run.path)
    reasons = recorded.stale_reasons(stage, inputs)
    if upstream_ran:
        reasons.insert(0, f"{upstream_ran} ran before it")
    if not reasons and skip_if_fresh:
        say(f"[{stage}] skipped: inputs unchanged since it completed ({describe(inputs)})")
        changed = presentation_changes(recorded.stage(stage).get("inputs"), inputs)
        if changed and rerender is not None:
            rerender()
            run.record_inputs(stage, inputs)
            say(f"[{stage}] report rendered again: {', '.join(changed)} changed")
        return False, None
    say(f"[{stage}] running: {'; '.join(reasons) or 'inputs unchanged, run on request'}")
    if on_start is not None:
        on_start()
    result = work()
    state = state_of(result)
    if state is not None:
        run.record_inputs(stage, inputs, state=state)
    return True, result


def presentation_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """The report templates that differ between two input records."""
    before, now = (old or {}).get("presentation", {}), new.get("presentation", {})
    return sorted(label for label in before.keys() | now.keys() if before.get(label) != now.get(label))


def describe(inputs: dict[str, Any]) -> str:
    files = len(inputs["files"])
    parts = [f"{len(inputs['settings'])} settings", f"{files} file{'s' * (files != 1)}"]
    if inputs.get("upstream_stage"):
        parts.append(f"the {inputs['upstream_stage']} output")
    return ", ".join(parts)


# --- what each stage reads ---


def generate_inputs(run_dir: Path, loaded: LoadedSpec) -> dict[str, Any]:
    settings = loaded.spec.model_dump(mode="json", exclude=LATER_SECTIONS)
    return input_record(run_dir, "generate", settings, spec_files(loaded))


def spec_files(loaded: LoadedSpec) -> list[Path]:
    """Every file the generate stage reads for a spec: word lists, rows files, templates (with the
    templates they import), JSON schema files and local replay data."""
    spec, folder = loaded.spec, loaded.directory
    files = []
    for name, variable in spec.variables.items():
        if getattr(variable, "file", None):
            files.append(resolve_inside(folder, variable.file, what="file", key=f"variables.{name}.file", spec_file=loaded.path))
    renderer = PromptRenderer(loaded)
    references = [s for step in spec.steps for s in (step.system, step.user) if s is not None]
    references += [spec.student_input] if spec.student_input else []
    files += template_sources(renderer.env, references, is_template_file)
    for step in spec.steps:
        if isinstance(step.json_schema, str):
            files.append(folder / step.json_schema)
    if spec.teacher.replay is not None and (folder / spec.teacher.replay.path).exists():
        files.append(folder / spec.teacher.replay.path)
    return files


def template_sources(env, references: list[str], is_file: Callable[[str], bool]) -> list[Path]:
    """The files behind template references, following `{% import %}`, `{% include %}` and `{% extends %}`."""
    found: dict[str, Path] = {}
    sources = []
    for reference in references:
        if is_file(reference):
            pending = [reference]
        else:
            pending = [name for name in meta.find_referenced_templates(env.parse(reference)) if name]
        while pending:
            name = pending.pop()
            if name in found:
                continue
            source, filename, _ = env.loader.get_source(env, name)
            found[name] = Path(filename)
            sources.append(Path(filename))
            pending += [n for n in meta.find_referenced_templates(env.parse(source)) if n]
    return sources


def review_inputs(run_dir: Path, *, policy, judge_model: str | None, eval_files: list[Path],
                  auto_signoff: bool) -> dict[str, Any]:
    """`judge_model` None: no judge runs."""
    files = [policy.source] if policy.source else []
    settings = {"policy": policy.name, "judge": judge_model, "auto_signoff": auto_signoff}
    return input_record(run_dir, "review", settings, [*files, *referenced_files(policy), *eval_files],
                        presentation=report_templates(REVIEW))


def train_inputs(run_dir: Path, config, kind: str) -> dict[str, Any]:
    """Only what decides the weights: thread counts and compilation do not make a model stale."""
    from distill.train.preference import preference_fingerprint

    fields = {k: v for k, v in config.weights_fingerprint_fields().items() if k != "preference" or v is not None}
    pairs = {"pairs": preference_fingerprint(run_dir, config)} if config.preference else {}  # the signed-off pairs
    return input_record(run_dir, "train", {"kind": kind, **fields, **pairs}, [])


def eval_inputs(run_dir: Path, loaded: LoadedSpec, settings, *, judge: str, heldout: Path | None) -> dict[str, Any]:
    """`judge` is the line saying who grades (or why nobody does)."""
    spec = loaded.spec
    policy = spec_policy(loaded)
    sets = settings.probe_sets or (("instruct",) if spec.kind == "instruct" else ("story",))
    files = [policy.source, *referenced_files(policy), *map(probe_set_path, sets)]
    files += sorted((data_path("templates") / "eval").glob("*.jinja"))
    if spec.evaluation.rubric:
        rubric = next((f / spec.evaluation.rubric for f in [loaded.directory, *template_folders(loaded)]
                       if (f / spec.evaluation.rubric).is_file()), None)
        files += [rubric] if rubric else []
    files += [loaded.directory / p for p in spec.evaluation.extra_texts]
    files += [heldout] if heldout else []
    target = next(s for s in spec.steps if s.name == spec.target_step)
    if isinstance(target.json_schema, str):
        files.append(loaded.directory / target.json_schema)
    values = {**settings.model_dump(mode="json"), "judge": judge, "heldout": bool(heldout), "kind": spec.kind,
              "context_length": spec.student.context_length, "policy": spec.safety.policy}
    return input_record(run_dir, "eval", values, [f for f in files if f is not None], presentation=report_templates(EVAL))


def release_inputs(run_dir: Path, loaded: LoadedSpec, override_reason: str | None,
                   formats: list[str] | None = None) -> dict[str, Any]:
    release = loaded.spec.release.model_dump(mode="json")
    if formats is not None:  # `distill export RUN --format F`: the spec's formats replaced
        release["formats"] = formats
    settings = {"release": release, "override_reason": override_reason}
    return input_record(run_dir, "release", settings, card_templates())
