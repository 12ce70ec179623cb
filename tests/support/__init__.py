"""Cached foreign environments for the tests: emulated Pi userlands, a tflite-runtime venv.

`pi` builds one Debian userland per deploy target (and 32-bit Trixie, to be refused), run
under Debian 13's qemu-user 10 (`qemu`); `arm64` is the bookworm-arm64 one with its wheels.
Each builder is a module runnable as a script (`python -m tests.support.pi build TARGET`,
`python -m tests.support.tflite_env build`) and a function the fixtures call. Builders raise
`EnvironmentUnavailable` when the host lacks a tool (the tests skip) and
`EnvironmentBuildError` when a download or build fails (the tests fail).
"""

from tests.support._cache import EnvironmentBuildError, EnvironmentUnavailable, cache_root

__all__ = ["EnvironmentBuildError", "EnvironmentUnavailable", "cache_root"]
