"""Precompressed copies of a static site's large files: `NAME.gz` (and `NAME.br`) beside `NAME`.

A server that knows the convention (`python -m edge_runtime serve --web`, nginx's
`gzip_static`/`brotli_static`, Caddy's `file_server { precompressed br gzip }`) sends one of them,
with `Content-Encoding`, to a browser that accepts it. The LiteRT.js WASM build, 9.4 MB, goes
over the wire as 2.3 MB (Brotli) or 2.9 MB (gzip). Brotli needs the `brotli` package (the
`desktop` extra); without it only `.gz` is written. Copies of large files are kept by content
in `${EDGESHIP_CACHE:-~/.cache/edgeship}/precompressed/`: the vendored WASM builds are the same
in every site, so a second `deploy web` does not compress them again (~6 s a site).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

from edge_runtime.files import sha256_bytes

# What is worth compressing: text and WASM (PNG icons and models hardly shrink).
COMPRESSIBLE = (".wasm", ".js", ".json", ".html", ".css", ".webmanifest", ".txt", ".tflite")
MIN_BYTES = 1024
KEEP_RATIO = 0.9  # a copy that saves less than 10 % is not written
GZIP_LEVEL = 9
BROTLI_QUALITY = 9  # 11 saves ~3 % more on the WASM and takes ~10x as long
SUFFIXES = (".gz", ".br")
CACHE_BYTES = 1 << 20  # files this large (the WASM builds) keep their copies in the cache


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
        coders: dict[str, Callable[[bytes], bytes]] = {
            ".gz": lambda d: gzip.compress(d, GZIP_LEVEL, mtime=0)
        }
        if brotli is not None:
            coders[".br"] = lambda d: brotli.compress(d, quality=BROTLI_QUALITY)
        for suffix, coder in coders.items():
            packed = _cached(data, suffix, coder) if len(data) >= CACHE_BYTES else coder(data)
            if len(packed) <= len(data) * KEEP_RATIO:
                out = path.with_name(path.name + suffix)
                out.write_bytes(packed)
                written.append(out)
    return written


def _cached(data: bytes, suffix: str, coder: Callable[[bytes], bytes]) -> bytes:
    """`coder(data)`, kept in the cache by the content's sha256 (and the coder's settings)."""
    from edgeship.deploy.web.litertjs import cache_dir

    level = GZIP_LEVEL if suffix == ".gz" else BROTLI_QUALITY
    name = f"{sha256_bytes(data)}-{level}{suffix}"
    path = cache_dir().parent / "precompressed" / name
    try:
        return path.read_bytes()
    except OSError:
        pass
    packed = coder(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.{os.getpid()}")
        tmp.write_bytes(packed)
        tmp.replace(path)  # atomic: a concurrent build reads a whole copy or none
    except OSError:
        pass  # a read-only cache only costs the time
    return packed


def is_precompressed(path: Path) -> bool:
    """Whether `path` is a copy `precompress` wrote (not a file of the site itself)."""
    return path.suffix in SUFFIXES and path.with_suffix("").suffix in COMPRESSIBLE
