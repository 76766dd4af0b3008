"""`distill verify BUNDLE [--key PUB]`: is this bundle exactly what was released, and by whom?

Works on a bundle directory or its tar.gz. Every file the manifest lists must be there with its sha256
and size; any file it does not list is reported as extra; and whatever the manifest says, a bundle must
hold the weights, the config, the tokenizer, the cards, the spec and the license. A tar.gz is never
extracted: its members are checked first (no absolute paths, no `..`, no links or devices, no
duplicates, one top-level folder, each member's size equal to the manifest's) and then hashed as they
stream out of the archive, so a small archive claiming a huge member costs nothing. It is read strictly,
the way the most lenient tool would read it: exactly one gzip member whose CRC32 and size trailer check,
nothing after it, and nothing in the tar after its end-of-archive marker but zero padding, so no reader
(`tar -i`, a gzip tool that joins members) finds a member that was never checked.

With `--key PUB` the manifest's Ed25519 signature (`manifest.sig`) must verify under that public key:
the manifest, and through it every file's hash and the review's audit-log head, come from the key holder.
Either signature will do: given an EC key, the OpenSSF model signature (`model.sig`, see
`distill.release.openssf`) must verify under it and sign exactly the bundle's files as they are.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from distill.release.openssf import (OPENSSF_PUBLIC_KEY, OPENSSF_SIGNATURE, is_ec_public_key, key_hint,
                                     load_ec_public_key, signed_digests)
from distill.signing import SIGNATURE, check_signature

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists hashes: megabytes at most
MAX_TAR_PADDING = 1 << 20  # zeros after a tar's end marker: tar pads to its record size (10 KiB by default)
REQUIRED_FILES = {"config.json": "the model's config", "tokenizer_config.json": "the tokenizer",
                  "README.md": "the model card", "DATASET_CARD.md": "the dataset card"}


@dataclass
class VerifyReport:
    bundle: Path
    problems: list[str] = field(default_factory=list)  # one line each: tampered, missing, extra, unsafe
    files_checked: int = 0
    name: str | None = None
    version: str | None = None
    signed_by: str | None = None  # the fingerprint of the key whose signature verified
    openssf_signed_by: str | None = None  # the key hint of the key whose OpenSSF model signature verified
    format_lines: list[str] = field(default_factory=list)  # the exported forms' parity table, as the manifest says

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Entry:
    """One file of a bundle, wherever it lives: its size and how to read it."""

    size: int
    open: Callable[[], IO[bytes]]
    plain: bool = True  # False: a link, device or folder where a file is expected


def verify(bundle: str | Path, *, public_key: Path | None = None) -> VerifyReport:
    bundle = Path(bundle)
    if bundle.is_dir():
        return check_entries(bundle, dir_entries(bundle), public_key)
    if bundle.is_file():
        return verify_archive(bundle, public_key)
    return VerifyReport(bundle, [f"{bundle}: no such bundle directory or tar.gz"])


def dir_entries(bundle: Path) -> dict[str, Entry]:
    entries = {}
    for path in sorted(bundle.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        plain = path.is_file() and not path.is_symlink()
        entries[path.relative_to(bundle).as_posix()] = Entry(path.lstat().st_size, lambda p=path: p.open("rb"), plain)
    return entries


def verify_archive(archive: Path, public_key: Path | None) -> VerifyReport:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()  # reads headers only (decompressing, not writing anything)
            tar_end = tar.offset  # where the end-of-archive marker starts, in the decompressed stream
            problems = unsafe_members(members)
            tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
            if not problems and len(tops) != 1:
                problems = [f"{archive}: expected one top-level folder, found {', '.join(sorted(tops)) or 'none'}"]
            if problems:
                return VerifyReport(archive, problems)
            top = tops.pop()
            entries = {PurePosixPath(m.name).relative_to(top).as_posix(): Entry(m.size, lambda m=m: tar.extractfile(m))
                       for m in members if m.isfile()}
            report = check_entries(archive, entries, public_key)
            report.problems += stray_folders(members, top, entries)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        return VerifyReport(archive, [f"{archive}: not a readable tar.gz ({_why(exc)}); download it again"])
    if report.ok:  # a bundle that already fails is not read again; one that passes must be all there is
        report.problems += stream_problems(archive, tar_end)
    return report


def stray_folders(members: list[tarfile.TarInfo], top: str, entries: dict[str, Entry]) -> list[str]:
    """Folders in the archive that hold no file: nothing the manifest lists needs them."""
    needed = {top} | {f"{top}/{parent.as_posix()}" for name in entries for parent in PurePosixPath(name).parents}
    return [f"{m.name}: extra folder not in the manifest" for m in members
            if m.isdir() and PurePosixPath(m.name).as_posix() not in needed]


def stream_problems(archive: Path, tar_end: int) -> list[str]:
    """The archive must be exactly one gzip member (its CRC32 and size checked) with no byte after it, and the
    tar inside must hold nothing after its end-of-archive marker but zero padding. Python's tarfile stops
    reading at that marker and gzip readers join appended members, so anything there was never checked."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing: header, deflate, CRC32 + size
    produced, pending = 0, b""
    with archive.open("rb") as raw:
        while not inflater.eof:
            pending = pending or raw.read(1 << 20)
            if not pending:
                return [f"{archive}: the gzip stream is cut short (its CRC32 and size trailer is missing); "
                        "download it again"]
            try:
                data = inflater.decompress(pending, 1 << 20)  # bounded output: a gzip bomb is read in steps
            except zlib.error as exc:
                return [f"{archive}: the gzip stream is corrupt ({exc}); download it again"]
            pending = inflater.unconsumed_tail
            beyond, produced = data[max(0, tar_end - produced):], produced + len(data)
            if beyond.strip(b"\0"):
                return [f"{archive}: data after the tar's end-of-archive marker (a hidden member that "
                        "`tar --ignore-zeros` would extract; refused)"]
            if produced - tar_end > MAX_TAR_PADDING:
                return [f"{archive}: more than {MAX_TAR_PADDING >> 20} MiB of padding after the tar's end (refused)"]
        if inflater.unused_data or raw.read(1):
            return [f"{archive}: bytes after the end of the gzip stream (an appended gzip member or other data; "
                    "refused: a tool that reads on would find files that were never checked)"]
    return []


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return "truncated" if isinstance(exc, EOFError) or "end of" in text.lower() else text


