"""Deployments: which released bundle answers, traffic splits, promotion and rollback, every switch an event.

A deployment is a JSON file (`deployment.json`): its name (the `model` clients ask for), the routes
(bundle, model id, percent of traffic) and the stack of earlier route sets for rollback. Beside it,
`<file>.events.jsonl` records every switch (create, promote, split, rollback) with time, routes before and
after, and the reason. `distill serve-model deployment.json` serves it, picking a route per request by
its percentage.

A bundle is promoted only when it verifies against its manifest, its release gate passed (an
overridden gate is refused too), and, given a comparison (`distill compare`), v2 was better on the
real held-out inputs. `--force REASON` skips only the comparison, and the reason goes into the event.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, DistillError, Problem
from distill.rundir import write_json_atomic
from distill.serving.deployment import read_deployment


class PromotionRefused(DistillError):
    """The bundle may not take traffic: it does not verify, its gate failed, or it was not better."""


def check_bundle(bundle: Path) -> str:
    """The bundle's model id, if it may serve; raises PromotionRefused otherwise."""
    from distill.release.verify import verify

    report = verify(bundle)
    if not report.ok:
        raise PromotionRefused(*[Problem(f"does not verify: {p}", file=bundle) for p in report.problems])
    manifest = json.loads((bundle / "manifest.json").read_text())
    gate = manifest.get("gate") or {}
    if not gate.get("passed") or gate.get("override"):
        raise PromotionRefused(Problem("its release gate did not pass (or was overridden)", file=bundle))
    return f"{manifest['name']}-{manifest['version']}"


def check_comparison(comparison: Path | None, force: str | None) -> dict[str, Any] | None:
    if comparison is None:
        return None
    report = json.loads(Path(comparison).read_text())
    if not report.get("v2_better") and not force:
        v1, v2, win = report["v1"], report["v2"], report["win_rate_v2"]
        raise PromotionRefused(Problem(
            f"v2 is not better on the held-out real inputs: {v2['bits_per_byte']:.3f} vs {v1['bits_per_byte']:.3f} "
            f"bits per byte, win rate {win['mean']:.2f}", file=comparison,
            hint="keep v1; or pass --force REASON to promote anyway (recorded as an event)"))
    return report


def promote(deployment: Path, bundle: Path, *, percent: int = 100, comparison: Path | None = None,
            force: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Send `percent` of the deployment's traffic to `bundle` (100: switch over). Returns the deployment."""
    if not 1 <= percent <= 100:
        raise ConfigError(Problem(f"percent {percent} is outside 1..100", key="--percent"))
    bundle = Path(bundle).resolve()
    model = check_bundle(bundle)
    report = check_comparison(comparison, force)
    route = {"bundle": str(bundle), "model": model, "percent": percent}
    if deployment.exists():
        current = read_deployment(deployment)
        before = current["routes"]
        primary = max(before, key=lambda r: r["percent"])
        routes = [route] if percent == 100 else [{**primary, "percent": 100 - percent}, route]
        current["history"] = [*current.get("history", []), before]
        current["routes"] = routes
        action = "promote" if percent == 100 else "split"
    else:
        if percent != 100:
            raise ConfigError(Problem("a new deployment starts with 100% on one bundle", key="--percent"))
        before, action = [], "create"
        current = {"name": name or model.rsplit("-", 1)[0], "routes": [route], "history": []}
    write_json_atomic(deployment, current)
    record_event(deployment, action, before, current["routes"], reason=force,
                 comparison=None if report is None else {k: report[k] for k in ("v2_better", "win_rate_v2")})
    return current


def rollback(deployment: Path) -> dict[str, Any]:
    current = read_deployment(deployment)
    if not current.get("history"):
        raise ConfigError(Problem("nothing to roll back to: this deployment has had one set of routes", file=deployment))
    before = current["routes"]
    current["routes"] = current["history"].pop()
    write_json_atomic(deployment, current)
    record_event(deployment, "rollback", before, current["routes"])
    return current


def events_path(deployment: Path) -> Path:
    return deployment.with_name(deployment.name + ".events.jsonl")


def record_event(deployment: Path, action: str, before: list, after: list, **details: Any) -> None:
    event = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "action": action,
             "from": [f"{r['model']}:{r['percent']}%" for r in before],
             "to": [f"{r['model']}:{r['percent']}%" for r in after],
             **{k: v for k, v in details.items() if v is not None}}
    with events_path(deployment).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(event) + "\n")


def read_events(deployment: Path) -> list[dict[str, Any]]:
    path = events_path(deployment)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
