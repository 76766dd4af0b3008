"""The run directory: resolved spec, atomic manifest, stage fingerprints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO
from distill.errors import RunDirError
from distill.files import write_atomic
from distill.rundir import RunDir
from distill.spec import load_spec


def test_create_writes_spec_and_manifest(tmp_path: Path) -> None:
    run = RunDir.create(load_spec(REPO / "specs" / "tinystories.yaml"), root=tmp_path)
    assert run.path == (tmp_path / "tinystories" / "main").resolve()
    assert (run.path / "spec.yaml").read_bytes() == (REPO / "specs" / "tinystories.yaml").read_bytes()
    assert json.loads((run.path / "spec.resolved.json").read_text())["name"] == "tinystories"
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["spec_name"] == "tinystories" and manifest["stages"] == {}
    assert RunDir.open(run.path).load_spec().spec.records == 20000


def test_stage_bookkeeping(tmp_path: Path) -> None:
    run = RunDir.create(load_spec(REPO / "specs" / "tinystories.yaml"), root=tmp_path)
    run.start_stage("train")
    assert RunDir.open(run.path).stage("train")["state"] == "running"
    run.finish_stage("train", counts={"steps": 10})
    reopened = RunDir.open(run.path)
    assert reopened.stage("train")["counts"] == {"steps": 10} and reopened.stage("train")["seconds"] >= 0
    assert reopened.stage("train")["state"] == "done"


def test_open_refuses_non_runs_and_corrupt_manifests(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a run directory"):
        RunDir.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{half")
    with pytest.raises(RunDirError, match="manifest is corrupt"):
        RunDir.open(tmp_path)


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_atomic(target, "old")

    class Boom(str):
        def encode(self, *args, **kwargs):  # fails after the temp file exists, like a crash mid-write
            raise OSError("disk gone")

    with pytest.raises(OSError):
        write_atomic(target, Boom("new"))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left behind


def test_changed_spec_is_detected(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text((REPO / "tests" / "golden" / "minimal_spec.yaml").read_text())
    run = RunDir.create(load_spec(spec), root=tmp_path / "runs")
    spec.write_text(spec.read_text().replace("records: 10", "records: 12"))
    with pytest.raises(RunDirError, match="changed since this run was created"):
        run.load_spec()


def test_command_line_overrides_survive_into_later_stages(tmp_path: Path) -> None:
    from distill.synthesis import override_teacher

    loaded = override_teacher(load_spec(REPO / "specs" / "tinystories.yaml"), "offline", 30)
    run = RunDir.create(loaded, root=tmp_path)
    again = RunDir.open(run.path).load_spec()
    assert (again.spec.teacher.provider, again.spec.teacher.model, again.spec.records) == ("offline", "offline-stand-in", 30)
    assert again.directory == REPO / "specs"