def unsafe_members(members: list[tarfile.TarInfo]) -> list[str]:
    """One line per member that could write outside a folder, is not a plain file/folder, or comes twice."""
    problems, seen = [], set()
    for member in members:
        path = PurePosixPath(member.name)
        if path.is_absolute() or member.name.startswith(("/", "\\")):
            problems.append(f"{member.name}: absolute path in the archive (refused)")
        elif ".." in path.parts:
            problems.append(f"{member.name}: path traversal ('..') in the archive (refused)")
        elif member.issym() or member.islnk():
            problems.append(f"{member.name}: link to {member.linkname!r} in the archive (refused)")
        elif not (member.isfile() or member.isdir()):
            problems.append(f"{member.name}: device, fifo or other special member in the archive (refused)")
        elif path.as_posix() in seen:
            problems.append(f"{member.name}: appears twice in the archive (refused: which copy is the release?)")
        seen.add(path.as_posix())
    return problems


def check_entries(bundle: Path, entries: dict[str, Entry], public_key: Path | None) -> VerifyReport:
    report = VerifyReport(bundle)
    manifest_bytes, problem = _manifest_bytes(entries)
    manifest = _parse_manifest(manifest_bytes) if problem is None else None
    if problem is None and isinstance(manifest, str):
        problem, manifest = manifest, None
    if problem is not None or manifest is None:
        return VerifyReport(bundle, [problem or f"{MANIFEST}: unreadable"])
    listed = manifest["files"]
    report.name, report.version = manifest["name"], manifest["version"]
    for relative, expected in sorted(listed.items()):
        report.files_checked += 1
        report.problems += _check_file(relative, expected, entries.get(relative))
    for relative in sorted(entries):
        if relative not in (MANIFEST, SIGNATURE, OPENSSF_SIGNATURE) and relative not in listed:
            report.problems.append(f"{relative}: extra file not in the manifest")
    report.problems += missing_parts(listed)
    report.problems += format_problems(manifest.get("formats"), listed)
    report.format_lines = format_lines(manifest.get("formats"))
    ec_key = public_key is not None and _is_ec_key_file(public_key)
    report.problems += _check_signature(manifest_bytes, entries, listed, None if ec_key else public_key, report)
    report.problems += _check_openssf(entries, listed, public_key if ec_key else None, report)
    return report


def _is_ec_key_file(path: Path) -> bool:
    try:
        return is_ec_public_key(Path(path).read_bytes()[:1 << 16])
    except OSError:
        return False  # the Ed25519 path reports the unreadable key


