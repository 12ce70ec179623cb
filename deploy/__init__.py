"""deploy: bundle a run's models for a Raspberry Pi, push it over SSH, install, test, bench;
export phone-ready models (`write_mobile_models`)."""

from deploy.bundle import BundleInfo, build_bundle, read_manifest
from deploy.errors import DeployError
from deploy.mobile import MobileError, write_mobile_models
from deploy.push import PushResult, push_bundle
from deploy.ssh import SshOptions, SshTarget

__all__ = [
    "BundleInfo",
    "DeployError",
    "MobileError",
    "PushResult",
    "SshOptions",
    "SshTarget",
    "build_bundle",
    "push_bundle",
    "read_manifest",
    "write_mobile_models",
]
