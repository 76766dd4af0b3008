"""Where distill's data folders (`templates/`, `safety/`) live: inside the wheel, or in the checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    """The `templates`, `safety` or `specs` folder: packaged copy in a wheel, else the checkout's top level."""
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"distill's data folder {name!r} is missing from {packaged} and {checkout}")
