"""Seven commands race on one run: 3 releases, 2 generates and 2 trains. One holds the run, the other six
exit at once with the lock message naming it; nothing is bought twice; the finished run releases a bundle
that verifies and holds the weights."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, run_distill

from tests.teacher_server import TeacherServer

KEY_ENV = "DISTILL_TEST_TEACHER_KEY"
RECORDS = 24

SPEC = """\
name: race
description: Short stories about animals, written by the loopback teacher.
kind: text
records: {records}
seed: 7
variables:
  animal: {{type: choice, items: [fox, bear, owl, cat]}}
steps:
  - name: story
    user: "Write a short story about a {{{{ animal }}}}. #{{{{ record_index }}}}#"
teacher:
  provider: openai
  model: gpt-4o-mini
  base_url: {base_url}
  api_key_env: {key_env}
  concurrency: 2
  timeout_s: 30
  params: {{max_tokens: 200}}
safety:
  policy: policy.yaml
student: {{preset: tiny, tokenizer_vocab: 300, context_length: 64}}
training: {{max_steps: 3, batch_size: 4, eval_every: 3, checkpoint_every: 3}}
evaluation: {{prompts: 2, samples_per_prompt: 1, max_new_tokens: 8, probe_samples: 1}}
"""


def racer(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def holder_pid(run: Path) -> int | None:
    try:
        return json.loads((run / "locks" / "run.lock").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_seven_commands_race_on_one_run(tmp_path):
    env = {**os.environ, KEY_ENV: "test-key-0123456789", "DISTILL_REVIEWER": "ana",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    policy = (REPO / "safety" / "general.yaml").read_text().replace("judge:\n  enabled: true", "judge:\n  enabled: false")
    # The loopback teacher's stories are near copies, so the dedup leaves a handful of records to sample:
    # 0 defects in 5 bound the rate at 45%.
    policy = re.sub(r"max_defect_rate: [0-9.]+", "max_defect_rate: 0.6", policy)
    # A 3-step student's probe completions are noise that detectors may flag ("Gay" scores 98% offensive);
    # this test is about the race, not the probe gate, so every probe category may violate.
    policy = re.sub(r"(?ms)^probe_thresholds:\n(  .*?\n)+", "probe_thresholds:\n  default: 1.0\n", policy)
    (tmp_path / "policy.yaml").write_text(policy)
    runs = tmp_path / "runs"
    run = runs / "race" / "main"
    # Slow answers keep the winning generate inside the run long after the six others have tried.
    with TeacherServer(latency=1.5) as server:
        spec = tmp_path / "race.yaml"
        spec.write_text(SPEC.format(records=RECORDS, base_url=server.openai_base_url, key_env=KEY_ENV))
        first = racer(["generate", str(spec), "--runs-dir", str(runs)], env)
        deadline = time.monotonic() + 120
        while holder_pid(run) != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        others = [racer(args, env) for args in (
            ["release", str(run)], ["release", str(run)], ["release", str(run)],
            ["generate", str(spec), "--runs-dir", str(runs)], ["train", str(run)], ["train", str(run)])]
        outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in others]
        assert first.poll() is None, "the winner finished before the others tried: the race proved nothing"
        assert first.wait(timeout=300) == 0, first.stderr.read()
        for code, err in outcomes:
            assert code == 2 and f"the run is locked by pid {first.pid}" in err, err
            assert "Traceback" not in err
        bought = server.stats()
        assert bought["answers"] == RECORDS and bought["duplicate_answers"] == 0

        # Finish the run: review (a person signs off), train, evaluate, release.
        waiting = run_distill("run", spec, "--runs-dir", runs, env=env, timeout=600)
        assert waiting.returncode == 4, waiting.stderr
        for step in (("sample",), ("signoff",)):
            signed = run_distill("review", run, *step, env=env)
            assert signed.returncode == 0, signed.stderr
        done = run_distill("run", spec, "--runs-dir", runs, env=env, timeout=900)
        assert done.returncode == 0, done.stderr
        # Every prompt answered once across every command (eval's judge asks its own, new questions).
        assert server.stats()["duplicate_answers"] == 0
    bundle = Path(done.stdout.strip().splitlines()[-1])
    verified = run_distill("verify", bundle)
    assert verified.returncode == 0, verified.stderr
    assert (bundle / "model.safetensors").stat().st_size > 10_000
    archive = run_distill("verify", bundle.parent / f"{bundle.name}.tar.gz")
    assert archive.returncode == 0, archive.stderr
