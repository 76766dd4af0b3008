"""The Jinja sandbox that customer templates compile and render in, bounded in time, size and depth.

Jinja's immutable sandbox already stops templates from reaching Python internals. It does not stop a
template from spending unbounded time or memory: `'a' * 10**10`, `10 ** (10 ** 10)` (which Jinja would
constant-fold while *compiling*), a recursive macro, nested loops, or a string doubled by
`{% set s = s ~ s %}` forty times. So every operation that can grow a value checks the size it is about
to build before building it, `range()` draws from a per-render budget, and compiling and rendering run
under a time limit: checked at every call, operator, attribute and output chunk, and, in the main
thread, also enforced by a `SIGALRM` timer that interrupts pure-Python loops with no hook in them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.loaders import split_template_path
from jinja2.sandbox import ImmutableSandboxedEnvironment

from distill.located_yaml import read_text_file

RENDER_TIME_LIMIT_S = 2.0  # per compile and per render; real prompt templates take well under a millisecond
MAX_TEXT_CHARS = 1_000_000  # the longest string, list or output any one operation may build
MAX_RANGE_ITEMS = 1_000_000  # range() items per render, all loops together
MAX_NUMBER_BITS = 4096  # the largest integer `**` and `*` may produce
MAX_TEMPLATE_BYTES = 1_000_000


class RenderLimit(Exception):
    """A template went over one of the sandbox's bounds (time, size, range budget)."""


class _Budget(threading.local):
    deadline: float = float("inf")
    range_items: int = MAX_RANGE_ITEMS


_budget = _Budget()


def check_time() -> None:
    if time.monotonic() > _budget.deadline:
        raise RenderLimit(f"took longer than the limit of {RENDER_TIME_LIMIT_S:g} s")


def _check_size(size: int, what: str) -> None:
    if size > MAX_TEXT_CHARS:
        raise RenderLimit(f"{what} would build {size:,} items, more than the limit of {MAX_TEXT_CHARS:,}")


def _alarm(signum: int, frame: Any) -> None:
    raise RenderLimit(f"took longer than the limit of {RENDER_TIME_LIMIT_S:g} s")


@contextlib.contextmanager
def time_limit(seconds: float = RENDER_TIME_LIMIT_S) -> Iterator[None]:
    """Bound one compile or render: a deadline the hooks check, a fresh range() budget and, in the
    main thread when nobody else owns SIGALRM, a timer that interrupts hook-free loops."""
    previous = (_budget.deadline, _budget.range_items)
    _budget.deadline, _budget.range_items = time.monotonic() + seconds, MAX_RANGE_ITEMS
    use_alarm = (threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")
                 and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
                 and previous[0] == float("inf"))
    if use_alarm:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds + 0.25)  # the hooks usually fire first, with a cleaner stack
    try:
        yield
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        _budget.deadline, _budget.range_items = previous


class _BoundedRange:
    """`range()` in templates: draws its length from the render's budget and checks the time per item."""

    def __init__(self, *args: int):
        self.numbers = range(*args)  # Python's range is lazy: a huge one costs nothing until iterated
        try:
            size = len(self.numbers)
        except OverflowError:  # more items than fit in a machine word
            size = MAX_RANGE_ITEMS + 1
        if size > _budget.range_items:
            count = f"{size:,}" if size <= MAX_RANGE_ITEMS else f"more than {MAX_RANGE_ITEMS:,}"
            raise RenderLimit(f"range() of {count} items would go over the budget of {MAX_RANGE_ITEMS:,} range items per render")
        _budget.range_items -= size

    def __iter__(self) -> Iterator[int]:
        for number in self.numbers:
            check_time()
            yield number

    def __len__(self) -> int:
        return len(self.numbers)

    def __getitem__(self, index: Any) -> Any:
        return self.numbers[index]

    def __contains__(self, value: Any) -> bool:
        return value in self.numbers

    def __reversed__(self) -> Iterator[int]:
        return iter(reversed(list(iter(self))))

    def __repr__(self) -> str:
        return repr(self.numbers)


def _number_bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _check_binop(operator: str, left: Any, right: Any) -> None:
    sized = (str, list, tuple, bytes)
    if operator == "*":
        if isinstance(left, sized) and isinstance(right, int) or isinstance(right, sized) and isinstance(left, int):
            sequence, times = (left, right) if isinstance(left, sized) else (right, left)
            _check_size(len(sequence) * max(times, 0), "repetition")
        elif _number_bits(left) + _number_bits(right) > MAX_NUMBER_BITS:
            raise RenderLimit(f"a product of more than {MAX_NUMBER_BITS} bits")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if _number_bits(left) * min(right, 10**9) > MAX_NUMBER_BITS:
            raise RenderLimit(f"a power of more than {MAX_NUMBER_BITS} bits")
    elif operator == "+" and isinstance(left, sized) and isinstance(right, sized):
        _check_size(len(left) + len(right), "concatenation")
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right)


_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)(?:\.(\*|\d+))?|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


