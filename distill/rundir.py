"""The run directory every stage writes into: `runs/<spec-name>/<run-id>/`.

It holds a copy of the spec as given (`spec.yaml`), the validated spec (`spec.resolved.json`) and
`manifest.json`: where the spec came from, and per stage its state (running / done / failed), the
fingerprint of its inputs, counts and timings. Stages hand off through files in here, so any stage can be
re-run, inspected or resumed on its own. The manifest is only ever replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from distill import __version__
from distill.errors import Problem, RunDirError
from distill.keys import check_spec_secrets
from distill.spec import LoadedSpec, Spec, load_spec

MANIFEST = "manifest.json"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # one folder name: no '/', no '..', not absolute
StageState = Literal["running", "done", "failed"]


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file so that readers see the old or the new content, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a finished directory in under `target`: readers see the old one or the new one, and a crash
    never leaves a half-written directory under the real name."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json_file(path: Path, *, made_by: str | None = None, shape: type = dict) -> Any:
    """A JSON file a stage wrote; a missing, corrupt or wrong-shaped one is a located RunDirError."""
    fix = f"re-run `{made_by}` to rewrite it" if made_by else "restore it from a copy"
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(Problem("missing", file=path, hint=fix)) from None
    except json.JSONDecodeError as exc:
        raise RunDirError(Problem(f"not valid JSON: {exc.msg}", file=path, line=exc.lineno, column=exc.colno,
                                  hint=fix)) from None
    except UnicodeDecodeError:
        raise RunDirError(Problem("not UTF-8 text (binary or corrupt)", file=path, hint=fix)) from None
    if not isinstance(value, shape):
        raise RunDirError(Problem(f"wrong shape: expected a JSON {'object' if shape is dict else shape.__name__}, "
                                  f"found {type(value).__name__}", file=path, hint=fix))
    return value


def fingerprint(*parts: Any) -> str:
    """A stable sha256 of JSON-serialisable inputs (a stage is fresh when its inputs' fingerprint matches)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    def is_fresh(self, name: str, inputs_fingerprint: str) -> bool:
        """True when `name` completed with exactly these inputs: nothing to do."""
        stage = self.stage(name)
        return stage.get("state") == "done" and stage.get("fingerprint") == inputs_fingerprint

    def start_stage(self, name: str, inputs_fingerprint: str) -> None:
        previous = self.stage(name)
        self.manifest["stages"][name] = {
            "state": "running",
            "fingerprint": inputs_fingerprint,
            "started": _now(),
            "attempts": previous.get("attempts", 0) + 1,
            "started_at": time.time(),
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

    def require_stage(self, name: str, *, for_stage: str) -> dict[str, Any]:
        stage = self.stage(name)
        if stage.get("state") != "done":
            raise RunDirError(Problem(f"{for_stage} needs the {name} stage to be done (it is {stage.get('state', 'not started')})",
                                      file=self.path, hint=f"run `distill {name} {self.path}` first"))
        return stage


def run_path(spec_name: str, *, root: Path = Path("runs"), run_id: str = "main") -> Path:
    """`root/<spec-name>/<run-id>`; the run id is one plain folder name, so a run never lands outside `root`."""
    if not RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise RunDirError(Problem(f"--run-id {run_id!r} is not a plain folder name", key="--run-id",
                                  hint="use letters, digits, '.', '_' and '-' (no '/', no '..', not an absolute path)"))
    return (Path(root) / spec_name / run_id).resolve()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
