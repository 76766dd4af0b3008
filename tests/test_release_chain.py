"""A release is provably the evaluated model trained on the signed-off data, and its origin can be checked.

Every way of getting an unevaluated, unsigned-off or swapped model into a release is refused with its
reason; every way of tampering with a signed bundle (or the review history it names) fails verification.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_release import make_run, model_dir, png_bytes, review_and_sign_off  # noqa: F401 - fixtures
from tiny_lm import tiny_llama, tiny_tokenizer

from distill.errors import ConfigError, DistillError
from distill.release import release, verify
from distill.release.gate import OVERRIDE_ENV, ReleaseGateError
from distill.signing import KEY_ENV, generate_key_pair
from distill.release.verify import check_audit_anchor
from distill.review.audit import GENESIS, _digest, read_log
from distill.review.policy import load_policy
from distill.rundir import RunDir


@pytest.fixture
def signed_run(tmp_path, model_dir, png_bytes, keys, monkeypatch) -> RunDir:  # noqa: F811
    """A finished run, signed off with the operator's key at hand (so the sign-off is checkpointed)."""
    run = make_run(tmp_path / "work", model_dir, png_bytes)
    monkeypatch.setenv(KEY_ENV, str(keys[0]))
    review_and_sign_off(run)
    monkeypatch.delenv(KEY_ENV)
    return run


def result_json(run: RunDir) -> Path:
    return run.path / "train" / "result.json"


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def other_model(into: Path) -> None:
    """A different, perfectly loadable model (other initial weights) saved over `into`."""
    tokenizer = tiny_tokenizer()
    shutil.rmtree(into)
    tiny_llama(len(tokenizer), seed=123).save_pretrained(into)
    tokenizer.save_pretrained(into)


def _retrained_after_an_edit(run: RunDir) -> None:
    edit_json(result_json(run), dataset_fingerprint="e" * 64)  # what a retrain on the edited records records


def _swapped(run: RunDir) -> None:
    other_model(run.path / "train" / "model")


def _truncated(run: RunDir) -> None:
    weights = run.path / "train" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _never_evaluated(run: RunDir) -> None:
    edit_json(run.path / "eval" / "eval.json", weights_sha256=None)


def _evaluated_then_retrained(run: RunDir) -> None:
    other_model(run.path / "train" / "model")  # a retrain writes new weights and its own result.json
    from distill.lineage import weights_digest

    edit_json(result_json(run), weights_sha256=weights_digest(run.path / "train" / "model"))


def _no_training_record(run: RunDir) -> None:
    result_json(run).unlink()


def _no_weights(run: RunDir) -> None:
    (run.path / "train" / "model" / "model.safetensors").unlink()


def _edited_after_signoff(run: RunDir) -> None:
    from distill.review.audit import append_entry

    append_entry(run.path / "review", reviewer="mallory", action="reject", ids=[2], after={"decision": "reject"})


def _signoff_deleted(run: RunDir) -> None:
    (run.path / "review" / "signoff.json").unlink()


def _log_edited(run: RunDir) -> None:
    log = run.path / "review" / "audit.jsonl"
    log.write_text(log.read_text().replace('"reviewer":"auto"', '"reviewer":"ana"').replace('"reviewer": "auto"', '"reviewer": "ana"'))


UNRELEASABLE = [
    (_retrained_after_an_edit, "trained on other data than the signed-off dataset"),
    (_swapped, "not the model training produced"),
    (_truncated, "does not load"),
    (_never_evaluated, "does not name the weights it measured"),
    (_evaluated_then_retrained, "the model was not evaluated"),
    (_no_training_record, "training recorded no dataset fingerprint"),
    (_no_weights, "missing model.safetensors"),
    (_edited_after_signoff, "not signed off (the kept records changed after the sign-off)"),
    (_signoff_deleted, "not signed off (no sign-off)"),
    (_log_edited, "audit log is broken"),
]


@pytest.mark.parametrize("spoil, reason", UNRELEASABLE, ids=[f.__name__.strip("_") for f, _ in UNRELEASABLE])
def test_each_way_to_release_an_unevaluated_or_unsigned_model_is_refused(signed_run, spoil, reason):
    spoil(signed_run)
    with pytest.raises(DistillError) as refused:
        release(signed_run.path)
    assert reason in str(refused.value)
    assert not (signed_run.path / "release").exists()
    assert RunDir.open(signed_run.path).stage("release").get("state") != "done"


def test_broken_chain_cannot_be_overridden_but_a_policy_mismatch_can(signed_run, monkeypatch):
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    _swapped(signed_run)
    with pytest.raises(ReleaseGateError, match="cannot be overridden"):
        release(signed_run.path, override_reason="I know what I am doing")
    other = make_run(signed_run.path.parent.parent.parent / "other", signed_run.path / "train" / "model", b"png")
    review_and_sign_off(other, policy=load_policy("general").model_copy(update={"name": "lenient"}))
    monkeypatch.delenv(OVERRIDE_ENV)
    with pytest.raises(ReleaseGateError, match="sign-off was given under the policy 'lenient'"):
        release(other.path)
    monkeypatch.setenv(OVERRIDE_ENV, "1")
    bundle = release(other.path, override_reason="the lenient policy was approved for this internal model")
    gate = json.loads((bundle / "manifest.json").read_text())["gate"]
    assert any("policy 'lenient'" in failure for failure in gate["failures"])


