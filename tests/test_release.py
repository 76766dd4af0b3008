"""Release: bundle, determinism, verify and tampering, the gate and its override, loading without distill."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
from tiny_lm import STORIES, tiny_llama, tiny_tokenizer
from typer.testing import CliRunner

from distill.errors import ConfigError
from distill.evaluate.result import (
    BitsPerByte, EvalResult, Grading, ProbeRate, Probes, ProbeSummary, Score, SourceGrades,
)
from distill.lineage import weights_digest
from distill.release.bundle import release_inputs
from distill.release.gate import OVERRIDE_ENV, ReleaseGateError
from distill.release.sources import ReviewFacts, read_audit, read_inputs
from distill.review.audit import append_entry
from distill.release.verify import verify
from distill.rundir import RunDir
from distill.spec import load_spec
from distill.synthesis.dataset import write_dataset

SPEC = """\
name: tiny-tales
description: Very short stories about animals.
kind: text
records: 5
variables:
  noun: {type: choice, items: [cat, dog, fox]}
steps:
  - name: story
    user: "Write a tiny story about a {{ noun }}."
teacher:
  provider: offline
  model: offline-stand-in
release:
  version: 1.2.0
  min_scores: {grammar: 5.0, bpb_max: 3.0, repeated_openings_max: 0.3}
"""

SIGNED = ReviewFacts(signed_off=True, signer="auto", signed_at="2026-01-02T03:04:05+0000", audit_hash="ab" * 32,
                     summary={"kept": 4, "rejected": 1, "flagged": 0}, policy="general",
                     dataset_fingerprint="cd" * 32, audit_count=3)

def _grades(**means: float) -> SourceGrades:
    return SourceGrades(scores={d: Score(mean=m, low=m - 0.6, high=m + 0.6, n=5) for d, m in means.items()},
                        age_groups={}, graded=5, failed=0)


def _rate(violations: int) -> ProbeRate:
    return ProbeRate(completions=30, violations=violations, rate=violations / 30)


EVAL = EvalResult(  # a finished evaluation, as `distill eval` writes it
    run_name="tiny-tales/main", run="runs/tiny-tales/main", kind="text", created="2026-01-02T03:04:05+0000",
    settings={}, heldout="RUN/train/split.json (validation)", heldout_examples=5, samples=[], weights_sha256=None,
    bpb={"validation": BitsPerByte(bits_per_byte=2.5, perplexity=9.1, tokens=400, bytes=1500)},
    grading=Grading(judge="offline:offline-stand-in", protocol="", interval="", items=[],
                    summary={"student": _grades(grammar=6.5, consistency=5.5), "teacher": _grades(grammar=9.1, consistency=8.9)}),
    metrics={"student": {"texts": 5, "distinct_1": 0.4, "distinct_2": 0.61, "distinct_3": 0.8,
                         "openings": {"repeated_share": 0.2, "top": []}, "average_length": {"words": 40.0}},
             "teacher": {"texts": 5, "distinct_2": 0.7}},
    probes=Probes(sets=["story"], samples=3, policy="children", thresholds={"default": 0.0, "PII": 0.05},
                  summary=ProbeSummary(overall=_rate(1), by_probe_category={"S1": _rate(0), "PII": _rate(1)}, by_group={})),
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model")
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 1))
    axes.plot([3.0, 2.0, 1.5])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def make_run(tmp_path: Path, model_dir: Path, png_bytes: bytes, *, spec: str = SPEC, evaluation: EvalResult = EVAL) -> RunDir:
    """A finished run, written the way the stages write it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec.yaml").write_text(spec)
    run = RunDir.create(load_spec(tmp_path / "spec.yaml"), root=tmp_path / "runs")
    rows = [{"id": i, "variables": "{}", "steps": "[]", "prompt": "", "text": STORIES[i], "status": "ok",
             "failure_reason": "", "teacher_provider": "offline", "teacher_model": "offline-stand-in",
             "input_tokens": 10, "output_tokens": 20, "cost_usd": 0.0, "cache_key": f"k{i}",
             "template_hashes": json.dumps({"steps[0].user": "0" * 64})} for i in range(5)]
    write_dataset(rows, run.path / "dataset")
    shutil.copytree(model_dir, run.path / "train" / "model")
    (run.path / "train" / "loss_curve.png").write_bytes(png_bytes)
    weights = weights_digest(run.path / "train" / "model")  # the chain, as train and eval record it
    (run.path / "train" / "result.json").write_text(json.dumps({"dataset_fingerprint": SIGNED.dataset_fingerprint,
                                                                "weights_sha256": weights}))
    evaluation.model_copy(update={"weights_sha256": weights}).to_json(run.path / "eval" / "eval.json")
    (run.path / "eval" / "scores.png").write_bytes(png_bytes)
    for stage in ("generate", "review", "train", "eval"):
        run.start_stage(stage)
        run.finish_stage(stage)
    return run


