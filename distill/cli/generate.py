"""`distill generate` (the teacher writes the dataset) and `distill plan` (what it will cost, before spending)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import MAX_COUNT, MAX_USD, RecordsOpt, stage_command

SpecArg = Annotated[Path, typer.Argument(help="The task spec YAML file.")]
TeacherOpt = Annotated[Optional[str], typer.Option("--teacher", help="Replace the spec's teacher: PROVIDER[:MODEL], e.g. offline or openai:gpt-4o-mini.")]
PricesOpt = Annotated[Optional[Path], typer.Option("--prices", help="A price table YAML (default: $DISTILL_PRICES, else the shipped one).")]


def generate(
    spec: SpecArg,
    run_id: Annotated[str, typer.Option("--run-id", help="Run directory name under runs/<spec-name>/.")] = "main",
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Where run directories live.")] = Path("runs"),
    shard: Annotated[Optional[str], typer.Option("--shard", help="Generate only shard i of N (i/N): indices i, i+N, ...")] = None,
    mode: Annotated[str, typer.Option("--mode", help="online, or batch (OpenAI/Anthropic batch APIs, half price, slower).")] = "online",
    max_cost: Annotated[Optional[float], typer.Option("--max-cost", min=0.0, max=MAX_USD, help="Spending cap in USD for the whole run (overrides teacher.max_cost_usd).")] = None,
    teacher: TeacherOpt = None,
    records: RecordsOpt = None,
    prices: PricesOpt = None,
    batch_poll_s: Annotated[float, typer.Option("--batch-poll", min=0.1, max=3600.0, help="Seconds between batch status polls.")] = 30.0,
    executor: Annotated[str, typer.Option("--executor", help="local (this process), or ray (shards as tasks on a Ray cluster; needs distill[ray]).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --executor ray: the cluster's HOST:PORT (default: $RAY_ADDRESS, else the one started here).")] = None,
    shards: Annotated[Optional[int], typer.Option("--shards", min=1, max=MAX_COUNT, help="With --executor ray: how many shards (default: one per CPU of the cluster).")] = None,
) -> None:
    """Have the teacher write the dataset: resumable (re-run to continue), cached, rate-limited, cost-capped."""
    from distill.errors import ConfigError, Problem
    from distill.synthesis import override_teacher
    from distill.synthesis.dataset import parse_shard
    from distill.validate import check_spec

    if mode not in ("online", "batch"):
        raise ConfigError(Problem(f"--mode must be online or batch, not {mode!r}", key="--mode"))
    check_executor(executor, mode=mode, shard=shard, ray_address=ray_address, shards=shards)
    checked = check_spec(spec)  # every cheap check before the first paid request
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    loaded = override_teacher(checked.loaded, teacher, records)
    # A lone shard, or a run stopped by the spending cap, leaves nothing to record yet.
    _, result = stage_command("generate", (runs_dir, run_id), loaded, shard=parse_shard(shard), mode=mode,
                              max_cost_usd=max_cost, prices=prices, batch_poll_s=batch_poll_s, executor=executor,
                              ray_address=ray_address, shards=shards,
                              show_progress=sys.stderr.isatty() or bool(os.environ.get("DISTILL_PROGRESS")))
    print(result.summary, file=sys.stderr)
    if result.dataset_path is not None:
        print(result.dataset_path)
    if result.tally.aborted:
        raise ConfigError(Problem(f"generation stopped: {result.tally.aborted}", key="teacher",
                                  hint="check the API key, the model name and your access, then run again to resume"))
    if result.tally.stopped_by_cap:
        raise typer.Exit(3)


def check_executor(executor: str, *, mode: str, shard: str | None, ray_address: str | None, shards: int | None) -> None:
    """The executor flags fit together (checked before anything starts)."""
    from distill.errors import ConfigError, Problem

    problems = []
    if executor not in ("local", "ray"):
        problems.append(Problem(f"--executor must be local or ray, not {executor!r}", key="--executor"))
    elif executor == "local" and (ray_address is not None or shards is not None):
        flag = "--ray-address" if ray_address is not None else "--shards"
        problems.append(Problem(f"{flag} needs --executor ray", key=flag, hint="add --executor ray"))
    elif executor == "ray":
        if shard is not None:
            problems.append(Problem("--shard picks one shard for this machine; --executor ray runs them all",
                                    key="--shard", hint="use --shards N with --executor ray"))
        if mode != "online":
            problems.append(Problem("--mode batch sends one batch from one machine; it does not need --executor ray",
                                    key="--mode", hint="use --executor local with --mode batch"))
        if shards is not None and shards < 1:
            problems.append(Problem("--shards must be at least 1", key="--shards"))
    if problems:
        raise ConfigError(*problems)


def plan(spec: SpecArg, teacher: TeacherOpt = None, records: RecordsOpt = None, prices: PricesOpt = None) -> None:
    """Estimate requests, tokens and cost (online vs batch) before spending anything, and suggest the student."""
    from distill.synthesis import override_teacher
    from distill.synthesis.cost import estimate_plan, load_prices
    from distill.validate import check_spec

    from distill.review.signoff import spec_signoff_outlook
    from distill.student_plan import suggest_for_spec

    loaded = override_teacher(check_spec(spec).loaded, teacher, records)
    estimate = estimate_plan(loaded, load_prices(prices))
    print(estimate.summary())
    signoff, signoff_warning = spec_signoff_outlook(loaded)
    if signoff:
        print(signoff)
    if signoff_warning:
        print(f"warning: {signoff_warning}", file=sys.stderr)
    if loaded.spec.student.base_model is None:  # a base model to fine-tune fixes the shape and vocabulary
        rates = None
        if loaded.spec.training.budget is not None:  # the same measurement training will make (seconds per preset)
            from distill.train import spec_train_config
            from distill.train.budget import measure_rates

            print("measuring this machine's training speed per preset...", file=sys.stderr)
            rates = measure_rates(spec_train_config(loaded))
        print(suggest_for_spec(loaded, estimate.output_tokens, records=estimate.records, rates=rates).summary())
