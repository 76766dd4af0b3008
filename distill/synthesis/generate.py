"""Synthesis as a stage. `synthesize`: a generation plan's records written by the teacher into
`OUT/dataset/`, from flat inputs (the prompts, the steps, the teacher, an output folder). `generate`:
the same for a spec and its run directory, which the CLI and `distill run` call."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.errors import ConfigError, Problem
from distill.providers.logprobs import LOGPROB_PROVIDERS
from distill.providers.offline import STAND_IN_MODEL
from distill.rundir import RunDir
from distill.spec import LoadedSpec, Teacher
from distill.synthesis.batch import BatchBook, BatchRunner
from distill.synthesis.chat import ChatPlan, ChatWalker, chat_plan
from distill.synthesis.recovery import open_cache
from distill.synthesis.cost import FREE, load_prices, price_for, require_price
from distill.synthesis.dataset import RecordLog, collect_rows, log_path, shard_indices, write_dataset
from distill.synthesis.engine import Backoff, Engine, Limiter, RateLimiter, Tally
from distill.synthesis.progress import GenerateProgress, summary
from distill.synthesis.records import GenerationPlan, RecordWalker, StepPlan
from distill.synthesis.spending import Cap

BATCH_PROVIDERS = ("openai", "anthropic")


@dataclass
class GenerateResult:
    tally: Tally
    records: int  # records in this shard
    complete: bool  # every record of the whole run is done or failed, and the dataset is written
    dataset_path: Path | None
    spent_total_usd: float  # everything this run directory's answers cost, across invocations
    summary: str
    counts: dict[str, Any] = field(default_factory=dict)  # records, ok, failed, spent_usd, the teacher


def override_teacher(loaded: LoadedSpec, teacher: str | None = None, records: int | None = None) -> LoadedSpec:
    """The spec with `--teacher PROVIDER[:MODEL]` and `--records N` applied (validated like the spec)."""
    spec = loaded.spec
    if teacher:
        from distill.providers.factory import offline_teacher

        provider, _, model = teacher.partition(":")
        if provider == "offline" and not model:
            spec = spec.model_copy(update={"teacher": offline_teacher(spec.teacher)})
            return override_teacher(loaded._replace(spec=spec), None, records)
        fields: dict[str, Any] = {**spec.teacher.model_dump(), "provider": provider}
        fields["model"] = model or (STAND_IN_MODEL if provider == "offline" else spec.teacher.model)
        if provider != "replay":
            fields["replay"] = None
        try:
            new_teacher = Teacher.model_validate(fields)
        except ValueError as exc:
            raise ConfigError(Problem(f"--teacher {teacher!r}: {exc}", key="--teacher",
                                      hint="use offline, openai:MODEL, anthropic:MODEL or hf:DIR")) from None
        spec = spec.model_copy(update={"teacher": new_teacher})
    if records is not None:
        if records < 1:
            raise ConfigError(Problem("--records must be at least 1", key="--records"))
        spec = spec.model_copy(update={"records": records})
    return loaded._replace(spec=spec)


def generation_plan(loaded: LoadedSpec) -> GenerationPlan | ChatPlan:
    """The one place a spec becomes what synthesis needs: prompts rendered from its templates, and its
    steps with the teacher's generation parameters and the JSON schemas their answers must match."""
    from distill.prompts import PromptRenderer, step_json_schema

    spec = loaded.spec
    base = spec.teacher.params.model_dump()
    asked = logprob_params(spec.teacher.provider, spec.training.distillation)
    steps = tuple(StepPlan(step.name, step.output, {**base, **step.params, **(asked if step.name == spec.target_step else {})},
                           step_json_schema(loaded, i))
                  for i, step in enumerate(spec.steps))
    plan = GenerationPlan(PromptRenderer(loaded), steps, spec.target_step)
    return chat_plan(loaded, plan) if spec.kind == "chat" else plan


def logprob_params(provider: str, distillation: Any) -> dict[str, Any]:
    """What the target step asks the teacher for beyond its text: the log-probability of every token it writes
    and of its `top_k` strongest alternatives, when training distils them and the provider can give them."""
    if distillation is None or provider not in LOGPROB_PROVIDERS:
        return {}
    return {"logprobs": True, "top_logprobs": distillation.top_k}