def _check_format(pattern: str, arguments: Any) -> None:
    """printf- and format-style widths (`%999999999d`, `%*d`, `{:>999999999}`, `{:>{}}`) build huge
    strings: check every literal width, and every integer argument when a width comes from one."""
    values = arguments if isinstance(arguments, (tuple, list)) else (arguments,)
    for match in _WIDTH.finditer(pattern):
        for width in match.groups():
            if width and len(width) > 12:
                raise RenderLimit("a format width of more than 12 digits")
            if width and width.isdigit():
                _check_size(int(width), "a format width")
    if "*" in pattern or re.search(r"\{[^{}]*\{", pattern):
        numbers = [v for v in values if isinstance(v, int)]
        if isinstance(arguments, dict):
            numbers += [v for v in arguments.values() if isinstance(v, int)]
        _check_size(max(numbers, default=0), "a format width")


def _predict_call(obj: Any, args: tuple, kwargs: dict) -> None:
    """Refuse str methods whose result would be huge, before they allocate it."""
    owner = getattr(obj, "__self__", None)
    if owner is None:  # the sandbox wraps str.format; the bound method is kept as __wrapped__
        owner = getattr(getattr(obj, "__wrapped__", None), "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(obj, "__name__", "")
    numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if name in ("center", "ljust", "rjust", "zfill") and numbers:
        _check_size(max(numbers), f"str.{name}")
    elif name == "expandtabs":
        _check_size(len(owner) + owner.count("\t") * max(numbers or [8]), "str.expandtabs")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_size(len(owner) + (owner.count(args[0]) if args[0] else len(owner) + 1) * len(args[1]), "str.replace")
    elif name == "join" and args and isinstance(args[0], (list, tuple)):
        _check_size(sum(len(x) for x in args[0] if isinstance(x, str)) + len(owner) * len(args[0]), "str.join")
    elif name == "format":
        _check_format(owner, (*args, *kwargs.values()))
    elif name == "format_map" and args and isinstance(args[0], dict):
        _check_format(owner, args[0])


def _guarded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter that checks the size it would build first (`'a'|center(10**9)`)."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_time()
        values = [a for a in args if not isinstance(a, jinja2.runtime.Context)]
        first, rest = (values[0], values[1:]) if values else ("", [])
        numbers = [a for a in (*rest, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
        text = first if isinstance(first, str) else ""
        if name == "center" and numbers:
            _check_size(max(numbers), "the center filter")
        elif name == "indent" and numbers:
            _check_size(len(text) + (text.count("\n") + 1) * max(numbers), "the indent filter")
        elif name == "format":
            _check_format(text, tuple(rest))
        elif name == "replace" and len(rest) >= 2:
            old, new = str(rest[0]), str(rest[1])
            _check_size(len(text) + (text.count(old) if old else len(text) + 1) * len(new), "the replace filter")
        elif name == "join" and isinstance(first, (list, tuple)):
            separator = rest[0] if rest and isinstance(rest[0], str) else ""
            _check_size(sum(len(x) for x in first if isinstance(x, str)) + len(separator) * len(first), "the join filter")
        return original(*args, **kwargs)

    for marker in ("jinja_pass_arg",):  # keep how Jinja passes the context/environment to the filter
        if hasattr(original, marker):
            setattr(guarded, marker, getattr(original, marker))
    return guarded


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` compiles to a plain join with no hook; wrap it so its result size is checked too."""

    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.bounded_text(")
        super().visit_Concat(node, frame)
        self.write(")")


class ConfinedLoader(jinja2.BaseLoader):
    """Templates from the allowed folders only: no `..`, no symlink pointing elsewhere, regular UTF-8
    files of bounded size (read through the same checks as every other file a spec names)."""

    def __init__(self, folders: list[Path]):
        self.folders = [Path(f).resolve() for f in folders]

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)  # refuses `..`
        for folder in self.folders:
            candidate = folder.joinpath(*pieces)
            if not os.path.lexists(candidate):
                continue
            if not candidate.resolve().is_relative_to(folder):
                raise jinja2.TemplateNotFound(template)
            source = read_text_file(candidate, what="template", max_bytes=MAX_TEMPLATE_BYTES)
            return source, str(candidate), lambda: True
        raise jinja2.TemplateNotFound(template)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with every growing operation bounded (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})  # intercepted operators are also never constant-folded
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _BoundedRange
        self.globals.pop("lipsum", None)  # generates unbounded text; prompts have no use for it
        del self.filters["random"]  # prompts must depend only on (seed, record index)
        for name in ("center", "indent", "format", "replace", "join"):
            self.filters[name] = _guarded_filter(name, self.filters[name])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_time()
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        check_time()
        _predict_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_time()
        return super().getattr(obj, attribute)

    def bounded_text(self, text: Any) -> Any:
        check_time()
        _check_size(len(text), "a ~ concatenation")
        return text

    def render_bounded(self, template: jinja2.Template, context: dict[str, Any]) -> str:
        """Render with the output size checked chunk by chunk; call inside `time_limit`."""
        parts, size = [], 0
        for chunk in template.generate(context):
            size += len(chunk)
            _check_size(size, "the rendered prompt")
            check_time()
            parts.append(chunk)
        return "".join(parts)