def _read(entry: Entry, limit: int) -> bytes:
    with entry.open() as handle:
        return handle.read(limit)


def _check_openssf(entries: dict[str, Entry], listed: dict[str, Any], public_key: Path | None,
                   report: VerifyReport) -> list[str]:
    """With an EC key: model.sig must be there and verify under it. Without one: a model.sig present must verify
    under the bundle's own openssf_key.pub. Either way its statement must sign every file of the bundle as it is
    (each listed file's sha256, which the manifest check above compared with the file, and the manifest and its
    signature themselves), and no other."""
    entry = entries.get(OPENSSF_SIGNATURE)
    if entry is None:
        return [f"{OPENSSF_SIGNATURE}: missing, so the OpenSSF signature cannot be checked (the release was not "
                "signed with --openssf-key)"] if public_key is not None else []
    if public_key is not None:
        key, problem = load_ec_public_key(Path(public_key).read_bytes()[:1 << 16], str(public_key))
    elif OPENSSF_PUBLIC_KEY in entries and OPENSSF_PUBLIC_KEY in listed:
        key, problem = load_ec_public_key(_read(entries[OPENSSF_PUBLIC_KEY], 1 << 16), OPENSSF_PUBLIC_KEY)
    else:
        return [f"{OPENSSF_SIGNATURE}: present, but the bundle has no {OPENSSF_PUBLIC_KEY} listed in its manifest"]
    if problem:
        return [problem]
    if not entry.plain or entry.size > MAX_MANIFEST_BYTES:
        return [f"{OPENSSF_SIGNATURE}: not a plain file of at most {MAX_MANIFEST_BYTES >> 20} MiB"]
    digests, problem = signed_digests(_read(entry, MAX_MANIFEST_BYTES), key)
    if problem:
        return [problem]
    actual = {name: row.get("sha256") for name, row in listed.items()}
    for name in (MANIFEST, SIGNATURE):
        if name in entries and entries[name].plain:
            actual[name] = _sha256(entries[name])
    problems = [f"{OPENSSF_SIGNATURE}: signs {name} with another sha256 than the bundle's file"
                for name in sorted(set(digests) & set(actual)) if digests[name] != actual[name]]
    problems += [f"{OPENSSF_SIGNATURE}: does not sign {name}" for name in sorted(set(actual) - set(digests))]
    problems += [f"{OPENSSF_SIGNATURE}: signs {name}, which the bundle does not hold" for name in sorted(set(digests) - set(actual))]
    if not problems:
        report.openssf_signed_by = "ecdsa:" + key_hint(key)[:32]
    return problems


def _manifest_bytes(entries: dict[str, Entry]) -> tuple[bytes, str | None]:
    entry = entries.get(MANIFEST)
    if entry is None:
        return b"", f"{MANIFEST}: missing"
    if not entry.plain or entry.size > MAX_MANIFEST_BYTES:
        return b"", f"{MANIFEST}: not a plain file of at most {MAX_MANIFEST_BYTES >> 20} MiB"
    with entry.open() as handle:
        return handle.read(MAX_MANIFEST_BYTES + 1), None


