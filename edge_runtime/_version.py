"""edgeship's version: the installed distribution's, else this source tree's (a Pi's bundle).

A device runs `python -m edge_runtime` from the bundle's copy of the package, where the
`edgeship` distribution is not installed: `__version__` is the answer there, and a test keeps it
equal to `[project] version` in pyproject.toml.
"""

from __future__ import annotations

from importlib import metadata

__version__ = "0.1.0"
DISTRIBUTION = "edgeship"


def version() -> str:
    """The version of edgeship: package metadata when installed, else `__version__`."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return __version__
