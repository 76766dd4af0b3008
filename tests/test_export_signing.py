"""The OpenSSF model signature (model.sig): written by `distill release --openssf-key`, verified by the
`model-signing` project's own tool (installed apart by scripts/setup.sh, as it pins an older cryptography)
and by `distill verify`, which accepts it or the Ed25519 manifest signature. A safetensors-only bundle:
seconds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_release import SIGNED, make_run, model_dir, png_bytes  # noqa: F401  (fixtures reused)

from distill.release.bundle import release_inputs
from distill.release.openssf import OPENSSF_PUBLIC_KEY, OPENSSF_SIGNATURE, generate_ec_key_pair, load_ec_private_key
from distill.signing import generate_key_pair, load_private_key
from distill.release.sources import read_inputs
from distill.release.verify import verify

MODEL_SIGNING = Path(sys.prefix) / "signing"  # the model-signing package, installed apart by scripts/setup.sh


def model_signing_verify(bundle: Path, public_key: Path) -> subprocess.CompletedProcess:
    """`model_signing verify key`: the OpenSSF project's own verifier, run from its own install."""
    assert (MODEL_SIGNING / "model_signing").is_dir(), f"no model-signing in {MODEL_SIGNING}; run scripts/setup.sh"
    return subprocess.run([sys.executable, "-m", "model_signing", "verify", "key", "--signature",
                           str(bundle / OPENSSF_SIGNATURE), "--public_key", str(public_key), str(bundle)],
                          env={"PYTHONPATH": str(MODEL_SIGNING), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    return {"ed25519": generate_key_pair(folder / "release.key"), "ec": generate_ec_key_pair(folder / "openssf.key")}


@pytest.fixture(scope="module")
def signed(tmp_path_factory, model_dir, png_bytes, keys) -> Path:  # noqa: F811
    """A bundle signed both ways: Ed25519 over the manifest, OpenSSF over every file."""
    run = make_run(tmp_path_factory.mktemp("run"), model_dir, png_bytes)
    return release_inputs(run, read_inputs(run.path, run.manifest, SIGNED),
                          private_key=load_private_key(keys["ed25519"].with_suffix("")),
                          openssf_key=load_ec_private_key(keys["ec"].with_suffix("")))


def copy_of(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    return copy


def test_the_openssf_signature_verifies_with_the_model_signing_project_s_own_verifier(signed, keys):
    done = model_signing_verify(signed, keys["ec"])
    assert done.returncode == 0 and "Verification succeeded" in done.stdout, done.stdout + done.stderr
    statement = json.loads((signed / OPENSSF_SIGNATURE).read_text())
    assert statement["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    manifest = json.loads((signed / "manifest.json").read_text())
    assert OPENSSF_PUBLIC_KEY in manifest["files"] and OPENSSF_SIGNATURE not in manifest["files"]


def test_model_signing_refuses_a_bundle_changed_after_signing(signed, keys, tmp_path):
    copy = copy_of(signed, tmp_path)
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 1]))
    done = model_signing_verify(copy, keys["ec"])
    assert done.returncode != 0 and "Hash mismatch for 'model.safetensors'" in done.stdout + done.stderr
    other = generate_ec_key_pair(tmp_path / "other.key")
    assert model_signing_verify(signed, other).returncode != 0  # someone else's key


def test_distill_verify_accepts_either_signature_on_the_folder_and_the_archive(signed, keys):
    archive = signed.parent / f"{signed.name}.tar.gz"
    for target in (signed, archive):
        by_ec = verify(target, public_key=keys["ec"])
        assert by_ec.ok and by_ec.openssf_signed_by.startswith("ecdsa:"), by_ec.problems
        by_ed25519 = verify(target, public_key=keys["ed25519"])
        assert by_ed25519.ok and by_ed25519.signed_by.startswith("ed25519:"), by_ed25519.problems
        assert by_ed25519.openssf_signed_by == by_ec.openssf_signed_by  # checked under the bundle's own key too
    done = subprocess.run([sys.executable, "-m", "distill", "verify", str(signed), "--key", str(keys["ec"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "and OpenSSF ecdsa:" in done.stdout, done.stderr


def test_distill_verify_refuses_an_openssf_signature_that_does_not_hold(signed, keys, tmp_path):
    copy = copy_of(signed, tmp_path)
    other = generate_ec_key_pair(tmp_path / "other.key")
    assert verify(copy, public_key=other).problems == [
        f"{OPENSSF_SIGNATURE}: signed with another key (its key hint differs)"]
    document = json.loads((copy / OPENSSF_SIGNATURE).read_text())
    document["verificationMaterial"]["publicKey"]["hint"] = ""
    (copy / OPENSSF_SIGNATURE).write_text(json.dumps(document))
    assert verify(copy, public_key=other).problems == [
        f"{OPENSSF_SIGNATURE}: the signature does not verify (the statement was edited, or another key signed it)"]
    (copy / OPENSSF_SIGNATURE).unlink()
    assert verify(copy, public_key=keys["ec"]).problems == [
        f"{OPENSSF_SIGNATURE}: missing, so the OpenSSF signature cannot be checked (the release was not signed "
        "with --openssf-key)"]
    assert verify(copy).ok  # without a key an unsigned-by-OpenSSF bundle is still whole


def test_a_resigned_manifest_does_not_pass_under_the_openssf_signature(signed, keys, tmp_path):
    """An attacker who rewrites the manifest (and drops manifest.sig) cannot keep the OpenSSF signature valid."""
    copy = copy_of(signed, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["version"] = "9.9.9"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "manifest.sig").unlink()
    assert verify(copy, public_key=keys["ec"]).problems == [
        f"{OPENSSF_SIGNATURE}: signs manifest.json with another sha256 than the bundle's file",
        f"{OPENSSF_SIGNATURE}: signs manifest.sig, which the bundle does not hold"]


def test_keygen_openssf_makes_an_ec_key_and_a_wrong_key_is_a_located_error(tmp_path):
    command = [sys.executable, "-m", "distill", "keygen", str(tmp_path / "k.pem"), "--openssf"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(tmp_path / "k.pem.pub"), done.stderr
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.pem.pub").read_bytes()
    generate_key_pair(tmp_path / "ed.pem")
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="not an EC P-256, P-384 or P-521 key") as error:
        load_ec_private_key(tmp_path / "ed.pem")
    assert error.value.problems[0].key == "--openssf-key"
