"""examples/tinystories-replay/README.md as a reviewer walks it, up to the sign-off: the recorded stories
were written for other prompts, so nothing may wait on the words this run sampled, and the README's
decisions leave nothing pending. Skips when the shared sample is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "specs" / "tinystories-replay.yaml"
pytestmark = pytest.mark.slow


def distill(*args, runs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DISTILL_REVIEWER": "ana"}
    return subprocess.run([sys.executable, "-m", "distill", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=runs, timeout=600)


def test_the_replay_readme_reaches_a_sign_off(tinystories_sample, tmp_path):
    run = tmp_path / "runs" / "tinystories-replay" / "main"
    assert distill("generate", SPEC, "--runs-dir", tmp_path / "runs", runs=tmp_path).returncode == 0
    reviewed = distill("review", run, "--no-judge", runs=tmp_path)
    assert reviewed.returncode == 0, reviewed.stderr
    listed = distill("review", run, "list", "--status", "pending", "--limit", "100000", runs=tmp_path).stdout
    assert "conformance.missing_word" not in listed
    for reason, decision in (("quality.truncated", "reject"), ("lexicon", "accept")):
        assert distill("review", run, "apply-reason", reason, decision, "--note", "README", runs=tmp_path).returncode == 0
    pending = [line for line in distill("review", run, "list", "--status", "pending", "--limit", "100000",
                                        runs=tmp_path).stdout.splitlines() if line.strip()]
    assert len(pending) < 50, pending[:5]  # a person reads the few left; none is pending for a sampled word
    if pending:
        ids = [line.split("\t")[0] for line in pending]
        assert distill("review", run, "accept", *ids, "--note", "read", runs=tmp_path).returncode == 0
    # no judge read the records, so the children's policy asks for its larger sample
    sample = distill("review", run, "sample", "--size", 300, runs=tmp_path)
    assert sample.returncode == 0 and len(sample.stdout.splitlines()) == 300
    signed = distill("review", run, "signoff", runs=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert json.loads((run / "review" / "signoff.json").read_text())["reviewer"] == "ana"
