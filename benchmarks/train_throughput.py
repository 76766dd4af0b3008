"""Training throughput of the loop users run: against a plain loop, alone and next to a busy process, and
against `transformers.Trainer`.

In one run, on this machine:
0. **Against a plain loop at the same shape.** In this one process, alternating `--repeats` times:
   `train_student` for `--steps` steps and the loop anyone would write first (forward, cross-entropy,
   backward, clip, AdamW; the quality benchmark's baseline) on the same model, rows and batch. Printed:
   each side's steps/s and the ratio distill / plain (target >= 0.95), twice: with the loop's own
   machinery only (AdamW, no regularisers, no validation or checkpoints: what the loop itself costs) and
   with the quality benchmark's recipe (Muon, attention dropout, token dropout, a weight average,
   validation of 64 stories every 100 steps, checkpoints every 200: what the recipe costs per step).
1. **As users run it.** `train_student`, the function `distill train` calls, with the settings of a
   spec that sets only the preset: logging every 10 steps, validation on the whole validation split
   every `--eval-every` steps and at the end, checkpoints, the precision `auto` picks. Each training
   runs in a fresh child process, so torch starts as it does under `distill train` (distill sets the
   thread environment before torch loads). Printed: the run's tokens/s (tokens over the loop's whole
   wall-clock: compilation, validation and checkpoints included), the training steps' own rate (the
   loop's logged tokens/s, which leaves validation and checkpoints out), and the seconds validation took.
2. **A shared machine.** The same training alternately alone and next to one single-threaded busy
   process (`python -c "while True: pass"`), `--repeats` times each; the median tokens/s of both and
   their ratio. On a 2-core machine a fair share is 1/2 (two runnable threads of ours and one of theirs
   on two cores: 2/3). Other processes' load falls on both sides alike, because they alternate.
3. With `--variants`: the same training with attention dropout 0.1 (the regularised specs' setting)
   and with torch.compile, to show what each costs the loop as run.
4. With `--compare-trainer`: for three presets and each precision, steady-state tokens/s and MFU of
   the bare loop (no validation) against a plain `transformers.Trainer` on the same model and rows,
   with AdamW and Muon; the matmul peak is re-measured around each.

    .venv/bin/python benchmarks/train_throughput.py [--preset small] [--steps 120] [--eval-every 100]
        [--repeats 2] [--variants] [--compare-trainer [--presets tiny,small,medium] [--precisions fp32,bf16]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"

import distill  # noqa: E402, F401  (first: it sets the thread environment torch reads when it loads)
import torch  # noqa: E402
from accelerate.state import AcceleratorState  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402

from distill.train import TrainConfig, train_student  # noqa: E402
from distill.train.data import TrainBatches, encode_examples  # noqa: E402
from distill.train.flops import flops_per_token, measure_matmul_flops  # noqa: E402
from distill.train.loop import native_cpu_bf16, prepare_student  # noqa: E402


def load_examples() -> list[dict]:
    """The shared TinyStories sample (its cut-off last story dropped), or made-up stories without it."""
    if SAMPLE.is_file():
        stories = [s.strip() for s in SAMPLE.read_text(encoding="utf-8").split("<|endoftext|>")][:-1]
    else:
        print(f"note: {SAMPLE} is missing; using made-up stories", file=sys.stderr)
        stories = [f"Once upon a time, a child named Kid{i % 97} found a {i % 13}-colored ball. The end." * 8
                   for i in range(3000)]
    return [{"id": i, "prompt": "", "text": s} for i, s in enumerate(stories) if s]


def peak_flops(device: str) -> dict[str, float]:
    """The best sustained rate over a few matrix sizes, per precision the hardware runs natively."""
    peaks = {"fp32": max(measure_matmul_flops(device, torch.float32, size=n, seconds=1.5) for n in (1024, 2048))}
    native_bf16 = torch.cuda.is_available() if device == "cuda" else native_cpu_bf16()
    if native_bf16:
        peaks["bf16"] = max(measure_matmul_flops(device, torch.bfloat16, size=n, seconds=1.5) for n in (2048, 4096))
    return peaks


def ours(examples, out: Path, config: TrainConfig, warmup: int) -> float:
    """Steady-state tokens/s of train_student, from its own metrics log (steps after `warmup`)."""
    train_student(examples, out, config, kind="text")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    first, last = rows[warmup - 1], rows[-1]
    return (last["tokens"] - first["tokens"]) / (last["seconds"] - first["seconds"])


def plain_trainer(examples, out: Path, config: TrainConfig, warmup: int) -> float:
    """Steady-state tokens/s of transformers.Trainer on the same model, packed rows and precision."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    set_seed(config.seed)
    model, tokenizer = prepare_student(config, out)  # the tokenizer our run trained; same initial weights
    batches = TrainBatches(encode_examples(tokenizer, examples, "text"), kind="text",
                           context_length=config.context_length, batch_size=config.batch_size, seed=0)
    rows = torch.cat([batches.get(0, i)[0] for i in range(batches.per_epoch)])
    dataset = [{"input_ids": row, "labels": row} for row in rows]

    class Clock(TrainerCallback):
        times: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    clock = Clock()
    args = TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=config.batch_size,
                             max_steps=config.max_steps, learning_rate=config.learning_rate, weight_decay=0.1,
                             lr_scheduler_type="cosine", warmup_steps=2, max_grad_norm=1.0, logging_steps=10**6,
                             save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
                             dataloader_num_workers=0, disable_tqdm=True, bf16=config.precision == "bf16")
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock]).train()
    # The Trainer leaves Accelerate's process-wide state set to its precision; the next run sets its own.
    AcceleratorState._reset_state()
    tokens = config.batch_size * config.context_length * (len(clock.times) - warmup)
    return tokens / (clock.times[-1] - clock.times[warmup - 1])


