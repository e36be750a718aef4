"""Time and size bounds on rendering a template, so one bad template cannot hang or exhaust a run.

Jinja2's sandbox stops a template from reaching Python internals, but not from burning CPU or
memory: `{% for a in range(100000) %}{% for b in range(100000) %}` runs for hours and
`{{ 'x' * 10**9 }}` allocates gigabytes (even at compile time, where Jinja folds constants).
This environment adds the bounds the sandbox documentation leaves to the application
(https://jinja.palletsprojects.com/en/stable/sandbox/#operator-intercepting):

- every loop, call, filter and attribute read checks a deadline (MAX_RENDER_SECONDS);
- operators and filters that can multiply a value's size (`*`, `**`, `+`, `%`, `center`,
  `join`, `replace`, `indent`, `format`) refuse a result larger than MAX_OUTPUT_CHARS before
  computing it; intercepted operators are also never folded at compile time;
- the output is produced with `generate()` and stops once it passes MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment

# A cold-outreach email is a few kilobytes; a megabyte is far past any real one.
MAX_OUTPUT_CHARS = 1_000_000
# A real template renders in milliseconds; a second per part leaves room for a loaded machine.
MAX_RENDER_SECONDS = 1.0
# `**` results and `*` products of integers: far beyond any number an email prints.
_MAX_INT_BITS = 4096


class TemplateLimitError(Exception):
    """A render went past MAX_RENDER_SECONDS or MAX_OUTPUT_CHARS (the caller names the template)."""


class _Budget:
    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.deadline = clock() + seconds

    def check(self) -> None:
        if self.clock() > self.deadline:
            raise TemplateLimitError(f"rendering took longer than {self.seconds:g} s (loops too large?)")


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _tick() -> None:
    """Check the deadline of the render in progress (none at compile time)."""
    budget = _BUDGET.get()
    if budget is not None:
        budget.check()


def _too_big(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise TemplateLimitError(f"{what} would be {size:,} characters, more than the limit of {MAX_OUTPUT_CHARS:,}")


def _check_value(value: Any) -> Any:
    if isinstance(value, (str, list, tuple)):
        _too_big(len(value), "a value")
    return value


# --- operators -------------------------------------------------------------------------------

_PERCENT_SPEC = re.compile(r"%[^a-zA-Z%]*")  # printf-style: flags, width, precision
_BRACE_FIELD = re.compile(r"\{[^{}]*\{|\{[^{}]*\}")  # str.format fields, or one with a nested field


def _check_format(fmt: str, args: Any) -> None:
    """`'%1000000000s' % x` and `'{:>1000000000}'.format(x)` pad to the width (or precision) asked for."""
    specs = _PERCENT_SPEC.findall(fmt)
    for field in _BRACE_FIELD.findall(fmt):
        if field.count("{") > 1:
            raise TemplateLimitError("nested fields in format strings are not allowed")
        specs.append(field.partition(":")[2])
    for spec in specs:
        if "*" in spec:
            raise TemplateLimitError("'*' widths in format strings are not allowed")
        for number in re.findall(r"\d+", spec):
            _too_big(int(number), "a formatted field")
    values = args if isinstance(args, (tuple, list)) else [args]
    # An int's decimal length from its bit length: str() of a huge int would itself be the cost.
    _too_big(len(fmt) + sum(v.bit_length() // 3 + 2 if isinstance(v, int) else len(str(v)) for v in values),
             "a formatted string")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                _too_big(len(seq) * max(count, 0), "a repeated value")
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
            raise TemplateLimitError("a product of integers is too large")
    elif operator == "**":
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1:
            if right * math.log2(abs(left)) > _MAX_INT_BITS:
                raise TemplateLimitError("a power is too large")
    elif operator == "+":
        if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            _too_big(len(left) + len(right), "a concatenated value")
    elif operator == "%" and isinstance(left, str):
        _check_format(left, right)


# --- filters and methods that can multiply a size --------------------------------------------

def _check_join(value: Any, sep: str = "", attribute: Any = None) -> list:
    items = list(value)
    _too_big(sum(len(str(item)) for item in items) + len(str(sep)) * len(items), "a joined value")
    return items


def _check_widths(*args: Any, **kwargs: Any) -> None:
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool):
            _too_big(arg, "a padded value")


def _check_replace(s: Any, old: Any, new: Any, *args: Any) -> None:
    s, old, new = str(s), str(old), str(new)
    _too_big(len(s) + (s.count(old) if old else len(s) + 1) * len(new), "a replaced value")


def _check_indent(s: Any, width: Any = 4, *args: Any, **kwargs: Any) -> None:
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _too_big(len(str(s)) + (str(s).count("\n") + 1) * pad, "an indented value")


_PRE_CHECKS: dict[str, Callable[..., Any]] = {
    "center": lambda value, width=80: _check_widths(width),
    "indent": _check_indent,
    "replace": _check_replace,
    "format": lambda value, *args, **kwargs: _check_format(str(value), args or tuple(kwargs.values())),
}

_METHOD_CHECKS: dict[str, Callable[..., Any]] = {
    "center": _check_widths, "ljust": _check_widths, "rjust": _check_widths, "zfill": _check_widths,
    "expandtabs": _check_widths,
}


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter, with the deadline checked and its result's size bounded."""
    offset = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    check = _PRE_CHECKS.get(name)

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if check is not None:
            check(*args[offset:], **kwargs)
        if name == "join":
            items = _check_join(*args[offset:], **kwargs)
            args = (*args[:offset], items, *args[offset + 1:])
        return _check_value(func(*args, **kwargs))

    return bounded