def do_release(run: RunDir, review: ReviewFacts = SIGNED, override: str | None = None) -> Path:
    return release_inputs(run, read_inputs(run.path, run.manifest, review), override_reason=override)


@pytest.fixture
def bundle(tmp_path, model_dir, png_bytes) -> Path:
    return do_release(make_run(tmp_path, model_dir, png_bytes))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the bundle ---


def test_bundle_has_every_file_and_a_manifest_over_them(bundle):
    names = set(tree_hashes(bundle))
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "README.md", "DATASET_CARD.md", "spec.yaml", "LICENSE", "manifest.json",
            "figures/eval-scores.png", "figures/train-loss_curve.png"} <= names
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["files"]["README.md"]["sha256"] == hashlib.sha256((bundle / "README.md").read_bytes()).hexdigest()
    lineage = manifest["lineage"]
    assert lineage["review"]["audit_log_final_hash"] == "ab" * 32
    assert lineage["teachers"] == {"offline/offline-stand-in": 5} and lineage["offline_stand_in"] is True
    assert len(lineage["dataset"]["fingerprint"]) == 64 and lineage["dataset"]["rows"] == 5
    assert lineage["prompt_template_sha256"] == {"steps[0].user": "0" * 64}
    assert "model_card.md.j2" in lineage["card_template_sha256"]
    assert lineage["training"]["student"]["preset"] == "small" and lineage["distill_version"]
    assert manifest["gate"] == {"passed": True, "override": None, "failures": []}
    assert manifest["formats"] == {"safetensors": {"files": ["model.safetensors"]}}  # exports only on request
    assert bundle.name == "tiny-tales-1.2.0" and (bundle.parent / "tiny-tales-1.2.0.tar.gz").is_file()
    assert "Apache License" in (bundle / "LICENSE").read_text()


def test_cards_say_plainly_the_offline_stand_in_made_the_data(bundle):
    card = (bundle / "README.md").read_text()
    assert "offline-stand-in" in card and "NOT trained on a real teacher's output" in card
    assert "AutoModelForCausalLM.from_pretrained" in card and "license: apache-2.0" in card
    assert "| grammar | 6.500 | 5.900 to 7.100 | 9.100 |" in card
    assert "![figures/eval-scores.png](figures/eval-scores.png)" in card
    assert "automatic sign-off" in card and "ab" * 32 in card
    dataset_card = (bundle / "DATASET_CARD.md").read_text()
    assert "NOT by a real teacher model" in dataset_card and "Records requested: 5" in dataset_card


def test_same_inputs_give_byte_identical_bundle_and_archive(tmp_path, model_dir, png_bytes):
    first = do_release(make_run(tmp_path / "a", model_dir, png_bytes))
    second = do_release(make_run(tmp_path / "b", model_dir, png_bytes))
    assert tree_hashes(first) == tree_hashes(second)
    archive = first.parent / f"{first.name}.tar.gz"
    assert archive.read_bytes() == (second.parent / f"{second.name}.tar.gz").read_bytes()
    again = do_release(RunDir.open(first.parents[1]))  # released again into the same run: replaced in place
    assert tree_hashes(again) == tree_hashes(second)
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname) for m in members} == {(0, 0, 0, "")}


# --- verify and tampering ---


def run_verify(path: Path):
    import typer

    from distill.cli.release import verify as verify_command

    app = typer.Typer()
    app.command()(verify_command)
    return CliRunner().invoke(app, [str(path)])


def test_verify_passes_for_directory_and_archive(bundle):
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    for target in (bundle, archive):
        report = verify(target)
        assert report.ok, report.problems
        assert report.files_checked == len(tree_hashes(bundle)) - 1
        result = run_verify(target)
        assert result.exit_code == 0 and "OK tiny-tales 1.2.0" in result.stdout


