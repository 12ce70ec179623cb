"""Errors of the tune stage."""

from __future__ import annotations

from edge_runtime.errors import EdgeshipError


class TuneError(EdgeshipError):
    """An error of `edgeship tune` (a bad --space file, bad options, a storage that fails)."""


class NoFeasibleTrialError(TuneError):
    """The search ended and no trial met every budget (exit 1; the closest ones listed)."""

    exit_code = 1


class DeviceFailuresError(TuneError):
    """The device failed on several trials in a row: the search stopped (exit 1)."""

    exit_code = 1
