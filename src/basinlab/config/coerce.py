"""One coercion of YAML values into each config field's declared type, and the one-line messages for values that
have none."""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from typing import Any

from basinlab.errors import BasinlabError

#: at most this many characters of a value in an error message
SHOWN_CHARS = 80


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    """Set ``values`` (a nested mapping) on the dataclass ``obj``; unknown keys are errors naming the valid ones."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise BasinlabError(
                f"unknown config key '{where}{key}'; valid keys here: {', '.join(sorted(names))}"
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise BasinlabError(f"config key '{where}{key}' is a section: give a mapping, not {_show(value)}")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


def _normalise(obj: Any, where: str) -> None:
    """Give every field of the dataclass ``obj`` its declared type (in place); one line for a value that has none."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _normalise(value, f"{where}{f.name}.")
        else:
            setattr(obj, f.name, _typed(value, hints[f.name], f"{where}{f.name}"))


def _bad(name: str, what: str, value: Any) -> BasinlabError:
    key = re.sub(r"\[\d+\]$", "", name)
    return BasinlabError(
        f"config key '{name}' must be {what}, got {_show(value)}; fix it in the config or with {key}=..."
    )


def _typed(value: Any, hint: Any, name: str) -> Any:
    """``value`` as type ``hint``. YAML 1.1 reads ``1e-3`` as a string: numbers in strings become numbers here (the
    one place that coerces); ints become floats where a float is due; anything else of the wrong type is an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if value is None and len(kinds) < len(args):
            return None
        if len(kinds) == 1:
            return _typed(value, kinds[0], name)
        for kind in kinds:  # a union of shapes (sweep.sizes): the member matching the value's shape
            shape = typing.get_origin(kind) or kind
            if isinstance(value, shape) or (shape is list and isinstance(value, tuple)):
                return _typed(value, kind, name)
        if list[int] in kinds and isinstance(value, int) and not isinstance(value, bool):
            return [value]
        raise _bad(name, " or ".join(_kind_name(k) for k in kinds), value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _bad(name, f"a list ({_kind_name(hint)})", value)
        return [_typed(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise _bad(name, "true or false", value)
        return value
    if hint in (int, float):
        return _number(value, hint, name)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # a directory or device named by a number
        if not isinstance(value, str):
            raise _bad(name, "a string", value)
        return value
    if hint is dict and not isinstance(value, dict):
        raise _bad(name, "a mapping", value)
    return value


#: numbers written as text: plain ASCII decimals (no ``0x10``, ``010``, ``1_000`` or non-ASCII digits)
_INT_TEXT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:inf|nan)", re.IGNORECASE)


def _number(value: Any, kind: type, name: str) -> int | float:
    what = "an integer" if kind is int else "a finite number"
    if isinstance(value, str):
        if (_INT_TEXT if kind is int else _FLOAT_TEXT).fullmatch(value.strip()) is None:
            raise _bad(name, f"{what} (plain decimal digits)", value)
        try:
            value = int(value.strip()) if kind is int else float(value.strip())
        except ValueError:
            raise _bad(name, what, value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
        raise _bad(name, what, value)
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise _bad(name, what, value)
    return value


def _kind_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"list of {_kind_name(typing.get_args(hint)[0])}s"
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "mapping"}.get(hint, str(hint))


def _show(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_CHARS` characters, without expanding deep or shared structure."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, SHOWN_CHARS, SHOWN_CHARS
    text = short.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