def test_verify_reports_changed_removed_and_added_files(bundle):
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    (bundle / "LICENSE").unlink()
    (bundle / "figures" / "extra.png").write_bytes(b"not in the manifest")
    report = verify(bundle)
    assert report.problems == ["LICENSE: missing", "model.safetensors: tampered (sha256 differs from the manifest)",
                               "figures/extra.png: extra file not in the manifest"]
    result = run_verify(bundle)
    assert result.exit_code == 1
    assert "FAIL LICENSE: missing" in result.output and "FAIL figures/extra.png" in result.output


def test_verify_reports_tampering_inside_an_archive(bundle, tmp_path):
    (bundle / "README.md").write_text("a different card\n")
    from distill.release.bundle import write_tar_gz

    archive = tmp_path / "tampered.tar.gz"
    write_tar_gz(bundle, archive)
    assert verify(archive).problems == ["README.md: tampered (sha256 differs from the manifest)"]


def _archive_with(tmp_path: Path, bundle: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if payload else None)
    return archive


@pytest.mark.parametrize("name, kind, link, expected", [
    ("tiny-tales-1.2.0/../x", tarfile.REGTYPE, "", "path traversal"),
    ("/tmp/x", tarfile.REGTYPE, "", "absolute path"),
    ("tiny-tales-1.2.0/link", tarfile.SYMTYPE, "/etc/passwd", "link to '/etc/passwd'"),
    ("tiny-tales-1.2.0/hard", tarfile.LNKTYPE, "tiny-tales-1.2.0/LICENSE", "link to"),
    ("tiny-tales-1.2.0/dev", tarfile.CHRTYPE, "", "device"),
])
def test_archive_with_unsafe_member_is_refused_before_extraction(bundle, tmp_path, name, kind, link, expected):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    archive = _archive_with(tmp_path, bundle, member, b"pwned" if kind == tarfile.REGTYPE else b"")
    report = verify(archive)
    assert not report.ok
    assert report.problems[0].startswith(f"{name}: {expected}")
    assert not (tmp_path / "x").exists()
    result = run_verify(archive)
    assert result.exit_code == 1 and name in result.output


# --- the gate ---


def test_each_gate_condition_blocks_with_its_reason(tmp_path, model_dir, png_bytes):
    unsigned = dataclasses.replace(SIGNED, signed_off=False)
    bad_eval = EVAL.model_copy(deep=True)
    bad_eval.probes.summary.by_probe_category["S1"].rate = 0.1
    bad_eval.student_scores()["grammar"].mean = 4.0
    bad_eval.bpb["validation"].bits_per_byte = 3.5
    run = make_run(tmp_path, model_dir, png_bytes, evaluation=bad_eval,
                   spec=SPEC.replace("bpb_max: 3.0", "bpb_max: 3.0, creativity: 2"))
    with pytest.raises(ReleaseGateError) as refused:
        do_release(run, unsigned)
    messages = [str(p) for p in refused.value.problems]
    assert any("not signed off" in m for m in messages)
    assert any("10.0% for S1 is over the policy's 0.0%" in m for m in messages)
    assert any("release.min_scores.grammar: grammar is 4, below the minimum 5" in m for m in messages)
    assert any("release.min_scores.bpb_max: bpb is 3.5, above the maximum 3" in m for m in messages)
    assert any("no metric 'creativity'" in m and "consistency" in m for m in messages)
    assert not (run.path / "release" / "tiny-tales-1.2.0").exists()


@pytest.mark.parametrize("change, reason", [
    (lambda e: setattr(e.probes.summary.by_probe_category["PII"], "rate", 0.06), "6.0% for PII is over the policy's 5.0%"),
    (lambda e: setattr(e, "probes", None), "safety probes were not run"),
    (lambda e: e.metrics["student"]["openings"].update(repeated_share=0.5), "repeated_openings is 0.5, above the maximum 0.3"),
    (lambda e: setattr(e.student_scores()["grammar"], "mean", 4.9), "grammar is 4.9, below the minimum 5"),
])
def test_a_single_failed_condition_is_the_only_reason(tmp_path, model_dir, png_bytes, change, reason):
    evaluation = EVAL.model_copy(deep=True)
    change(evaluation)
    with pytest.raises(ReleaseGateError) as refused:
        do_release(make_run(tmp_path, model_dir, png_bytes, evaluation=evaluation))
    assert [str(p) for p in refused.value.problems][0].find(reason) >= 0
    assert len(refused.value.problems) == 2  # the reason and the closing "release refused"


