"""A Raspberry Pi over SSH: build the bundle, push it, install, test, bench, run the service."""

from edgeship.deploy.pi.bundle import BundleInfo, build_bundle, read_manifest
from edgeship.deploy.pi.push import PushResult, push_bundle
from edgeship.deploy.pi.ssh import SshOptions, SshTarget

__all__ = [
    "BundleInfo",
    "PushResult",
    "SshOptions",
    "SshTarget",
    "build_bundle",
    "push_bundle",
    "read_manifest",
]