def measure_preset(examples, out: Path, preset: str, precision: str, peak_of, args) -> dict:
    """Ours (AdamW and Muon) and the plain Trainer on one preset in one precision, side by side."""
    # The peak is re-measured around each preset: on a shared machine the load changes by the minute.
    before = peak_of(precision)
    config = TrainConfig(preset=preset, context_length=args.context, batch_size=args.batch,
                         max_steps=args.warmup + args.timed_steps, log_every=1, eval_every=10**6,
                         checkpoint_every=10**6, val_fraction=0.01, compile=args.compile,
                         precision=precision, optimizer="adamw", peak_flops=before, num_threads=args.threads)
    adamw = ours(examples, out / "adamw", config, args.warmup)
    trainer = plain_trainer(examples, out / "adamw", config, args.warmup)
    muon = ours(examples, out / "muon", config.model_copy(update={"optimizer": "muon"}), args.warmup)
    peak = (before + peak_of(precision)) / 2
    set_seed(0)
    model, _ = prepare_student(config, out / "adamw")
    return {"preset": preset, "precision": precision, "params": sum(p.numel() for p in model.model.layers.parameters()),
            "fpt": flops_per_token(model, args.context), "adamw": adamw, "muon": muon, "trainer": trainer, "peak": peak}


def train_as_users_do(examples, out: Path, fields: dict) -> dict:
    """One training through train_student with spec defaults plus `fields`; its rates from the run and its log."""
    result = train_student(examples, out, TrainConfig(**fields), kind="text")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["tokens_per_s"] for r in rows if "loss" in r][1:]  # the first window holds compilation, if any
    threads = [r["threads"] for r in rows if "loss" in r]
    return {"threads": f"{threads.count(1)}/{len(threads)} windows on 1 thread","run": result.tokens / result.seconds, "steps": statistics.median(steps) if steps else float("nan"),
            "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in rows), "seconds": result.seconds,
            "tokens": result.tokens}


def in_child(fields: dict, *, busy: bool = False) -> dict:
    """train_as_users_do in a fresh Python process (optionally next to a single-threaded busy process)."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(fields)], capture_output=True,
                              text=True, check=False)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        sys.exit(f"the training child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def user_fields(args, **changes) -> dict:
    """A spec's training settings with only the preset, budget and validation cadence set."""
    return {"preset": args.preset, "max_steps": args.steps, "eval_every": args.eval_every, "log_every": args.log_every,
            **({"stories": args.stories} if args.stories else {}), **changes}


def report_shared_machine(args) -> None:
    """Alone and next to one busy single-threaded process, alternating; medians and their ratio."""
    alone, shared = [], []
    for repeat in range(args.repeats):
        for busy, into in ((False, alone), (True, shared)):
            r = in_child(user_fields(args), busy=busy)
            into.append(r)
            print(f"  {'with one busy process' if busy else 'alone':22} run {r['run']:8,.0f} tok/s   "
                  f"steps {r['steps']:8,.0f} tok/s   validation {r['eval_seconds']:5.1f} s of {r['seconds']:6.1f} s; "
                  f"{r['threads']}",
                  flush=True)
    for what in ("run", "steps"):
        quiet, busy = statistics.median(r[what] for r in alone), statistics.median(r[what] for r in shared)
        print(f"{args.preset} {what:5} tokens/s: alone {quiet:,.0f}, with one busy process {busy:,.0f}, "
              f"ratio {busy / quiet:.2f} (target >= 0.5)")


