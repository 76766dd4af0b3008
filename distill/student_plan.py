"""`distill plan`'s suggestion for the student: a preset, a tokenizer vocabulary and a number of passes.

The rule, from the runs measured in docs/training.md ("Choosing the student"):

1. What the budget can read. Each preset trains at a rate (tokens/s): measured on this machine a few
   seconds per preset when the spec sets `training.budget` (distill.train.budget: a busy or slow machine
   gets the student it can train), else the rates measured on 2 quiet CPU cores (validation and
   checkpoints included), scaled by the CPUs here. A budget in minutes reads rate x time tokens; a budget
   in tokens or steps reads that many whatever the preset.
2. What the data can give. Repeated data helps about as much as fresh data for ~4 passes (Muennighoff
   et al. 2023, "Scaling Data-Constrained Language Models"); measured here, a `small` student memorises
   the TinyStories sample from its 5th pass on without regularisation, and with attention dropout 0.1,
   weight decay 0.5, token dropout 0.1 and a weight average still improves at ~9 passes (1.029 against
   1.135 held-out bits per byte, concatenated). So the useful tokens are min(budget, MAX_USEFUL_PASSES x
   the dataset), regularised past 1.5 passes.
3. The preset: the largest whose useful tokens are at least TOKENS_PER_PARAM x its non-embedding
   parameters. Chinchilla's ~20 tokens per parameter is the rule for models trained on fresh data at
   scale; at these sizes, with many regularised passes, the measured trade sits far lower: `small` (4M)
   at 2.4-4.3M tokens beat a 1.3M-parameter plain loop given the same ten minutes (about 10%), at 1.8M
   tokens (a machine half as fast) it only drew level, while `medium` reads too few tokens in that time
   to catch up (docs/training.md, "Planning for the compute at hand"). More data never lowers the useful
   tokens, so it never suggests a smaller preset; a slower machine never suggests a larger one.
4. Passes: the preset's budget over the dataset, at most MAX_USEFUL_PASSES; a budget in minutes that
   would read more is cut to that many passes.
5. The vocabulary: a power of two near the distinct tokens read (one pass at most) / TOKENS_PER_VOCAB_ENTRY,
   within 1024..8192: each entry is an embedding row the student must see often enough to learn.
   4096 is the measured setting for the TinyStories sample (435k training tokens).

Nothing here imports torch: `distill plan` stays quick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from distill.spec import LoadedSpec
from distill.threads import available_cpus

# Tokens/s of a spec-default training (fp32, context 256, batch 16, validation included: 0.93x the bare
# loop's rate) on 2 quiet CPU cores, and non-embedding parameters; docs/training.md, "Choosing the student".
MEASURED_CORES = 2
PRESET_RATES = {"tiny": 12_200.0, "small": 3_800.0, "medium": 2_500.0}
PRESET_PARAMS = {"tiny": 0.79e6, "small": 3.9e6, "medium": 7.1e6}
TOKENS_PER_PARAM = 0.5
MAX_USEFUL_PASSES = 8.0
TOKENS_PER_VOCAB_ENTRY = 128
VOCAB_RANGE = (1024, 8192)


@dataclass(frozen=True)
class StudentSuggestion:
    preset: str
    vocab: int
    passes: float  # passes over the training split the budget makes (after any cut)
    minutes: float | None  # the training budget suggested, for a budget in minutes
    regularise: bool  # dropout, weight decay, token dropout and a weight average, for many passes
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        settings = f"student: preset {self.preset}, tokenizer_vocab {self.vocab}"
        settings += f"; about {self.passes:.1f} passes" + (f" in {self.minutes:g} minutes" if self.minutes else "")
        if self.regularise:
            settings += "; dropout 0.1, weight_decay 0.5, token_dropout 0.1, ema_decay 0.995"
        return "\n".join([f"suggested {settings}", *(f"  - {reason}" for reason in self.reasons)])


def suggest_student(*, records: int, data_tokens: int, minutes: float | None, budget_tokens: int | None = None,
                    cpus: int | None = None, rates: dict[str, float] | None = None) -> StudentSuggestion:
    """The student for `data_tokens` training tokens (over `records` records) and a budget of `minutes` of
    training on `cpus` CPUs (default: the CPUs here), or of `budget_tokens` tokens. `rates` are tokens/s
    measured on this machine, per candidate preset (default: PRESET_RATES scaled by the CPUs)."""
    cpus = cpus or available_cpus()
    measured = rates is not None
    rates = rates if measured else {p: r * cpus / MEASURED_CORES for p, r in PRESET_RATES.items()}
    data_tokens = max(1, data_tokens)

    def reads(preset: str) -> float:
        return float(budget_tokens) if budget_tokens else rates[preset] * 60 * (minutes or 10.0)

    def useful(preset: str) -> float:
        return min(reads(preset), MAX_USEFUL_PASSES * data_tokens)

    fits = [p for p in rates if useful(p) >= TOKENS_PER_PARAM * PRESET_PARAMS[p]]
    preset = fits[-1] if fits else "tiny"
    budget = f"{budget_tokens:,} tokens" if budget_tokens else f"{minutes or 10.0:g} minutes on {cpus} CPU(s)"
    speeds = ", ".join(f"{p} {r:,.0f}" for p, r in rates.items())
    reasons = [f"{records:,} records make about {data_tokens:,} training tokens; the budget is {budget}",
               (f"measured on this machine, tokens/s: {speeds}" if measured
                else f"tokens/s measured on {MEASURED_CORES} quiet cores, scaled to {cpus}: {speeds}"),
               f"so the budget reads: " + ", ".join(f"{p} {reads(p) / 1e6:.1f}M" for p in rates) + " tokens"]
    if fits:
        reasons.append(f"{preset} is the largest preset that gets at least {TOKENS_PER_PARAM} useful tokens per "
                       f"parameter ({useful(preset) / 1e6:.1f}M useful tokens for {PRESET_PARAMS[preset] / 1e6:.1f}M "
                       f"parameters; useful = at most {MAX_USEFUL_PASSES:g} passes over the data)")
    elif reads("tiny") < MAX_USEFUL_PASSES * data_tokens:
        reasons.append(f"even tiny gets under {TOKENS_PER_PARAM} useful tokens per parameter: the budget is too "
                       f"small for a good student on this machine; give it more time (or a faster machine)")
    else:
        reasons.append(f"even tiny gets under {TOKENS_PER_PARAM} useful tokens per parameter: the data is too small "
                       f"for a good student; ask for more records")
    passes = reads(preset) / data_tokens
    suggested_minutes = minutes if not budget_tokens else None
    if passes > MAX_USEFUL_PASSES:
        reasons.append(f"the budget would make {passes:.1f} passes over the data; past {MAX_USEFUL_PASSES:g} even a "
                       f"regularised student memorises rather than learns, so train for {MAX_USEFUL_PASSES:g} passes")
        if suggested_minutes:
            suggested_minutes = round(suggested_minutes * MAX_USEFUL_PASSES / passes, 1)
        passes = MAX_USEFUL_PASSES
    elif passes < 1:
        reasons.append(f"the budget reads {passes:.0%} of the data once: more training time, not more records, "
                       f"would help this student")
    regularise = passes > 1.5
    if regularise:
        reasons.append("with repeated passes, attention dropout 0.1, weight decay 0.5, token dropout 0.1 and a "
                       "weight average (ema_decay 0.995) keep it learning (measured on the TinyStories sample at "
                       "~8-9 passes, held-out bits per byte scored concatenated: 1.029 with all four, 1.084 with "
                       "dropout and weight decay alone; without any the student memorises from the 5th pass)")
    target = min(reads(preset), data_tokens) / TOKENS_PER_VOCAB_ENTRY
    vocab = min(VOCAB_RANGE[1], max(VOCAB_RANGE[0], 2 ** round(math.log2(max(target, 1)))))
    reasons.append(f"tokenizer_vocab {vocab}: about one entry per {TOKENS_PER_VOCAB_ENTRY} distinct tokens read, "
                   f"so every entry's embedding is trained often enough")
    reasons.append("batch 16 x the context, the optimizer's learning rate (Muon 4e-3 from scratch), 50 warmup steps "
                   "then a cosine decay to a tenth over the budget: for minutes, over wall-clock time, so a machine "
                   "that slows down still ends on time at the minimum learning rate")
    return StudentSuggestion(preset, vocab, round(passes, 2), suggested_minutes, regularise, reasons)


def suggest_for_spec(loaded: LoadedSpec, output_tokens: int, *, records: int,
                     rates: dict[str, float] | None = None) -> StudentSuggestion:
    """The suggestion for a spec: its records' estimated output tokens (teacher tokens, about the student's
    at these vocabularies) less the validation split, and its training budget (`training.budget` first;
    `rates` measured here, as training will measure them, for a budget in minutes)."""
    training, student = loaded.spec.training, loaded.spec.student
    if training.budget is not None:
        return suggest_student(records=records, data_tokens=int(output_tokens * (1 - training.val_fraction)),
                               minutes=training.budget.minutes, budget_tokens=training.budget.tokens, rates=rates)
    budget_tokens = training.max_tokens
    if budget_tokens is None and training.max_steps is not None:
        budget_tokens = training.max_steps * training.batch_size * training.grad_accum * student.context_length
    minutes = training.max_minutes if budget_tokens is None else None
    return suggest_student(records=records, data_tokens=int(output_tokens * (1 - training.val_fraction)),
                           minutes=minutes if minutes is not None else (None if budget_tokens else 10.0),
                           budget_tokens=budget_tokens)
