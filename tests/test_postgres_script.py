"""scripts/test-postgres.sh gives every checkout its own cluster folder and port."""

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test-postgres.sh"


def _where(checkout: Path) -> tuple[str, str]:
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, checkout / "scripts" / "test-postgres.sh")
    out = subprocess.run(["bash", str(checkout / "scripts" / "test-postgres.sh"), "where"],
                         capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
    folder, port = out.stdout.split()
    return folder, port


def test_two_checkouts_get_their_own_folder_and_port(tmp_path):
    first, second = _where(tmp_path / "a"), _where(tmp_path / "b")
    assert first[0] != second[0] and first[1] != second[1]
    assert 20000 <= int(first[1]) < 50000
    assert _where(tmp_path / "c" / "a") != first  # the same folder name elsewhere is another checkout
