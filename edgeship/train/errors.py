"""Errors of the train stage."""

from __future__ import annotations

from edge_runtime.errors import EdgeshipError


class TrainError(EdgeshipError):
    """An error of the train stage (bad options, a model that cannot be built or saved)."""


class DatasetError(TrainError):
    """A dataset that cannot be found, read or trusted."""
