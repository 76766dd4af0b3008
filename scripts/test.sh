#!/usr/bin/env bash
# Set up (if needed) and run the tests. The service's store tests also run on PostgreSQL when
# DISTILL_TEST_POSTGRES_URL is set (`source <(bash scripts/test-postgres.sh start)` starts a throwaway one).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] && .venv/bin/python -c "import distill, fastapi, sqlalchemy, alembic, ray, playwright, schemathesis, fastapi_offline" 2>/dev/null \
  && [ -d .venv/codegen/openapi_python_client ] && [ -d .venv/signing/model_signing ] \
  && { ! command -v npm >/dev/null || [ -f .venv/llama-node/node_modules/node-llama-cpp/package.json ]; } \
  || bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
