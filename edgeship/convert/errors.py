"""Errors of the convert stage."""

from __future__ import annotations

from edge_runtime.errors import EdgeshipError


class ConvertError(EdgeshipError):
    """Bad input to the convert stage: a missing or unreadable model, bad options, bad data."""


class ModeFailedError(ConvertError):
    """One or more quantization modes failed to convert or missed `--min-agreement`.

    Exit code 1, as for a missed budget: the input was fine, the result was not.
    """

    exit_code = 1
