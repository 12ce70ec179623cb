"""A built bundle as a push or a rollout sees it: its file, sha256, top folder and manifest."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.files import sha256_file
from edgeship.deploy.errors import DeployError
from edgeship.deploy.pi.bundle import read_manifest

# The device-side steps (edgeship/deploy/pi/remote/release.py), at the top of every bundle.
DEVICE_SCRIPT = "release.py"


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle file, its sha256 and its manifest (read once, on the desktop)."""

    path: Path
    sha256: str
    size_bytes: int
    top: str
    manifest: dict[str, Any]

    def venv_key(self, target: str) -> str:
        """The venv folder of `target`'s requirements (unchanged requirements: same venv)."""
        return f"{target}-{self.manifest['targets'][target]['requirements_sha256'][:12]}"

    @property
    def has_device_script(self) -> bool:
        """Built by an edgeship that ships release.py (older bundles cannot be pushed)."""
        return DEVICE_SCRIPT in self.manifest.get("files", {})


def load_bundle(path: str | os.PathLike) -> LoadedBundle:
    """Read the bundle's manifest and hash the file; refuse one without the device script."""
    path = Path(path)
    top, manifest = read_manifest(path)
    for key in ("targets", "models", "files"):
        if key not in manifest:
            raise DeployError(f"The bundle's manifest lacks `{key}`; rebuild it. Received: {path}")
    bundle = LoadedBundle(path, sha256_file(path), path.stat().st_size, top, manifest)
    if not bundle.has_device_script:
        raise DeployError(
            f"The bundle has no {DEVICE_SCRIPT} (built by an older edgeship); rebuild it with "
            f"`edgeship deploy bundle RUN --out FILE`. Received: {path}"
        )
    return bundle


def release_id(bundle_sha256: str) -> str:
    """A sortable, unique release folder name: UTC time (ms), bundle hash, 4 random hex digits."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1000):03d}Z"
    return f"{stamp}-{bundle_sha256[:8]}-{os.urandom(2).hex()}"
