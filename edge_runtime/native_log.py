"""The native TFLite runtime's own stderr chatter, kept off the user's terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

_NATIVE_NOISE = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Drop the interpreter's native `INFO: Created ... XNNPACK delegate` line from stderr.

    The C++ runtime writes it straight to file descriptor 2, which would make an error
    report two lines. Everything else written to fd 2 meanwhile is passed on, in order.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines(True) if line.strip() not in _NATIVE_NOISE]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
