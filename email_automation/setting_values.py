"""How one setting's value is read: the rules of pydantic 2's lax mode, written out.

The settings were a pydantic model; config.py explains why they no longer are. These functions
accept and refuse exactly what that model did, so a `.env` that worked still works: the
conversions are pydantic's (https://docs.pydantic.dev/latest/concepts/conversion_table/), the
number syntax that of pydantic-core's `str_as_int` and `str_as_float`. Each parser takes what the
environment, `.env` or a keyword argument gave and returns the value, or raises ValueError.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .headers import forbidden_character


class SecretStr:
    """A password or key: `get_secret_value()` gives it; str(), repr() and f-strings never do."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


class Invalid(ValueError):
    """A value a setting refuses: the value as given, and why when that says more than the
    setting's "expected ..." text does (a check may raise it with any `value`: it is replaced)."""

    def __init__(self, value: Any = None, why: str | None = None) -> None:
        super().__init__(why or "invalid value")
        self.value, self.why = value, why


@dataclass(frozen=True)
class Rule:
    """One setting: its default and how a given value becomes the setting's value, in pydantic's order.

    `prepare` runs before the control-character check (it may strip what it would refuse), `parse`
    converts (the type), then the bounds, then `checks`, each of which returns the (possibly
    normalised) value or raises ValueError. Defaults go through the same steps.
    """

    default: Any
    parse: Callable[[Any], Any]
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_length: int | None = None
    prepare: Callable[[Any], Any] | None = None
    checks: Sequence[Callable[[Any], Any]] = ()

    def validate(self, value: Any) -> Any:
        """The setting's value from `value`.

        Raises:
            Invalid: naming the value that failed and, for a control character or a check's own
                Invalid, why.
        """
        if self.prepare is not None:
            value = self.prepare(value)
        problem = forbidden_character(value) if isinstance(value, str) else None
        if problem:  # settings end up in headers, paths and SMTP commands: no line break or NUL
            raise Invalid(value, f"has {problem}")
        try:
            parsed = self.parse(value)
        except (ValueError, TypeError, OverflowError) as err:
            raise Invalid(value) from err
        if not self._within_bounds(parsed):
            raise Invalid(value)
        for check in self.checks:
            try:
                parsed = check(parsed)
            except ValueError as err:  # shown with the value as given, as pydantic did
                raise Invalid(value, getattr(err, "why", None)) from err
        return parsed

    def _within_bounds(self, value: Any) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le)
                and (self.min_length is None or len(value) >= self.min_length))


def text(value: Any) -> str:
    """Text as given (no stripping); bytes are decoded as UTF-8, numbers refused, not converted."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return value.decode()
    raise ValueError("not text")


def secret(value: Any) -> SecretStr:
    return value if isinstance(value, SecretStr) else SecretStr(text(value))


def path(value: Any) -> Path:
    """A path from text (`""` is `.`, as Path("") is) or a Path."""
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise ValueError("not a path")


def optional_path(value: Any) -> Path | None:
    return None if value is None else path(value)


def blank_is_none(value: Any) -> Any:
    """An empty or all-blank text means "not set" for an optional path."""
    return None if isinstance(value, str) and not value.strip() else value


def choice(*choices: str) -> Callable[[Any], str]:
    """One of `choices`, exactly (a Literal)."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(f"not one of {choices}")

    return parse


_FALSE = frozenset({"0", "f", "n", "no", "off", "false"})
_TRUE = frozenset({"1", "t", "y", "on", "yes", "true"})


def boolean(value: Any) -> bool:
    """true/false, 1/0, yes/no, on/off, t/f, y/n in any (ASCII) case, not blank-padded; 0, 1, 0.0, 1.0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (str, bytes, bytearray)):
        word = text(value)
        word = word.lower() if word.isascii() else word
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError("not a boolean")
    number = whole_number(value)
    if number in (0, 1):
        return bool(number)
    raise ValueError("not a boolean")


# An integer as JSON writes it, which pydantic-core tries first (through jiter).
_JSON_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
# Rust's f64 syntax (https://doc.rust-lang.org/std/primitive.f64.html#impl-FromStr-for-f64):
# pydantic-core parses floats with it, and Python's float() reads each such text the same way.
_RUST_FLOAT = re.compile(r"[+-]?(?:inf|infinity|nan|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?)",
                         re.IGNORECASE | re.ASCII)


def whole_number(value: Any) -> int:
    """An int from `5`, ` 5 `, `+5`, `05`, `5.0`, `1_000` or an integral float; never `5.5`, `1e3` or `inf`."""
    if isinstance(value, int):  # True and False too: 1 and 0
        return int(value)
    if isinstance(value, (str, bytes, bytearray)):
        return _int_from_text(text(value))
    number = float(value)
    if not math.isfinite(number) or not number.is_integer() or abs(number) >= 2.0**63:
        raise ValueError("not a whole number")
    return int(number)


def _int_from_text(value: str) -> int:
    if _JSON_INT.fullmatch(value):
        return int(value)  # more than 4300 digits: ValueError, as pydantic refuses them
    cleaned = _clean_int_text(value)
    if cleaned is None or not _JSON_INT.fullmatch(cleaned):
        raise ValueError("not a whole number")
    return int(cleaned)


def _clean_int_text(value: str) -> str | None:
    """pydantic-core's `clean_int_str`: blanks, a `+`, leading zeros, a `.0` and inner `_` removed."""
    length = len(value)
    value = value.strip()
    if value.startswith("+"):
        if value[1:2] == "-":
            return None
        value = value[1:]
    sign = ""
    if value.startswith("-"):
        if value[1:2] in ("-", "+"):
            return None
        sign, value = "-", value[1:]
    value = _strip_leading_zeros(value)
    if value is None:
        return None
    point = value.find(".")
    if point >= 0 and value[point + 1:] and not value[point + 1:].strip("0"):
        value = value[:point]
    stripped = _strip_underscores(value)
    if stripped is not None:
        return sign + stripped
    return None if len(value) == length else sign + value


def _strip_leading_zeros(value: str) -> str | None:
    """`007` is `7` and `00.0` is `0.0`; None unless it starts with a digit or `-` (pydantic-core)."""
    if not value or value[0] not in "0123456789-":
        return None
    if value[0] != "0":
        return value
    for i, char in enumerate(value[1:], start=1):
        if char in "123456789-":
            return value[i:]
        if char == ".":
            return value[i - 1:]
        if char not in "0_":
            return None
    return value[-1]


def _strip_underscores(value: str) -> str | None:
    """`1_000` without its underscores; None when there are none, or at either end, or two in a row."""
    if "_" not in value or value.startswith("_") or value.endswith("_") or "__" in value:
        return None
    return value.replace("_", "")


def number(value: Any) -> float:
    """A finite float from `5`, ` 5.5 `, `.5`, `1e3`, `1_000` or a number; never `inf` or `nan`."""
    if isinstance(value, (str, bytes, bytearray)):
        result = _float_from_text(text(value))
    else:
        result = float(value)
    if not math.isfinite(result):
        raise ValueError("not a finite number")
    return result


def _float_from_text(value: str) -> float:
    if _RUST_FLOAT.fullmatch(value.strip()):
        return float(value)
    stripped = _strip_underscores(value)  # not stripped of blanks first, as in pydantic-core
    if stripped is not None and _RUST_FLOAT.fullmatch(stripped):
        return float(stripped)
    raise ValueError("not a number")
