#!/usr/bin/env bash
# Set up (if needed) and start `distill serve` on the embedded SQLite database with a demo tenant whose
# offline quickstart job is already submitted; prints the URL and the demo users' tokens. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && .venv/bin/python -c "import distill, fastapi, sqlalchemy, alembic" 2>/dev/null || bash scripts/setup.sh
exec .venv/bin/distill serve --demo --data-dir "${DISTILL_DATA_DIR:-service-data}" "$@"