def text_only_reason(teacher: Teacher, distillation: Any) -> str | None:
    """Why a run that asks for distillation learns the teacher's text only (said and recorded), or None."""
    if distillation is None or teacher.provider in LOGPROB_PROVIDERS:
        return None
    return (f"training.distillation: the {teacher.provider} teacher returns no token log-probabilities; "
            "the student learns its text only (use an openai, OpenAI-compatible or hf teacher to distil its distribution)")


def generate(loaded: LoadedSpec, run: RunDir, *, shard: tuple[int, int] = (0, 1),
             mode: Literal["online", "batch"] = "online", max_cost_usd: float | None = None,
             prices_path: Path | None = None, show_progress: bool = True, batch_poll_s: float = 30.0,
             backoff_base_s: float = 1.0, limiter: Limiter | None = None, spending: Cap | None = None,
             build_dataset: bool = True) -> GenerateResult:
    """`distill generate` and `distill run`: the spec's records (of `shard`) into `RUN/dataset`, with the
    stage's outcome in the run's manifest. The caller holds the run's lock (`distill.stage_table`, shared
    for a shard). See `synthesize`."""
    whole_run = shard == (0, 1)
    fallback = text_only_reason(loaded.spec.teacher, loaded.spec.training.distillation)
    if fallback:
        print(f"{loaded.path}: {fallback}", file=sys.stderr)
    result = synthesize(generation_plan(loaded), run.path, loaded.spec.teacher, records=loaded.spec.records,
                        teacher_dir=loaded.directory, spec_file=loaded.path, shard=shard, mode=mode,
                        max_cost_usd=max_cost_usd, prices_path=prices_path, show_progress=show_progress,
                        batch_poll_s=batch_poll_s, backoff_base_s=backoff_base_s, limiter=limiter,
                        spending=spending, build_dataset=build_dataset,
                        on_start=(lambda: run.start_stage("generate")) if whole_run else None)
    if fallback:
        result.counts["distillation"] = fallback
    if build_dataset:
        record_generate(run, result, whole_run=whole_run)
    return result


def synthesize(plan: GenerationPlan | ChatPlan, out_dir: Path, teacher: Teacher, *, records: int, teacher_dir: Path = Path("."),
               spec_file: Path | None = None, shard: tuple[int, int] = (0, 1), mode: Literal["online", "batch"] = "online",
               max_cost_usd: float | None = None, prices_path: Path | None = None, show_progress: bool = True,
               batch_poll_s: float = 30.0, backoff_base_s: float = 1.0, limiter: Limiter | None = None,
               spending: Cap | None = None, build_dataset: bool = True,
               on_start: Callable[[], None] | None = None) -> GenerateResult:
    """Ask `teacher` for records 0..`records`-1 of `plan` (those of `shard`), resuming from the answers
    already in `out_dir/generate/`; write `out_dir/dataset` once every record is finished.

    `teacher_dir` is where the teacher's relative paths (a replay file, a model folder) start; `spec_file`
    only names the file in errors. `limiter` replaces the teacher's one-process rate limiter and `spending`
    the one-process spending cap (a distributed executor passes ones shared by all its shards); with
    `build_dataset=False` only the shard's records are written, and whoever runs the shards calls
    `finish_generate` once they are all done. `on_start` runs once every check passed, before the first request."""
    from distill.providers.factory import make_provider

    cap, price = _cap_and_price(teacher, mode, max_cost_usd, prices_path, spec_file)
    generate_dir = Path(out_dir) / "generate"
    cache = open_cache(generate_dir)  # a corrupt or lost cache is rebuilt from the records log
    walker = (ChatWalker if isinstance(plan, ChatPlan) else RecordWalker)(plan, cache, provider_name=teacher.provider,
                                                                           model=teacher.model)
    provider = make_provider(teacher, spec_dir=teacher_dir)  # a missing key fails here
    if on_start is not None:
        on_start()
    indices = shard_indices(records, shard)
    log = RecordLog(log_path(generate_dir, shard))
    spent_before = cache.total_cost()
    started = time.monotonic()
    with GenerateProgress(len(indices), enabled=show_progress) as progress:
        def on_row(row: dict[str, Any], cached: bool) -> None:
            log.append(row)
            progress.update(engine.tally)

        engine = Engine(walker, provider, cache, price=price, concurrency=teacher.concurrency,
                        limiter=limiter or RateLimiter(teacher.rate_limit.rpm, teacher.rate_limit.tpm),
                        timeout_s=teacher.timeout_s,
                        max_retries=teacher.max_retries, spent_before=spent_before, max_cost_usd=cap, cap=spending,
                        backoff=Backoff(base_s=backoff_base_s), on_row=on_row,
                        max_retry_wait_s=teacher.max_retry_wait_s, say=progress.message)
        try:
            asyncio.run(_drive(engine, provider, mode, BatchBook(generate_dir / "batches.json"), batch_poll_s,
                               progress, indices))
        finally:
            log.close()
            cache_total = cache.total_cost()
            cache.close()
    elapsed_s = time.monotonic() - started
    if not build_dataset:
        text = summary(engine.tally, total=len(indices), elapsed_s=elapsed_s, spent_total=cache_total, max_cost=cap)
        return GenerateResult(engine.tally, len(indices), False, None, cache_total, text)
    return finish_generate(Path(out_dir), records, teacher, engine.tally, total=len(indices), whole_run=shard == (0, 1),
                           template_hashes=walker.template_hashes, spent_total=cache_total, cap=cap, elapsed_s=elapsed_s)