def _parse_manifest(data: bytes) -> dict[str, Any] | str:
    """The manifest, or one line saying what is wrong with it."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return f"{MANIFEST}: not valid JSON ({exc})"
    if not isinstance(manifest, dict):
        return f"{MANIFEST}: wrong shape (expected a JSON object)"
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        return f"{MANIFEST}: wrong shape ('files' must map each path to {{sha256, bytes}})"
    if not isinstance(manifest.get("name"), str) or not isinstance(manifest.get("version"), str):
        return f"{MANIFEST}: wrong shape ('name' and 'version' must be strings)"
    return manifest


def _check_file(relative: str, expected: dict[str, Any], entry: Entry | None) -> list[str]:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or relative in (MANIFEST, SIGNATURE, OPENSSF_SIGNATURE):
        return [f"{relative}: the manifest names a path outside the bundle"]
    if entry is None:
        return [f"{relative}: missing"]
    if not entry.plain:
        return [f"{relative}: not a plain file"]
    if entry.size != expected.get("bytes"):  # checked before reading a byte of it
        return [f"{relative}: tampered (sha256 differs from the manifest)"]  # sizes differ: no need to read it
    if _sha256(entry) != expected.get("sha256"):
        return [f"{relative}: tampered (sha256 differs from the manifest)"]
    return []


def _sha256(entry: Entry) -> str:
    digest = hashlib.sha256()
    with entry.open() as handle:
        for block in _blocks(handle):
            digest.update(block)
    return digest.hexdigest()


def _blocks(handle: IO[bytes]) -> Iterator[bytes]:
    while block := handle.read(1 << 20):
        yield block


def missing_parts(listed: dict[str, object]) -> list[str]:
    """What every bundle must hold, whatever its manifest lists: a bundle of cards without weights is no release."""
    problems = [f"{name}: a bundle must contain it ({what}), and this manifest does not list it"
                for name, what in REQUIRED_FILES.items() if name not in listed]
    if not any(name.endswith(".safetensors") and "/" not in name for name in listed):
        problems.append("model.safetensors: a bundle must contain the weights (*.safetensors), and this manifest lists none")
    return problems


def format_problems(formats: Any, listed: dict[str, Any]) -> list[str]:
    """Every exported form the manifest names must be files it lists (and so hashed and checked above)."""
    if formats is None:
        return []
    if not isinstance(formats, dict) or not all(isinstance(v, dict) for v in formats.values()):
        return [f"{MANIFEST}: wrong shape ('formats' must map each format to its files and parity)"]
    return [f"{name}: the {form} form's file is not listed in the manifest" for form, row in sorted(formats.items())
            for name in row.get("files") or [] if name not in listed]


def format_lines(formats: Any) -> list[str]:
    """The parity table of the exported forms (empty for a bundle of safetensors only)."""
    if not isinstance(formats, dict) or not any(isinstance(r, dict) and "parity" in r for r in formats.values()):
        return []
    from distill.release.export import FORMATS
    from distill.release.parity import format_table

    order = sorted(formats, key=lambda f: FORMATS.index(f) if f in FORMATS else len(FORMATS))
    try:
        return format_table({form: formats[form]["parity"] for form in order if "parity" in formats[form]})
    except (KeyError, TypeError, ValueError):
        return [f"{MANIFEST}: the formats' parity figures are not readable"]


def _check_signature(manifest_bytes: bytes, entries: dict[str, Entry], listed: dict[str, Any],
                     public_key: Path | None, report: VerifyReport) -> list[str]:
    """With a key: the signature must be there and verify. Without one: a signature present must still verify
    under the public key the bundle ships (a self-consistency check; only --key proves who signed)."""
    entry = entries.get(SIGNATURE)
    if entry is None:
        return [f"{SIGNATURE}: missing, so the bundle's origin cannot be checked (the release was not signed)"] \
            if public_key is not None else []
    with entry.open() as handle:
        signature = handle.read(1024)
    problem, report.signed_by = check_signature(manifest_bytes, signature, public_key, entries, listed)
    return [problem] if problem else []


def check_audit_anchor(bundle: Path, run: Path) -> list[str]:
    """The signed manifest names the review's audit-log head (entries, final hash). The run's log must still
    hold exactly that head at that position, and chain intact: a log rewritten and re-chained after release
    (every hash recomputed, the head file too) no longer matches what was signed."""
    from distill.review.audit import read_log, verify_log

    manifest = _parse_manifest(_read_manifest_of(Path(bundle)))
    if isinstance(manifest, str):
        return [manifest]
    review = (manifest.get("lineage") or {}).get("review") or {}
    signed_hash, signed_count = review.get("audit_log_final_hash"), review.get("audit_log_entries")
    log_dir = Path(run) / "review"
    if not (Path(run) / "manifest.json").is_file():
        return [f"{run}: not a run directory (no manifest.json)"]
    problems = [f"audit log: {line}" for line in verify_log(log_dir)]
    if signed_hash is None:
        return problems
    if not isinstance(signed_count, int):
        return problems + [f"{MANIFEST}: names the audit log's final hash but not its entry count (an older bundle)"]
    entries = read_log(log_dir)
    if len(entries) < signed_count or entries[signed_count - 1].get("hash") != signed_hash:
        problems.append(f"audit log: entry {signed_count} is not the head the release signed ({signed_hash[:12]}...): "
                        "the review history was rewritten after the release")
    return problems


def _read_manifest_of(bundle: Path) -> bytes:
    if bundle.is_dir():
        return (bundle / MANIFEST).read_bytes()
    with tarfile.open(bundle, "r:*") as tar:
        member = next(m for m in tar.getmembers() if PurePosixPath(m.name).parts[1:] == (MANIFEST,))
        return tar.extractfile(member).read(MAX_MANIFEST_BYTES + 1)
