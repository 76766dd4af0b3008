"""A deployment file: the routes `distill serve-model --deployment` sends a model name's traffic to, each a
bundle with a percent of the requests. `distill promote` and `distill rollback` write it; the server reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, Problem


def read_deployment(path: Path) -> dict[str, Any]:
    try:
        deployment = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(Problem("no such deployment", file=path, hint="create it with `distill promote`")) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(Problem(f"not JSON ({exc.msg})", file=path, line=exc.lineno)) from None
    if not isinstance(deployment, dict) or not isinstance(deployment.get("routes"), list) or not deployment["routes"]:
        raise ConfigError(Problem("not a deployment file (needs name and routes)", file=path))
    return deployment
