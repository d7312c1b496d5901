"""What a free-form value (host metadata) may hold: exactly what every layer after the model can carry.

A value the model accepts is stored as JSON, rendered with orjson into the
assignment and its version, listed by the API, and read by Envoy as a
`google.protobuf.Struct`, whose numbers are doubles. Anything one of those
cannot carry exactly is refused here, naming where it is:

- integers beyond 2**53: a Struct would round them (and orjson refuses them past 64 bits);
- non-finite numbers: JSON has no Infinity or NaN (Python's json reads `1e400` as inf);
- strings that are not valid Unicode text: a lone surrogate (`"\\ud800"`) has no UTF-8;
- nesting deeper than MAX_DEPTH: far past any use by subset selectors, and bounded so
  that no renderer or parser along the way meets its recursion limit;
- object keys that are not strings, and types that JSON does not have (a YAML seed
  can hold dates, sets or binary).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .errors import Problem

MAX_SAFE_INTEGER = 2**53
MAX_DEPTH = 32
JSON_KINDS = "a string, a number, true/false, null, an array or an object"


def is_text(value: str) -> bool:
    """Whether `value` can be written as UTF-8: it holds no lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: str) -> str:
    """`value` with any lone surrogate written as an escape (`\\ud800`), so that a message can carry it."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def text_problem(value: str, where: str) -> Problem | None:
    if is_text(value):
        return None
    return Problem(where, shown(value), "must be valid Unicode text (no lone surrogate such as \\ud800)")


Check = Callable[[Any, str], "Problem | None"]


def walk_problem(value: Any, where: str, check: Check, max_depth: int | None = None, depth: int = 0) -> Problem | None:
    """The first problem `check` finds in a scalar or key of JSON-like `value` (its path named), or None."""
    if not isinstance(value, (dict, list)):
        return check(value, where)
    if max_depth is not None and depth >= max_depth:
        return Problem(where, "...", f"nests arrays or objects more than {max_depth} deep")
    if isinstance(value, list):
        items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
    else:
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                return Problem(f"{where}.{key}", key, "must be a string key (JSON object keys are strings)")
            problem = check(key, f"{where} (a key)")
            if problem is not None:
                return problem
            items.append((f"{where}.{key}", item))
    for inner, item in items:
        problem = walk_problem(item, inner, check, max_depth, depth + 1)
        if problem is not None:
            return problem
    return None


def _storable(value: Any, where: str) -> Problem | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return None
        return Problem(
            where,
            _short_integer(value),
            f"must be an integer within +-{MAX_SAFE_INTEGER} (2**53): Envoy reads numbers as doubles",
        )
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return Problem(where, str(value), "must be a finite number (JSON has no Infinity or NaN; 1e400 is too large)")
    if isinstance(value, str):
        return text_problem(value, where)
    return Problem(where, str(value), f"must be JSON: {JSON_KINDS}, not a {type(value).__name__}")


def value_problem(value: Any, where: str) -> Problem | None:
    """The first part of `value` that cannot be stored, rendered and sent as it is (see above), or None."""
    return walk_problem(value, where, _storable, MAX_DEPTH)


def lone_surrogate_problem(value: Any, where: str) -> Problem | None:
    """The first string (or key) of `value` that holds a lone surrogate, or None."""
    return walk_problem(value, where, lambda scalar, at: text_problem(scalar, at) if isinstance(scalar, str) else None)


def _short_integer(value: int) -> int | str:
    """The integer itself when it is short enough to read, else how long it is."""
    if value.bit_length() <= 128:
        return value
    return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
