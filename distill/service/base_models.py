"""`student.base_model: job:<id>`: a model one of the tenant's own finished jobs made, as the base of a new
job. At submit the job's trained model folder is linked into the new upload (`base-models/<id>/`) and the
spec's value is rewritten to that folder, so every later check and stage reads an ordinary folder inside
the upload. A job of another tenant, an unfinished one and one that does not exist get the same answer,
so the refusal tells nothing about other tenants."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml
from sqlalchemy.orm import Session

from distill.errors import Problem, SpecError
from distill.service.db import Job
from distill.spec_refs import JOB_PREFIX

FOLDER = "base-models"


def bring_job_model(session: Session, tenant_id: str, spec_file: Path) -> str | None:
    """Link the model `student.base_model: job:<id>` names into the upload beside `spec_file` and point the
    spec at it; the job's id, or None when the spec names no job."""
    text = spec_file.read_text(encoding="utf-8")
    job_id = _named_job(text)
    if job_id is None:
        return None
    job = session.get(Job, job_id)
    model = Path(job.run_dir) / "train" / "model" if job is not None else None
    if job is None or job.tenant_id != tenant_id or job.status != "succeeded" or not (model / "config.json").is_file():
        raise SpecError(Problem(f"{JOB_PREFIX}{job_id} names no succeeded job of this tenant", file=str(spec_file),
                                line=_line_of(text), key="student.base_model",
                                hint="name one of your own succeeded jobs (distill remote list), or upload a model folder"))
    target = spec_file.parent / FOLDER / job_id
    shutil.copytree(model, target, copy_function=_link_or_copy, dirs_exist_ok=True)
    relative = target.relative_to(spec_file.parent).as_posix()
    spec_file.write_text(_BASE_MODEL_LINE.sub(lambda m: f"{m.group(1)}{relative}", text, count=1), encoding="utf-8")
    return job_id


_BASE_MODEL_LINE = re.compile(r"""^(\s*base_model:\s*)['"]?job:[^\s'"#]+['"]?""", re.MULTILINE)


def _named_job(text: str) -> str | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # the spec's own checks report it, located
    student = data.get("student") if isinstance(data, dict) else None
    value = student.get("base_model") if isinstance(student, dict) else None
    if not (isinstance(value, str) and value.startswith(JOB_PREFIX)) or not _BASE_MODEL_LINE.search(text):
        return None
    return value.removeprefix(JOB_PREFIX)


def _line_of(text: str) -> int | None:
    match = _BASE_MODEL_LINE.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the data folder allows it (a released model is never written again), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
