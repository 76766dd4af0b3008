"""Plan the student for the compute at hand: `training.budget: {minutes: M}` (or `{tokens: N}`).

A preset that trains well on a fast machine can lose to a smaller model on a slow or busy one, which
reads several times the tokens in the same minutes. So before training, each candidate preset trains
for a few seconds here (random tokens, the spec's batch and context) and its tokens/s goes into
`distill.student_plan.suggest_student`, with the dataset's size: it picks the preset, the vocabulary
and, past ~1.5 passes over the data, the regularisers. What the spec pins itself is kept. The choice,
its reasons and the measured speeds are written to `RUN/train/plan.json` (a resumed or re-run training
reads them back instead of measuring again, so it trains the same student) and go into the model card.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaForCausalLM

from distill.files import read_json_file, write_json_atomic
from distill.student_plan import StudentSuggestion, suggest_student
from distill.train.config import TrainConfig, make_train_config
from distill.train.presets import model_config

CANDIDATES = ("tiny", "small", "medium")  # distill.student_plan.PRESET_PARAMS knows their sizes
SECONDS_PER_PRESET = 3.0
VALIDATION_SHARE = 0.93  # a real run's tokens/s over the bare loop's: validation and checkpoints take the rest
BYTES_PER_TOKEN = 4.0  # byte-level BPE at a few thousand entries, on English prose
WARMUP_SHARE_INVERSE = 20  # warm up over at most a twentieth of the expected steps
REGULARISERS = {"dropout": 0.1, "weight_decay": 0.5, "token_dropout": 0.1, "ema_decay": 0.995}


def measure_rates(config: TrainConfig, *, presets=CANDIDATES, seconds: float = SECONDS_PER_PRESET) -> dict[str, float]:
    """Tokens/s of a training step of each preset on this machine, now: one warm-up step, then steps for
    `seconds` (forward, backward, AdamW) on random tokens of the config's batch and context."""
    rates = {}
    for preset in presets:
        architecture = model_config(preset, {}, vocab_size=config.tokenizer_vocab, context_length=config.context_length,
                                    bos_token_id=0, eos_token_id=0, pad_token_id=1, dropout=0.0)
        model = LlamaForCausalLM(architecture)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randint(config.tokenizer_vocab, (config.batch_size, config.context_length + 1))
        steps, started = -1, 0.0
        while steps < 1 or time.perf_counter() - started < seconds:
            if steps == 0:
                started = time.perf_counter()  # after the warm-up step
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1], use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
        rates[preset] = steps * batch[:, 1:].numel() / (time.perf_counter() - started) * VALIDATION_SHARE
    return rates


def plan_student(config: TrainConfig, texts: list[str], *, pinned: set[str], rates: dict[str, float] | None = None,
                 ) -> tuple[TrainConfig, dict[str, Any]]:
    """The config to train with, and the plan's record: the preset, vocabulary and regularisers chosen for
    `config.budget` from the speeds measured here (or `rates`) and the training `texts`' size, except the
    fields named in `pinned` (the spec's own)."""
    assert config.budget is not None, "plan_student needs training.budget"
    rates = rates or measure_rates(config)
    data_tokens = int(sum(len(t.encode("utf-8")) for t in texts) * (1 - config.val_fraction) / BYTES_PER_TOKEN)
    suggestion = suggest_student(records=len(texts), data_tokens=data_tokens, minutes=config.budget.minutes,
                                 budget_tokens=config.budget.tokens, rates=rates)
    chosen = _chosen_fields(suggestion, pinned)
    # Warmup is a share of the steps the budget will make, not a fixed count: on a slow machine 50 warmup
    # steps can be the whole run, which then never trains at its peak learning rate.
    steps = (config.budget.tokens or rates[suggestion.preset] * 60 * (config.budget.minutes or 0)) / (
        config.batch_size * config.grad_accum * config.context_length)
    if "warmup_steps" not in pinned and steps / WARMUP_SHARE_INVERSE < config.warmup_steps:
        chosen["warmup_steps"] = max(1, int(steps / WARMUP_SHARE_INVERSE))
    if suggestion.minutes is not None and suggestion.minutes < config.budget.minutes:
        chosen["budget"] = {"minutes": suggestion.minutes}  # past the useful passes: a shorter run
    planned = make_train_config({**config.model_dump(), **chosen})
    record = {"budget": config.budget.model_dump(exclude_none=True), "rates": {p: round(r, 1) for p, r in rates.items()},
              "data_tokens": data_tokens, "chosen": chosen, "pinned": sorted(pinned & _PLANNED),
              "summary": suggestion.summary() + (f"\n  - warmup_steps {chosen['warmup_steps']}: a twentieth of the "
                                                 f"~{steps:,.0f} steps the budget makes here"
                                                 if "warmup_steps" in chosen else "")}
    return planned, record


_PLANNED = {"preset", "tokenizer_vocab", "warmup_steps", *REGULARISERS}


def _chosen_fields(suggestion: StudentSuggestion, pinned: set[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {"preset": suggestion.preset, "tokenizer_vocab": suggestion.vocab}
    if suggestion.regularise:
        fields.update(REGULARISERS)
    return {key: value for key, value in fields.items() if key not in pinned}


def planned_config(config: TrainConfig, texts: list[str], out_dir: Path, *, pinned: set[str],
                   ) -> tuple[TrainConfig, dict[str, Any] | None]:
    """`config` as planned for its budget, and the plan's record (None without a budget): measured and
    chosen once, then read back from `out_dir/plan.json`, so a resume trains the same student."""
    if config.budget is None:
        return config, None
    stored = read_plan(out_dir)
    if stored and stored["budget"] == config.budget.model_dump(exclude_none=True) and stored["pinned_fields"] == sorted(pinned):
        return make_train_config({**config.model_dump(), **stored["chosen"]}), stored
    planned, record = plan_student(config, texts, pinned=pinned)
    record["pinned_fields"] = sorted(pinned)
    write_plan(out_dir, record)
    print(f"train: planned for the budget on this machine\n{record['summary']}", file=sys.stderr)
    return planned, record


def write_plan(out_dir: Path, record: dict[str, Any]) -> None:
    """Keep the plan in the training folder (again after training: a retrain with other inputs clears it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "plan.json", record)


def read_plan(train_dir: Path) -> dict[str, Any] | None:
    """The plan a budgeted training recorded (train/plan.json), if there is one."""
    path = train_dir / "plan.json"
    return read_json_file(path, made_by="distill train") if path.is_file() else None
