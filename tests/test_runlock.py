"""One writer per run: a second command fails at once naming the holder; shards share; kill -9 frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distill.errors import RunDirError
from distill.rundir import run_path
from distill.runlock import RunLockedError, run_lock

HOLD = """
import sys, time
from pathlib import Path
from distill.runlock import run_lock
shard = None if sys.argv[2] == "-" else tuple(int(x) for x in sys.argv[2].split("/"))
with run_lock(Path(sys.argv[1]), shard=shard):
    print("held", flush=True)
    time.sleep(60)
"""


def hold(run: Path, shard: str = "-") -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run), shard], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert process.stdout.readline().strip() == "held"
    return process


def test_second_writer_fails_fast_naming_the_holder(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(RunLockedError) as caught:
            with run_lock(tmp_path):
                pass
        message = str(caught.value)
        assert f"pid {holder.pid}" in message and "since" in message and "-c" in message
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # a killed holder's lock is gone with it
        pass


def test_shards_run_side_by_side_but_not_beside_the_whole_run_or_twice(tmp_path):
    first = hold(tmp_path, "0/2")
    try:
        with run_lock(tmp_path, shard=(1, 2)):  # another shard: fine
            pass
        with pytest.raises(RunLockedError, match=f"pid {first.pid}"):
            with run_lock(tmp_path, shard=(0, 2)):
                pass
        with pytest.raises(RunLockedError, match=f"pid {first.pid}"):
            with run_lock(tmp_path):
                pass
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):
            with run_lock(tmp_path, shard=(0, 3)):
                pass


@pytest.mark.parametrize("run_id", ["../../x", "/tmp/abs", "a/b", "..", ".", "", "x" * 101])
def test_run_id_must_be_one_plain_folder_name(tmp_path, run_id):
    with pytest.raises(RunDirError, match="--run-id"):
        run_path("spec", root=tmp_path, run_id=run_id)
    assert run_path("spec", root=tmp_path, run_id="run-2.b_1") == (tmp_path / "spec" / "run-2.b_1").resolve()
