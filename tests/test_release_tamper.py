"""Tampering that a release or `distill verify` must refuse: archives that carry more (or less) than was checked,
a forged sign-off, a review history rewritten and re-chained, an evaluation edited after eval, and the temporary
files a killed stage leaves behind."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from test_release import make_run, model_dir, png_bytes, review_and_sign_off, run_verify  # noqa: F401 - fixtures
from tiny_bundle import write_tiny_bundle
from typer.testing import CliRunner

from distill.errors import DistillError
from distill.files import file_sha256, remove_temps
from distill.release import release, verify
from distill.release.bundle import write_tar_gz
from distill.release.gate import OVERRIDE_ENV
from distill.signing import KEY_ENV, generate_key_pair
from distill.review.audit import GENESIS, _digest, read_log, verify_log
from distill.review.signoff import record_digest
from distill.rundir import RunDir

# --- archives: exactly one gzip member, CRC checked, nothing after, nothing hidden in the tar ---


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bundle")
    bundle = write_tiny_bundle(folder / "tiny-support-0.1.0")
    write_tar_gz(bundle, folder / "tiny-support-0.1.0.tar.gz")
    return folder / "tiny-support-0.1.0.tar.gz"


def _smuggled_tar() -> bytes:
    """A tar holding one file the manifest does not list."""
    payload, buffer = b"print('pwned')\n", io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("tiny-support-0.1.0/evil.py")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    return buffer.getvalue()


def _flip_crc(data: bytes) -> bytes:
    edited = bytearray(data)
    edited[-6] ^= 1  # inside the CRC32 of the trailer
    return bytes(edited)


def _extra_folder(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as source, \
            tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in source.getmembers():
            tar.addfile(member, source.extractfile(member) if member.isfile() else None)
        folder = tarfile.TarInfo("tiny-support-0.1.0/stash")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    return buffer.getvalue()


ARCHIVE_TAMPERING = [
    ("gzip trailer cut", lambda d: d[:-8], "cut short"),
    ("half the trailer cut", lambda d: d[:-3], "cut short"),
    ("700 bytes of garbage appended", lambda d: d + bytes(range(256)) * 2 + bytes(188), "after the end of the gzip stream"),
    ("zeros appended", lambda d: d + bytes(700), "after the end of the gzip stream"),
    ("second gzip member with a tar", lambda d: d + gzip.compress(_smuggled_tar()), "appended gzip member"),
    ("member hidden after the tar's end", lambda d: gzip.compress(gzip.decompress(d) + _smuggled_tar()),
     "after the tar's end-of-archive marker"),
    ("CRC32 wrong", _flip_crc, "incorrect data check"),
    ("folder not in the manifest", _extra_folder, "stash: extra folder not in the manifest"),
]


@pytest.mark.parametrize("what, spoil, expected", ARCHIVE_TAMPERING, ids=[t[0] for t in ARCHIVE_TAMPERING])
def test_an_archive_is_read_strictly(archive, tmp_path, what, spoil, expected):
    assert verify(archive).ok, verify(archive).problems
    spoiled = tmp_path / "spoiled.tar.gz"
    spoiled.write_bytes(spoil(archive.read_bytes()))
    report = verify(spoiled)
    assert not report.ok and any(expected in p for p in report.problems), report.problems
    result = run_verify(spoiled)
    assert result.exit_code == 1 and expected in result.output and "Traceback" not in result.output


# --- the review history a release names ---


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    private = tmp_path / "keys" / "release.key"
    return private, generate_key_pair(private)


@pytest.fixture
def run(tmp_path, model_dir, png_bytes, keys, monkeypatch) -> RunDir:  # noqa: F811
    """A finished run whose sign-off was checkpointed with the operator's key."""
    run = make_run(tmp_path / "work", model_dir, png_bytes)
    monkeypatch.setenv(KEY_ENV, str(keys[0]))
    review_and_sign_off(run, reject=4)
    monkeypatch.delenv(KEY_ENV)
    return run


def _refused(run: RunDir, reason: str, **options) -> None:
    with pytest.raises(DistillError) as refused:
        release(run.path, **options)
    assert reason in str(refused.value), str(refused.value)
    assert not (run.path / "release").exists()


