"""Every run file corrupted every way, read by every command that reads it: a one-line located error with
exit code 2 (1 for a failed verification), never a traceback.

One small completed run (dataset, review and sign-off, model, evaluation, a released bundle) is built once
per session; each case corrupts a copy. The commands run in-process through `distill.cli.main`, exactly as
the console script does, so an exception that escapes it is the traceback a user would see.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from tiny_lm import tiny_llama, tiny_tokenizer

GARBAGE = b"\x00\xff\xfe garbage \x80\x81"


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """A completed tiny run with a signed-off review and a released bundle (built once)."""
    from test_release import make_run, review_and_sign_off

    from distill.release import release

    root = tmp_path_factory.mktemp("finished")
    model = root / "model-src"
    tokenizer = tiny_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    run = make_run(root / "work", model, b"png")
    review_and_sign_off(run)
    (run.path / "train" / "split.json").write_text(json.dumps({"train": [0, 1, 2], "val": [3, 4]}))
    (run.path / "review" / "state.json").write_text(json.dumps({"policy": "general", "fingerprint": "f"}))
    release(run.path)
    return run.path


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    """A private copy of the finished run (and the spec beside it, which the manifest names)."""
    target = tmp_path / "runs" / "tiny-tales" / "main"
    shutil.copytree(finished, target, symlinks=True)
    return target


def cli(*args: object) -> tuple[int | str, str]:
    """Run `distill ARGS` in this process: (exit code, stderr + stdout); "traceback" if an exception escaped."""
    from distill.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["distill", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code: int | str = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - an escaped exception is exactly what this test looks for
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        sys.argv = argv
    return code, err.getvalue() + out.getvalue()


def corrupt(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(GARBAGE)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif how == "wrong-shape":
        path.write_text('[1, "two", {"three": 3}]\n')
    elif how == "garbage-line":  # a corrupt line amid good ones (a cut last line is dropped: see partial-line)
        path.write_bytes(GARBAGE + b"\n" + path.read_bytes())
    elif how == "partial-line":
        path.write_bytes(path.read_bytes() + b'{"seq": 99, "act')
    else:
        raise AssertionError(how)


# (file under the run, corruption, command, expected exit code, words the message must contain)
RUN = "RUN"
CASES = [
    *[("manifest.json", how, cmd, 2, "manifest.json") for how in ("garbage", "truncated", "wrong-shape", "empty")
      for cmd in (("release", RUN), ("eval", RUN, "--no-judge"), ("train", RUN), ("review", RUN, "--no-judge"))],
    ("manifest.json", "deleted", ("release", RUN), 2, "not a run directory"),
    *[("review/records.jsonl", how, cmd, 2, "records.jsonl") for how in ("garbage-line", "wrong-shape")
      for cmd in (("release", RUN), ("review", RUN, "list"))],
    ("review/records.jsonl", "truncated", ("review", RUN, "list"), 0, ""),  # a cut last line is dropped: resumable
    *[("review/state.json", how, ("review", RUN, "edit", "1", "--text", "A new text.", "--reviewer", "ana"), 2,
       "state.json") for how in ("garbage", "wrong-shape", "truncated")],
    # The review's own bookkeeping: a corrupt copy is recomputed, and said so.
    *[("review/state.json", how, ("review", RUN, "--no-judge"), 0, "is corrupt; recomputing")
      for how in ("garbage", "wrong-shape")],
    *[("review/signoff.json", how, cmd, 2, "signoff.json") for how in ("garbage", "truncated", "wrong-shape", "empty")
      for cmd in (("release", RUN), ("train", RUN))],
    ("review/signoff.json", "deleted", ("release", RUN), 2, "not signed off"),
    *[("review/audit.head", how, ("review", RUN, "--verify-log"), 1, "audit.head") for how in ("garbage", "wrong-shape", "empty", "deleted")],
    *[("review/audit.head", how, ("release", RUN), 2, "audit log is broken") for how in ("garbage", "deleted")],
    ("review/audit.jsonl", "partial-line", ("review", RUN, "--verify-log"), 0, "intact"),
    ("review/audit.jsonl", "partial-line", ("review", RUN, "list"), 0, ""),
    ("review/audit.jsonl", "garbage-line", ("review", RUN, "--verify-log"), 1, "not an audit entry"),
    ("review/audit.jsonl", "garbage-line", ("review", RUN, "list"), 2, "audit.jsonl"),
    ("review/audit.jsonl", "garbage-line", ("release", RUN), 2, "audit"),
    ("review/audit.jsonl", "wrong-shape", ("review", RUN, "list"), 2, "audit.jsonl"),
    ("review/audit.jsonl", "deleted", ("review", RUN, "--verify-log"), 1, "missing"),
    *[("train/result.json", how, ("release", RUN), 2, "result.json") for how in ("garbage", "truncated", "wrong-shape")],
    ("train/result.json", "deleted", ("release", RUN), 2, "training recorded no dataset fingerprint"),
    *[("eval/eval.json", how, ("release", RUN), 2, "eval.json") for how in ("garbage", "truncated", "wrong-shape", "deleted")],
    *[("train/model/model.safetensors", how, cmd, 2, "model") for how in ("garbage", "truncated", "empty")
      for cmd in (("release", RUN), ("sample", RUN, "-n", "1", "--max-new-tokens", "2"), ("eval", RUN, "--no-judge"))],
    ("train/model/model.safetensors", "deleted", ("release", RUN), 2, "model.safetensors"),
    *[("train/model/tokenizer.json", how, cmd, 2, "model") for how in ("garbage", "truncated")
      for cmd in (("release", RUN), ("sample", RUN, "-n", "1", "--max-new-tokens", "2"))],
    *[("train/model/config.json", how, cmd, 2, "model") for how in ("garbage", "wrong-shape")
      for cmd in (("release", RUN), ("sample", RUN, "-n", "1", "--max-new-tokens", "2"))],
    *[("spec.resolved.json", how, cmd, 2, "spec.resolved.json") for how in ("garbage", "wrong-shape", "deleted")
      for cmd in (("release", RUN), ("eval", RUN, "--no-judge"))],
    *[("train/split.json", how, ("eval", RUN, "--no-judge"), 2, "split.json") for how in ("garbage", "wrong-shape")],
    # The saved dataset: its JSON files and its arrow data, named with how to rebuild them.
    *[(f"dataset/{name}", how, cmd, 2, f"dataset/{name} corrupt run file")
      for name, how in (("dataset_info.json", "garbage"), ("dataset_info.json", "truncated"), ("state.json", "garbage"),
                        ("data-00000-of-00001.arrow", "truncated"), ("data-00000-of-00001.arrow", "garbage"))
      for cmd in (("release", RUN), ("review", RUN, "--no-judge"), ("review", RUN, "list"), ("eval", RUN, "--no-judge"))],
]


@pytest.mark.slow
@pytest.mark.parametrize("relative, how, command, code, words", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2][0]}{'-' + c[2][2] if len(c[2]) > 2 and not c[2][2].startswith('-') else ''}"
                              for c in CASES])
def test_corrupt_run_file(run_copy, relative, how, command, code, words):
    corrupt(run_copy / relative, how)
    got, output = cli(*[run_copy if part == RUN else part for part in command])
    assert "Traceback" not in output and got != "traceback", output
    assert got == code, output
    assert words in output, output
    if code == 2:
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert errors and all(len(line) < 600 for line in errors), output  # one located line each, not a dump


# --- the bundle and the archive ---


@pytest.mark.parametrize("how, words", [("garbage", "not valid JSON"), ("wrong-shape", "wrong shape"),
                                        ("truncated", "manifest.json"), ("deleted", "manifest.json: missing")])
def test_corrupt_bundle_manifest_fails_verification_cleanly(run_copy, how, words):
    bundle = next(p for p in (run_copy / "release").iterdir() if p.is_dir())
    corrupt(bundle / "manifest.json", how)
    got, output = cli("verify", bundle)
    assert got == 1 and words in output and "Traceback" not in output, output


@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_damaged_archive_fails_verification_cleanly(run_copy, how):
    archive = next((run_copy / "release").glob("*.tar.gz"))
    corrupt(archive, how)
    got, output = cli("verify", archive)
    assert got == 1 and "Traceback" not in output and ("tar.gz" in output or "manifest" in output), output


# --- flags and places ---


@pytest.mark.parametrize("run_id", ["../../x", "/tmp/absolute-run", "a/b"])
def test_run_ids_that_leave_the_runs_folder_are_refused(run_copy, tmp_path, run_id):
    spec = Path(json.loads((run_copy / "manifest.json").read_text())["spec_path"])
    got, output = cli("generate", spec, "--runs-dir", tmp_path / "fresh", "--run-id", run_id)
    assert got == 2 and "--run-id" in output and "Traceback" not in output, output
    assert not (tmp_path / "x").exists() and not Path("/tmp/absolute-run").exists()


def test_binary_heldout_is_refused_before_the_model_loads(run_copy, tmp_path):
    heldout = tmp_path / "heldout.txt"
    heldout.write_bytes(GARBAGE * 10)
    got, output = cli("eval", run_copy, "--no-judge", "--heldout", heldout)
    assert got == 2 and "heldout.txt" in output and "UTF-8" in output and "Traceback" not in output, output


def test_verify_log_on_a_path_that_is_no_run(tmp_path):
    got, output = cli("review", tmp_path / "nonexistent", "--verify-log")
    assert got == 2 and "not a run directory" in output and "intact" not in output, output


def test_verify_log_when_log_and_head_are_both_deleted(run_copy):
    (run_copy / "review" / "audit.jsonl").unlink()
    (run_copy / "review" / "audit.head").unlink()
    got, output = cli("review", run_copy, "--verify-log")
    assert got == 1 and "missing although the run was reviewed" in output, output


def test_a_partial_last_audit_line_is_cut_by_the_next_entry(run_copy):
    from distill.review.audit import append_entry, verify_log

    corrupt(run_copy / "review" / "audit.jsonl", "partial-line")
    append_entry(run_copy / "review", reviewer="ana", action="note")
    assert verify_log(run_copy / "review") == []


def test_a_full_disk_during_release_is_one_clean_line(run_copy):
    """RLIMIT_FSIZE stands in for a full disk: the first write past the limit fails with EFBIG."""
    shutil.rmtree(run_copy / "release")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048, hard))
    try:
        got, output = cli("release", run_copy)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert got == 2 and "File too large" in output and "Traceback" not in output, output
    assert "finished work is kept" in output


def test_a_read_only_run_folder_is_one_clean_line(run_copy, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("needs permission to mount a tmpfs (root)")
    try:
        target = mount / "runs" / "tiny-tales" / "main"
        shutil.copytree(run_copy, target)
        shutil.rmtree(target / "release")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        got, output = cli("release", target)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert got == 2 and "Read-only file system" in output and "Traceback" not in output, output
