"""`distill train RUN` (train the student on the reviewed dataset) and `distill sample RUN` (generate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distill.cli.params import MAX_COUNT, MAX_NEW_TOKENS, MAX_SEED, stage_command

RunArg = Annotated[Path, typer.Argument(help="The run directory (runs/<spec-name>/<run-id>).")]


def train_command(
    run: RunArg,
    minutes: Annotated[Optional[float], typer.Option("--minutes", min=0.01, max=60 * 24 * 365.0, help="Train for this many wall-clock minutes (replaces the spec's budget).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, max=10**12, help="Train for this many optimizer steps (replaces the spec's budget).")] = None,
    tokens: Annotated[Optional[int], typer.Option("--tokens", min=1, max=2**53, help="Train on this many tokens (replaces the spec's budget).")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (default: the spec's training.compile).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, max=4096, help="CPU threads for torch.")] = None,
    executor: Annotated[str, typer.Option("--executor", help="local (this machine), or ray (one task on a Ray cluster node; needs distill[ray]).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --executor ray: the cluster's HOST:PORT (default: $RAY_ADDRESS, else the one started here).")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", min=0, max=1024, help="With --executor ray: GPUs for the task, on one node (default: 1 if the cluster has any, else 0).")] = None,
) -> None:
    """Train the student on the reviewed dataset into RUN/train (resumes after a crash); prints the result as JSON."""
    if executor != "local":
        _train_on_ray(run, executor, ray_address, gpus, minutes=minutes, steps=steps, tokens=tokens, compile=compile,
                      threads=threads)
        return
    if ray_address is not None or gpus is not None:
        from distill.errors import ConfigError, Problem

        flag = "--ray-address" if ray_address is not None else "--gpus"
        raise ConfigError(Problem(f"{flag} needs --executor ray", key=flag, hint="add --executor ray"))

    # A person's `distill train` refuses a train/ folder holding a training from other inputs (`distill run` clears it).
    _, result = stage_command("train", run, minutes=minutes, steps=steps, tokens=tokens, compile=compile, threads=threads,
                              replace_other=False)
    print(f"trained {result.steps:,} steps on {result.tokens:,} tokens in {result.seconds / 60:.1f} min "
          f"({result.stopped_by}); validation {result.val_bpb:.3f} bits/byte -> {result.model_dir}", file=sys.stderr)
    print(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.__dict__.items()}, indent=2))


def _train_on_ray(run: Path, executor: str, ray_address: str | None, gpus: int | None, **flags) -> None:
    """`distill train` with the same flags as one task on a Ray cluster node."""
    from distill.errors import ConfigError, Problem
    from distill.rundir import RunDir

    if executor != "ray":
        raise ConfigError(Problem(f"--executor must be local or ray, not {executor!r}", key="--executor"))
    RunDir.open(run)  # a run directory: checked here, before joining the cluster
    args: list[str] = []
    for name, value in flags.items():
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no-{name}")
        elif value is not None:
            args += [f"--{name}", str(value)]
    from distill.scale import import_ray

    import_ray()
    from distill.scale.ray_training import train_on_ray

    result = train_on_ray(run, args, address=ray_address, gpus=gpus)
    print(f"trained on the Ray cluster: {result['steps']:,} steps on {result['tokens']:,} tokens "
          f"({result['stopped_by']}); validation {result['val_bpb']:.3f} bits/byte -> {result['model_dir']}", file=sys.stderr)
    print(json.dumps(result, indent=2))


def sample_command(
    run: Annotated[Path, typer.Argument(help="A run directory, its train folder, a model directory, or a released bundle's .tar.gz.")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The text to continue (instruct students: the input).")] = "Once upon a time",
    n: Annotated[int, typer.Option("-n", min=1, max=MAX_COUNT, help="How many samples.")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=MAX_NEW_TOKENS, help="Longest sample, in tokens.")] = 200,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=100.0, help="0 for greedy decoding.")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=10**7, help="Sample among the k likeliest tokens.")] = 50,
    chat: Annotated[Optional[bool], typer.Option("--chat/--no-chat", help="Wrap the prompt in the chat format (default: for instruct runs).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Sampling seed.")] = 0,
) -> None:
    """Generate from the run's student: the finished model, else the newest checkpoint of a training in progress."""
    from distill.release.unpack import open_student
    from distill.train.sample import generate

    train_dir = run / "train" if (run / "train").is_dir() else run
    if chat is None:
        stored = train_dir / "run.json"
        chat = stored.is_file() and json.loads(stored.read_text())["kind"] == "instruct"
    model, tokenizer, source = open_student(train_dir)
    print(f"sampling from {source}", file=sys.stderr)
    for i in range(n):
        text = generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, seed=seed + i, chat=chat)
        print(text if chat else prompt + text)
        if i < n - 1:
            print("---")