def _cap_and_price(teacher: Teacher, mode: str, max_cost_usd: float | None, prices_path: Path | None,
                   spec_file: Path | None) -> tuple[float | None, Any]:
    """The spending cap (the flag's, else the spec's) and the teacher's price, checked before any work."""
    if mode == "batch" and teacher.provider not in BATCH_PROVIDERS:
        raise ConfigError(Problem(f"--mode batch needs an openai or anthropic teacher, not {teacher.provider!r}",
                                  file=spec_file, key="teacher.provider", hint="use --mode online"))
    cap = max_cost_usd if max_cost_usd is not None else teacher.max_cost_usd
    if cap is not None and not cap > 0:  # also refuses NaN
        raise ConfigError(Problem(f"the spending cap must be more than $0, not {cap!r}", key="--max-cost",
                                  hint="e.g. --max-cost 5 for five dollars; leave it out for no cap"))
    prices = load_prices(prices_path)
    price = require_price(prices, teacher.provider, teacher.model, spec_file=spec_file) if cap is not None \
        else (price_for(prices, teacher.provider, teacher.model) or FREE)
    return cap, price


async def _drive(engine: Engine, provider: Any, mode: str, book: BatchBook, poll_s: float,
                 progress: GenerateProgress, indices: list[int]) -> None:
    try:
        if mode == "batch":
            await BatchRunner(engine, book, poll_s=poll_s, on_status=progress.message).run(indices)
        else:
            await engine.run(indices)
    finally:
        await provider.aclose()


def finish_generate(out_dir: Path, records: int, teacher: Teacher, tally: Tally, *, total: int, whole_run: bool,
                    template_hashes: str, spent_total: float, cap: float | None, elapsed_s: float) -> GenerateResult:
    """Write `out_dir/dataset` once every record (of every shard) is finished.

    `whole_run`: this process owns the whole run (a one-process run, or the driver of a distributed
    one); a lone shard only builds the dataset if it happens to complete the run."""
    rows = collect_rows(out_dir / "generate", records, template_hashes)
    complete = len(rows) == records
    dataset_path = out_dir / "dataset" if complete else None
    if dataset_path is not None:
        write_dataset(list(rows.values()), dataset_path)
    counts = {"records": records, "ok": sum(r["status"] == "ok" for r in rows.values()),
              "failed": sum(r["status"] == "failed" for r in rows.values()), "spent_usd": round(spent_total, 6),
              "teacher_provider": teacher.provider, "teacher_model": teacher.model}
    text = summary(tally, total=total, elapsed_s=elapsed_s, spent_total=spent_total, max_cost=cap)
    if not complete and not whole_run and not tally.stopped_by_cap:
        text += f"\nshard finished; the dataset is written once every shard is ({len(rows):,}/{records:,} records)"
    return GenerateResult(tally, total, complete, dataset_path, spent_total, text, counts)


def record_generate(run: RunDir, result: GenerateResult, *, whole_run: bool) -> None:
    """The generate stage's outcome in the run's manifest: done once the dataset is written; failed when
    the process that owns the run stops short of it."""
    if result.complete:
        if not whole_run:
            run.manifest = RunDir.open(run.path).manifest  # other shards may have written it meanwhile
        run.finish_stage("generate", counts=result.counts)
    elif whole_run:
        tally = result.tally
        reason = tally.aborted or ("the spending cap was reached" if tally.stopped_by_cap else "records are missing")
        run.finish_stage("generate", counts=result.counts, state="failed", error=reason)
