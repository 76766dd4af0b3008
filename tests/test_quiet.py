"""Only distill's own progress and messages reach the terminal during a run (distill.quiet)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import run_distill
from test_pipeline import SMALL, small_spec

# What the libraries under distill print by themselves: datasets', transformers' and tqdm's progress bars,
# accelerate's note about the tied output head, and warnings about their own internals.
THIRD_PARTY = ["Saving the dataset", "Loading weights", "Writing model shards", "Map", "Filter",
               "Removed shared tensor", "[RANK", "FutureWarning", "UserWarning", "DeprecationWarning"]
TQDM_BAR = re.compile(r"\d+%\|")  # "100%|██████████| 3000/3000"


@pytest.mark.slow
def test_a_run_prints_distills_progress_and_nothing_from_the_libraries_under_it(tmp_path: Path) -> None:
    spec = small_spec(tmp_path, SMALL.replace("max_steps: 6", "max_steps: 4").replace("records: 80", "records: 40"))
    done = run_distill("run", spec, "--runs-dir", tmp_path / "runs", env={"DISTILL_PROGRESS": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    leaked = [text for text in THIRD_PARTY if text in output]
    assert not leaked and not TQDM_BAR.search(output), output[-4000:]
    # distill's own progress and messages are all there.
    for ours in ("[generate] running", "generate ", "[train] running", "train ", "train: stopped by max_steps",
                 "eval: validation bits per byte", "bundle: "):
        assert ours in done.stderr, (ours, done.stderr[-3000:])
