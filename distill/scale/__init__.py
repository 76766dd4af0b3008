"""Beyond one process: the stages on a Ray cluster, behind the optional `distill[ray]` extra.

Only `import_ray` lives here, so `import distill.scale` never needs Ray; the `ray_*` modules import it
at the top and are loaded only by commands run with `--executor ray`.
"""

from __future__ import annotations

from types import ModuleType

from distill.errors import ConfigError, Problem


def import_ray() -> ModuleType:
    """The `ray` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(Problem("--executor ray needs Ray, which is not installed", key="--executor",
                                  hint='pip install "distill[ray]", or use --executor local')) from None
    return ray
