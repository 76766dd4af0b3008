"""A spec upload, which is untrusted: one YAML file, or a tar (optionally gzipped) or zip of a spec folder.

Extraction refuses, naming the member: absolute paths, `..`, links, devices and other special files,
oversized members, too many members, and too many bytes in all. Then the spec gets exactly the checks of
`distill validate`, plus the service's own: the teacher's key variable must be one the tenant may use.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from distill.errors import DistillError, Problem, public_problem
from distill.keys import key_references
from distill.spec import Spec

MAX_UPLOAD_BYTES = 20 << 20
MAX_MEMBERS = 500
MAX_MEMBER_BYTES = 10 << 20
MAX_TOTAL_BYTES = 50 << 20
DEFAULT_KEY_ENVS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


class UploadError(DistillError):
    """The upload is refused; its problems name the member or the field."""


class UploadTooLarge(UploadError):
    """The upload, or a member of it, is over a size or count limit."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    is_file: bool
    is_dir: bool


def _refuse(member: str, message: str, kind: type[UploadError] = UploadError) -> UploadError:
    return kind(Problem(message, file=member, key="file"))


def _check_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise _refuse(name, "absolute paths are not allowed in an upload")
    if ".." in path.parts or "\\" in name:
        raise _refuse(name, "'..' (or a backslash) is not allowed in an upload member's path")
    return path


def _check_members(members: list[Member]) -> None:
    if len(members) > MAX_MEMBERS:
        raise UploadTooLarge(Problem(f"the upload has {len(members)} members; at most {MAX_MEMBERS} are allowed", key="file"))
    total = 0
    for member in members:
        _check_name(member.name)
        if not (member.is_file or member.is_dir):
            raise _refuse(member.name, "only regular files and folders are allowed (no links, devices or pipes)")
        if member.size > MAX_MEMBER_BYTES:
            raise _refuse(member.name, f"member is {member.size:,} bytes; at most {MAX_MEMBER_BYTES:,} are allowed", UploadTooLarge)
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise _refuse(member.name, f"the upload unpacks to more than {MAX_TOTAL_BYTES:,} bytes", UploadTooLarge)


def extract_upload(data: bytes, filename: str, target: Path) -> None:
    """Unpack an upload into `target` (a new, empty folder), refusing anything unsafe."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(Problem(f"the upload is {len(data):,} bytes; at most {MAX_UPLOAD_BYTES:,} are allowed", key="file"))
    target.mkdir(parents=True, exist_ok=False)
    lower = filename.lower()
    if lower.endswith((".yaml", ".yml")):
        (target / "spec.yaml").write_bytes(data)
    elif zipfile.is_zipfile(io.BytesIO(data)):
        _extract_zip(data, target)
    elif lower.endswith((".tar", ".tar.gz", ".tgz")):
        _extract_tar(data, target)
    else:
        raise UploadError(Problem(f"{filename!r} is not a .yaml file, a tar (.tar, .tar.gz, .tgz) or a zip", key="file"))


def _extract_tar(data: bytes, target: Path) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            infos = archive.getmembers()
            _check_members([Member(i.name, i.size, i.isreg(), i.isdir()) for i in infos])
            archive.extractall(target, filter="data")  # the library's own checks, on top of ours
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UploadError(Problem(f"not a readable tar archive: {exc}", key="file")) from None


def _extract_zip(data: bytes, target: Path) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            # Unix mode bits live in the top half of external_attr: 0o12 marks a symlink, 0o02/0o06 devices.
            kinds = [(i.external_attr >> 16) & 0o170000 for i in infos]
            _check_members([Member(i.filename, i.file_size, not i.is_dir() and k in (0, 0o100000), i.is_dir())
                            for i, k in zip(infos, kinds)])
            for info in infos:
                destination = target / info.filename
                if info.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source:
                    payload = source.read(MAX_MEMBER_BYTES + 1)  # the header's size can lie
                if len(payload) > MAX_MEMBER_BYTES:
                    raise _refuse(info.filename, f"member unpacks to more than {MAX_MEMBER_BYTES:,} bytes", UploadTooLarge)
                destination.write_bytes(payload)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(Problem(f"not a readable zip archive: {exc}", key="file")) from None


def find_spec_file(folder: Path, spec_path: str | None) -> Path:
    """The spec inside an extracted upload: `spec_path` if given, else the only YAML file at the top."""
    if spec_path:
        _check_name(spec_path)
        candidate = folder / spec_path
        if not candidate.is_file():
            raise UploadError(Problem(f"the upload has no file {spec_path!r}", key="spec_path"))
        return candidate
    tops = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if len(tops) != 1:
        found = ", ".join(p.name for p in tops) or "none"
        raise UploadError(Problem(f"cannot tell which YAML file is the spec (top-level YAML files: {found})",
                                  key="spec_path", hint="name it in the spec_path form field"))
    return tops[0]


def teacher_problems(spec: Spec, allowed_key_envs: list[str], spec_file: Path) -> list[Problem]:
    """What an uploaded spec may not ask of the server: API-key variables the admin did not allow for the
    tenant (the keys live on the server), a `base_url` (it would send the server's key elsewhere), or a
    local `hf` model (a path on the server), for the teacher and both judges. The paths a spec names are
    confined to the upload by `distill.validate.check_spec(server=True)`."""
    problems = []
    for key, teacher in key_references(spec):
        name = teacher.api_key_env or DEFAULT_KEY_ENVS.get(teacher.provider)
        if name is not None and name not in allowed_key_envs:
            problems.append(Problem(f"the API key variable {name!r} is not allowed for this tenant", file=spec_file,
                                    key=f"{key}.api_key_env", hint="ask the operator to allow it, or use another teacher"))
        if teacher.base_url is not None:
            problems.append(Problem("a submitted spec cannot set base_url: the server's teachers are the operator's",
                                    file=spec_file, key=f"{key}.base_url", hint="remove base_url"))
        if teacher.provider == "hf":
            problems.append(Problem("a submitted spec cannot use a local hf model on the server", file=spec_file,
                                    key=f"{key}.provider", hint="use openai, anthropic, replay or offline"))
    return problems


def problem_json(problem: Problem, data_dir: Path) -> dict:
    """A located problem for the API, with no server path and no class name in it. Files of an upload are
    named as in the upload (`words/x.txt`), other files in the data folder by their name; member names
    of a refused archive stay exactly as given (the customer's own)."""
    jobs = Path(data_dir).resolve() / "jobs"
    file = problem.file
    folder = None
    if file is not None and Path(str(file)).is_relative_to(jobs):
        parts = Path(str(file)).relative_to(jobs).parts
        if len(parts) > 2 and parts[1] == "spec":
            folder = jobs / parts[0] / "spec"
        else:
            file = parts[-1]
    public = public_problem(problem if file is problem.file else replace(problem, file=file), folder)
    if problem.key == "file":  # an archive member's name, as the customer wrote it
        public = replace(public, file=problem.file)
    return {"file": None if public.file is None else str(public.file), "line": public.line, "column": public.column,
            "key": public.key, "message": public.message, "hint": public.hint}
