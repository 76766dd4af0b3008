"""`distill validate` against hostile specs: YAML tricks, broken encodings, special files, paths that
leave the spec's folder, schema mistakes, and known Jinja sandbox escapes and denial-of-service payloads.

Each case runs the real CLI in its own process (forked from one that imported distill once) under a
memory limit (RLIMIT_AS) and a CPU-time limit (RLIMIT_CPU; a busy machine stretches wall time),
with an audit hook logging every file the process opens. Every case must exit non-zero with a clean
`error:` line (no traceback) naming a file in the case's folder, give a line number for YAML-level
errors, and open nothing outside that folder (a canary folder beside it holds the targets).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO

MEMORY_LIMIT = 1536 * 2**20  # bytes of address space per case
TIME_LIMIT_S = 20  # CPU seconds per case (RLIMIT_CPU); render attacks stop after ~2 s
CANARY = "canary-7f3a9c-do-not-read"

# One process imports distill once, then forks a child per case (at most four at a time): each child
# takes the memory limit, logs every file it opens with an audit hook, and runs `distill validate`;
# the parent kills a child that runs past the time limit. Forking saves ~0.5 s of imports per case.
SERVER = """
import json, os, resource, signal, sys, time, traceback
import distill.cli, distill.validate
from distill.cli import main

specs, memory, time_limit = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