@pass_context
def _ticking(context: Any, iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` iterates through this, so nested loops meet the deadline."""
    for item in iterable:
        _tick()
        yield item


class _TickingCodeGenerator(CodeGenerator):
    """Wraps the iterable of every `{% for %}` in the `_ticking` filter before compiling."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        for loop in list(node.find_all(nodes.For)):
            loop.iter = nodes.Filter(loop.iter, "_ea_ticking", [], [], None, None, lineno=loop.lineno)
        super().visit_Template(node, frame)


class BoundedSandboxedEnvironment(SandboxedEnvironment):
    """A sandbox whose templates render within MAX_RENDER_SECONDS and MAX_OUTPUT_CHARS."""

    code_generator_class = _TickingCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters["_ea_ticking"] = _ticking
        # lipsum(n=10**6) builds a million paragraphs; no outreach email needs filler text.
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        _check_binop(operator, left, right)
        return _check_value(super().call_binop(context, operator, left, right))

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        name = getattr(obj, "__name__", "")
        if isinstance(getattr(obj, "__self__", None), str):
            if name in _METHOD_CHECKS:
                _METHOD_CHECKS[name](*args, **kwargs)
            elif name == "join" and args:
                args = (_check_join(args[0], obj.__self__), *args[1:])
            elif name == "replace" and len(args) >= 2:
                _check_replace(obj.__self__, *args[:2])
        return _check_value(super().call(context, obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` reaches templates only through this (Jinja wraps it at attribute access)."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        @functools.wraps(wrapped)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(fmt, (*args, *kwargs.values()))
            return wrapped(*args, **kwargs)

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return _check_value(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return _check_value(super().getitem(obj, argument))


def render_bounded(template: Any, context: dict[str, Any], *, clock: Callable[[], float] = time.monotonic) -> str:
    """Render within MAX_RENDER_SECONDS and MAX_OUTPUT_CHARS.

    Raises:
        TemplateLimitError: saying which bound was passed.
    """
    token = _BUDGET.set(_Budget(clock, MAX_RENDER_SECONDS))
    try:
        parts, size = [], 0
        for chunk in template.generate(context):
            size += len(chunk)
            _too_big(size, "the output")
            _tick()
            parts.append(chunk)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)