# --- signatures ---


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    private = tmp_path / "keys" / "release.key"
    return private, generate_key_pair(private)


def test_signed_release_verifies_under_the_publishers_key_only(signed_run, keys, tmp_path):
    private, public = keys
    bundle = release(signed_run.path, signing_key=private)
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    for target in (bundle, archive):
        report = verify(target, public_key=public)
        assert report.ok, report.problems
        assert report.signed_by and report.signed_by.startswith("ed25519:")
    assert private.read_bytes() not in b"".join(p.read_bytes() for p in signed_run.path.rglob("*") if p.is_file())
    assert (private.stat().st_mode & 0o777) == 0o600
    stranger = generate_key_pair(tmp_path / "stranger.key")
    assert "does not verify under the given key" in verify(bundle, public_key=stranger).problems[0]


def _rehash_manifest(bundle: Path, edit) -> None:
    """Edit a file, then re-hash it into the manifest: consistent, but not what was signed."""
    edit(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in ("README.md", "model.safetensors"):
        from distill.rundir import file_sha256

        manifest["files"][name] = {"sha256": file_sha256(bundle / name), "bytes": (bundle / name).stat().st_size}
    (bundle / "manifest.json").write_text(json.dumps(manifest))


TAMPERING = [
    ("card edited and re-hashed", lambda b: _rehash_manifest(b, lambda d: (d / "README.md").write_text("safe!\n")),
     "does not verify"),
    ("weights swapped and re-hashed", lambda b: _rehash_manifest(
        b, lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)),
     "does not verify"),
    ("lineage rewritten", lambda b: (b / "manifest.json").write_text(
        (b / "manifest.json").read_text().replace('"signer": "auto"', '"signer": "ana"')), "does not verify"),
    ("signature removed", lambda b: (b / "manifest.sig").unlink(), "manifest.sig: missing"),
    ("signature garbled", lambda b: (b / "manifest.sig").write_text("AAAA\n"), "does not verify"),
    ("public key replaced", lambda b: shutil.copy(generate_key_pair(b.parent / "mallory.key"), b / "signing_key.pub"),
     "tampered"),
]


@pytest.mark.parametrize("what, tamper, expected", TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_with_a_signed_bundle_fails_verification(signed_run, keys, what, tamper, expected):
    private, public = keys
    bundle = release(signed_run.path, signing_key=private)
    tamper(bundle)
    report = verify(bundle, public_key=public)
    assert not report.ok and any(expected in p for p in report.problems), report.problems


def test_an_unsigned_bundle_fails_when_a_key_is_asked_for(signed_run, keys):
    bundle = release(signed_run.path)
    assert verify(bundle).ok
    assert "the release was not signed" in verify(bundle, public_key=keys[1]).problems[0]


def test_a_rechained_audit_log_no_longer_matches_the_signed_head(signed_run, keys):
    private, public = keys
    bundle = release(signed_run.path, signing_key=private)
    assert check_audit_anchor(bundle, signed_run.path) == []
    # Rewrite history consistently: edit the first entry, recompute every hash and the head file.
    folder = signed_run.path / "review"
    entries, prev = read_log(folder), GENESIS
    entries[0]["reviewer"] = "mallory"
    lines = []
    for entry in entries:
        entry.pop("hash")
        entry["prev"] = prev
        entry["hash"] = prev = _digest(prev, entry)
        lines.append(json.dumps(entry, sort_keys=True) + "\n")
    (folder / "audit.jsonl").write_text("".join(lines))
    (folder / "audit.head").write_text(json.dumps({"count": len(entries), "hash": prev}) + "\n")
    from distill.review.audit import verify_log

    assert verify_log(folder) == []  # the chain alone cannot tell
    assert "rewritten after the release" in check_audit_anchor(bundle, signed_run.path)[0]
    archive = bundle.parent / f"{bundle.name}.tar.gz"
    assert "rewritten after the release" in check_audit_anchor(archive, signed_run.path)[0]


def test_signing_key_errors_are_clean(signed_run, tmp_path):
    (tmp_path / "bad.key").write_text("not a key")
    for path, message in ((tmp_path / "nope.key", "no such signing key"), (tmp_path / "bad.key", "not an unencrypted PEM")):
        with pytest.raises(ConfigError, match=message):
            release(signed_run.path, signing_key=path)
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_key_pair(tmp_path / "bad.key")


def test_evaluation_of_the_same_weights_passes_the_chain(signed_run):
    assert verify(release(signed_run.path)).ok
    assert json.loads((signed_run.path / "eval" / "eval.json").read_text())["weights_sha256"] == \
        json.loads(result_json(signed_run).read_text())["weights_sha256"]
