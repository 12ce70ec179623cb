"""LiteRT.js vendored into the web app: npm tarballs fetched once, checked, cached.

`@litertjs/core` (the ES module and its WASM builds) and `@litertjs/wasm-utils` (its one
import) are pinned here with the registry's `dist.integrity` (sha512). The tarballs are
downloaded from registry.npmjs.org the first time, checked against that hash, and kept under
`${EDGESHIP_CACHE:-~/.cache/edgeship}/npm/`; later builds read the cache (offline). Three WASM
builds are vendored: `litert_wasm_threaded_internal` (relaxed SIMD and threads: the app takes it
on a cross-origin-isolated page, `SharedArrayBuffer`), `litert_wasm_internal` (relaxed SIMD) and
`litert_wasm_compat_internal` (the others, e.g. Safari). The JSPI build is left out. Core's one
bare import (`@litertjs/wasm-utils`) is rewritten to the vendored file's relative path, so the
page needs no inline import map (a Content-Security-Policy without 'unsafe-inline' allows it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgeship.deploy.errors import DeployError

REGISTRY = "https://registry.npmjs.org"
DOWNLOAD_TIMEOUT_S = 120


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm tarball: name, version, the registry's sha512 integrity."""

    name: str
    version: str
    integrity: str

    def __post_init__(self) -> None:
        if not self.integrity.startswith("sha512-"):
            raise ValueError(f"integrity must be sha512-...; received {self.integrity!r}")

    @property
    def url(self) -> str:
        """The tarball's registry URL."""
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"

    @property
    def filename(self) -> str:
        """The cache file name."""
        return f"{self.name.replace('/', '__').lstrip('@')}-{self.version}.tgz"


LITERTJS_VERSION = "2.5.3"
CORE = NpmPackage(
    "@litertjs/core",
    LITERTJS_VERSION,
    "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
)
WASM_UTILS = NpmPackage(
    "@litertjs/wasm-utils",
    LITERTJS_VERSION,
    "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
)
# What goes into the site, from each package (paths inside the tarball's `package/`).
THREADED_BUILD = "litert_wasm_threaded_internal"
WASM_BUILDS = (THREADED_BUILD, "litert_wasm_internal", "litert_wasm_compat_internal")
CORE_FILES = ("dist/index.js", *(f"wasm/{b}.{ext}" for b in WASM_BUILDS for ext in ("js", "wasm")))
WASM_UTILS_FILES = ("dist/index.js",)
# core/dist/index.js imports wasm-utils by its package name: the vendored path instead.
BARE_IMPORT = b'from "@litertjs/wasm-utils";'
RELATIVE_IMPORT = b'from "../../wasm-utils/dist/index.js";'


def cache_dir() -> Path:
    """`${EDGESHIP_CACHE:-~/.cache/edgeship}/npm`."""
    root = os.environ.get("EDGESHIP_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgeship"
    return base / "npm"


def integrity_of(data: bytes) -> str:
    """npm's Subresource-Integrity string of `data` (sha512, base64)."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch_tarball(package: NpmPackage) -> bytes:
    """The package's tarball: from the cache, else downloaded; checked against its integrity."""
    path = cache_dir() / package.filename
    if path.is_file():
        data = path.read_bytes()
        if integrity_of(data) == package.integrity:
            return data
    try:
        with urllib.request.urlopen(package.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            data = resp.read()
    except OSError as err:
        raise DeployError(
            f"Cannot download {package.name}@{package.version} from the npm registry ({err}). "
            f"Connect once to the internet (it is cached under {cache_dir()}), or put the "
            f"tarball there. Received: url={package.url}"
        ) from None
    got = integrity_of(data)
    if got != package.integrity:
        raise DeployError(
            f"{package.name}@{package.version} does not match its pinned integrity hash: refusing "
            f"it. Received: {got[:30]}..., expected {package.integrity[:30]}..."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return data


def _extract(package: NpmPackage, names: tuple[str, ...], dest: Path) -> list[Path]:
    """Write the tarball's `package/NAME` files under `dest`, keeping their relative paths."""
    written = []
    with tarfile.open(fileobj=io.BytesIO(fetch_tarball(package)), mode="r:gz") as tar:
        for name in names:
            member = tar.extractfile(f"package/{name}")
            if member is None:
                raise DeployError(f"{package.name} has no {name}. Received: {package.url}")
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(member.read())
            written.append(out)
    return written


def vendor_litertjs(dest: Path) -> list[Path]:
    """Copy LiteRT.js (core's `dist` + WASM builds, wasm-utils' `dist`) under `dest`."""
    files = _extract(CORE, CORE_FILES, dest / "core")
    index = dest / "core" / "dist" / "index.js"
    code = index.read_bytes()
    if code.count(BARE_IMPORT) != 1:
        raise DeployError(
            f"{CORE.name}'s dist/index.js does not import {WASM_UTILS.name} once as expected. "
            f"Received: {code.count(BARE_IMPORT)} imports"
        )
    index.write_bytes(code.replace(BARE_IMPORT, RELATIVE_IMPORT))
    files += _extract(WASM_UTILS, WASM_UTILS_FILES, dest / "wasm-utils")
    notice = dest / "NOTICE.txt"
    notice.write_text(
        f"{CORE.name}@{CORE.version} and {WASM_UTILS.name}@{WASM_UTILS.version}, "
        "Apache-2.0, (c) Google LLC: https://github.com/google-ai-edge/LiteRT (litert/js).\n"
        f"Fetched from {REGISTRY}, checked against sha512 integrity:\n"
        f"  {CORE.integrity}\n  {WASM_UTILS.integrity}\n"
    )
    return [*files, notice]
