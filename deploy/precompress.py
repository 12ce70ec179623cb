"""Precompressed copies of a static site's large files: `NAME.gz` (and `NAME.br`) beside `NAME`.

A server that knows the convention (`python -m edge_runtime serve --web`, nginx's
`gzip_static`/`brotli_static`, Caddy's `file_server { precompressed br gzip }`) sends one of them,
with `Content-Encoding`, to a browser that accepts it. The LiteRT.js WASM build, 9.4 MB, goes
over the wire as 2.3 MB (Brotli) or 2.9 MB (gzip). Brotli needs the `brotli` package (the
`desktop` extra); without it only `.gz` is written.
"""

from __future__ import annotations

import gzip
from pathlib import Path

# What is worth compressing: text and WASM (PNG icons and models hardly shrink).
COMPRESSIBLE = (".wasm", ".js", ".json", ".html", ".css", ".webmanifest", ".txt", ".tflite")
MIN_BYTES = 1024
KEEP_RATIO = 0.9  # a copy that saves less than 10 % is not written
GZIP_LEVEL = 9
BROTLI_QUALITY = 9  # 11 saves ~3 % more on the WASM and takes ~10x as long
SUFFIXES = (".gz", ".br")


def _brotli():
    try:
        import brotli
    except ImportError:
        return None
    return brotli


def precompress(site: Path) -> list[Path]:
    """Write `.gz` (and `.br`, when the brotli package is installed) beside each large file."""
    brotli = _brotli()
    written = []
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.suffix not in COMPRESSIBLE:
            continue
        data = path.read_bytes()
        if len(data) < MIN_BYTES:
            continue
        copies = {".gz": gzip.compress(data, GZIP_LEVEL, mtime=0)}
        if brotli is not None:
            copies[".br"] = brotli.compress(data, quality=BROTLI_QUALITY)
        for suffix, packed in copies.items():
            if len(packed) <= len(data) * KEEP_RATIO:
                out = path.with_name(path.name + suffix)
                out.write_bytes(packed)
                written.append(out)
    return written


def is_precompressed(path: Path) -> bool:
    """Whether `path` is a copy `precompress` wrote (not a file of the site itself)."""
    return path.suffix in SUFFIXES and path.with_suffix("").suffix in COMPRESSIBLE