def child(spec):
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (int(time_limit), int(time_limit) + 1))
    os.chdir(os.path.dirname(spec))
    for fd, suffix in ((1, ".out"), (2, ".err")):
        os.dup2(os.open(spec + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    log = open(spec + ".opened", "w")
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            log.write(os.fsdecode(args[0]) + "\\n")
            log.flush()
    sys.addaudithook(hook)
    sys.argv = ["distill", "validate", spec]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

pending, running, codes = list(enumerate(specs)), {}, {}
while pending or running:
    while pending and len(running) < 4:
        index, spec = pending.pop(0)
        pid = os.fork()
        if pid == 0:
            child(spec)
        running[pid] = (index, time.monotonic())
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        codes[running.pop(pid)[0]] = os.waitstatus_to_exitcode(status)
        continue
    for pid, (index, started) in list(running.items()):
        if time.monotonic() - started > 10 * time_limit:  # a child blocked without using CPU (a FIFO opened)
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.005)
print(json.dumps([codes[i] for i in range(len(specs))]))
"""

BASE = """\
name: fuzz
kind: text
records: 5
variables:
  noun: {type: choice, items: [cat, dog]}
steps:
  - name: text
    user: "Write about a {{ noun }}."
teacher: {provider: offline, model: m}
"""


@dataclass
class Case:
    name: str
    spec: bytes | str | None = None  # None: the spec path is made by `setup`
    files: dict[str, bytes | str] = field(default_factory=dict)  # more files in the case folder
    yaml_level: bool = False  # the error must carry a line number in the spec
    setup: str | None = None  # "fifo", "devzero", "dir", "missing", "fifo_words", "link_words", "fifo_template"


def user(template: str) -> str:
    """BASE with its user template replaced (as a YAML single-quoted string)."""
    return BASE.replace('"Write about a {{ noun }}."', "'" + template.replace("'", "''") + "'")


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


WORDS_FILE = "{type: choice, file: %s}"


def cases() -> list[Case]:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    yaml_cases = [
        Case("unclosed bracket", replace("records: 5", "records: [5"), yaml_level=True),
        Case("tab indentation", BASE.replace("  - name: text", "\t- name: text"), yaml_level=True),
        Case("duplicate key", BASE + "records: 6\n", yaml_level=True),
        Case("merge key", BASE + "base: &b {x: 1}\nother:\n  <<: *b\n", yaml_level=True),
        Case("billion laughs", laughs),
        Case("deep nesting", BASE + "description: " + "[" * 300 + "]" * 300 + "\n"),
        Case("python apply on a list", BASE.replace("steps:", "steps: !!python/object/apply:os.system"), yaml_level=True),
        Case("python object on a mapping", BASE.replace("teacher: {", "teacher: !!python/object:distill.spec.Teacher {"), yaml_level=True),
        Case("python name on a scalar", replace("records: 5", "records: !!python/name:os.system ''"), yaml_level=True),
        Case("int that is a word", replace("records: 5", 'records: !!int "forty-two"'), yaml_level=True),
        Case("timestamp that is not a date", replace("records: 5", 'records: !!timestamp "not-a-date"'), yaml_level=True),
        Case("5000-digit integer", replace("records: 5", "records: " + "9" * 5000), yaml_level=True),
        Case("float that is a word", replace("records: 5", "records: !!float nope"), yaml_level=True),
        Case("bool that is a word", replace("records: 5", "records: !!bool maybe"), yaml_level=True),
        Case("custom tag", replace("records: 5", "records: !include other.yaml"), yaml_level=True),
        Case("set tag on a mapping", BASE.replace("variables:", "variables: !!set"), yaml_level=True),
        Case("true and 1 keys", BASE.replace("variables:\n", "variables:\n  1: {type: range, min: 1, max: 2}\n  true: {type: range, min: 1, max: 2}\n"), yaml_level=True),
        Case("on as a key", BASE.replace("variables:\n", "variables:\n  on: {type: range, min: 1, max: 2}\n"), yaml_level=True),
        Case("float key", BASE.replace("variables:\n", "variables:\n  1.5: {type: range, min: 1, max: 2}\n"), yaml_level=True),
        Case("complex key", BASE + "? [a, b]\n: c\n", yaml_level=True),
        Case("undefined alias", replace("records: 5", "records: *nothing"), yaml_level=True),
        Case("two documents", BASE + "---\nname: other\n", yaml_level=True),
        Case("NUL byte", replace("records: 5", "records: 5\x00"), yaml_level=True),
        Case("empty file", "", yaml_level=True),
        Case("only a comment", "# nothing here\n", yaml_level=True),
        Case("top-level list", "- a\n- b\n", yaml_level=True),
        Case("top-level scalar", "hello\n", yaml_level=True),
        Case("over a megabyte", BASE + "description: '" + "x" * 1_100_000 + "'\n"),
    ]
    encoding_cases = [
        Case("latin-1 spec", BASE.replace("cat", "caf\xe9").encode("latin-1"), yaml_level=True),
        Case("utf-16 spec", BASE.encode("utf-16"), yaml_level=True),
        Case("encoded lone surrogate", BASE.encode().replace(b"cat", b"c\xed\xa0\x80t"), yaml_level=True),
        Case("overlong slash", BASE.encode().replace(b"cat", b"c\xc0\xaft"), yaml_level=True),
        Case("truncated sequence at the end", BASE.encode() + b"# \xe2\x82", yaml_level=True),
        Case("latin-1 template file", BASE.replace('"Write about a {{ noun }}."', "user.j2") + "templates_dir: t\n",
             {"t/user.j2": "Caf\xe9 {{ noun }}".encode("latin-1")}),
        Case("latin-1 word list", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "words.txt"), {"words.txt": b"caf\xe9\n"}),
        Case("invalid rows file", replace("{type: choice, items: [cat, dog]}", "{type: rows, file: rows.jsonl, column: w}"),
             {"rows.jsonl": b'{"w": "\xff"}\n'}),
        Case("latin-1 schema file", BASE.replace('    user: "Write about a {{ noun }}."\n',
             '    user: "Write about a {{ noun }}."\n    output: json\n    json_schema: schema.json\n'),
             {"schema.json": b'{"type": "object", "description": "caf\xe9"}'}),
    ]
    file_cases = [
        Case("spec is a fifo", setup="fifo"),
        Case("spec links to /dev/zero", setup="devzero"),
        Case("spec is a directory", setup="dir"),
        Case("spec is missing", setup="missing"),
        Case("word list is a fifo", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "words.txt"), setup="fifo_words"),
        Case("template is a fifo", BASE.replace('"Write about a {{ noun }}."', "user.j2") + "templates_dir: t\n", setup="fifo_template"),
        Case("word list links to /dev/urandom", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "words.txt"), setup="link_words"),
    ]
    path_cases = [
        Case("word list in the next folder", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "../outside/secret.txt")),
        Case("absolute word list", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "/etc/passwd")),
        Case("word list symlinked outside", replace("{type: choice, items: [cat, dog]}", WORDS_FILE % "words.txt"), setup="link_outside"),
        Case("rows file outside", replace("{type: choice, items: [cat, dog]}", "{type: rows, file: ../outside/secret.txt}")),
        Case("templates_dir outside", BASE.replace('"Write about a {{ noun }}."', "secret.j2") + "templates_dir: ../outside\n"),
        Case("template file path outside", BASE.replace('"Write about a {{ noun }}."', "../outside/secret.j2")),
        Case("include climbing out", user("{% include '../outside/secret.j2' %}")),
        Case("include absolute", user("{% include '/etc/passwd' %}")),
        Case("extends absolute", user("{% extends '/etc/hostname' %}")),
        Case("import climbing out", user("{% import '../../outside/secret.j2' as s %}{{ noun }}")),
        Case("schema file outside", BASE.replace('    user: "Write about a {{ noun }}."\n',
             '    user: "Write about a {{ noun }}."\n    output: json\n    json_schema: ../outside/schema.json\n')),
    ]
    schema_cases = [
        Case("negative records", replace("records: 5", "records: -1"), yaml_level=True),
        Case("records as text", replace("records: 5", "records: many"), yaml_level=True),
        Case("typo in a key", replace("records: 5", "recrods: 5"), yaml_level=True),
        Case("unknown kind", replace("kind: text", "kind: poem"), yaml_level=True),
        Case("no teacher", BASE.replace("teacher: {provider: offline, model: m}\n", ""), yaml_level=True),
        Case("bad name", replace("name: fuzz", "name: Fuzz Spec!"), yaml_level=True),
        Case("range upside down", replace("{type: choice, items: [cat, dog]}", "{type: range, min: 9, max: 1}"), yaml_level=True),
        Case("no steps", BASE.split("steps:")[0] + "steps: []\nteacher: {provider: offline, model: m}\n", yaml_level=True),
        Case("json step without schema", BASE.replace('    user: "Write about a {{ noun }}."\n',
             '    user: "Write about a {{ noun }}."\n    output: json\n'), yaml_level=True),
        Case("invalid inline schema", BASE.replace('    user: "Write about a {{ noun }}."\n',
             '    user: "Write about a {{ noun }}."\n    output: json\n    json_schema: {type: objekt}\n'), yaml_level=True),
        Case("unknown target", BASE + "student_target: nope\n", yaml_level=True),
    ]
    jinja_cases = [
        Case("class mro subclasses", user("{{ ''.__class__.__mro__[1].__subclasses__() }}")),
        Case("cycler globals", user("{{ cycler.__init__.__globals__.os.popen('id').read() }}")),
        Case("joiner globals", user("{{ joiner.__init__.__globals__ }}")),
        Case("namespace globals", user("{{ namespace.__init__.__globals__ }}")),
        Case("lipsum globals", user("{{ lipsum.__globals__['os'].popen('id').read() }}")),
        Case("self template internals", user("{{ self._TemplateReference__context }}")),
        Case("attr filter", user("{{ noun|attr('__class__')|attr('__base__') }}")),
        Case("format string attribute", user("{{ '{0.__class__.__base__}'.format(noun) }}")),
        Case("mutate a list", user("{% set l = [1] %}{{ l.append(2) }}")),
        Case("config and request", user("{{ config.items() }}{{ request.environ }}")),
        Case("syntax error", user("{% for x in %}")),
        Case("undefined variable", user("{{ nuon }}")),
        Case("huge range", user("{{ range(10**30)|list }}")),
        Case("huge repetition", user("{{ 'a' * 10**10 }}")),
        Case("huge list repetition", user("{{ [0] * 10**9 }}")),
        Case("folded power", user("{{ 10 ** (10 ** 10) }}")),
        Case("recursive macro", user("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")),
        Case("branching macro", user("{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(0) }}")),
        Case("nested ranges", user("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}")),
        Case("pure nested loop", user("{% set r = range(3000)|list %}{% for a in r %}{% for b in r %}{% for c in r %}"
                                      "{% endfor %}{% endfor %}{% endfor %}")),
        Case("doubling", user("{% set a = 'xxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a }}")),
        Case("center filter", user("{{ noun|center(1000000000) }}")),
        Case("indent filter", user("{{ (noun ~ '\n') * 1000 | indent(1000000) }}")),
        Case("ljust method", user("{{ noun.ljust(10**9) }}")),
        Case("printf width", user("{{ '%999999999d' % 1 }}")),
        Case("printf star width", user("{{ '%*d' % (999999999, 1) }}")),
        Case("format width", user("{{ '{:>999999999}'.format(1) }}")),
        Case("nested format width", user("{{ '{:>{}}'.format(1, 999999999) }}")),
        Case("replace blow-up", user("{% set a = 'a' * 100000 %}{{ a.replace('a', a) }}")),
        Case("float overflow", user("{{ 2.0 ** 100000 }}")),
        Case("deep parentheses", user("{{ " + "(" * 800 + "1" + ")" * 800 + " }}")),
    ]
    return yaml_cases + encoding_cases + file_cases + path_cases + schema_cases + jinja_cases


def _prepare(root: Path, index: int, case: Case) -> Path:
    folder = root / f"case{index:03d}"
    folder.mkdir()
    spec = folder / "spec.yaml"
    for name, content in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    if case.spec is not None:
        spec.write_bytes(case.spec if isinstance(case.spec, bytes) else case.spec.encode())
    if case.setup == "fifo":
        os.mkfifo(spec)
    elif case.setup == "devzero":
        spec.symlink_to("/dev/zero")
    elif case.setup == "dir":
        spec.mkdir()
    elif case.setup == "fifo_words":
        os.mkfifo(folder / "words.txt")
    elif case.setup == "link_words":
        (folder / "words.txt").symlink_to("/dev/urandom")
    elif case.setup == "link_outside":
        (folder / "words.txt").symlink_to(root / "outside" / "secret.txt")
    elif case.setup == "fifo_template":
        (folder / "t").mkdir()
        os.mkfifo(folder / "t" / "user.j2")
    return spec


def _run_all(specs: list[Path]) -> list[tuple[int, str, str, list[str]]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    server = subprocess.run([sys.executable, "-c", SERVER, json.dumps([str(s) for s in specs]), str(MEMORY_LIMIT),
                             str(TIME_LIMIT_S)], capture_output=True, text=True, env=env, timeout=600)
    assert server.returncode == 0, server.stderr
    results = []
    for spec, code in zip(specs, json.loads(server.stdout)):
        read = lambda suffix: Path(f"{spec}{suffix}").read_text(errors="replace") if Path(f"{spec}{suffix}").exists() else ""  # noqa: E731
        results.append((code, read(".out"), read(".err"), read(".opened").splitlines()))
    return results


@pytest.mark.slow
def test_validate_survives_hostile_specs(tmp_path: Path) -> None:
    all_cases = cases()
    assert len(all_cases) >= 60
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.txt", "secret.j2", "schema.json"):
        (outside / name).write_text(CANARY + "\n" if name != "schema.json" else '{"description": "%s"}' % CANARY)
    specs = [_prepare(tmp_path, i, case) for i, case in enumerate(all_cases)]
    results = _run_all(specs)
    failures = []
    for case, spec, (code, out, err, opened) in zip(all_cases, specs, results):
        problems = []
        if code == 0 or code < 0:
            problems.append(f"exit code {code}")
        if "Traceback" in err or "Traceback" in out:
            problems.append("a traceback")
        if not err.startswith("error: ") or str(spec.parent) not in err:
            problems.append("no error line naming a file in the case folder")
        if case.yaml_level and not re.search(re.escape(str(spec)) + r":\d+", err):
            problems.append("no line number in the spec")
        leaked = [p for p in opened if p.startswith(str(outside)) or p in ("/etc/passwd", "/etc/hostname", "/dev/zero", "/dev/urandom")]
        if leaked or CANARY in out + err:
            problems.append(f"read outside the spec folder: {leaked}")
        if problems:
            failures.append(f"{case.name}: {', '.join(problems)}\n    stderr: {err[-400:]!r}")
    assert not failures, f"{len(failures)} of {len(all_cases)} cases failed:\n" + "\n".join(failures)
