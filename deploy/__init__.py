"""deploy: bundle a run's models for a Raspberry Pi, push it over SSH, install, test, bench."""

from deploy.bundle import BundleInfo, build_bundle, read_manifest
from deploy.errors import DeployError
from deploy.push import PushResult, push_bundle
from deploy.ssh import SshOptions, SshTarget

__all__ = [
    "BundleInfo",
    "DeployError",
    "PushResult",
    "SshOptions",
    "SshTarget",
    "build_bundle",
    "push_bundle",
    "read_manifest",
]
