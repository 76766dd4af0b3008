"""Release: gate a finished run, write the bundle a customer downloads, and verify bundles.

sources.py reads what the stages wrote; gate.py decides whether it may ship; cards.py renders the model
and dataset cards; bundle.py writes the directory, manifest and tar.gz; verify.py checks a bundle.
"""

from distill.release.bundle import release, release_gate, write_release
from distill.release.sources import ReleaseInputs
from distill.release.verify import VerifyReport, verify

__all__ = ["release", "release_gate", "write_release", "ReleaseInputs", "verify", "VerifyReport"]