def test_audit_log_final_hash_is_recorded_and_a_broken_log_blocks(tmp_path, model_dir, png_bytes):
    run = make_run(tmp_path, model_dir, png_bytes)
    review_dir = run.path / "review"
    append_entry(review_dir, reviewer="ana", action="reject", ids=[4], note="off-topic")
    last = append_entry(review_dir, reviewer="ana", action="signoff", note="sample of 60 checked")
    audit_hash, problems = read_audit(review_dir)
    assert (audit_hash, problems) == (last["hash"], [])
    bundle = do_release(run, dataclasses.replace(SIGNED, audit_hash=audit_hash, audit_problems=problems))
    lineage = json.loads((bundle / "manifest.json").read_text())["lineage"]
    assert lineage["review"]["audit_log_final_hash"] == last["hash"]

    log = review_dir / "audit.jsonl"
    log.write_text(log.read_text().replace("off-topic", "fine"))
    audit_hash, problems = read_audit(review_dir)
    with pytest.raises(ReleaseGateError, match="audit log is broken: .*audit.jsonl:1: content does not match"):
        do_release(run, dataclasses.replace(SIGNED, audit_hash=audit_hash, audit_problems=problems))


def test_unsigned_review_alone_blocks(tmp_path, model_dir, png_bytes):
    with pytest.raises(ReleaseGateError, match="not signed off"):
        do_release(make_run(tmp_path, model_dir, png_bytes), dataclasses.replace(SIGNED, signed_off=False))


def test_override_needs_reason_and_environment_and_is_stamped(tmp_path, model_dir, png_bytes, monkeypatch):
    run = make_run(tmp_path, model_dir, png_bytes)
    unsigned = dataclasses.replace(SIGNED, signed_off=False, signer=None)
    monkeypatch.delenv(OVERRIDE_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"set {OVERRIDE_ENV}=1"):
        do_release(run, unsigned, override="smoke test of the bundle format")
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    with pytest.raises(ConfigError, match="needs a written reason"):
        do_release(run, unsigned, override="   ")
    bundle = do_release(run, unsigned, override="smoke test of the bundle format")
    gate = json.loads((bundle / "manifest.json").read_text())["gate"]
    assert gate["passed"] is False and gate["override"] == {"reason": "smoke test of the bundle format"}
    assert any("not signed off" in f for f in gate["failures"])
    card = (bundle / "README.md").read_text()
    assert "Release gate overridden" in card and '"smoke test of the bundle format"' in card
    assert verify(bundle).ok


def review_and_sign_off(run: RunDir, *, reject: int | None = None, policy=None) -> None:
    """The review stage's files, written with its own functions: verdicts, an optional human
    rejection, and the automatic sign-off the offline policy allows (under `policy`, default general)."""
    from distill.review.chain import check_texts
    from distill.review.policy import load_policy
    from distill.review.signoff import auto_sign_off
    from distill.files import append_jsonl
    from distill.review.store import RECORDS, build_view, review_dir, verdict_line, view_digest

    folder = review_dir(run.path)
    policy = policy or load_policy("general")
    verdicts = check_texts(STORIES, policy)
    append_jsonl(folder / RECORDS, [verdict_line(i, v, STORIES[i], "") for i, v in enumerate(verdicts)])
    if reject is not None:
        append_entry(folder, reviewer="ana", action="reject", ids=[reject], after={"decision": "reject"})
    auto_sign_off(folder, policy, view_digest=view_digest(build_view(run.path)))
    record_training(run)


def record_training(run: RunDir) -> None:
    """What `distill train` records: the reviewed examples it consumed and the weights it saved."""
    from distill.lineage import examples_digest
    from distill.review import reviewed_examples

    (run.path / "train" / "result.json").write_text(json.dumps({
        "dataset_fingerprint": examples_digest(reviewed_examples(run.path)),
        "weights_sha256": weights_digest(run.path / "train" / "model")}))


