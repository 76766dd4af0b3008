"""Training throughput: tokens/s and MFU of distill's loop, against a plain `transformers.Trainer`.

In one run, on this machine:
1. the matmul peak: FLOP/s of large square matmuls in fp32 (and bf16 where the hardware has it:
   GPUs, and CPUs with AVX512-BF16 or AMX), re-measured before and after each measurement (the mean
   is the peak MFU uses; other processes' load changes by the minute on a shared machine);
2. for three presets at one context length, in each precision: steady-state training tokens/s of
   `train_student` with AdamW (the first steps, which include torch.compile's compilation, are left
   out) and MFU = FLOPs/token x tokens/s / peak of that precision, with FLOPs/token as documented in
   distill/train/flops.py (6 x matmul weights + causal attention, 6 x L x T x d);
3. tokens/s of a plain `transformers.Trainer` (AdamW, no compile, the same precision) on the same
   model (same preset and initial weights) and the same packed rows, timed the same way;
4. tokens/s of our loop with Muon, the default optimizer from scratch: its Newton-Schulz steps are
   optimizer work that MFU does not count, so the column shows what they cost.
Ours and the Trainer alternate per preset, so load from other processes falls on both alike.
Targets on a 2-core CPU: MFU >= 0.35 on `small` and tokens/s >= 1.2 x the Trainer.

    .venv/bin/python benchmarks/train_throughput.py [--presets tiny,small,medium] [--precisions fp32,bf16]
        [--context 256] [--batch 16] [--steps 12] [--warmup 4] [--no-compile] [--gpu-preset xl]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"

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
                         max_steps=args.warmup + args.steps, log_every=1, eval_every=10**6,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small,medium")
    parser.add_argument("--precisions", default=None, help="default: fp32, plus bf16 where the hardware has it")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps first (compilation, caches)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu-preset", default="xl", help="with a GPU: the preset whose bf16 MFU is reported")
    args = parser.parse_args()
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
                                 max_steps=args.warmup + args.steps, log_every=1, eval_every=10**6,
                                 checkpoint_every=10**6, val_fraction=0.01, compile=args.compile,
                                 precision="bf16", peak_flops=peaks["bf16"])
            rate = ours(examples, Path(tmp) / "gpu", config, args.warmup)
            set_seed(0)
            model, _ = prepare_student(config, Path(tmp) / "gpu")
            print(f"GPU bf16 {args.gpu_preset} @512: {rate:,.0f} tok/s, MFU {flops_per_token(model, 512) * rate / peaks['bf16']:.3f}")

    print(f"\ncontext {args.context}, batch {args.batch}, compile={args.compile}, "
          f"{args.steps} timed steps after {args.warmup}; MFU against the measured peak of the precision trained in")
    print(f"{'preset':8} {'prec':>5} {'non-emb':>8} {'MFLOP/tok':>9} {'peak GF/s':>9} {'ours tok/s':>10} {'MFU':>6} "
          f"{'Trainer tok/s':>13} {'ratio':>6} {'Muon tok/s':>10} {'Muon/AdamW':>10}")
    for r in results:
        print(f"{r['preset']:8} {r['precision']:>5} {r['params'] / 1e6:7.2f}M {r['fpt'] / 1e6:9.1f} {r['peak'] / 1e9:9.1f} "
              f"{r['adamw']:10,.0f} {r['fpt'] * r['adamw'] / r['peak']:6.3f} {r['trainer']:13,.0f} "
              f"{r['adamw'] / r['trainer']:6.2f} {r['muon']:10,.0f} {r['muon'] / r['adamw']:10.2f}")


if __name__ == "__main__":
    main()
