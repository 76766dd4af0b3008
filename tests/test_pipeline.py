"""`distill run`: spec to verified bundle offline; a second run does no work; an interrupted run resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_distill
from distill.pipeline import STAGES, stale_stages
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.stages import file_label

SPEC = (REPO / "specs" / "tinystories-quickstart.yaml").read_text()
SMALL = (SPEC.replace("records: 3000", "records: 80")
         .replace("max_minutes: 4", "max_steps: 6")
         .replace("eval_every: 100", "eval_every: 3")
         .replace("tokenizer_vocab: 2048", "tokenizer_vocab: 512")
         .replace("prompts: 12", "prompts: 2")
         .replace("samples_per_prompt: 2", "samples_per_prompt: 1")
         .replace("max_new_tokens: 200", "max_new_tokens: 16"))
# Every file the stages read lives next to the spec, so a test can edit each kind.
LOCAL_FILES = (SMALL.replace("steps:\n", "templates_dir: templates\nsteps:\n", 1)
               .replace("policy: children", "policy: policy.yaml")
               .replace("  probe_samples: 1", "  probe_samples: 1\n  rubric: rubric.jinja"))


def small_spec(folder: Path, text: str = SMALL) -> Path:
    """The quickstart spec at test size, next to a copy of its word lists."""
    (folder / "words").mkdir(parents=True)
    for name in ("nouns", "verbs", "adjectives"):
        (folder / "words" / f"{name}.txt").write_bytes((REPO / "specs" / "words" / f"{name}.txt").read_bytes())
    spec = folder / "quick.yaml"
    spec.write_text(text)
    return spec


def local_files_spec(folder: Path) -> Path:
    """The small spec with its own templates, policy, lexicon and rubric."""
    spec = small_spec(folder, LOCAL_FILES)
    (folder / "templates").mkdir()
    (folder / "templates" / "tinystories").mkdir()
    for name in ("system.j2", "story.j2", "features.j2"):
        (folder / "templates" / "tinystories" / name).write_text((REPO / "templates" / "tinystories" / name).read_text())
    (folder / "lexicons").mkdir()
    (folder / "lexicons" / "violence.yaml").write_text((REPO / "safety" / "lexicons" / "violence.yaml").read_text())
    policy = (REPO / "safety" / "children.yaml").read_text()
    (folder / "policy.yaml").write_text(policy.replace(" violence,", f" {folder / 'lexicons' / 'violence.yaml'},"))
    (folder / "rubric.jinja").write_text((REPO / "templates" / "eval" / "grading.jinja").read_text())
    return spec


def manifest_of(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three runs; on a busy 2-core machine the default 600 s is tight
def test_spec_to_verified_bundle_then_nothing_to_do_until_an_input_file_changes(tmp_path: Path) -> None:
    spec = local_files_spec(tmp_path)
    first = run_distill("run", spec, "--runs-dir", tmp_path / "runs", timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    bundle = Path(first.stdout.strip().splitlines()[-1])
    assert bundle.is_dir() and (bundle.parent / f"{bundle.name}.tar.gz").is_file()
    card = (bundle / "README.md").read_text()
    assert "offline-stand-in" in card
    verified = run_distill("verify", bundle.parent / f"{bundle.name}.tar.gz")
    assert verified.returncode == 0, verified.stderr
    run_dir = tmp_path / "runs" / "tinystories-quickstart" / "main"
    stages = manifest_of(run_dir)["stages"]
    assert all(stages[name]["state"] == "done" for name in ("generate", "eval", "release"))
    assert all("inputs" in stages[name] for name in STAGES)
    assert (run_dir / "review" / "signoff.json").is_file()
    hashes = json.loads((bundle / "manifest.json").read_text())["files"]

    second = run_distill("run", spec, "--runs-dir", tmp_path / "runs", timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stderr.count("skipped: inputs unchanged since it completed") == 5
    assert json.loads((bundle / "manifest.json").read_text())["files"] == hashes

    # Each kind of file: the stage that reads it and every later one are stale, named by the file.
    run = RunDir.open(run_dir)
    read_first_by = {"templates/tinystories/story.j2": "generate", "templates/tinystories/features.j2": "generate",
                     "words/nouns.txt": "generate", "policy.yaml": "review", "lexicons/violence.yaml": "review",
                     "rubric.jinja": "eval"}
    for name, first in read_first_by.items():
        path = tmp_path / name
        original = path.read_text()
        path.write_text(original + "\n# edited\n" if name.endswith(".yaml") else original + "\n{# edited #}\n"
                        if name.endswith((".j2", ".jinja")) else original + "edited\n")
        stale = stale_stages(load_spec(spec), run)
        assert list(stale) == list(STAGES[STAGES.index(first):]), name
        assert stale[first] == [f"{file_label(path)} changed"], name
        path.write_text(original)
    assert stale_stages(load_spec(spec), run) == {}

    # A changed rubric re-runs eval and release only; the bundle's lineage names the new rubric.
    before = json.loads((bundle / "manifest.json").read_text())
    rubric = tmp_path / "rubric.jinja"
    rubric.write_text(rubric.read_text() + "\nBe strict.\n")
    third = run_distill("run", spec, "--runs-dir", tmp_path / "runs", timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert all(f"[{name}] skipped: inputs unchanged" in third.stderr for name in ("generate", "review", "train"))
    assert f"[eval] running: {file_label(rubric)} changed" in third.stderr
    assert "[release] running: eval ran before it" in third.stderr
    after = json.loads((bundle / "manifest.json").read_text())
    label = file_label(rubric)
    assert after["lineage"]["stage_input_files"]["eval"][label] != before["lineage"]["stage_input_files"]["eval"][label]
    assert after["lineage"]["stage_input_files"]["generate"] == before["lineage"]["stage_input_files"]["generate"]
    assert after["files"]["model.safetensors"] == before["files"]["model.safetensors"]

    sampled = run_distill("sample", bundle, "--prompt", "Once upon a time", timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("Once upon a time")


@pytest.mark.slow
def test_run_killed_during_training_resumes_to_the_same_bundle(tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    reference = run_distill("run", small_spec(reference_dir), "--runs-dir", reference_dir / "runs", timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    spec = small_spec(killed_dir)
    process = subprocess.Popen([sys.executable, "-m", "distill", "run", str(spec), "--runs-dir", str(killed_dir / "runs")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_dir = killed_dir / "runs" / "tinystories-quickstart" / "main"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (run_dir / "train" / "checkpoints").is_dir():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert manifest_of(run_dir)["stages"].get("release", {}).get("state") != "done"
    resumed = run_distill("run", spec, "--runs-dir", killed_dir / "runs", timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    bundle_of = lambda root: root / "runs" / "tinystories-quickstart" / "main" / "release" / "tinystories-quickstart-0.1.0"
    weights = lambda root: json.loads((bundle_of(root) / "manifest.json").read_text())["files"]["model.safetensors"]
    assert weights(killed_dir) == weights(reference_dir)
