"""Reading IDX files (the MNIST family's format), gzipped or not, with a checksum check.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.files import sha256_bytes
from edgeship.train.errors import DatasetError

# IDX type code -> numpy dtype (big-endian for multi-byte types).
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """Return the decompressed bytes of an IDX file (`.gz` or raw)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"Cannot read IDX file: {err.strerror}. Received: path={path}") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(
            f"Corrupt or truncated gzip file ({err}). Delete it and reinstall the dataset. "
            f"Received: path={path}"
        ) from None


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse decompressed IDX bytes into an array, checking magic number and length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"Not an IDX file: wrong magic number {data[:4].hex() or '(empty)'}. "
            f"Expected 0000 followed by a type code and a dimension count. Received: path={source}"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetError(f"Truncated IDX header ({len(data)} bytes). Received: path={source}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"IDX file has {len(data)} bytes but its header {shape} needs {expected}: the file is "
            f"truncated or corrupt. Reinstall the dataset. Received: path={source}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike, expected_sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw), checking its format, then the sha256 of the
    decompressed bytes (so a wrong magic number or a cut-off file is named as such)."""
    data = read_idx_bytes(path)
    array = parse_idx(data, source=str(path))
    if expected_sha256 is not None:
        digest = sha256_bytes(data)
        if digest != expected_sha256:
            raise DatasetError(
                f"Checksum mismatch: sha256 of the decompressed content is {digest}, expected "
                f"{expected_sha256}. The file is corrupt or not the official one; reinstall it. "
                f"Received: path={path}"
            )
    return array
