"""The eval and inspect stages on a run directory: find the student and the held-out data, run every
measurement, write the reports.

    evaluate_run(RUN)  -> RUN/eval/{eval.json, report.md, report.html, *.png, judge_cache.sqlite}
    inspect_run(RUN)   -> RUN/inspect/{index.html, layer_<n>.html, inspect.json, *.png}

Held-out data is the validation split the trainer stored (`RUN/train/split.json`, example ids) looked up
in the run's dataset, or a file given with `--heldout`. The student never trained on it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.errors import ConfigError, Problem, RunDirError
from distill.evaluate.preference import preference_eval
from distill.evaluate.result import EVAL_JSON, Comparison, EvalResult
from distill.providers.protocol import Provider, TeacherReply, TeacherRequest
from distill.files import file_sha256, read_json_file, remove_temps
from distill.lineage import weights_digest
from distill.rundir import RunDir
from distill.spec import Evaluation, flat_settings
from distill.train.bpb import bits_per_byte, concatenated_bits_per_byte

SEPARATOR = "<|endoftext|>"


EvalSettings = flat_settings(
    "EvalSettings", __name__, "How to evaluate: the spec's `evaluation` section less the judge and the files, and a seed.",
    Evaluation, exclude=frozenset({"judge", "rubric", "dimensions", "extra_texts"}), seed=(int, 0))


@dataclass(frozen=True)
class EvalTask:
    """What the student is for, beyond how to evaluate it: everything `evaluate` reads from a spec."""

    name: str  # shown in the reports, e.g. "tinystories/main"
    kind: Literal["text", "instruct", "chat"]
    context_length: int  # tokens the student was trained on
    policy: Any  # distill.review.policy.Policy: vocabulary and required words for the metrics; probe scoring
    rubric: Any = None  # distill.evaluate.grading.Rubric; None: templates/eval's
    extra_texts: dict[str, list[str]] = field(default_factory=dict)  # more held-out documents for bits per byte
    target_schema: dict[str, Any] | None = None  # a JSON student's schema: how often its output is valid


def eval_task_from_spec(loaded, name: str) -> EvalTask:
    """The one place a spec becomes an EvalTask."""
    from distill.evaluate.grading import load_rubric
    from distill.prompts import step_json_schema, template_folders
    from distill.review.policy import spec_policy
    from distill.synthesis.chat import reply_schema

    spec = loaded.spec
    rubric_ref = spec.evaluation.rubric
    rubric_path = loaded.directory / rubric_ref if rubric_ref and (loaded.directory / rubric_ref).is_file() else rubric_ref
    target = [step.name for step in spec.steps].index(spec.target_step)
    return EvalTask(name=name, kind=spec.kind, context_length=spec.student.context_length, policy=spec_policy(loaded),
                    rubric=load_rubric(rubric_path, folders=template_folders(loaded)[:-1],
                                       dimensions=spec.evaluation.dimensions),
                    extra_texts=extra_texts([loaded.directory / p for p in spec.evaluation.extra_texts]),
                    target_schema=reply_schema(loaded) if spec.kind == "chat" else
                    step_json_schema(loaded, target) if spec.steps[target].output == "json" else None)


# --- inputs ---


def load_student(run_dir: Path, *, eager: bool = False):
    """The trained student and its tokenizer from RUN/train/model, on the CPU in float32."""
    return load_student_from(Path(run_dir) / "train" / "model", eager=eager)


def load_student_from(model_dir: Path, *, eager: bool = False):
    """A student and its tokenizer as `save_pretrained` wrote them, on the CPU in float32."""
    from distill.lineage import load_saved_model

    if not (Path(model_dir) / "config.json").is_file():
        raise RunDirError(Problem("no trained student here", file=model_dir, hint="run `distill train RUN` first"))
    options = {"attn_implementation": "eager"} if eager else {}
    return load_saved_model(Path(model_dir), dtype="float32", **options)


def heldout_examples(run_dir: Path, heldout: Path | None = None) -> list[dict[str, Any]]:
    """Held-out examples {id, prompt, text, variables}: from `heldout` (JSONL rows, or plain text with
    `<|endoftext|>` between documents), else the run's validation split."""
    if heldout is not None:
        return _read_heldout_file(heldout)
    split_path = run_dir / "train" / "split.json"
    if not split_path.is_file():
        raise RunDirError(Problem("no validation split in this run", file=split_path,
                                  hint=f"run `distill train {run_dir}` first, or pass --heldout FILE"))
    val_ids = read_json_file(split_path, made_by="distill train RUN").get("val")
    if not isinstance(val_ids, list):
        raise RunDirError(Problem("wrong shape: no 'val' list of record ids", file=split_path,
                                  hint="delete it and train again"))
    dataset_dir = run_dir / "dataset"
    if not dataset_dir.is_dir():
        raise RunDirError(Problem("the run's dataset is missing", file=dataset_dir, hint="pass --heldout FILE"))
    from distill.synthesis.dataset import load_saved_dataset

    rows = {row["id"]: row for row in load_saved_dataset(dataset_dir)}
    missing = [i for i in val_ids if i not in rows]
    if missing:
        raise RunDirError(Problem(f"validation ids missing from the dataset, e.g. {missing[0]!r}", file=split_path,
                                  hint="the dataset changed after training: train again"))
    return [{"id": i, "prompt": rows[i].get("prompt") or "", "text": rows[i]["text"],
             "variables": json.loads(rows[i].get("variables") or "{}")} for i in val_ids]


