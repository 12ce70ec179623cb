"""Validation of the runtime's options (`num_threads`, `invert`, `batch_size`), done once at
load time (never per `predict` call), raising `OptionError`: an `EdgeRuntimeError`, so both
CLIs print one `error:` line and exit 2, and a `ValueError` for callers that caught that.
"""

from __future__ import annotations

import operator
from typing import Any, Literal, overload

from edge_runtime.errors import EdgeRuntimeError

INVERT_CHOICES = ("auto", "yes", "no")


class OptionError(EdgeRuntimeError, ValueError):
    """An option value the runtime cannot use (threads < 1, unknown invert mode, ...)."""


@overload
def positive_int(value: Any, name: str, *, optional: Literal[False] = False) -> int: ...
@overload
def positive_int(value: Any, name: str, *, optional: bool) -> int | None: ...
def positive_int(value: Any, name: str, *, optional: bool = False) -> int | None:
    """`value` as an int >= 1 (None passes when `optional`), else OptionError."""
    if value is None and optional:
        return None
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        hint = " (or None for the backend's default)" if optional else ""
        raise OptionError(f"{name} must be an integer >= 1{hint}. Received: {name}={value!r}")
    return number


def normalize_invert(invert: str | bool | None) -> str:
    """`invert` as "auto", "yes" or "no" (True/False/None/"true"/"0"... accepted)."""
    if invert is None:
        return "auto"
    if isinstance(invert, bool):
        return "yes" if invert else "no"
    value = str(invert).strip().lower()
    value = {"true": "yes", "false": "no", "1": "yes", "0": "no"}.get(value, value)
    if value not in INVERT_CHOICES:
        raise OptionError(
            f"invert must be one of {', '.join(INVERT_CHOICES)}. Received: invert={invert!r}"
        )
    return value
