"""The project's exception hierarchy.

Every error edgeship raises on purpose derives from `EdgeshipError`. It lives here, in the
package every other one may import (imports point one way, toward `edge_runtime`). The CLI
turns it into one line on stderr and `exit_code`.
"""

from __future__ import annotations


class EdgeshipError(Exception):
    """Base class of every error edgeship raises on purpose (bad input, missing data, ...)."""

    exit_code = 2


class EdgeRuntimeError(EdgeshipError):
    """An error of the on-device runtime."""


class ModelFileError(EdgeRuntimeError):
    """A model file that is missing, empty, truncated or not a TFLite flatbuffer."""


class ImageError(EdgeRuntimeError):
    """An image that cannot be read or is unusable (zero-size, too large, not an image)."""


class InputShapeError(EdgeRuntimeError):
    """An input array whose shape or dtype does not fit the model."""


class LabelsError(EdgeRuntimeError):
    """A labels file or list of class names that cannot be used with the model."""


class BackendError(EdgeRuntimeError):
    """No usable TFLite interpreter backend, or the requested one cannot run."""


class OutputError(EdgeshipError):
    """An output file or folder that cannot be written (read-only, disk full, not a folder).

    `path` is the place and `reason` the system's words (`No space left on device`), so a
    caller can word the error for its own option (`--results`, not `--out`).
    """

    def __init__(self, message: str, *, path: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
