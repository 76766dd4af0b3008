#!/usr/bin/env bash
# Set up distill in ./.venv: idempotent, works from a clean clone.
# torch is installed first from the pinned CPU wheel so no CUDA packages are pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,ray]"  # ray: the Ray executor and its tests
# the contract test's client generator, apart from distill's packages (it pins older httpx and typer)
.venv/bin/python -m pip install --quiet --upgrade --target .venv/codegen "openapi-python-client==0.29.1"
echo "distill is installed in .venv; activate with: source .venv/bin/activate" >&2
