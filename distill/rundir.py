"""The run directory every stage writes into: `runs/<spec-name>/<run-id>/`.

It holds a copy of the spec as given (`spec.yaml`), the validated spec (`spec.resolved.json`) and
`manifest.json`: where the spec came from, and per stage its state (running / done / failed), the
fingerprint of its inputs, counts and timings. Stages hand off through files in here, so any stage can be
re-run, inspected or resumed on its own. The manifest is only ever replaced atomically.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Literal

from distill import __version__
from distill.errors import Problem, RunDirError
from distill.files import file_sha256, write_atomic, write_json_atomic
from distill.keys import check_spec_secrets
from distill.spec import LoadedSpec, Spec, load_spec

MANIFEST = "manifest.json"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # one folder name: no '/', no '..', not absolute
StageState = Literal["running", "done", "failed", "waiting"]


class RunDir:
    """One run of one spec. Open an existing one with `RunDir.open`, make one with `RunDir.create`."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def create(cls, loaded: LoadedSpec, *, root: Path = Path("runs"), run_id: str = "main") -> "RunDir":
        """Create (or reopen) the run directory for a spec. Reopening with a changed spec is fine:
        stages notice through their fingerprints and redo only what changed."""
        path = run_path(loaded.spec.name, root=root, run_id=run_id)
        check_spec_secrets(loaded)  # a key pasted into the spec must not be copied into the run
        existing = path / MANIFEST
        manifest = cls._read_manifest(existing) if existing.exists() else {"stages": {}, "created": _now()}
        if manifest.get("spec_name", loaded.spec.name) != loaded.spec.name:
            raise RunDirError(Problem(f"run directory belongs to spec {manifest['spec_name']!r}", file=path))
        manifest.update(
            spec_name=loaded.spec.name,
            spec_path=str(loaded.path.resolve()),
            spec_file_sha256=file_sha256(loaded.path),
            spec_sha256=loaded.fingerprint(),  # of the resolved spec, command-line overrides included
            distill_version=__version__,
        )
        run = cls(path, manifest)
        write_atomic(path / "spec.yaml", loaded.path.read_bytes())
        write_json_atomic(path / "spec.resolved.json", loaded.spec.model_dump(mode="json"))
        run.save()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        path = Path(path).resolve()
        if not (path / MANIFEST).is_file():
            raise RunDirError(Problem("not a run directory (no manifest.json)", file=path,
                                      hint="create one with `distill generate SPEC` or `distill run SPEC`"))
        return cls(path, cls._read_manifest(path / MANIFEST))

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunDirError(Problem(f"manifest is corrupt: {exc}", file=path,
                                      hint="restore it from a copy, or start a new run directory")) from None
        stages = manifest.get("stages") if isinstance(manifest, dict) else None
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise RunDirError(Problem("manifest has the wrong shape: expected an object with a 'stages' object",
                                      file=path, hint="restore it from a copy, or start a new run directory"))
        for key in ("spec_path", "spec_file_sha256", "spec_sha256", "spec_name"):
            if key in manifest and not isinstance(manifest[key], str):
                raise RunDirError(Problem(f"manifest has the wrong shape: {key!r} is not a string", file=path, key=key))
        return manifest

    def load_spec(self) -> LoadedSpec:
        """The run's resolved spec (with any command-line overrides such as `--teacher offline`), paired
        with its original file so relative paths (word lists, templates) still resolve."""
        if "spec_path" not in self.manifest or "spec_file_sha256" not in self.manifest:
            raise RunDirError(Problem("manifest does not say which spec made this run (no spec_path)",
                                      file=self.path / MANIFEST, hint="run the spec again into a new run directory"))
        original = Path(self.manifest["spec_path"])
        if not original.is_file():
            raise RunDirError(Problem(f"the run's spec {original} is gone", file=self.path / MANIFEST,
                                      hint="restore it, or run the spec again into a new run directory"))
        if file_sha256(original) != self.manifest["spec_file_sha256"]:
            raise RunDirError(Problem(f"the spec {original} changed since this run was created", file=self.path / MANIFEST,
                                      hint="re-run `distill generate` (or `distill run`) to bring the run up to date"))
        loaded = load_spec(original)
        resolved_path = self.path / "spec.resolved.json"
        try:
            resolved = Spec.model_validate(json.loads(resolved_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise RunDirError(Problem("missing", file=resolved_path, hint="re-run `distill generate` to rewrite it")) from None
        except (ValueError, UnicodeDecodeError) as exc:  # JSON or schema (pydantic's ValidationError is a ValueError)
            first = str(exc).splitlines()[0]
            raise RunDirError(Problem(f"corrupt: {first}", file=resolved_path,
                                      hint="re-run `distill generate` to rewrite it")) from None
        return loaded._replace(spec=resolved)

    def save(self) -> None:
        write_json_atomic(self.path / MANIFEST, self.manifest)

    # --- stage bookkeeping ---

    def stage(self, name: str) -> dict[str, Any]:
        return self.manifest["stages"].get(name, {})

    def start_stage(self, name: str) -> None:
        previous = self.stage(name)
        self.manifest["stages"][name] = {
            "state": "running",
            "started": _now(),
            "attempts": previous.get("attempts", 0) + 1,
            "started_at": time.time(),
            **({"inputs": previous["inputs"]} if "inputs" in previous else {}),
        }
        self.save()

    def finish_stage(self, name: str, *, counts: dict[str, Any] | None = None, state: StageState = "done",
                     error: str | None = None) -> None:
        stage = self.manifest["stages"].setdefault(name, {})
        stage.update(state=state, finished=_now(), counts=counts or {})
        if "started_at" in stage:
            stage["seconds"] = round(time.time() - stage["started_at"], 3)
        if error:
            stage["error"] = error
        self.save()

    # --- the freshness record: what each stage last completed with ---

    def stale_reasons(self, name: str, inputs: dict[str, Any]) -> list[str]:
        """Why stage `name` must run again with `inputs` (a record from `distill.stages`); [] when it
        completed with exactly these inputs."""
        stage = self.stage(name)
        state = stage.get("state")
        if state != "done":
            return [{None: "it has not run yet", "running": "it was interrupted", "failed": "it failed last time",
                     "waiting": "it waits for a human sign-off"}.get(state, f"it is {state}")]
        return compare_inputs(stage.get("inputs"), inputs)

    def record_inputs(self, name: str, inputs: dict[str, Any], *, state: StageState = "done") -> None:
        """Store the inputs stage `name` just completed with (re-reading the manifest the stage updated)."""
        self.manifest = self._read_manifest(self.path / MANIFEST)
        stage = self.manifest["stages"].setdefault(name, {})
        stage.update(state=state, inputs=inputs)
        stage.setdefault("finished", _now())
        self.save()


def stage_completed(manifest: dict[str, Any], name: str) -> bool:
    """Stage `name` completed and its inputs are recorded (whether they are still current is
    `RunDir.stale_reasons`' question)."""
    stage = manifest.get("stages", {}).get(name, {})
    return stage.get("state") == "done" and "inputs" in stage


def compare_inputs(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between two input records, in words (`templates/tinystories/story.j2 changed`)."""
    if not old:
        return ["no record of the inputs it ran with"]
    reasons = []
    # A report template counts as presentation, not as an input; a record written before that split
    # lists it among the files, which is no reason to run the stage again.
    presentation = new.get("presentation", {})
    old_files = {label: digest for label, digest in old.get("files", {}).items() if label not in presentation}
    new_files = new.get("files", {})
    for label in sorted(old_files.keys() | new_files.keys()):
        if label not in old_files:
            reasons.append(f"it now reads {label}")
        elif label not in new_files:
            reasons.append(f"it no longer reads {label}")
        elif old_files[label] != new_files[label]:
            reasons.append(f"{label} changed")
    old_settings, new_settings = old.get("settings", {}), new.get("settings", {})
    changed = sorted(k for k in old_settings.keys() | new_settings.keys() if old_settings.get(k) != new_settings.get(k))
    if changed:
        reasons.append(f"settings changed: {', '.join(changed)}")
    if old.get("upstream") != new.get("upstream"):
        reasons.append(f"the output of {new.get('upstream_stage') or 'the stage before'} changed")
    return reasons


def run_path(spec_name: str, *, root: Path = Path("runs"), run_id: str = "main") -> Path:
    """`root/<spec-name>/<run-id>`; the run id is one plain folder name, so a run never lands outside `root`."""
    if not RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise RunDirError(Problem(f"--run-id {run_id!r} is not a plain folder name", key="--run-id",
                                  hint="use letters, digits, '.', '_' and '-' (no '/', no '..', not an absolute path)"))
    return (Path(root) / spec_name / run_id).resolve()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
