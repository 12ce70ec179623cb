"""`serve --web SITE` (the offline web app at /app/) and `serve --tls-cert/--tls-key` (HTTPS).

The site is the static folder `edgeship deploy web` writes; it is served as it is (Starlette's
StaticFiles), so a phone on the LAN loads it from the Pi once and then classifies offline. The
live camera needs a secure context, which a LAN http:// address is not: TLS (a
certificate and key in PEM) makes it https://.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.errors import EdgeRuntimeError

if TYPE_CHECKING:
    import argparse

    from starlette.requests import Request
    from starlette.routing import BaseRoute

APP_PATH = "/app"
SITE_MARKER = "models.json"  # what `deploy web` writes beside index.html


class WebOptionError(EdgeRuntimeError):
    """--web, --tls-cert or --tls-key cannot be used as given."""


def check_site(site: Path) -> Path:
    """`site` if it is a folder written by `edgeship deploy web`; WebOptionError otherwise."""
    if not site.is_dir():
        raise WebOptionError(
            f"--web needs the folder written by `edgeship deploy web RUN --out SITE`. "
            f"Received: --web {site} ({'a file' if site.exists() else 'not found'})"
        )
    missing = [n for n in ("index.html", SITE_MARKER) if not (site / n).is_file()]
    if missing:
        raise WebOptionError(
            f"--web {site} is not a site written by `edgeship deploy web` (no "
            f"{', '.join(missing)}). Received: --web {site}"
        )
    return site


def check_tls(cert: Path | None, key: Path | None) -> None:
    """Both or neither of --tls-cert/--tls-key, each a readable PEM file."""
    if (cert is None) != (key is None):
        given = "--tls-cert" if cert is not None else "--tls-key"
        raise WebOptionError(
            f"Pass --tls-cert FILE and --tls-key FILE together. Received: {given} only"
        )
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is None:
            continue
        try:
            head = path.read_bytes()[:4096]
        except OSError as err:
            raise WebOptionError(
                f"Cannot read {option} ({err.strerror}). Received: {option} {path}"
            ) from None
        if b"-----BEGIN " not in head:
            raise WebOptionError(
                f"{option} must be a PEM file (-----BEGIN ...). Received: {option} {path}"
            )


def web_routes(site: Path | None) -> list[BaseRoute]:
    """The Starlette routes of the app: /app/ (the site's files, `AppFiles`) and /app -> /app/."""
    if site is None:
        return []
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount, Route

    from edge_runtime.serve.webfiles import AppFiles

    async def to_slash(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{APP_PATH}/", status_code=308)

    return [
        Route(APP_PATH, to_slash),
        Mount(
            APP_PATH,
            app=AppFiles(directory=str(site), html=True, listed=site_files(site)),
            name="app",
        ),
    ]


def site_files(site: Path) -> frozenset[str]:
    """The site's files served at /app/ ('/'-separated, relative): regular files only, none
    under a dotfile or dot-folder (.git, .env, ...), no symlinks."""
    found = set()
    for folder, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                found.add(path.relative_to(site).as_posix())
    return frozenset(found)


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` arguments of this module: --web, --tls-cert, --tls-key."""
    parser.add_argument(
        "--web",
        default=None,
        metavar="SITE",
        help="also serve the offline web app written by `edgeship deploy web` at /app/",
    )
    parser.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (with --tls-key; the phone's live camera "
        "needs HTTPS on a LAN address)",
    )
    parser.add_argument(
        "--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-key-password-file",
        default=None,
        metavar="FILE",
        help="the passphrase of an encrypted --tls-key, on one line (keep it mode 0600)",
    )
