"""The bundle signed in the OpenSSF model signing format (key-based, offline), so tools outside distill can
verify it: `model_signing verify key --signature model.sig --public_key openssf_key.pub BUNDLE`.

`model.sig` is a Sigstore bundle (v0.3 JSON) holding a DSSE envelope around an in-toto statement: one
resource per file of the bundle (its path and sha256; everything but model.sig itself, so manifest.json and
manifest.sig too), a subject named after the bundle whose digest is the sha256 over those digests in path
order, predicate type `https://model_signing/signature/v1.0`, signed with ECDSA over the DSSE pre-auth
encoding. The key is an EC P-256 key (`distill keygen --openssf`); the bundle ships its public key as
`openssf_key.pub`, listed in the manifest.

Written here with `cryptography` rather than through the `model-signing` package: that package imports
pyOpenSSL, which pins an older `cryptography` than distill's. The tests check the result with the
`model-signing` tool itself, installed apart (scripts/setup.sh, `.venv/signing`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from distill.errors import ConfigError, Problem
from distill.signing import write_key_pair

OPENSSF_SIGNATURE = "model.sig"
OPENSSF_PUBLIC_KEY = "openssf_key.pub"
OPENSSF_KEY_ENV = "DISTILL_OPENSSF_KEY"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
MAX_SIGNATURE_BYTES = 16 << 20


def _ec():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec, hashes, serialization, InvalidSignature


def generate_ec_key_pair(private_path: Path) -> Path:
    """A new EC P-256 private key (PKCS#8 PEM, mode 0600) and its public key beside it; returns the .pub path."""
    ec = _ec()[0]
    key = ec.generate_private_key(ec.SECP256R1())
    return write_key_pair(private_path, key, ec_public_pem(key.public_key()))


def load_ec_private_key(path: Path, option: str = "--openssf-key") -> Any:
    """The operator's EC private key (P-256, P-384 or P-521, unencrypted PEM); a located error otherwise."""
    ec, _, serialization, _ = _ec()
    hint = "make one with `distill keygen PATH --openssf`"
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(Problem("no such signing key", file=path, key=option, hint=hint)) from None
    except (ValueError, TypeError):
        raise ConfigError(Problem("not an unencrypted PEM private key", file=path, key=option, hint=hint)) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _hash_for(key.public_key()) is None:
        raise ConfigError(Problem("not an EC P-256, P-384 or P-521 key (the OpenSSF model signing format's keys)",
                                  file=path, key=option, hint=hint))
    return key


def openssf_key_from(path: Path | None) -> Any | None:
    """The key named by --openssf-key, else $DISTILL_OPENSSF_KEY, else None (no OpenSSF signature)."""
    chosen = path or (Path(os.environ[OPENSSF_KEY_ENV]) if os.environ.get(OPENSSF_KEY_ENV) else None)
    return None if chosen is None else load_ec_private_key(chosen)


def ec_public_pem(public_key: Any) -> bytes:
    _, _, serialization, _ = _ec()
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_hint(public_key: Any) -> str:
    """The key identifier model_signing records and checks: sha256 of the public key's PEM, hex."""
    return hashlib.sha256(ec_public_pem(public_key)).hexdigest()


def _hash_for(public_key: Any) -> Any:
    _, hashes, _, _ = _ec()
    return {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}.get(public_key.curve.key_size)


def pae(payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of an in-toto payload."""
    return f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)} ".encode() + payload


def statement(name: str, digests: dict[str, str]) -> dict[str, Any]:
    """The in-toto statement over `digests` (relative POSIX path -> sha256 hex)."""
    ordered = sorted(digests.items(), key=lambda item: PurePosixPath(item[0]).parts)  # model_signing's order
    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in ordered)).hexdigest()
    return {"_type": STATEMENT_TYPE, "subject": [{"name": name, "digest": {"sha256": root}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                                            "ignore_paths": [OPENSSF_SIGNATURE]},
                          "resources": [{"name": n, "algorithm": "sha256", "digest": d} for n, d in ordered]}}


def sign_bundle(bundle: Path, name: str, private_key: Any) -> Path:
    """Write `bundle/model.sig` over every other file of `bundle` (named `name`, its final folder name)."""
    from distill.files import file_sha256, write_atomic

    ec, _, _, _ = _ec()
    digests = {p.relative_to(bundle).as_posix(): file_sha256(p) for p in sorted(bundle.rglob("*"))
               if p.is_file() and p.relative_to(bundle).as_posix() != OPENSSF_SIGNATURE}
    payload = json.dumps(statement(name, digests), indent=2).encode()
    signature = private_key.sign(pae(payload), ec.ECDSA(_hash_for(private_key.public_key())()))
    document = {"mediaType": BUNDLE_MEDIA_TYPE,
                "verificationMaterial": {"publicKey": {"hint": key_hint(private_key.public_key())}, "tlogEntries": []},
                "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                                 "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}}
    write_atomic(bundle / OPENSSF_SIGNATURE, json.dumps(document, indent=2) + "\n")
    return bundle / OPENSSF_SIGNATURE


def load_ec_public_key(data: bytes, where: str) -> tuple[Any, str | None]:
    """(key, None) or (None, what is wrong)."""
    ec, _, serialization, _ = _ec()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return None, f"{where}: not a PEM public key"
    if not isinstance(key, ec.EllipticCurvePublicKey) or _hash_for(key) is None:
        return None, f"{where}: not an EC P-256, P-384 or P-521 public key"
    return key, None


def is_ec_public_key(data: bytes) -> bool:
    return load_ec_public_key(data, "")[1] is None


def signed_digests(document: bytes, public_key: Any) -> tuple[dict[str, str] | None, str | None]:
    """The per-file sha256 digests that `model.sig` (its bytes) signs under `public_key`, or why not."""
    ec, _, _, invalid = _ec()
    try:
        bundle = json.loads(document)
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        hint = bundle["verificationMaterial"]["publicKey"].get("hint")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error):
        return None, f"{OPENSSF_SIGNATURE}: not a Sigstore bundle with a DSSE envelope"
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE or envelope.get("payloadType") != PAYLOAD_TYPE:
        return None, f"{OPENSSF_SIGNATURE}: not an OpenSSF model signature ({BUNDLE_MEDIA_TYPE}, in-toto payload)"
    if hint and hint != key_hint(public_key):
        return None, f"{OPENSSF_SIGNATURE}: signed with another key (its key hint differs)"
    try:
        public_key.verify(signature, pae(payload), ec.ECDSA(_hash_for(public_key)()))
    except invalid:
        return None, f"{OPENSSF_SIGNATURE}: the signature does not verify (the statement was edited, or another key signed it)"
    return _statement_digests(payload)


def _statement_digests(payload: bytes) -> tuple[dict[str, str] | None, str | None]:
    try:
        body = json.loads(payload)
        resources = body["predicate"]["resources"]
        digests = {r["name"]: r["digest"] for r in resources if r.get("algorithm") == "sha256"}
        root = body["subject"][0]["digest"]["sha256"]
        ordered = b"".join(bytes.fromhex(r["digest"]) for r in resources)  # in the statement's order
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None, f"{OPENSSF_SIGNATURE}: the signed statement is not a model_signing statement"
    if body.get("predicateType") != PREDICATE_TYPE or len(digests) != len(resources):
        return None, f"{OPENSSF_SIGNATURE}: the signed statement is not a sha256 model_signing statement"
    if hashlib.sha256(ordered).hexdigest() != root:
        return None, f"{OPENSSF_SIGNATURE}: the statement's subject digest does not match its files"
    return digests, None
