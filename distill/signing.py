"""Ed25519 signatures over a bundle's manifest, with a key the operator holds.

The private key stays with the operator: `distill release --signing-key PATH` (or $DISTILL_SIGNING_KEY)
reads it from a PEM file that is never copied into a run or a bundle. The bundle carries `manifest.sig`
(the signature over manifest.json's exact bytes) and `signing_key.pub` (the public key, listed and hashed
in the manifest); the operator publishes the same public key elsewhere, and a customer checks the origin
with `distill verify BUNDLE --key PUB`. `distill keygen PATH` makes a key pair.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem

SIGNATURE = "manifest.sig"
PUBLIC_KEY = "signing_key.pub"
KEY_ENV = "DISTILL_SIGNING_KEY"


def _crypto():
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519, InvalidSignature, UnsupportedAlgorithm


def generate_key_pair(private_path: Path) -> Path:
    """Write a new private key (mode 0600) to `private_path` and its public key beside it; returns the .pub path."""
    _, ed25519, _, _ = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    return write_key_pair(private_path, key, public_pem(key))


def write_key_pair(private_path: Path, key: Any, public: bytes) -> Path:
    """`key` as PKCS#8 PEM at `private_path` (mode 0600, never over an existing file) and `public` beside it
    as PATH.pub; returns the .pub path. Every key `distill keygen` makes is written here."""
    serialization = _crypto()[0]
    if private_path.exists():
        raise ConfigError(Problem("already exists; refusing to overwrite a signing key", file=private_path,
                                  hint="choose another path, or delete the old key deliberately"))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path = private_path.with_name(private_path.name + ".pub")
    public_path.write_bytes(public)
    return public_path


def load_private_key(path: Path) -> Any:
    """The operator's Ed25519 private key from a PEM file (unencrypted PKCS#8, as `distill keygen` writes)."""
    serialization, ed25519, _, unsupported = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(Problem("no such signing key", file=path, key="--signing-key",
                                  hint="make one with `distill keygen PATH`")) from None
    except (ValueError, TypeError, unsupported):
        raise ConfigError(Problem("not an unencrypted PEM private key", file=path, key="--signing-key",
                                  hint="make one with `distill keygen PATH`")) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(Problem("not an Ed25519 key", file=path, key="--signing-key",
                                  hint="make one with `distill keygen PATH`"))
    return key


def public_pem(private_key: Any) -> bytes:
    serialization, _, _, _ = _crypto()
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_key: Any) -> str:
    serialization, _, _, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


def sign(manifest_bytes: bytes, private_key: Any) -> bytes:
    """The text of manifest.sig: the base64 signature of the manifest's exact bytes."""
    return base64.b64encode(private_key.sign(manifest_bytes)) + b"\n"


def load_public_key(data: bytes, where: str) -> tuple[Any, str | None]:
    """(key, None) or (None, what is wrong)."""
    serialization, ed25519, _, unsupported = _crypto()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, unsupported):
        return None, f"{where}: not a PEM public key"
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None, f"{where}: not an Ed25519 public key"
    return key, None


def check_signature(manifest_bytes: bytes, signature_text: bytes, public_key_path: Path | None,
                    entries: dict[str, Any], listed: dict[str, Any]) -> tuple[str | None, str | None]:
    """(problem or None, the verifying key's fingerprint). With no key given, the bundle's own public key is
    used: that proves the manifest was not edited after signing, not who signed it."""
    _, _, invalid, _ = _crypto()
    if public_key_path is not None:
        key = read_public_key(public_key_path)
    else:
        entry = entries.get(PUBLIC_KEY)
        if entry is None or PUBLIC_KEY not in listed:
            return f"{SIGNATURE}: present, but the bundle has no {PUBLIC_KEY} listed in its manifest", None
        with entry.open() as handle:
            key, problem = load_public_key(handle.read(1 << 16), PUBLIC_KEY)
        if problem:
            return problem, None
    try:
        key.verify(base64.b64decode(signature_text.strip(), validate=True), manifest_bytes)
    except (invalid, binascii.Error, ValueError):
        who = "the given key" if public_key_path is not None else f"the bundle's own {PUBLIC_KEY}"
        return (f"{SIGNATURE}: the signature does not verify under {who} (manifest edited after signing, "
                f"or signed by someone else)"), None
    return None, key_fingerprint(key)


def signature_holds(public_key: Any, signature_text: str, data: bytes) -> bool:
    """True when `signature_text` (base64, as `sign` writes it) is `public_key`'s signature over `data`."""
    _, _, invalid, _ = _crypto()
    try:
        public_key.verify(base64.b64decode(signature_text.strip(), validate=True), data)
    except (invalid, binascii.Error, ValueError, AttributeError):
        return False
    return True


def read_public_key(path: Path, *, option: str = "--key") -> Any:
    """The Ed25519 public key in a PEM file the user named; a located ConfigError when it is not one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(Problem(f"cannot read the public key: {exc.strerror}", file=path, key=option)) from None
    key, problem = load_public_key(data, str(path))
    if problem:
        raise ConfigError(Problem(problem, key=option, hint="pass the publisher's signing_key.pub"))
    return key


def signing_key_from(path: Path | None) -> Any | None:
    """The key named by --signing-key, else $DISTILL_SIGNING_KEY, else None (an unsigned release)."""
    chosen = path or (Path(os.environ[KEY_ENV]) if os.environ.get(KEY_ENV) else None)
    return None if chosen is None else load_private_key(chosen)
