"""`distill plan` suggests the student from the records, the expected tokens and the budget (distill.student_plan)."""

from __future__ import annotations

from conftest import REPO, run_distill
from distill.student_plan import MAX_USEFUL_PASSES, PRESET_RATES, suggest_student

ORDER = list(PRESET_RATES)  # smallest to largest


def test_more_data_never_suggests_a_smaller_preset_and_makes_fewer_passes() -> None:
    tiny = suggest_student(records=100, data_tokens=20_000, minutes=10, cpus=2)
    medium = suggest_student(records=2_500, data_tokens=450_000, minutes=10, cpus=2)
    large = suggest_student(records=200_000, data_tokens=80_000_000, minutes=10, cpus=2)
    assert ORDER.index(tiny.preset) <= ORDER.index(medium.preset) <= ORDER.index(large.preset)
    assert tiny.passes >= medium.passes > large.passes
    assert tiny.vocab <= medium.vocab <= large.vocab
    # A handful of stories: the smallest student, cut to a few passes instead of memorising, and regularised.
    assert tiny.preset == "tiny" and tiny.passes == MAX_USEFUL_PASSES and tiny.minutes < 10 and tiny.regularise
    assert "memorises" in tiny.summary()
    # The TinyStories sample in ten CPU minutes: the measured setting (small, 4096, several passes).
    assert (medium.preset, medium.vocab) == ("small", 4096) and 1 < medium.passes <= MAX_USEFUL_PASSES and medium.regularise
    # Far more data than ten minutes can read: less than one pass, and the suggestion says time is short.
    assert large.passes < 1 and not large.regularise and "more training time" in large.summary()


def test_more_compute_never_suggests_a_smaller_preset() -> None:
    data = 50_000_000
    presets = [suggest_student(records=100_000, data_tokens=data, minutes=m, cpus=c).preset
               for m, c in ((2, 2), (10, 2), (60, 2), (60, 16))]
    assert [ORDER.index(p) for p in presets] == sorted(ORDER.index(p) for p in presets)
    assert presets[0] != presets[-1]


def test_a_budget_in_tokens_does_not_depend_on_speed() -> None:
    slow = suggest_student(records=1_000, data_tokens=1_000_000, minutes=None, budget_tokens=3_000_000, cpus=1)
    fast = suggest_student(records=1_000, data_tokens=1_000_000, minutes=None, budget_tokens=3_000_000, cpus=64)
    assert (slow.preset, slow.vocab, slow.passes) == (fast.preset, fast.vocab, fast.passes) and slow.passes == 3
    assert slow.minutes is None


def test_distill_plan_prints_the_suggestion_and_why() -> None:
    done = run_distill("plan", REPO / "specs" / "tinystories.yaml")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    suggestion = next(i for i, line in enumerate(lines) if line.startswith("suggested student: preset "))
    assert "tokenizer_vocab" in lines[suggestion] and "passes" in lines[suggestion]
    reasons = lines[suggestion + 1:]
    assert len(reasons) >= 3 and all(line.startswith("  - ") for line in reasons)
    assert any("20,000 records" in line for line in reasons)


def test_a_slow_machine_gets_a_smaller_student_than_a_fast_one_and_says_why() -> None:
    """The speeds a calibration measured on the machine decide the preset (a table fed in, as measured)."""
    slow = {"tiny": 1_500.0, "small": 400.0, "medium": 250.0}  # a busy 2-core machine
    fast = {"tiny": 60_000.0, "small": 20_000.0, "medium": 13_000.0}  # a quiet 16-core one
    on_slow = suggest_student(records=10_000, data_tokens=2_000_000, minutes=10, rates=slow, cpus=2)
    on_fast = suggest_student(records=10_000, data_tokens=2_000_000, minutes=10, rates=fast, cpus=16)
    assert (on_slow.preset, on_fast.preset) == ("tiny", "medium")
    assert "measured on this machine, tokens/s: tiny 1,500, small 400, medium 250" in on_slow.summary()
    assert "tiny is the largest preset" in on_slow.summary() and "medium is the largest preset" in on_fast.summary()
    # Several passes over the data on the fast machine: the regularisers; the slow one reads it under once.
    assert on_fast.regularise and 1.5 < on_fast.passes < MAX_USEFUL_PASSES
    assert not on_slow.regularise and on_slow.passes < 1 and "more training time" in on_slow.summary()


def test_the_plan_keeps_what_the_spec_pins_and_records_the_choice(tmp_path) -> None:
    from distill.train import TrainConfig
    from distill.train.budget import plan_student, planned_config

    texts = ["Once upon a time there was a cat who liked the sun. " * 8] * 4000  # ~1.7M bytes, ~380k tokens
    config = TrainConfig(budget={"minutes": 5}, val_fraction=0.1)
    rates = {"tiny": 3_000.0, "small": 1_000.0, "medium": 600.0}
    planned, record = plan_student(config, texts, pinned={"tokenizer_vocab"}, rates=rates)
    assert planned.preset == "tiny" and planned.tokenizer_vocab == 4096  # the vocabulary was pinned
    assert record["chosen"]["preset"] == "tiny" and "tokenizer_vocab" not in record["chosen"]
    assert record["rates"] == rates and record["pinned"] == ["tokenizer_vocab"] and "tiny is the largest" in record["summary"]
    assert planned.limits() == (None, None, 5)  # the budget is the training's limit
    # ~220 steps of 16 x 256 tokens in five minutes at 3,000 tokens/s: warm up over a twentieth of them.
    assert planned.warmup_steps == 10 and "warmup_steps 10" in record["summary"]
    # Stored in the training folder and read back, not measured again: a resume trains the same student.
    (tmp_path / "plan.json").write_text(__import__("json").dumps({**record, "pinned_fields": ["tokenizer_vocab"]}))
    again, stored = planned_config(config, texts, tmp_path, pinned={"tokenizer_vocab"})
    assert again == planned and stored["rates"] == rates


def test_the_calibration_measures_a_training_step_here() -> None:
    from distill.train import TrainConfig
    from distill.train.budget import measure_rates

    rates = measure_rates(TrainConfig(tokenizer_vocab=512, context_length=32, batch_size=2), presets=("tiny",), seconds=0.2)
    assert list(rates) == ["tiny"] and rates["tiny"] > 0
