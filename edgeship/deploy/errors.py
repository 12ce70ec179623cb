"""The deploy package's errors: one line each, exit code 2 (bad input or a failed push)."""

from __future__ import annotations

from edge_runtime.errors import EdgeshipError


class DeployError(EdgeshipError):
    """A bundle that cannot be built, or a push that failed (previous release left intact)."""


class BundleError(DeployError):
    """A bundle that cannot be built or read (missing run folder or model, not a bundle)."""


class SshError(DeployError):
    """The SSH connection itself failed: unreachable host, refused key, unknown host key."""


class HostUnreachableError(SshError):
    """No TCP connection to the host (refused, timed out, unknown name)."""


class AuthenticationError(SshError):
    """The host refused our key."""


class HostKeyError(SshError):
    """The host's key is unknown, or differs from the one in known_hosts."""


class TransferError(DeployError):
    """The upload was cut off or arrived corrupted."""


class RemoteDiskFullError(DeployError):
    """The device ran out of disk space during the upload, unpacking or installation."""


class ManifestMismatchError(DeployError):
    """The bundle's files do not match its manifest: the device refused to install it."""


class RemoteStepError(DeployError):
    """A step on the device (install, smoke test, switch, bench) failed."""


class UnsupportedTargetError(DeployError):
    """The device is not one of the supported targets, or not one the bundle was built for."""


class MobileError(DeployError):
    """A run that cannot be exported for phones (no model, an unsupported mode or input)."""
