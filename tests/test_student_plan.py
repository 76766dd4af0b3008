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
