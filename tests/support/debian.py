"""Debian packages for a foreign architecture or release, fetched with a private apt state.

Nothing is installed on the host and no root-only state is touched: each (suite, architecture)
gets its own sources, lists and archives under `${EDGESHIP_CACHE:-~/.cache/edgeship}/apt/`,
so neither `dpkg --add-architecture` nor a host `sources.list` change is needed.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support._cache import (
    EnvironmentBuildError,
    EnvironmentUnavailable,
    build_lock,
    cache_root,
    run_step,
)

DEBIAN_MIRROR = os.environ.get("EDGESHIP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get(
    "EDGESHIP_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

Log = Callable[[str], None]


def check_build_tools() -> None:
    """`EnvironmentUnavailable` unless apt-get, dpkg-deb and Debian's keyring are here."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise EnvironmentUnavailable(
            "Building an emulated userland needs apt-get and dpkg-deb (a Debian or Ubuntu host). "
            f"Received: missing={missing}"
        )
    if not DEBIAN_KEYRING.exists():
        raise EnvironmentUnavailable(
            f"Debian's archive keyring is missing; install it with "
            f"`apt-get install debian-archive-keyring`. Received: path={DEBIAN_KEYRING}"
        )


def apt_options(apt: Path, suite: str, arch: str, dists: Sequence[str] | None = None) -> list[str]:
    """apt-get options for a private `arch`-only apt state of Debian `suite` under `apt`.

    `dists` (default: the release, its -updates and -security) are the sources listed.
    """
    etc = apt / "etc"
    for sub in (
        etc / "sources.list.d",
        etc / "preferences.d",
        apt / "lists" / "partial",
        apt / "cache" / "archives" / "partial",
    ):
        sub.mkdir(parents=True, exist_ok=True)
    opts = f"[arch={arch} signed-by={DEBIAN_KEYRING}]"
    dists = list(dists or (suite, f"{suite}-updates", f"{suite}-security"))
    (etc / "sources.list").write_text(
        "".join(
            f"deb {opts} "
            f"{DEBIAN_SECURITY_MIRROR if d.endswith('-security') else DEBIAN_MIRROR} {d} main\n"
            for d in dists
        )
    )
    (apt / "status").touch()
    settings = {
        "Dir::Etc::SourceList": etc / "sources.list",
        "Dir::Etc::SourceParts": etc / "sources.list.d",
        "Dir::Etc::Preferences": etc / "preferences",
        "Dir::Etc::PreferencesParts": etc / "preferences.d",
        "Dir::State::Lists": apt / "lists",
        "Dir::Cache": apt / "cache",
        "Dir::State::status": apt / "status",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "APT::Sandbox::User": "root",  # the files are ours: no download as user _apt
        "APT::Install-Recommends": "false",
        "Debug::NoLocking": "1",
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def _update(apt: Path, suite: str, arch: str, log: Log) -> list[str]:
    """apt-get update; a -updates/-security index that a mirror serves mid-sync (its size
    differs from its Release file's) is dropped, never the release itself. Returns options."""
    dists = [suite, f"{suite}-updates", f"{suite}-security"]
    while True:
        options = apt_options(apt, suite, arch, dists)
        try:
            run_step(
                f"apt-get update (Debian {' '.join(dists)} {arch} lists)",
                ["apt-get", *options, "--error-on=any", "update"],
            )
            return options
        except EnvironmentBuildError as err:
            failed = set(re.findall(r"Failed to fetch \S+/dists/([\w-]+)/", str(err)))
            if not failed or suite in failed or not failed & set(dists):
                raise
            log(f"the mirror serves an inconsistent index of {sorted(failed)}: going without")
            dists = [d for d in dists if d not in failed]


def fetch_debs(
    suite: str,
    arch: str,
    packages: Sequence[str],
    dest: Path,
    *,
    with_dependencies: bool = False,
    log: Log | None = None,
) -> dict[str, str]:
    """Download Debian `suite`/`arch` `packages` into `dest`; return {package: version}.

    `with_dependencies` adds their whole dependency closure (apt resolves it against an empty
    package database: everything a bare userland needs), else exactly the packages named.
    """
    log = log or (lambda _msg: None)
    check_build_tools()
    apt = cache_root() / "apt" / f"{suite}-{arch}"
    with build_lock(apt):
        log(f"apt-get update (Debian {suite} {arch}, private state in {apt})")
        options = _update(apt, suite, arch, log)
        dest.mkdir(parents=True, exist_ok=True)
        log(f"apt-get download {len(packages)} packages" + (" + dependencies" * with_dependencies))
        if with_dependencies:
            archives = apt / "cache" / "archives"
            for old in archives.glob("*.deb"):
                old.unlink()
            run_step(
                f"apt-get install --download-only (Debian {suite} {arch})",
                ["apt-get", *options, "-y", "-q", "--download-only", "install", *packages],
            )
            for deb in archives.glob("*.deb"):
                shutil.move(deb, dest / deb.name)
        else:
            run_step(
                f"apt-get download (Debian {suite} {arch})",
                ["apt-get", *options, "download", *packages],
                cwd=dest,
            )
    versions = {}
    for deb in sorted(dest.glob("*.deb")):
        name, version, _arch = deb.stem.split("_")
        versions[name] = version.replace("%3a", ":")
    missing = sorted(set(packages) - set(versions))
    if missing:
        raise EnvironmentBuildError(
            f"apt-get did not download every package of Debian {suite} {arch}. "
            f"Received: missing={missing}"
        )
    return versions


def unpack_debs(debs: Path, root: Path) -> None:
    """`dpkg-deb -x` every .deb of `debs` into `root`, then add the merged-/usr links."""
    for deb in sorted(debs.glob("*.deb")):
        run_step(f"dpkg-deb -x {deb.name}", ["dpkg-deb", "-x", deb, root])
    for name in ("lib", "bin", "sbin"):
        link, target = root / name, root / "usr" / name
        if target.is_dir() and not link.exists():
            link.symlink_to(f"usr/{name}")
