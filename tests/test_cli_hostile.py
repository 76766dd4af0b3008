"""Every command and flag of `distill --help`, given hostile values: 0 tracebacks, 0 hangs, exit code 2 and a
message that names the flag or the file.

The commands and their flags are read from the typer app itself, so a new flag is covered the day it is
added: numbers below, above and far past their bounds (and NaN), paths that are devices or FIFOs, text that
is not UTF-8. Then the cases no table of flags can reach: URLs, servers that are not there, a spec whose
numbers overflow, a full disk. Cases run in this process through `distill.cli.main`, as the console
script does, each under a time limit; only the one that needs real non-UTF-8 bytes in argv runs a process.
(Corrupt run files of every kind are in tests/test_cli_bad_input.py, on a finished run.)
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest
import typer

from distill.cli import app
from distill.cli.params import MAX_RECORDS

REPO = Path(__file__).resolve().parents[1]
CASE_SECONDS = 20  # a case that takes longer is a hang (on a loaded 2-core machine)
FIFO = "<fifo>"
BINARY = "<binary file>"  # the first 4 KiB of the Python interpreter: not text, not JSON, not YAML


class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


def cli(*args: object, env: dict[str, str] | None = None, limit_s: float = CASE_SECONDS) -> tuple[int | str, str]:
    """Run `distill ARGS` in this process under the time limit: (exit code, stderr + stdout), with the exit
    code "traceback" when an exception escaped and "hang" when the time ran out."""
    from distill.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["distill", *map(str, args)]
    saved = {name: os.environ.get(name) for name in (env or {})}
    os.environ.update(env or {})
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code: int | str = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Hang:
        code = "hang"
    except BaseException:  # noqa: BLE001 - an escaped exception is exactly what this test looks for
        code = "traceback"
        err.write(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = argv
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, err.getvalue() + out.getvalue()


def assert_refused(code: int | str, output: str, *names: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    flat = " ".join(output.split()).lower()  # the usage box may wrap a message across lines
    assert any(name.lower() in flat for name in names), (names, output)


# --- every command and flag, from the app ---


def commands() -> list[tuple[tuple[str, ...], Any, tuple[tuple[tuple[str, ...], Any], ...]]]:
    """(command path, command, (group path, param) of the groups above it) for every command that runs: the
    leaves, and groups that run on their own (`distill review RUN`)."""
    found = []

    def walk(command: Any, path: tuple[str, ...], above: tuple) -> None:
        subcommands = getattr(command, "commands", None) or {}
        if path and (not subcommands or command.invoke_without_command):
            found.append((path, command, above))
        for name, sub in subcommands.items():
            walk(sub, (*path, name), (*above, *[(path, p) for p in command.params]))

    walk(typer.main.get_command(app), (), ())
    return found


def placeholder(param: Any) -> list[str]:
    """A harmless value for a required argument or option (the case under test is refused before it is used)."""
    kind = str(param.type_descriptor.annotation)
    value = "0" if "int" in kind else "no-such-path" if "Path" in kind else "x"
    return given(param, value)


def given(param: Any, value: str) -> list[str]:
    return [param.opts[0], value] if param.opts and param.opts[0].startswith("-") else [value]


def argv_for(path: tuple[str, ...], command: Any, above: tuple, flag: Any, value: str) -> list[str]:
    """`distill GROUP [its required values] SUB [its required values]`, with `flag` given `value` at its level."""
    levels: dict[tuple[str, ...], list[Any]] = {}
    for group_path, param in above:
        levels.setdefault(group_path, []).append(param)
    levels[path] = list(command.params)
    argv: list[str] = []
    for depth in range(1, len(path) + 1):
        argv.append(path[depth - 1])
        for param in levels.get(path[:depth], []):
            argv += given(param, value) if param is flag else placeholder(param) if param.required else []
    return argv


def is_numeric(param: Any) -> bool:
    return param.type_descriptor.annotation in (int, float, list[int], list[float])


def is_float(param: Any) -> bool:
    return param.type_descriptor.annotation in (float, list[float])


def hostile_values(param: Any) -> list[str]:
    kind = str(param.type_descriptor.annotation)
    if is_numeric(param):
        values = [str(param.max * 10 + 1 if is_float(param) else param.max + 1), "1" + "0" * 30, str(param.min - 1)]
        values += ["-1"] if param.min > 0 else []  # negative, where the bound is above 0 (ports, counts)
        return values + (["nan", "inf", "-inf"] if is_float(param) else [])
    if "Path" in kind:
        return ["/dev/zero", FIFO, "bad-\udcff-name", BINARY]
    if "str" in kind:
        return ["caf\udce9"]  # the byte 0xe9 alone (Latin-1 é): Python keeps it as a lone surrogate
    return []  # flags, choices (the parser names them), dates


def flag_cases() -> list[Any]:
    cases, covered = [], set()
    for path, command, above in commands():
        # A group's own flags are tried once, through its first command.
        group_params = [(group_path, p) for group_path, p in above if group_path not in covered]
        covered |= {path, *(group_path for group_path, _ in above)}
        for param in [*command.params, *(p for _, p in group_params)]:
            name = max(param.opts, key=len) if param.opts else param.name
            for value in hostile_values(param):
                shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                cases.append(pytest.param(path, command, above, param, value, id=f"{' '.join(path)} {name} {shown}"))
    return cases


def test_every_numeric_flag_declares_both_bounds():
    unbounded = [f"{' '.join(path)} {max(p.opts, key=len) if p.opts else p.name}" for path, command, above in commands()
                 for p in [*command.params, *(p for _, p in above)] if is_numeric(p) and (p.min is None or p.max is None)]
    assert unbounded == [], "give these flags min= and max=, so a negative, NaN or huge value is refused by name"
    for path, command, _ in commands():
        for p in command.params:
            if is_numeric(p):
                assert math.isfinite(p.min) and math.isfinite(p.max) and p.min <= p.max, (path, p.opts)


def test_the_table_holds_the_flags_that_broke():
    ids = {case.id for case in flag_cases()}
    for expected in ("serve --port -1", "serve --port 65536", "serve-model --port 0", "sample --max-new-tokens 8193",
                     "generate --prices /dev/zero", "review edit --text caf\\xe9"):
        assert expected in ids, expected
    assert len(ids) > 300


@pytest.fixture(scope="module")
def libraries_loaded() -> None:
    """The libraries commands import lazily, imported once up front: a first import of torch can take longer
    than a case's time limit on a loaded machine, and an import cut short by it breaks every later case."""
    import datasets  # noqa: F401
    import sympy  # noqa: F401
    import torch  # noqa: F401
    from transformers import LlamaForCausalLM  # noqa: F401


