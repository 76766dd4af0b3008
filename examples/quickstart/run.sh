#!/usr/bin/env bash
# The offline quickstart end to end, timed: spec -> verified bundle -> a sampled story.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate
SPEC=specs/tinystories-quickstart.yaml
time distill run "$SPEC"
BUNDLE=runs/tinystories-quickstart/main/release/tinystories-quickstart-0.1.0
distill verify "$BUNDLE.tar.gz"
distill sample "$BUNDLE" --prompt "Once upon a time"
