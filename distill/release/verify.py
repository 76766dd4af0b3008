"""`distill verify BUNDLE`: is this bundle exactly what was released?

Works on a bundle directory or its tar.gz. Every file the manifest lists must be there with its sha256
and size; any file it does not list is reported as extra. A tar.gz is checked member by member before
anything is extracted (no absolute paths, no `..`, no links or devices, one top-level folder), then
extracted into a temporary folder with tarfile's `data` filter as a second line of defence.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from distill.files import file_sha256

MANIFEST = "manifest.json"


@dataclass
class VerifyReport:
    bundle: Path
    problems: list[str] = field(default_factory=list)  # one line each: tampered, missing, extra, unsafe
    files_checked: int = 0
    name: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(bundle: str | Path) -> VerifyReport:
    bundle = Path(bundle)
    if bundle.is_dir():
        return verify_dir(bundle)
    if bundle.is_file() and tarfile.is_tarfile(bundle):
        return verify_archive(bundle)
    return VerifyReport(bundle, [f"{bundle}: not a bundle directory or a tar.gz of one"])


def verify_archive(archive: Path) -> VerifyReport:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        unsafe = unsafe_members(members)
        if unsafe:
            return VerifyReport(archive, unsafe)
        tops = {PurePosixPath(m.name).parts[0] for m in members}
        if len(tops) != 1:
            return VerifyReport(archive, [f"{archive}: expected one top-level folder, found {', '.join(sorted(tops))}"])
        with tempfile.TemporaryDirectory(prefix="distill-verify-") as scratch:
            tar.extractall(scratch, filter="data")
            report = verify_dir(Path(scratch) / tops.pop())
    report.bundle = archive
    return report


def unsafe_members(members: list[tarfile.TarInfo]) -> list[str]:
    """One line per member that could write outside the extraction folder or is not a plain file/folder."""
    problems = []
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
    return problems


def verify_dir(bundle: Path) -> VerifyReport:
    report = VerifyReport(bundle)
    manifest_path = bundle / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        listed = manifest["files"]
        report.name, report.version = manifest["name"], manifest["version"]
    except FileNotFoundError:
        return VerifyReport(bundle, [f"{MANIFEST}: missing"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        return VerifyReport(bundle, [f"{MANIFEST}: unreadable or incomplete ({exc!r})"])

    for relative, expected in sorted(listed.items()):
        path = PurePosixPath(relative)
        if path.is_absolute() or ".." in path.parts:
            report.problems.append(f"{relative}: the manifest names a path outside the bundle")
            continue
        target = bundle / path
        if target.is_symlink() or (target.exists() and not target.is_file()):
            report.problems.append(f"{relative}: not a plain file")
        elif not target.exists():
            report.problems.append(f"{relative}: missing")
        elif file_sha256(target) != expected.get("sha256") or target.stat().st_size != expected.get("bytes"):
            report.problems.append(f"{relative}: tampered (sha256 differs from the manifest)")
        report.files_checked += 1

    for path in sorted(bundle.rglob("*")):
        relative = path.relative_to(bundle).as_posix()
        if relative != MANIFEST and relative not in listed and (path.is_file() or path.is_symlink()):
            report.problems.append(f"{relative}: extra file not in the manifest")
    return report
