"""A budget in minutes is wall-clock: when steps slow down mid-run (a busier machine), the schedule still
ends on time at the minimum learning rate, with a validated weight average (distill.train.loop)."""

from __future__ import annotations

import time

import pytest
import torch

from distill.train.bpb import bits_per_byte
from distill.train import TrainConfig
from distill.train.checkpoint import TrainState
from distill.train.data import TrainBatches, encode_examples
from distill.train.loop import _train, make_optimizers, make_weight_average, prepare_student
from distill.train.metrics import MetricsLog
from distill.train.sharding import make_accelerator

STORIES = [f"Story {i}: the cat sat on the mat and the dog ran to the park with {i} balls." for i in range(40)]
BUDGET_SECONDS = 12.0
FAST_STEPS, SLOW_STEP = 3, 1.5  # the first steps read at full speed, each one after them sleeps this long


class SlowingBatches:
    """The real training batches, read from a source that turns slow part-way: a real sleep per batch."""

    def __init__(self, batches: TrainBatches) -> None:
        self.batches, self.kind, self.per_epoch = batches, batches.kind, batches.per_epoch
        self.read = 0

    def get(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.read += 1
        if self.read > FAST_STEPS:
            time.sleep(SLOW_STEP)
        return self.batches.get(epoch, index)


def test_a_slower_machine_mid_run_still_ends_on_time_at_the_minimum_learning_rate(tmp_path) -> None:
    config = TrainConfig(preset="custom", custom={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                  "intermediate_size": 64},
                         tokenizer_vocab=300, context_length=32, batch_size=2, optimizer="adamw", learning_rate=1e-2,
                         min_lr_ratio=0.1, warmup_steps=0, max_minutes=BUDGET_SECONDS / 60, ema_decay=0.9,
                         log_every=1, eval_every=10_000, checkpoint_every=10_000, num_threads=1,
                         peak_flops=1e12)
    accelerator = make_accelerator(config, tmp_path)
    model, tokenizer = prepare_student(config, tmp_path, train_texts=STORIES)
    examples = [{"prompt": "", "text": s} for s in STORIES]
    batches = SlowingBatches(TrainBatches(encode_examples(tokenizer, examples, "text"), kind="text",
                                          context_length=32, batch_size=2, seed=0, pad_id=tokenizer.pad_token_id))
    optimizers = make_optimizers(model, config, fused=False)
    average = make_weight_average(model, config.ema_decay)

    def evaluate(limit):
        scored = bits_per_byte(average.module, tokenizer, STORIES[:4], context_length=32, batch_size=2)
        model.train()
        return {"val_loss": scored["nats_per_token"], "val_bpb": scored["bits_per_byte"]}

    state = TrainState()
    metrics = MetricsLog(tmp_path / "metrics.jsonl", after_step=0, enabled=True)
    _train(accelerator, model, optimizers, batches, evaluate, state, config, tmp_path, metrics.write, average=average)

    rows = MetricsLog.read(tmp_path / "metrics.jsonl")
    steps = [r for r in rows if "lr" in r]
    slow = [b["seconds"] - a["seconds"] for a, b in zip(steps, steps[1:]) if a["step"] >= FAST_STEPS]
    assert slow and min(slow) >= SLOW_STEP  # fast steps first, then slow ones
    assert state.stopped_by == "max_minutes"
    # The last step ran at the minimum learning rate, and the run ended within half a step of the budget.
    assert steps[-1]["step"] == state.step
    assert steps[-1]["lr"] == pytest.approx(config.learning_rate * config.min_lr_ratio, rel=1e-6)
    assert abs(state.seconds - BUDGET_SECONDS) <= 0.6 * max(slow)
    # The weight average was validated after the last step.
    assert rows[-1]["step"] == state.step and "val_bpb" in rows[-1]
