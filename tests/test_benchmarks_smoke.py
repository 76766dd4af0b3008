"""Every script in benchmarks/ runs in its smoke mode (`--smoke`: tiny sizes, seconds not minutes), exits 0
and prints its figures, so a benchmark cannot silently break again. The figures themselves mean nothing
at these sizes; the real runs and their targets are in each script's docstring and in docs/.

A new script in benchmarks/ fails `test_every_benchmark_has_a_smoke_case` until it gets a case here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SAMPLE = REPO.parent / "shared" / "data" / "tinystories" / "tinystories_v1_train_head_2MiB.txt"

# script -> the figures it must print (regular expressions, each found in its output)
FIGURES = {
    "chat_agent.py": [r'"valid_call_rate": \d', r'"schema_valid": \d', r'"ms_per_token": \d'],
    "export_forms.py": [r"\d+ held-out stories, \d+ prompts, \d+ probes",
                        r"gguf +\d+ +\d\.\d{4} +[-+]\d\.\d{3}% +\d+% .* (llama\.cpp|gguf-reader)"],
    "safety.py": [r"cheap chain \(general\): 50 records .* [\d,]+ records/s on one core",
                  r"MinHash dedup: 300 records .* found \d+ of \d+ planted", r"semantic \(TF-IDF\) dedup: 100 records"],
    "safety_generalisation.py": [r"injection +ALL \(held-out A\) +\d+/\d+", r"policy general, detector findings",
                                 r"false duplicates among 300 distinct records of one template: \d+\.\d%"],
    "synthesis.py": [r"achieved rate / limit: .* = \d+\.\d{3}", r"requests sent / unique prompts: 40 / 40 = 1\.000",
                     r"answers paid / unique prompts: .* = \d\.\d{3}"],
    "serve.py": [r"clients +1: batched .* tok/s .* \| plain .* tok/s .* throughput x\d+\.\d\d",
                 r"clients +4: batched .* throughput x\d+\.\d\d"],
    "service.py": [r"overhead \(service/run\) +\d+\.\d{3}", r"status p50 / p99 \(ms\), every 0\.5 s +\d+ / *\d+",
                   r"status p50 / p99 \(ms\), back to back +\d+ / *\d+"],
    "tinystories_quality.py": [r"tiny: .* 3 steps", r"plain loop: .* 3 steps, [\d,]+ tokens",
                               r"bits per byte +per story +concatenated",
                               r"\d\.\d{4} +\d\.\d{4} +the held-out tail .*: distill",
                               r"\d\.\d{4} +\d\.\d{4} +the held-out tail .*: plain loop",
                               r"distill / plain on the held-out tail .*: concatenated \d\.\d{3}, per story \d\.\d{3}"],
    "kd_quality.py": [r"teacher: tiny, .* held-out \d+\.\d{4} bits/byte",
                      r"teacher wrote \d+ stories, [\d,]+ tokens \(each with its top-20\), through distill serve-model",
                      r"run 1: held-out bits/byte \(concatenated\) +text only \d+\.\d{4} +distribution \d+\.\d{4} +ratio \d+\.\d{3}"],
    "train_throughput.py": [r"tiny the loop alone: distill / plain steps/s \d+\.\d{3}",
                            r"tiny the quality recipe: distill / plain steps/s \d+\.\d{3}",
                            r"tiny run +tokens/s: alone [\d,]+, with one busy process [\d,]+, ratio \d+\.\d\d",
                            r"tiny steps tokens/s: .* ratio \d+\.\d\d"],
}
SECONDS = 600  # the limit for one script's smoke run on a loaded machine

# What needs something outside this repository, and the work of other areas in flight.
NEEDS = {"tinystories_quality.py": (SAMPLE.is_file(), f"needs the shared TinyStories sample at {SAMPLE}"),
         "kd_quality.py": (SAMPLE.is_file(), f"needs the shared TinyStories sample at {SAMPLE}")}
BROKEN: dict[str, str] = {}  # script -> why its smoke run is expected to fail for now


def test_every_benchmark_has_a_smoke_case():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == sorted(FIGURES)


@pytest.mark.slow  # tens of seconds each on a loaded 2-core machine, mostly starting torch and the libraries
@pytest.mark.parametrize("script", [pytest.param(name, marks=pytest.mark.xfail(reason=BROKEN[name], strict=False))
                                    if name in BROKEN else name for name in sorted(FIGURES)])
def test_benchmark_smoke_mode_runs_and_prints_its_figures(script, tmp_path):
    available, reason = NEEDS.get(script, (True, ""))
    if not available:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=SECONDS)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    for figure in FIGURES[script]:
        assert re.search(figure, output), (figure, output[-4000:])
