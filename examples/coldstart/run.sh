#!/usr/bin/env bash
# The cold-start loop, offline, end to end: v1 from the support spec with the stand-in teacher, served to
# "beta users" (beta_traffic.jsonl, driven through the openai SDK) with capture on, then coldstart, drift,
# compare and promote. Takes about 15-20 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate 2>/dev/null || true
SPEC=specs/support-beta.yaml
RUNS=runs/lumen-support-beta
CAPTURES=$RUNS/beta-captures.jsonl
DEPLOYMENT=$RUNS/deployment.json
PORT=${PORT:-8765}
export DISTILL_SERVE_API_KEY=${DISTILL_SERVE_API_KEY:-beta-demo-key}

# 1. v1: trained on the teacher's simulated customer messages only.
distill run "$SPEC" --run-id v1
V1=$RUNS/v1/release/lumen-support-beta-0.1.0
[ -f "$DEPLOYMENT" ] || distill promote "$DEPLOYMENT" --bundle "$V1"

# 2. The beta: serve the deployment with capture on; beta users talk to it through the openai SDK.
rm -f "$CAPTURES"
distill serve-model "$DEPLOYMENT" --port "$PORT" --capture "$CAPTURES" --capture-rate 1.0 --retention-days 30 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf -H "Authorization: Bearer $DISTILL_SERVE_API_KEY" "http://127.0.0.1:$PORT/v1/models" >/dev/null; do sleep 1; done
OPTED_OUT_FILE=$RUNS/opted-out.txt python examples/coldstart/drive_beta.py --base-url "http://127.0.0.1:$PORT/v1" --model lumen-support-beta
kill $SERVER; wait $SERVER 2>/dev/null || true
echo "captured $(wc -l < "$CAPTURES") requests"

# A beta user asks for their data to be deleted: by request id (or --since/--until for a date range).
FIRST_ID=$(head -n 1 "$CAPTURES" | python -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')
distill captures delete "$CAPTURES" --id "$FIRST_ID"

# 3. The next run: real inputs relabelled by the teacher, mixed with v1's synthetic records, trained as v2.
distill coldstart "$RUNS/v1" --inputs "$CAPTURES" --run-id v2
V2=$RUNS/v2/release/lumen-support-beta-0.1.0+v2
distill drift "$RUNS/v2"

# 4. v1 vs v2 on the held-out real inputs, then promote only if v2 is better (the refusal is an answer too).
distill compare "$V1" "$V2" --run "$RUNS/v2"
distill promote "$DEPLOYMENT" --bundle "$V2" --comparison "$RUNS/v2/coldstart/compare.json" \
  || echo "v2 not promoted: the deployment keeps v1"
cat "$DEPLOYMENT.events.jsonl"
