"""Packaging: the CLI starts instantly, and a built wheel finds its data folders without the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

HEAVY_MODULES = ("torch", "transformers", "openai", "anthropic", "datasets", "accelerate", "peft", "ray")


def test_help_imports_no_heavy_library_and_is_fast() -> None:
    code = ("import sys, time; t=time.perf_counter(); from distill.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)); print(time.perf_counter()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout.splitlines()
    assert out[-2] == "[]"  # what makes --help slow is importing these; their absence is the check
    shown = subprocess.run([sys.executable, "-m", "distill", "--help"], capture_output=True, check=True, cwd=REPO, text=True)
    assert "run" in shown.stdout


@pytest.mark.slow
def test_built_wheel_carries_templates_and_safety(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a folder, and validate a spec from outside the checkout."""
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", REPO],
                   capture_output=True, check=True)
    [wheel] = (tmp_path / "dist").glob("distill-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
                   capture_output=True, check=True)
    assert (site / "distill" / "_data" / "templates" / "tinystories" / "story.j2").is_file()
    assert (site / "distill" / "_data" / "safety").is_dir()
    assert (site / "distill" / "_data" / "specs" / "policies" / "children-reviewed.yaml").is_file()  # the demo's jobs
    workdir = tmp_path / "work"
    shutil.copytree(REPO / "specs", workdir / "specs")
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-m", "distill", "validate", "specs/tinystories.yaml"], cwd=workdir,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    located = subprocess.run([sys.executable, "-c", "import distill.paths as p; print(p.data_path('templates'))"],
                             cwd=workdir, capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert located == str(site / "distill" / "_data" / "templates")