def report_variants(args) -> None:
    """What attention dropout and torch.compile cost the loop as run."""
    base = in_child(user_fields(args))
    print(f"  as users run it:         run {base['run']:8,.0f} tok/s   steps {base['steps']:8,.0f} tok/s", flush=True)
    for name, change in (("attention dropout 0.1", {"dropout": 0.1}), ("compile", {"compile": True})):
        r = in_child(user_fields(args, **change))
        print(f"  {name:24} run {r['run']:8,.0f} tok/s   steps {r['steps']:8,.0f} tok/s   "
              f"({r['run'] / base['run']:.2f}x the run)", flush=True)


LOOP_ONLY = {"optimizer": "adamw", "dropout": 0.0, "weight_decay": 0.1, "token_dropout": 0.0, "ema_decay": None,
             "eval_every": 10**6, "checkpoint_every": 10**6}
QUALITY_RECIPE = {"optimizer": "muon", "dropout": 0.1, "weight_decay": 0.5, "token_dropout": 0.1, "ema_decay": 0.995,
                  "eval_every": 100, "eval_max_texts": 64, "checkpoint_every": 200}


def plain_loop_steps_per_s(model, batches: TrainBatches, steps: int, lr: float = 2e-3) -> float:
    """Steps/s of the plain loop (the quality benchmark's baseline) on `model` and `batches`' rows, fp32."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        inputs, targets = batches.get(0, step % batches.per_epoch)
        logits = model(input_ids=inputs, use_cache=False).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return steps / (time.perf_counter() - started)


def versus_plain(examples, out: Path, config: TrainConfig) -> tuple[float, float]:
    """(distill's steps/s over its whole loop, the plain loop's steps/s) on the same model, rows and batch."""
    threads = torch.get_num_threads()
    result = train_student(examples, out, config, kind="text")
    torch.set_num_threads(threads)  # the loop's thread tuner may have left fewer
    set_seed(config.seed)
    model, tokenizer = prepare_student(config.model_copy(update={"dropout": 0.0}), out)  # the same tokenizer
    batches = TrainBatches(encode_examples(tokenizer, examples, "text"), kind="text",
                           context_length=config.context_length, batch_size=config.batch_size, seed=0)
    return result.steps / result.seconds, plain_loop_steps_per_s(model, batches, config.max_steps)


def report_versus_plain(args) -> None:
    """Section 0: the loop's machinery and the quality recipe against the plain loop, alternating, medians."""
    examples = load_examples()[: args.stories]
    print(f"distill's loop against a plain loop: {args.versus_preset}, {args.steps} steps, batch 16 x 256, fp32, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}", flush=True)
    for name, fields in (("the loop alone", LOOP_ONLY), ("the quality recipe", QUALITY_RECIPE)):
        config = TrainConfig(preset=args.versus_preset, max_steps=args.steps, log_every=args.log_every,
                             precision="fp32", peak_flops=1e11, val_split="tail", **fields)
        ratios = []
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                ours_rate, plain_rate = versus_plain(examples, Path(tmp) / "train", config)
            ratios.append(ours_rate / plain_rate)
            print(f"  {name:20} distill {ours_rate:6.2f} steps/s, plain {plain_rate:6.2f} steps/s, "
                  f"ratio {ratios[-1]:.3f}; load average {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{args.versus_preset} {name}: distill / plain steps/s {statistics.median(ratios):.3f} "
              f"(median of {len(ratios)}; target >= 0.95)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="small", help="the preset trained as users do (sections 1-3)")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps per training (sections 1-3)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between validations (the spec default)")
    parser.add_argument("--log-every", type=int, default=10, help="steps per logged window (the spec default)")
    parser.add_argument("--repeats", type=int, default=2, help="alone / with a busy process, this many times each")
    parser.add_argument("--variants", action="store_true", help="also with attention dropout, and with compile")
    parser.add_argument("--compare-trainer", action="store_true", help="also the per-preset table against Trainer")
    parser.add_argument("--presets", default="tiny,small,medium", help="with --compare-trainer")
    parser.add_argument("--precisions", default=None, help="with --compare-trainer; default: fp32, plus bf16 where the hardware has it")
    parser.add_argument("--context", type=int, default=256, help="with --compare-trainer")
    parser.add_argument("--batch", type=int, default=16, help="with --compare-trainer")
    parser.add_argument("--warmup", type=int, default=4, help="with --compare-trainer: untimed steps first")
    parser.add_argument("--timed-steps", type=int, default=12, help="with --compare-trainer: timed steps per measurement")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="with --compare-trainer")
    parser.add_argument("--threads", type=int, default=None, help="with --compare-trainer")
    parser.add_argument("--gpu-preset", default="xl", help="with --compare-trainer and a GPU: the preset whose bf16 MFU is reported")
    parser.add_argument("--only-versus-plain", action="store_true", help="only section 0, the plain-loop comparison")
    parser.add_argument("--versus-preset", default="tiny", help="section 0's preset (tiny is the plain baseline's shape)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stories", type=int, default=None, help="train on the sample's first N stories (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds not minutes: checks that the benchmark runs (its figures mean nothing)")
    args = parser.parse_args()
    if args.smoke:  # flags given still win over these
        args = parser.parse_args(namespace=argparse.Namespace(preset="tiny", steps=4, eval_every=2, log_every=2, repeats=1,
                                                              stories=300))
    if args.child:
        fields = json.loads(args.child)
        examples = load_examples()[: fields.pop("stories", None)]
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(train_as_users_do(examples, Path(tmp) / "train", fields)))
        return

    report_versus_plain(args)
    if args.only_versus_plain:
        return
    print(f"{args.preset}, {args.steps} steps, validation every {args.eval_every} and at the end, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", flush=True)
    report_shared_machine(args)
    if args.variants:
        report_variants(args)
    if args.compare_trainer:
        compare_with_trainer(args)


