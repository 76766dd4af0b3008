"""Render attacks: each ends within its time limit in a located error naming the template, in
`validate`, `preview` and the renderer `generate` uses; legitimate templates still render."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from conftest import run_distill
from distill.errors import TemplateError
from distill.prompts import PromptRenderer
from distill.sandbox import RENDER_TIME_LIMIT_S
from distill.spec import load_spec
from test_spec import MINIMAL, problems_of, write_spec

ATTACKS = {
    "huge range": ("{{ range(10**30)|list }}", "range() of more than 1,000,000 items would go over the budget"),
    "huge repetition": ("{{ 'a' * 10**10 }}", "repetition would build 10,000,000,000 items, more than the limit of 1,000,000"),
    "folded power": ("{{ 10 ** (10 ** 10) }}", "a power of more than 4096 bits"),
    "recursive macro": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed too deeply (a macro calling itself?)"),
    "nested loops": ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
                     # ten inner loops exhaust the budget; on a very busy machine the clock may stop them first
                     ("range() of 99,999 items would go over the budget of 1,000,000 range items per render",
                      "took longer than the limit of 2 s")),
    "doubling": ("{% set a = 'xxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a }}", "a ~ concatenation would build 1,310,720 items"),
    "center filter": ("{{ 'a'|center(1000000000) }}", "the center filter would build 1,000,000,000 items"),
    "printf width": ("{{ '%999999999d' % 1 }}", "a format width would build 999,999,999 items"),
    "format width": ("{{ '{:>{}}'.format(1, 999999999) }}", "a format width would build 999,999,999 items"),
    "float overflow": ("{{ 2.0 ** 100000 }}", "made a number too large to represent"),
    "deep nesting": ("{{" + "(" * 600 + "1" + ")" * 600 + "}}", "is nested too deeply while compiling"),
}


@pytest.mark.parametrize("name", ATTACKS)
def test_render_attacks_end_in_a_located_error_within_the_limit(tmp_path: Path, name: str) -> None:
    template, message = ATTACKS[name]
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', repr(template).replace("\\\\", "\\")))
    started = time.process_time()  # CPU seconds: a busy machine stretches wall time, not the work done
    problems = problems_of(spec)
    assert time.process_time() - started < 2 * RENDER_TIME_LIMIT_S + 5  # one render at most, not one per sample record
    assert len(problems) == 1
    messages = message if isinstance(message, tuple) else (message,)
    assert problems[0].startswith(f"{spec}:8:11 steps[0].user: inline template ") and any(m in problems[0] for m in messages), problems[0]


def test_a_pure_loop_is_stopped_by_the_time_limit(tmp_path: Path) -> None:
    loop = "{% for a in rows %}{% for b in rows %}{% for c in rows %}{% endfor %}{% endfor %}{% endfor %}"
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', f'"{{% set rows = range(3000)|list %}}{loop}"'))
    started = _children_cpu()
    result = run_distill("validate", spec, timeout=300)  # a CLI process: the timer is its own (pytest-timeout owns ours)
    assert _children_cpu() - started < RENDER_TIME_LIMIT_S + 10  # the render's limit plus starting Python
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{spec}:8:11 steps[0].user: inline template took longer than the limit of {RENDER_TIME_LIMIT_S:g} s while rendering" in result.stderr


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_preview_cli_reports_the_attack_with_exit_code_2(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', '"{{ \'a\' * 10**10 }}"'))
    result = run_distill("preview", spec, "-n", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {spec}:8:11 steps[0].user: inline template repetition would build")


def test_a_template_file_attack_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "user.j2").write_text("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}\n")
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', "user.j2") + "templates_dir: t\n")
    renderer = PromptRenderer(load_spec(spec))  # the renderer `generate` uses
    with pytest.raises(TemplateError) as caught:
        renderer.render_step(0, 0, renderer.sampler.sample(0), {})
    assert str(caught.value).startswith(f"{spec}:8:11 steps[0].user: template 'user.j2' recursed too deeply")


def test_ordinary_templates_keep_working(tmp_path: Path) -> None:
    template = ("{% set n = namespace(s='') %}{% for i in range(3) %}{% set n.s = n.s ~ i %}{% endfor %}"
                "{{ n.s }} {{ '%05.1f' % 3.14159 }} {{ '{:>6}'.format(noun) }} {{ 'ab' * 3 }} {{ 2 ** 10 }} "
                "{{ range(4)|length }} {{ [1, 2] + [3] }} {{ noun|center(9) }}|")
    spec = write_spec(tmp_path, MINIMAL.replace('"Write about a {{ noun }}."', repr(template)))
    renderer = PromptRenderer(load_spec(spec))
    variables = renderer.sampler.sample(0)
    [message] = renderer.render_step(0, 0, variables, {}).messages
    noun = variables["noun"]
    assert message.content == f"012 003.1 {noun:>6} ababab 1024 4 [1, 2, 3] {noun:^9}|"