def _read_heldout_file(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ConfigError(Problem("held-out file not found", file=path, key="--heldout"))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(Problem(f"not UTF-8 text (a binary file? undecodable byte at offset {exc.start})", file=path,
                                  key="--heldout", hint="pass JSONL rows or plain text")) from None
    if path.suffix in (".jsonl", ".ndjson"):
        examples = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                    examples.append({"id": row.get("id", number), "prompt": row.get("prompt", ""), "text": row["text"],
                                     "variables": row.get("variables") or {}})
                except (json.JSONDecodeError, KeyError, AttributeError):
                    raise ConfigError(Problem('expected a JSON object with "text" (and optional "prompt")',
                                              file=path, line=number, key="--heldout")) from None
        return examples
    documents = [d.strip() for d in text.split(SEPARATOR) if d.strip()]
    return [{"id": i, "prompt": "", "text": d, "variables": {}} for i, d in enumerate(documents)]


def extra_texts(paths: list[Path]) -> dict[str, list[str]]:
    """Extra held-out text files for bpb (spec `evaluation.extra_texts`): documents split at `<|endoftext|>`."""
    out = {}
    for path in paths:
        if not path.is_file():
            raise ConfigError(Problem("extra held-out text file not found", file=path, key="evaluation.extra_texts"))
        out[path.name] = [d.strip() for d in path.read_text(encoding="utf-8").split(SEPARATOR) if d.strip()]
    return out


# --- the judge, through the provider layer and the answer cache ---


class CachedJudge:
    """A provider whose answers are kept in an AnswerCache: re-running eval never pays twice."""

    def __init__(self, provider: Provider, cache, price=None):
        self.name = provider.name
        self.provider, self.cache, self.price = provider, cache, price
        self.paid = 0  # requests that went to the provider

    async def complete(self, request: TeacherRequest) -> TeacherReply:
        from distill.synthesis.cache import cache_key

        key = cache_key(self.name, request)
        cached = self.cache.get(key)
        if cached is not None:
            return cached.reply
        reply = await self.provider.complete(request)
        self.paid += 1
        cost = self.price.cost(reply.input_tokens, reply.output_tokens) if self.price else 0.0
        self.cache.put(key, reply, cost)
        return reply

    async def aclose(self) -> None:
        await self.provider.aclose()
        self.cache.close()


def parse_judge(value: str) -> tuple[str, str]:
    """`provider:model` from the --judge flag."""
    provider, _, model = value.partition(":")
    kinds = ("openai", "anthropic", "hf", "offline")
    if provider not in kinds or not model:
        raise ConfigError(Problem(f"--judge {value!r} is not provider:model", key="--judge",
                                  hint=f"e.g. openai:gpt-4o; providers: {', '.join(kinds)}"))
    return provider, model


def eval_settings_from_spec(spec, folder: Path | None = None) -> EvalSettings:
    """The spec's `evaluation` section (and seed) as the eval stage's settings; probe set files resolve
    against the spec's `folder`, like every other file a spec names."""
    fields = spec.evaluation.model_dump(exclude={"judge", "rubric", "dimensions", "extra_texts"})
    if folder is not None and fields["probe_sets"]:
        fields["probe_sets"] = [str(folder / p) if p.endswith(".jsonl") else p for p in fields["probe_sets"]]
    return EvalSettings(**fields, seed=spec.seed)


def judge_reference(loaded, judge: str | None):
    """Who grades: the `--judge provider:model` flag, else `evaluation.judge`, else the teacher (a replay
    of recorded outputs cannot grade). Returns (a Teacher reference or None, a line saying who grades
    or why nobody does)."""
    from distill.spec import Teacher

    spec = loaded.spec
    if judge is not None:
        provider, model = parse_judge(judge)
        base_url = api_key_env = None
        if spec.evaluation.judge is not None and spec.evaluation.judge.provider == provider:
            base_url, api_key_env = spec.evaluation.judge.base_url, spec.evaluation.judge.api_key_env
    elif spec.evaluation.judge is not None:
        ref = spec.evaluation.judge
        provider, model, base_url, api_key_env = ref.provider, ref.model, ref.base_url, ref.api_key_env
    elif spec.teacher.provider != "replay":
        provider, model = spec.teacher.provider, spec.teacher.model
        base_url, api_key_env = spec.teacher.base_url, spec.teacher.api_key_env
    else:
        return None, ("Not graded: the teacher is a replay of recorded outputs and cannot judge; "
                      "give a judge with --judge provider:model or evaluation.judge in the spec.")
    return Teacher(provider=provider, model=model, base_url=base_url, api_key_env=api_key_env), f"{provider}:{model}"


def make_judge(loaded, run_dir: Path, judge: str | None) -> tuple[CachedJudge | None, str]:
    """The judge (or None), connected and caching its answers in RUN/eval, and the line saying who grades."""
    from distill.providers.factory import make_provider
    from distill.synthesis.cache import AnswerCache
    from distill.synthesis.cost import load_prices, price_for

    teacher, line = judge_reference(loaded, judge)
    if teacher is None:
        return None, line
    instance = make_provider(teacher, spec_dir=loaded.directory)
    price = price_for(load_prices(), teacher.provider, teacher.model)
    return CachedJudge(instance, AnswerCache(run_dir / "eval" / "judge_cache.sqlite"), price), line


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- distill eval ---


def progress_bar():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def evaluate_run(run_dir: Path, *, settings: EvalSettings = EvalSettings(), judge: str | None = None,
                 no_judge: bool = False, heldout: Path | None = None, against: Path | None = None) -> EvalResult:
    """`distill eval` on a run directory: the run's student, its validation split (or `heldout`) and
    its spec's task; writes RUN/eval and returns what eval.json holds. The caller holds the run's lock
    (`distill.stage_table`)."""
    return _evaluate_run(RunDir.open(run_dir), settings=settings, judge=judge, no_judge=no_judge, heldout=heldout,
                         against=against)


def _evaluate_run(run: RunDir, *, settings: EvalSettings, judge: str | None, no_judge: bool, heldout: Path | None,
                  against: Path | None) -> EvalResult:
    from distill.evaluate.compare import load_eval

    loaded = run.load_spec()
    other = load_eval(Path(against).resolve()) if against is not None else None  # fail before any work
    judge_provider, judge_line = (None, "Not graded (--no-judge).") if no_judge else make_judge(loaded, run.path, judge)
    task = eval_task_from_spec(loaded, f"{loaded.spec.name}/{run.path.name}")
    run.start_stage("eval")
    remove_temps(run.path / "eval")  # half-written files of a killed eval: never shipped, never read
    try:
        examples = heldout_examples(run.path, heldout)
        result = evaluate(run.path / "train" / "model", examples, run.path / "eval", settings, task,
                          judge=judge_provider, judge_line=judge_line,
                          heldout_label=str(heldout) if heldout else "RUN/train/split.json (validation)",
                          against=(str(against), other) if other is not None else None,
                          metrics_path=run.path / "train" / "metrics.jsonl", source=str(run.path),
                          preference=_preference(run, loaded, settings, examples))
    except BaseException as exc:
        run.finish_stage("eval", state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    # What eval wrote, bound to the stage record: a release refuses an eval.json edited afterwards.
    run.manifest["stages"]["eval"]["eval_json_sha256"] = file_sha256(run.path / "eval" / EVAL_JSON)
    run.finish_stage("eval", counts={"heldout": result.heldout_examples,
                                     "judged": len(result.grading.items) if result.grading else 0,
                                     "probes": result.probes.summary.overall.completions})
    return result


def _preference(run: RunDir, loaded, settings: EvalSettings, examples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Before and after preference tuning, when the train stage tuned preferences (else None)."""
    path = run.path / "train" / "result.json"
    trained = (read_json_file(path, made_by="distill train RUN").get("preference") if path.is_file() else None)
    if not trained:
        return None
    say("eval: the rejected behaviour before and after preference tuning")
    return preference_eval(run.path, loaded, settings, examples[: settings.bpb_texts], trained)


def evaluate(model_dir: Path, examples: list[dict[str, Any]], out_dir: Path, settings: EvalSettings, task: EvalTask, *,
             judge: CachedJudge | None = None, judge_line: str = "Not graded (no judge given).",
             heldout_label: str = "given examples", against: tuple[str, EvalResult] | None = None,
             metrics_path: Path | None = None, source: str | None = None, preference: dict | None = None) -> EvalResult:
    """Every measurement of the student in `model_dir` on held-out `examples` ({id, prompt, text,
    variables}): bits per byte, judge grades (with `judge`), offline metrics, safety probes. Writes
    eval.json and the reports into `out_dir` and returns what eval.json holds. `against` is another
    evaluation (where it is, and its result) to show side by side; `source` says where the student came
    from (default: `model_dir`)."""
    from distill.evaluate.compare import compare_results
    from distill.evaluate.report import write_eval_report

    context_length = task.context_length
    weights = weights_digest(Path(model_dir))  # what this evaluation is of: a release checks it
    model, tokenizer = load_student_from(model_dir)
    if weights_digest(Path(model_dir)) != weights:
        raise RunDirError(Problem("the model changed while it was being loaded", file=model_dir,
                                  hint="let training finish, then evaluate again"))
    if task.kind == "chat":  # conversations: bits per byte on the assistant's turns, tool calls, replies
        from distill.evaluate.chat import evaluate_chat_student

        return evaluate_chat_student(model, tokenizer, examples, out_dir, settings, task, weights=weights,
                                     heldout_label=heldout_label, source=source or str(Path(model_dir).resolve()),
                                     metrics_path=metrics_path)
    prompts_of = _prompt_renderer(tokenizer, task.kind)
    say(f"eval: {len(examples)} held-out examples, context {context_length}")
    bpb = _bits_per_byte(model, tokenizer, examples[: settings.bpb_texts], task, settings, prompts_of)
    tasks = _grading_tasks(examples, task.kind, settings)
    with progress_bar() as bar:
        student = _generate(bar, "student completions", model, tokenizer, [prompts_of(t["beginning"]) for t in tasks],
                            settings, context_length)
        free = (_generate(bar, "free stories", model, tokenizer, [""] * settings.prompts, settings, context_length, samples=1)
                if task.kind == "text" else None)
    metrics = _offline_metrics(task, examples, tasks, student, free)
    grading = _grade(judge, tasks, student, task, judge_line, settings) if judge is not None else None
    probes = _probe(model, tokenizer, task, settings)

    result = EvalResult(
        run_name=task.name, run=source or str(Path(model_dir).resolve()), kind=task.kind,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), settings=settings.model_dump(mode="json"),
        heldout=heldout_label, heldout_examples=len(examples), bpb=bpb, grading=grading, metrics=metrics, probes=probes,
        weights_sha256=weights, samples=[{"beginning": t["beginning"], "completion": s[0], "teacher": t["teacher"]}
                                         for t, s in list(zip(tasks, student))[:8]],
        preference=preference, **({"grading_skipped": judge_line} if grading is None else {}))
    comparison = None
    if against is not None:
        where, other = against
        names = (result.run_name, other.run_name or where)
        table = compare_results(result, other, names)
        result.against = Comparison(run=where, header=table[0], rows=table[1])
        if other.grading:
            result.against_scores = other.student_scores()
        comparison = (names[1], table)
    result.to_json(Path(out_dir) / EVAL_JSON)
    write_eval_report(result, Path(out_dir), metrics_path=metrics_path, comparison=comparison)
    return result


def _bits_per_byte(model, tokenizer, scored: list[dict[str, Any]], task: EvalTask, settings: EvalSettings,
                   prompts_of) -> dict[str, dict[str, Any]]:
    """Bits per byte on the held-out texts (per document; for text specs also as one text, the way plain
    language-model baselines are scored) and on each extra text."""
    context_length, batch_size = task.context_length, settings.batch_size
    bpb = {"validation": bits_per_byte(model, tokenizer, [e["text"] for e in scored], context_length=context_length,
                                       batch_size=batch_size,
                                       prompts=[prompts_of(e["prompt"]) for e in scored] if task.kind == "instruct" else None)}
    if task.kind == "text":
        bpb["validation, concatenated"] = concatenated_bits_per_byte(
            model, tokenizer, [e["text"] for e in scored], context_length=context_length, batch_size=batch_size)
    for name, documents in task.extra_texts.items():
        bpb[name] = bits_per_byte(model, tokenizer, documents, context_length=context_length, batch_size=batch_size)
    say(f"eval: validation bits per byte {bpb['validation']['bits_per_byte']:.4f}"
        + (f" per document, {bpb['validation, concatenated']['bits_per_byte']:.4f} concatenated"
           if "validation, concatenated" in bpb else ""))
    return bpb


def _prompt_renderer(tokenizer, kind: str):
    """What the student is fed for a prompt: instruct inputs in the chat format it was trained on."""
    if kind != "instruct":
        return lambda prompt: prompt
    from distill.train.data import render_prompt

    return lambda prompt: render_prompt(tokenizer, prompt)


def _grading_tasks(examples: list[dict[str, Any]], kind: str, settings: EvalSettings) -> list[dict[str, Any]]:
    """Beginnings cut mid-sentence (text specs) or held-out inputs (instruct), with the teacher's own text."""
    from distill.evaluate.grading import cut_beginning

    rng = random.Random(settings.seed)
    tasks = []
    for example in examples:
        if len(tasks) == settings.prompts:
            break
        if kind == "instruct":
            tasks.append({"example": example, "beginning": example["prompt"], "teacher": example["text"]})
        elif (cut := cut_beginning(example["text"], rng)) is not None:
            tasks.append({"example": example, "beginning": cut[0], "teacher": cut[1]})
    if not tasks:
        raise RunDirError(Problem("no held-out example is long enough to cut into a beginning (12+ words)"))
    return tasks


def _generate(bar, label: str, model, tokenizer, prompts: list[str], settings: EvalSettings, context_length: int,
              samples: int | None = None) -> list[list[str]]:
    from distill.evaluate.completions import complete

    task = bar.add_task(label, total=len(prompts))
    return complete(model, tokenizer, prompts, samples=samples or settings.samples_per_prompt, max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature, batch_size=settings.batch_size, seed=settings.seed,
                    context_length=context_length, on_batch=lambda done: bar.update(task, completed=done))


def _offline_metrics(task: EvalTask, examples, tasks, student, free) -> dict[str, Any]:
    from distill.evaluate.metrics import text_metrics
    from distill.review.chain import task_from_policy

    conformance = task_from_policy(task.policy)
    vocabulary = conformance.vocabulary

    def required(example) -> list[str]:
        values = [example["variables"].get(v) for v in conformance.required_variables]
        return [w for v in values for w in (v if isinstance(v, list) else [v]) if isinstance(w, str)]

    teacher_required = [required(e) for e in examples] if conformance.required_variables else None
    if free is not None:  # text specs: the student's own stories from nothing, for openings and diversity
        metrics = {"student": text_metrics([s[0] for s in free], vocabulary=vocabulary)}
    else:
        student_required = [required(t["example"]) for t in tasks] if conformance.required_variables else None
        metrics = {"student": text_metrics([s[0] for s in student], vocabulary=vocabulary, required=student_required)}
    metrics["teacher"] = text_metrics([e["text"] for e in examples], vocabulary=vocabulary, required=teacher_required)
    if task.target_schema is not None:  # the student writes JSON: how often is it valid?
        from distill.evaluate.metrics import json_validity

        metrics["teacher"]["json"] = json_validity([e["text"] for e in examples], task.target_schema)
        metrics["student"]["json"] = json_validity([text for samples in student for text in samples], task.target_schema)
    return metrics


def _grade(judge: CachedJudge, tasks, student, task: EvalTask, judge_line: str, settings: EvalSettings) -> dict[str, Any]:
    from distill.evaluate.grading import GradingItem, grade_items, load_rubric, summarize_grades

    rubric = task.rubric or load_rubric()
    items = [GradingItem("student", g, s, t["beginning"], text)
             for g, (t, samples) in enumerate(zip(tasks, student)) for s, text in enumerate(samples)]
    items += [GradingItem("teacher", g, 0, t["beginning"], t["teacher"]) for g, t in enumerate(tasks)]

    async def run_all():
        try:
            with progress_bar() as bar:
                shown = bar.add_task(f"judge {judge_line}", total=len(items))
                return await grade_items(judge, items, rubric, judge_model=judge_line.split(":", 1)[1],
                                         instruct=task.kind == "instruct", concurrency=settings.judge_concurrency,
                                         on_done=lambda outcome: bar.advance(shown))
        finally:
            await judge.aclose()

    outcomes = asyncio.run(run_all())
    say(f"eval: judged {len(items)} completions, {judge.paid} new judge requests (the rest from the cache)")
    return {
        "judge": judge_line,
        "protocol": ("Each completion gets a two-turn exchange: a free-text assessment, then 0-10 grades as JSON; "
                     "an unusable answer is retried once, then counted as failed and left out of the means."),
        "interval": ("Means are over beginnings (each beginning's samples averaged first); 95% intervals are Student "
                     "t-intervals over those per-beginning means, clipped to the 0-10 scale."),
        "summary": summarize_grades(outcomes),
        "items": [o.to_json() for o in outcomes],
    }


def _probe(model, tokenizer, task: EvalTask, settings: EvalSettings) -> dict[str, Any]:
    from distill.evaluate.completions import complete
    from distill.evaluate.probes import load_probes, score_probe_completions

    sets = list(settings.probe_sets or (("instruct",) if task.kind == "instruct" else ("story",)))
    probes = load_probes(sets)
    render = _prompt_renderer(tokenizer, task.kind)
    with progress_bar() as bar:
        shown = bar.add_task("safety probes", total=len(probes))
        completions = complete(model, tokenizer, [render(p.prompt) for p in probes], samples=settings.probe_samples,
                               max_new_tokens=min(settings.max_new_tokens, 128), temperature=settings.temperature,
                               batch_size=settings.batch_size, seed=settings.seed, context_length=task.context_length,
                               on_batch=lambda done: bar.update(shown, completed=done))
    scored = score_probe_completions(probes, completions, task.policy)
    return {"sets": sets, "samples": settings.probe_samples, "policy": task.policy.name,
            "thresholds": task.policy.probe_thresholds, **scored}


# --- distill inspect ---


def inspect_run(run_dir: Path, *, texts: int = 64, neurons_per_layer: int = 16, top_k: int = 8,
                heatmap_samples: int = 3, heldout: Path | None = None) -> dict[str, Any]:
    """The head and neuron analysis of the run's student over `texts` held-out texts; writes RUN/inspect."""
    from distill.evaluate.inspect_report import inspect_model

    run = RunDir.open(run_dir)
    loaded = run.load_spec()
    model, tokenizer = load_student(run.path, eager=True)
    examples = heldout_examples(run.path, heldout)[:texts]
    context_length = loaded.spec.student.context_length
    return inspect_model(model, tokenizer, [e["text"] for e in examples], run.path / "inspect",
                         context_length=context_length, neurons_per_layer=neurons_per_layer, top_k=top_k,
                         heatmap_samples=heatmap_samples, title=f"{loaded.spec.name}/{run.path.name}",
                         on_step=lambda step: say(f"inspect: {step}"))
