"""The service's error class (its own module: the camera's modules and options both need it)."""

from __future__ import annotations

from edge_runtime.errors import EdgeRuntimeError


class ServeError(EdgeRuntimeError):
    """The service cannot start: bad option, unusable model or labels, port taken."""