@pytest.mark.usefixtures("libraries_loaded")
@pytest.mark.parametrize("path, command, above, param, value", flag_cases())
def test_every_flag_refuses_hostile_values(tmp_path, path, command, above, param, value):
    if value == FIFO:
        value = str(tmp_path / "fifo")
        os.mkfifo(value)
    if value == BINARY:
        value = str(tmp_path / "binary.dat")
        Path(value).write_bytes(Path(sys.executable).resolve().read_bytes()[:4096])
    code, output = cli(*argv_for(path, command, above, param, value))
    if value.endswith("binary.dat"):
        # A file of the wrong kind: whichever check comes first refuses it (a placeholder argument may be
        # refused before it), cleanly. `verify` says FAIL with exit code 1.
        assert code in (1, 2) and "Traceback" not in output, output
        return
    shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert_refused(code, output, *param.opts, param.name, shown)


def test_non_utf8_bytes_in_a_real_argv_are_refused_by_name(tmp_path):
    """The bytes as a shell passes them: Python decodes argv with surrogateescape."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "distill", "review", str(tmp_path), "edit", "1", "--text", b"caf\xe9 au lait",
               "--reviewer", "ana"]
    result = subprocess.run(command, capture_output=True, timeout=120, env=env)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "Traceback" not in stderr and "--text" in stderr and "UTF-8" in stderr, stderr


# --- what a table of flags cannot reach ---


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once closed: nothing listens there


@pytest.mark.parametrize("args", [
    ("remote", "status"), ("remote", "events", "job_1"), ("remote", "download", "job_1", "-o", "OUT"),
    ("remote", "submit", str(REPO / "specs" / "tinystories-quickstart.yaml")),
])
def test_a_server_that_is_not_there_is_named(tmp_path, args):
    server = f"http://127.0.0.1:{closed_port()}"
    code, output = cli(*[str(tmp_path / "b.tar.gz") if a == "OUT" else a for a in args], "--server", server,
                       env={"DISTILL_TOKEN": "t"})
    assert_refused(code, output, f"cannot reach the distill server at {server}")


@pytest.mark.parametrize("url", ["bogus://x", "http://", "not a url", "ftp://host/x"])
def test_server_urls_that_are_no_server(url):
    code, output = cli("remote", "status", "--server", url, env={"DISTILL_TOKEN": "t"})
    assert_refused(code, output, "is not a server URL")


@pytest.mark.parametrize("args", [("serve", "--port", "8765"), ("admin", "tenant", "acme")])
@pytest.mark.parametrize("url, words", [
    ("bogus://x", "not a database URL"), ("mysql://user@host/db", "driver is not installed"),
    ("postgresql+psycopg://user:hunter2@127.0.0.1:{port}/db", "cannot connect to"),
])
def test_database_urls_are_checked_before_anything_starts(tmp_path, args, url, words):
    url = url.format(port=closed_port())
    group, *rest = args
    where = [group, "--data-dir", tmp_path, *rest] if group == "serve" else [group, "--data-dir", tmp_path, "--database-url", url, *rest]
    if group == "serve":
        where += ["--database-url", url]
    code, output = cli(*where)
    assert_refused(code, output, "--database-url")
    assert words in output and "hunter2" not in output, output


def write_spec(folder: Path, **changes: str) -> Path:
    """The offline quickstart spec (its word lists beside it), with top-level keys replaced."""
    shutil.copytree(REPO / "specs", folder, dirs_exist_ok=True)
    spec = folder / "tinystories-quickstart.yaml"
    lines = spec.read_text().splitlines()
    for key, value in changes.items():
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
        if not any(line.startswith(f"{key}:") for line in lines):
            lines.append(f"{key}: {value}")
    spec.write_text("\n".join(lines) + "\n")
    return spec


@pytest.mark.parametrize("command", ["validate", "plan", "generate", "run"])
@pytest.mark.parametrize("key, value", [("records", "100000000000000000000"), ("records", str(MAX_RECORDS + 1)),
                                        ("seed", "100000000000000000000"), ("records", ".nan")])
def test_spec_numbers_out_of_range(tmp_path, command, key, value):
    spec = write_spec(tmp_path / "spec", **{key: value})
    extra = ["--runs-dir", tmp_path / "runs"] if command in ("generate", "run") else []
    code, output = cli(command, spec, *extra)
    assert_refused(code, output, f"{key}:")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"", b"- just\n- a list\n", b"\xff\xfe binary", b"openai: [1, 2]\n"])
def test_a_price_table_of_the_wrong_shape(tmp_path, content):
    prices = tmp_path / "prices.yaml"
    prices.write_bytes(content)
    code, output = cli("plan", REPO / "specs" / "tinystories-quickstart.yaml", "--prices", prices)
    if content == b"":
        assert code == 0, output  # an empty table: every model unpriced
        return
    assert_refused(code, output, str(prices))


@pytest.mark.parametrize("variable", ["/dev/zero", FIFO])
def test_a_price_table_from_the_environment_that_is_a_device(tmp_path, variable):
    if variable == FIFO:
        variable = str(tmp_path / "fifo")
        os.mkfifo(variable)
    code, output = cli("plan", REPO / "specs" / "tinystories-quickstart.yaml", env={"DISTILL_PRICES": variable})
    assert_refused(code, output, variable)


def test_a_full_disk_while_generating_is_one_clean_line(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: SQLite's answer cache and every file write fail as they would."""
    spec = write_spec(tmp_path / "spec", records="400")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, hard))
    try:
        code, output = cli("generate", spec, "--runs-dir", tmp_path / "runs")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert_refused(code, output, "cache.sqlite", "File too large")
    assert "finished work is kept" in output
    code, output = cli("generate", spec, "--runs-dir", tmp_path / "runs")  # room again: it resumes and finishes
    assert code == 0, output


@pytest.mark.slow  # `distill run` loads the training stack: half a minute on a loaded machine
def test_a_full_disk_under_a_real_file_system(tmp_path):
    """A 256 KiB tmpfs that fills up during `distill run` (needs permission to mount; root in CI)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("needs permission to mount a tmpfs (root)")
    try:
        # `distill run` loads the training stack first: seconds on a quiet machine, more on a loaded one.
        code, output = cli("run", write_spec(tmp_path / "spec", records="400"), "--runs-dir", mount / "runs",
                           limit_s=120)
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    assert_refused(code, output, "cache.sqlite", "No space left", "disk is full")


def test_sample_tokens_are_bounded_by_a_stated_limit():
    code, output = cli("sample", "no-such-run", "--max-new-tokens", "99999999999")
    assert_refused(code, output, "--max-new-tokens")
    assert "8192" in output

