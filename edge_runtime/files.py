"""Atomic file writes (a reader sees the old or the new file, never half) and sha256 digests."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge_runtime.errors import OutputError

# errno values that mean "this place cannot take the output", whatever the block was doing.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_error(err: OSError, path: str | os.PathLike[str]) -> OutputError:
    """The `OutputError` for an `OSError` met while writing `path`."""
    reason = err.strerror or str(err)
    return OutputError(
        f"Cannot write {path}: {reason}. Choose another --out or free space. Received: path={path}",
        path=str(path),
        reason=reason,
    )


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder `path` (and its parents); raise `OutputError` if that is impossible."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise output_error(err, directory) from None
    if not directory.is_dir():
        raise output_error(OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)), directory)
    return directory


def check_output_dir(path: str | os.PathLike[str], *, keep: bool = True) -> Path:
    """Create the folder `path` and prove it takes a file (a probe, removed at once).

    Call it before long work whose results go there, so a read-only or full place fails
    in a second instead of after the work. With `keep=False` the folders it had to create
    are removed again (a check that leaves nothing behind). Raises `OutputError`.
    """
    directory = Path(path)
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    try:
        make_output_dir(directory)
        try:
            fd, probe = tempfile.mkstemp(prefix=".edgeship-probe.", dir=directory)
        except OSError as err:
            raise output_error(err, directory) from None
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        except OSError as err:
            raise output_error(err, directory) from None
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(probe)
    finally:
        if not keep:
            for made in created:  # deepest first
                with contextlib.suppress(OSError):
                    made.rmdir()
    return directory


def _is_output_failure(err: OSError, *paths: Path) -> bool:
    if err.errno in _OUTPUT_ERRNOS:
        return True
    return err.filename is not None and Path(err.filename) in paths


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary name keeps the suffix of `path` (Keras insists on `.keras`). On any
    exception, KeyboardInterrupt included, the temporary file is removed and `path` is
    left as it was. A place that cannot take the file (read-only, full, not a folder)
    raises `OutputError` instead of the `OSError`.
    """
    target = Path(path)
    make_output_dir(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
    except OSError as err:
        raise output_error(err, target) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; use the usual mode
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(err, OSError) and _is_output_failure(err, tmp, target):
            raise output_error(err, target) from None
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """The hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
