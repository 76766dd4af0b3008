#!/usr/bin/env bash
# Set up distill in ./.venv: idempotent, works from a clean clone.
# torch is installed first from the pinned CPU wheel so no CUDA packages are pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { echo "setup [$1/7, $((SECONDS - start)) s]: $2" >&2; }
step 1 "creating .venv (the first set-up takes about 4 minutes; later runs only check)"
python3 -m venv .venv
step 2 "upgrading pip"
.venv/bin/python -m pip install --quiet --upgrade pip
step 3 "installing torch 2.13.0 (the CPU wheel)"
.venv/bin/python -m pip install --quiet "torch==2.13.0"
step 4 "installing distill and its dependencies (dev, ray, export)"
.venv/bin/python -m pip install --quiet -e ".[dev,ray,export]"  # ray: the Ray executor and its tests; export: ONNX/GGUF forms
step 5 "installing the API client generator the contract tests use (apart: it pins older httpx and typer)"
.venv/bin/python -m pip install --quiet --upgrade --target .venv/codegen "openapi-python-client==0.29.1"
step 6 "installing the OpenSSF model signing tool the signature tests verify with (apart: it pins older cryptography)"
.venv/bin/python -m pip install --quiet --upgrade --target .venv/signing "model-signing==1.1.1" "pyopenssl"
if command -v npm >/dev/null; then
  # llama.cpp for the GGUF form's parity run: node-llama-cpp's prebuilt CPU binary from npm (no compiler, no
  # download at install time: scripts are skipped and the CUDA/Vulkan variants left out).
  step 7 "installing llama.cpp (node-llama-cpp's prebuilt binary) into .venv/llama-node"
  binary="@node-llama-cpp/$(node -p 'process.platform.replace("darwin", "mac") + "-" + process.arch')"
  [ -f .venv/llama-node/node_modules/node-llama-cpp/package.json ] && [ -d ".venv/llama-node/node_modules/$binary" ] \
    || npm install --prefix .venv/llama-node --no-audit --no-fund --ignore-scripts --omit=optional --loglevel=error \
         "node-llama-cpp@3.22.1" "$binary@3.22.1"
fi
echo "setup [done, $((SECONDS - start)) s]: distill is installed in .venv; activate with: source .venv/bin/activate" >&2
