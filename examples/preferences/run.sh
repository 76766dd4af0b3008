#!/usr/bin/env bash
# Learning from the reviewers, offline, end to end: review -> pairs -> SFT -> preference (DPO) -> eval ->
# release. The stand-in teacher writes 900 stories; a scripted reviewer (reviewer.py) reads the first 300,
# rejects the fights and edits the sad endings; the pairs, the tuning and the before/after measurement
# follow. About 10 minutes on 2 busy CPU cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
source .venv/bin/activate 2>/dev/null || true
SPEC=specs/tinystories-preferences.yaml
RUNS=${RUNS:-runs}
RUN=$RUNS/tinystories-preferences/main

distill generate "$SPEC" --runs-dir "$RUNS"
distill review "$RUN"                        # the automatic review (the offline demo signs off as "auto")
python examples/preferences/reviewer.py "$RUN"   # the people: reject fights, edit sad endings
distill review "$RUN"                        # the view changed: signed off again
distill review "$RUN" agreement || true      # the judge against the humans (no judge offline: says so)
distill review "$RUN" pairs make             # edits + rejections with the teacher's alternatives
distill run "$SPEC" --runs-dir "$RUNS"       # SFT, then DPO on the pairs, eval (before/after), release
python - "$RUN" <<'PY'
import json, sys
p = json.load(open(f"{sys.argv[1]}/eval/eval.json"))["preference"]
b, a = p["before"], p["after"]
print(f"rejected behaviour ({', '.join(p['codes'])}) on {p['prompts']} held-out prompts: "
      f"{b['hits']}/{b['samples']} = {b['rate']:.1%} before, {a['hits']}/{a['samples']} = {a['rate']:.1%} after; "
      f"fall {p['fall']:.1%} (95% CI {p['fall_interval'][0]:.1%} to {p['fall_interval'][1]:.1%}); "
      f"held-out bpb {b['bpb']:.4f} -> {a['bpb']:.4f}")
PY
