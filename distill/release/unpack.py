"""Open a released bundle wherever it came from: its directory, or the tar.gz a customer downloaded.

An archive is verified before anything is written (`verify` reads it without extracting), unpacked into a
temporary folder with tarfile's `data` filter, and verified again as a directory: whatever is loaded from the
folder is exactly what the manifest lists, even if the archive changed between the two reads.
"""

from __future__ import annotations

import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distill.errors import ConfigError, Problem
from distill.lineage import load_saved_model
from distill.release.verify import verify
from distill.train.sample import load_student

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def open_student(path: Path):
    """(model, tokenizer, source) from a released bundle's tar.gz (verified before it is unpacked), or from
    anything `load_student` reads: a model directory, a train folder (its model, else its newest checkpoint)."""
    path = Path(path)
    if not is_archive(path):
        return load_student(path)
    with verified_bundle(path, purpose="sample") as folder:
        return (*load_saved_model(folder), path)


@contextmanager
def verified_bundle(bundle: str | Path, *, purpose: str = "open") -> Iterator[Path]:
    """A bundle directory that verifies, for as long as the `with` block lasts. A tar.gz is unpacked into a
    temporary folder that is deleted afterwards (load what you need inside the block). Refuses, as a located
    ConfigError, anything that does not verify."""
    bundle = Path(bundle)
    if not bundle.is_dir() and not is_archive(bundle):
        raise ConfigError(Problem("not a bundle: pass its directory (RUN/release/<name>-<version>) or its .tar.gz",
                                  file=bundle))
    refuse_unless_verified(bundle, purpose)
    if bundle.is_dir():
        yield bundle
        return
    with tempfile.TemporaryDirectory(prefix="distill-bundle-") as scratch:
        try:
            with tarfile.open(bundle, "r:gz") as tar:
                tar.extractall(scratch, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:  # changed since verified, or a full disk
            raise ConfigError(Problem(f"cannot unpack the archive ({type(exc).__name__}: {exc})", file=bundle,
                                      hint=f"check the free space under {tempfile.gettempdir()} and download it again")) from None
        unpacked = list(Path(scratch).iterdir())
        if len(unpacked) != 1 or not unpacked[0].is_dir():
            raise ConfigError(Problem(f"refusing to {purpose}: the archive did not unpack into one folder", file=bundle))
        refuse_unless_verified(unpacked[0], purpose, shown_as=bundle)
        yield unpacked[0]


def refuse_unless_verified(bundle: Path, purpose: str, *, shown_as: Path | None = None) -> None:
    report = verify(bundle)
    if not report.ok:
        shown = shown_as or bundle
        raise ConfigError(*[Problem(f"refusing to {purpose}: {p.replace(str(bundle), str(shown))}", file=shown)
                            for p in report.problems])