def test_release_of_a_reviewed_run_end_to_end(tmp_path, model_dir, png_bytes, capsys):
    from distill.release import release

    run = make_run(tmp_path, model_dir, png_bytes)
    review_and_sign_off(run, reject=4)
    bundle = release(run.path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    review = manifest["lineage"]["review"]
    assert review["signed_off"] and review["signer"] == "auto" and review["policy"] == "general"
    assert review["audit_log_final_hash"] == json.loads((run.path / "review" / "audit.head").read_text())["hash"]
    card = (bundle / "README.md").read_text()
    assert "- kept: 4\n" in card and "- rejected: 1\n" in card and "automatic sign-off" in card
    assert verify(bundle.parent / f"{bundle.name}.tar.gz").ok
    assert RunDir.open(run.path).stage("release")["state"] == "done"

    # A human decision after the sign-off changes the kept records: the sign-off no longer covers them.
    append_entry(run.path / "review", reviewer="ana", action="reject", ids=[3], after={"decision": "reject"})
    with pytest.raises(ReleaseGateError, match=r"not signed off \(the kept records changed after the sign-off\)"):
        release(run.path)


# --- the customer's side: plain transformers, no distill ---

LOAD_AND_GENERATE = """
import sys
sys.path.append({site!r})  # third-party packages only: no .pth files, so no editable distill
try:
    import distill.errors  # (the editable install leaves a data-only `distill` folder in site-packages)
except ModuleNotFoundError:
    pass
else:
    sys.exit("distill is importable: the test would prove nothing")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained({bundle!r})
model = AutoModelForCausalLM.from_pretrained({bundle!r})
torch.manual_seed(0)
inputs = tokenizer("Once upon a time", return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=12, do_sample=True, pad_token_id=tokenizer.pad_token_id)
assert output.shape[1] > inputs["input_ids"].shape[1], output.shape
print("GENERATED:", tokenizer.decode(output[0], skip_special_tokens=True))
"""


def test_bundle_loads_and_generates_with_plain_transformers_without_distill(bundle, tmp_path):
    script = LOAD_AND_GENERATE.format(site=sysconfig.get_paths()["purelib"], bundle=str(bundle))
    # -I: no user site, no PYTHONPATH, no script folder on sys.path; -S: no site-packages .pth processing.
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("GENERATED: Once upon a time")


# --- what a bundle must hold, and archives that lie ---


def test_a_bundle_without_weights_fails_even_when_its_manifest_agrees(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("model.safetensors", "tokenizer_config.json"):
        (bundle / name).unlink()
        del manifest["files"][name]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(bundle).problems
    assert any(p.startswith("tokenizer_config.json: a bundle must contain it") for p in problems)
    assert any(p.startswith("model.safetensors: a bundle must contain the weights") for p in problems)


@pytest.mark.parametrize("manifest, expected", [
    ("[1, 2]", "wrong shape (expected a JSON object)"),
    ('{"files": [], "name": "x", "version": "1"}', "wrong shape ('files'"),
    ('{"files": {"a": 1}, "name": "x", "version": "1"}', "wrong shape ('files'"),
    ('{"files": {}, "name": 3, "version": "1"}', "wrong shape ('name'"),
    ("{not json", "not valid JSON"),
])
def test_a_wrong_shape_manifest_is_one_clear_problem(bundle, manifest, expected):
    (bundle / "manifest.json").write_text(manifest)
    report = verify(bundle)
    assert len(report.problems) == 1 and expected in report.problems[0]
    result = run_verify(bundle)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_truncated_duplicate_and_oversized_archives_are_refused_without_extracting(bundle, tmp_path):
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert "not a readable tar.gz" in verify(truncated).problems[0]
    result = run_verify(truncated)
    assert result.exit_code == 1 and "not a readable tar.gz" in result.output and "Traceback" not in result.output

    twice = tarfile.TarInfo(f"{bundle.name}/LICENSE")
    duplicate = _archive_with(tmp_path, bundle, twice, b"another license")
    assert any("appears twice" in p for p in verify(duplicate).problems)

    # A member of 512 MiB of zeros in a tiny gzip: refused by its header size, never read or written out.
    huge = tmp_path / "huge.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(huge, "w:gz", compresslevel=1) as tar:
        for member in source.getmembers():
            if member.name.endswith("/model.safetensors"):
                member.size = 512 << 20
                tar.addfile(member, _Zeros(member.size))
            else:
                tar.addfile(member, source.extractfile(member) if member.isfile() else None)
    assert huge.stat().st_size < 20 << 20
    assert verify(huge).problems == ["model.safetensors: tampered (sha256 differs from the manifest)"]


class _Zeros(io.RawIOBase):
    """A stream of n zero bytes, without holding them in memory."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


def test_an_evaluation_written_before_evaluations_named_their_weights_still_loads(tmp_path):
    older = EVAL.model_dump(exclude_unset=True)
    del older["weights_sha256"]
    (tmp_path / "eval.json").write_text(json.dumps(older))
    assert EvalResult.from_json(tmp_path / "eval.json").weights_sha256 is None  # the chain check then asks for an eval