def rechain(folder: Path, edit) -> list[dict]:
    """Rewrite the audit log the way a careful forger would: edit entries, recompute every hash and the head."""
    entries, prev = read_log(folder), GENESIS
    edit(entries)
    for entry in entries:
        entry.pop("hash")
        entry["prev"] = prev
        entry["hash"] = prev = _digest(prev, entry)
    (folder / "audit.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))
    (folder / "audit.head").write_text(json.dumps({"count": len(entries), "hash": prev}) + "\n")
    assert verify_log(folder) == []  # the chain alone cannot tell
    return entries


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_sign_off_with_a_forged_reviewer_is_not_released_even_with_an_override(run, monkeypatch):
    _edit_json(run.path / "review" / "signoff.json", reviewer="mallory")
    _refused(run, "signoff.json: edited after the sign-off")
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    _refused(run, "cannot be overridden", override_reason="ship it")


def test_a_rechained_log_without_the_sign_off_entry_is_refused(run):
    rechain(run.path / "review", lambda entries: entries[0].update(reviewer="mallory"))
    _refused(run, "is not in the log: the log was rewritten after the sign-off")


def test_a_whole_forgery_is_caught_by_the_signed_checkpoint(run, keys):
    """Log re-chained and the sign-off record rewritten to match it: only the checkpoint can tell."""
    folder = run.path / "review"
    signoff = json.loads((folder / "signoff.json").read_text())
    forged = {k: v for k, v in {**signoff, "reviewer": "mallory"}.items() if k != "log_hash"}

    def forge(entries):
        entries[0]["reviewer"] = "mallory"
        entries[-1].update(reviewer="mallory", after={**entries[-1]["after"], "record_sha256": record_digest(forged)})

    entries = rechain(folder, forge)
    (folder / "signoff.json").write_text(json.dumps({**forged, "log_hash": entries[-1]["hash"]}))
    _refused(run, "is not the head this checkpoint recorded")
    (folder / "audit.checkpoints.jsonl").unlink()  # and without the checkpoint, a signed release still refuses
    _refused(run, "no checkpoint signed with the release key", signing_key=keys[0])


def test_a_graded_sign_off_record_matches_its_entry_until_edited(tmp_path):
    from distill.review.policy import load_policy
    from distill.review.signoff import draw_sample, record_problems, sign_off

    draw_sample(tmp_path, list(range(80)), 60, reviewer="ana", seed=1)
    sign_off(tmp_path, load_policy("general"), reviewer="ana", defective=[], view_digest="v", pending=0)
    signoff = json.loads((tmp_path / "signoff.json").read_text())
    assert signoff["accepted"] and record_problems(tmp_path, signoff) == []
    assert "edited after the sign-off" in record_problems(tmp_path, {**signoff, "upper_bound": 0.001})[0]


def test_a_checkpointed_sign_off_releases_signed_and_names_the_real_signer(run, keys):
    bundle = release(run.path, signing_key=keys[0])
    assert verify(bundle, public_key=keys[1]).ok
    assert json.loads((bundle / "manifest.json").read_text())["lineage"]["review"]["signer"] == "auto"


def test_a_sign_off_made_without_the_key_cannot_be_released_signed(tmp_path, model_dir, png_bytes, keys):  # noqa: F811
    run = make_run(tmp_path / "work", model_dir, png_bytes)
    review_and_sign_off(run)
    _refused(run, "sign off again with DISTILL_SIGNING_KEY set", signing_key=keys[0])


def test_an_evaluation_edited_after_eval_is_refused(run):
    evaluation = run.path / "eval" / "eval.json"
    run.manifest["stages"]["eval"]["eval_json_sha256"] = file_sha256(evaluation)  # as `distill eval` records it
    run.save()
    edited = json.loads(evaluation.read_text())
    edited["probes"]["summary"]["by_probe_category"]["PII"]["rate"] = 0.0
    evaluation.write_text(json.dumps(edited))
    _refused(run, "eval/eval.json was edited after `distill eval` wrote it")


# --- `distill review RUN --verify-log` says what it proves ---


def _verify_log(run: RunDir, *options: str):
    from distill.cli.review import app

    return CliRunner().invoke(app, [str(run.path), "--verify-log", *options])


def test_verify_log_says_what_it_can_and_cannot_prove(run, keys):
    result = _verify_log(run, "--key", str(keys[1]))
    assert result.exit_code == 0, result.output
    assert "cannot tell a log rewritten and re-chained as a whole" in result.output
    assert "verify under ed25519:" in result.output and "exactly what the key holder signed" in result.output
    unchecked = _verify_log(run)
    assert unchecked.exit_code == 0 and "signatures were NOT checked" in unchecked.output

    rechain(run.path / "review", lambda entries: entries[0].update(reviewer="mallory"))
    result = _verify_log(run, "--key", str(keys[1]))
    assert result.exit_code == 1 and "the log was rewritten or cut after it" in result.output
    (run.path / "review" / "audit.checkpoints.jsonl").unlink()
    result = _verify_log(run)
    assert result.exit_code == 0 and "nothing here anchors the head: a re-chained log would look intact" in result.output


# --- temporary files a killed stage leaves ---


def test_a_temp_figure_left_by_a_killed_eval_is_never_shipped(tmp_path, model_dir, png_bytes):  # noqa: F811
    run = make_run(tmp_path / "work", model_dir, png_bytes)
    review_and_sign_off(run)
    for stale in (".bpb_curve.k3j9x_2a.png", ".scores.png.k3j9x_2a.tmp"):  # the old name and today's
        (run.path / "eval" / stale).write_bytes(png_bytes[:100])
    (run.path / "train" / ".loss_curve.q8.png").write_bytes(png_bytes[:100])
    bundle = release(run.path)
    shipped = json.loads((bundle / "manifest.json").read_text())["files"]
    assert "figures/eval-scores.png" in shipped
    assert not [name for name in shipped if "k3j9x" in name or "q8" in name], sorted(shipped)
    remove_temps(run.path / "eval")
    assert not (run.path / "eval" / ".scores.png.k3j9x_2a.tmp").exists()
    assert (run.path / "eval" / "eval.json").exists()


def test_a_figure_is_written_under_a_temporary_name_no_glob_ships(tmp_path):
    from distill.evaluate import charts

    figure, _ = charts.plt.subplots()
    seen = []
    original = figure.savefig
    figure.savefig = lambda target, **kw: (seen.append(Path(target).name), original(target, **kw))
    charts.save_figure(figure, tmp_path / "bpb_curve.png")
    assert seen[0].startswith(".bpb_curve.png.") and seen[0].endswith(".tmp")
    assert [p.name for p in tmp_path.iterdir()] == ["bpb_curve.png"]