def compare_with_trainer(args) -> None:
    """Section 4: the bare loop's steady-state tokens/s and MFU per preset, against transformers.Trainer."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peaks = peak_flops(device)
    print(f"device {device}, {torch.get_num_threads()} threads; matmul peak "
          + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    precisions = args.precisions.split(",") if args.precisions else list(peaks)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    def peak_of(precision: str) -> float:
        return measure_matmul_flops(device, dtypes[precision], size=2048, seconds=1.5)

    examples = load_examples()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            for precision in precisions:
                r = measure_preset(examples, Path(tmp) / preset / precision, preset, precision, peak_of, args)
                results.append(r)
                print(f"{preset} {precision}: ours {r['adamw']:,.0f} tok/s (MFU {r['fpt'] * r['adamw'] / r['peak']:.3f}), "
                      f"with Muon {r['muon']:,.0f}, Trainer {r['trainer']:,.0f} tok/s, "
                      f"peak {r['peak'] / 1e9:.1f} GFLOP/s", flush=True)
        if device == "cuda" and "bf16" in peaks:
            config = TrainConfig(preset=args.gpu_preset, context_length=512, batch_size=32,
                                 max_steps=args.warmup + args.timed_steps, log_every=1, eval_every=10**6,
                                 checkpoint_every=10**6, val_fraction=0.01, compile=args.compile,
                                 precision="bf16", peak_flops=peaks["bf16"])
            rate = ours(examples, Path(tmp) / "gpu", config, args.warmup)
            set_seed(0)
            model, _ = prepare_student(config, Path(tmp) / "gpu")
            print(f"GPU bf16 {args.gpu_preset} @512: {rate:,.0f} tok/s, MFU {flops_per_token(model, 512) * rate / peaks['bf16']:.3f}")

    print(f"\ncontext {args.context}, batch {args.batch}, compile={args.compile}, "
          f"{args.timed_steps} timed steps after {args.warmup}; MFU against the measured peak of the precision trained in")
    print(f"{'preset':8} {'prec':>5} {'non-emb':>8} {'MFLOP/tok':>9} {'peak GF/s':>9} {'ours tok/s':>10} {'MFU':>6} "
          f"{'Trainer tok/s':>13} {'ratio':>6} {'Muon tok/s':>10} {'Muon/AdamW':>10}")
    for r in results:
        print(f"{r['preset']:8} {r['precision']:>5} {r['params'] / 1e6:7.2f}M {r['fpt'] / 1e6:9.1f} {r['peak'] / 1e9:9.1f} "
              f"{r['adamw']:10,.0f} {r['fpt'] * r['adamw'] / r['peak']:6.3f} {r['trainer']:13,.0f} "
              f"{r['adamw'] / r['trainer']:6.2f} {r['muon']:10,.0f} {r['muon'] / r['adamw']:10.2f}")



if __name__ == "__main__":
    main()
