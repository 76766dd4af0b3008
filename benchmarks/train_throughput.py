"""Training throughput: tokens/s and MFU of distill's loop, against a plain `transformers.Trainer`.

In one run, on this machine:
1. the matmul peak: FLOP/s of large square matmuls in fp32 (and bf16 where the hardware has it),
   re-measured before and after each preset (the mean is the peak MFU uses; other processes' load
   changes by the minute on a shared machine);
2. for three presets at one context length: steady-state training tokens/s of `train_student` (the
   first steps, which include torch.compile's compilation, are left out) and MFU = FLOPs/token x
   tokens/s / peak, with FLOPs/token as documented in distill/train/flops.py (6 x matmul weights +
   causal attention, 6 x L x T x d);
3. tokens/s of a plain `transformers.Trainer` (fp32, fused AdamW, no compile) on the same model
   (same preset and initial weights) and the same packed rows, timed the same way.
Ours and the Trainer alternate per preset, so load from other processes falls on both alike.
Targets on a 2-core CPU: MFU >= 0.35 on `small` and tokens/s >= 1.2 x the Trainer.

    .venv/bin/python benchmarks/train_throughput.py [--presets tiny,small,medium] [--context 256]
        [--batch 16] [--steps 12] [--warmup 4] [--no-compile] [--gpu-preset xl]
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
from accelerate.utils import set_seed  # noqa: E402

from distill.train import TrainConfig, train_student  # noqa: E402
from distill.train.data import TrainBatches, encode_examples  # noqa: E402
from distill.train.flops import flops_per_token, measure_matmul_flops  # noqa: E402
from distill.train.loop import prepare_student  # noqa: E402


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
    native_bf16 = torch.cuda.is_available() if device == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
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
    """Steady-state tokens/s of transformers.Trainer on the same model and packed rows."""
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
                             dataloader_num_workers=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock]).train()
    tokens = config.batch_size * config.context_length * (len(clock.times) - warmup)
    return tokens / (clock.times[-1] - clock.times[warmup - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="tiny,small,medium")
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
    examples = load_examples()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            config = TrainConfig(preset=preset, context_length=args.context, batch_size=args.batch,
                                 max_steps=args.warmup + args.steps, log_every=1, eval_every=10**6,
                                 checkpoint_every=10**6, val_fraction=0.01, compile=args.compile,
                                 precision="fp32", peak_flops=peaks["fp32"], num_threads=args.threads)
            out = Path(tmp) / preset
            # The peak is re-measured around each preset: on a shared machine the load changes by the minute.
            before = measure_matmul_flops(device, torch.float32, size=2048, seconds=1.5)
            ours_rate = ours(examples, out, config, args.warmup)
            trainer_rate = plain_trainer(examples, out, config, args.warmup)
            peak = (before + measure_matmul_flops(device, torch.float32, size=2048, seconds=1.5)) / 2
            set_seed(0)
            model, _ = prepare_student(config, out)
            fpt = flops_per_token(model, args.context)
            results.append((preset, sum(p.numel() for p in model.model.layers.parameters()), fpt, ours_rate,
                            trainer_rate, peak))
            print(f"{preset}: ours {ours_rate:,.0f} tok/s (MFU {fpt * ours_rate / peak:.3f}), "
                  f"Trainer {trainer_rate:,.0f} tok/s, peak {peak / 1e9:.1f} GFLOP/s", flush=True)
        if device == "cuda" and "bf16" in peaks:
            config = TrainConfig(preset=args.gpu_preset, context_length=512, batch_size=32,
                                 max_steps=args.warmup + args.steps, log_every=1, eval_every=10**6,
                                 checkpoint_every=10**6, val_fraction=0.01, compile=args.compile,
                                 precision="bf16", peak_flops=peaks["bf16"])
            rate = ours(examples, Path(tmp) / "gpu", config, args.warmup)
            set_seed(0)
            model, _ = prepare_student(config, Path(tmp) / "gpu")
            print(f"GPU bf16 {args.gpu_preset} @512: {rate:,.0f} tok/s, MFU {flops_per_token(model, 512) * rate / peaks['bf16']:.3f}")

    print(f"\ncontext {args.context}, batch {args.batch}, fp32, compile={args.compile}, "
          f"{args.steps} timed steps after {args.warmup}")
    print(f"{'preset':8} {'non-emb':>8} {'MFLOP/tok':>9} {'peak GF/s':>9} {'ours tok/s':>10} {'MFU':>6} "
          f"{'Trainer tok/s':>13} {'ratio':>6}")
    for preset, params, fpt, rate, trainer_rate, peak in results:
        print(f"{preset:8} {params / 1e6:7.2f}M {fpt / 1e6:9.1f} {peak / 1e9:9.1f} {rate:10,.0f} {fpt * rate / peak:6.3f} "
              f"{trainer_rate:13,.0f} {rate / trainer_rate:6.2f}")


if __name__ == "__main__":
    main()
