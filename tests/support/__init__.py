"""Cached foreign environments for the tests: an emulated arm64 Pi Python, a tflite-runtime venv.

Each builder is a module runnable as a script (`python -m tests.support.arm64 build`,
`python -m tests.support.tflite_env build`) and a function the fixtures call. Builders raise
`EnvironmentUnavailable` when the host lacks a tool (the tests skip) and
`EnvironmentBuildError` when a download or build fails (the tests fail).
"""

from tests.support._cache import EnvironmentBuildError, EnvironmentUnavailable, cache_root

__all__ = ["EnvironmentBuildError", "EnvironmentUnavailable", "cache_root"]
