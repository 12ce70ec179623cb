"""The SSH transport: the system OpenSSH client, one multiplexed connection per host.

OpenSSH rather than a Python SSH library: it is what the user already uses to reach the Pi,
so their ~/.ssh/config (aliases, ProxyJump, ports), agent, key types, certificates and
hashed known_hosts all just work, and a failure reads as the same message they would get
typing `ssh`. Host keys are always checked: `StrictHostKeyChecking=yes`, `BatchMode=yes`
(never a prompt), `UserKnownHostsFile` = --known-hosts or ~/.ssh/known_hosts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeship.deploy.errors import (
    AuthenticationError,
    DeployError,
    HostKeyError,
    HostUnreachableError,
    RemoteDiskFullError,
    SshError,
    TransferError,
)

SSH_EXIT_ERROR = 255  # ssh's own failure (connection, authentication), not the command's
DEFAULT_CONNECT_TIMEOUT = 10
_HOST_RE = re.compile(
    r"^(?:(?P<user>[^@\s:/]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@\s:/\[\]]+)"
    r"(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class SshTarget:
    """A device to deploy to: `user@host` and an optional port."""

    host: str
    user: str | None = None
    port: int | None = None

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host) or self.host.startswith("-"):
            raise DeployError(f"Invalid host name. Use USER@HOST. Received: host={self.host!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise DeployError(f"Invalid SSH port (1-65535). Received: port={self.port}")

    @classmethod
    def parse(cls, spec: str, port: int | None = None) -> SshTarget:
        """`user@host`, `host`, `user@host:port` (an explicit :port wins over `port`)."""
        match = _HOST_RE.match(spec.strip())
        if not match:
            raise DeployError(
                f"Invalid --host; use USER@HOST or USER@HOST:PORT. Received: {spec!r}"
            )
        own = match.group("port")
        return cls(
            host=match.group("host").strip("[]"),
            user=match.group("user"),
            port=int(own) if own else port,
        )

    @property
    def destination(self) -> str:
        """What ssh gets as its destination argument."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.destination + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class SshOptions:
    """How to connect: identity file, known_hosts file, ssh config file, timeouts."""

    identity: Path | None = None
    known_hosts: Path | None = None
    config: Path | None = None
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    def __post_init__(self) -> None:
        for label, path in (("--identity", self.identity), ("--ssh-config", self.config)):
            if path is not None and not Path(path).is_file():
                raise DeployError(f"{label} file does not exist. Received: path={path}")
        if self.connect_timeout < 1:
            raise DeployError(
                f"The connect timeout must be >= 1 s. Received: {self.connect_timeout}"
            )
        if shutil.which("ssh") is None:
            raise DeployError(
                "The OpenSSH client `ssh` is not on PATH; install it (sudo apt install "
                "openssh-client). Received: PATH=" + os.environ.get("PATH", "")
            )


def _known_hosts(options: SshOptions) -> Path:
    if options.known_hosts:
        return Path(options.known_hosts)
    return Path.home() / ".ssh" / "known_hosts"


def classify(stderr: str, target: SshTarget, options: SshOptions, step: str) -> DeployError:
    """Turn ssh's stderr into the one-line error that says what to do."""
    text = stderr.strip()
    last = " ".join(line.strip() for line in text.splitlines()[-2:] if line.strip())[:300]
    port = target.port or 22
    known = _known_hosts(options)
    entry = target.host if port == 22 else f"[{target.host}]:{port}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return HostKeyError(
            f"{target}: the host key differs from the one in {known} (a reinstalled Pi, or "
            f"someone in between): check the new key's fingerprint on the device, then "
            f"`ssh-keygen -R '{entry}' -f {known}` and add it again. "
            f"Received: {last}"
        )
    if "Host key verification failed" in text or "host key is known" in text:
        return HostKeyError(
            f"{target}: unknown host key (not in {known}); add it after checking its "
            f"fingerprint: `ssh-keyscan -p {port} {target.host} >> {known}`, compare with "
            f"`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the device. "
            f"Received: {last}"
        )
    if "Permission denied" in text or "Too many authentication failures" in text:
        ident = options.identity or "your default keys / agent"
        return AuthenticationError(
            f"{target}: authentication refused for {ident}; install the public key on the "
            f"device (ssh-copy-id -p {port} -i KEY.pub {target.destination}) or pass the "
            f"right --identity. Received: {last}"
        )
    unreachable = (
        "Connection refused",
        "Connection timed out",
        "timed out during banner",
        "No route to host",
        "Could not resolve hostname",
        "Network is unreachable",
        "Name or service not known",
        "Temporary failure in name resolution",
    )
    if any(s in text for s in unreachable) and step == "connect":
        return HostUnreachableError(
            f"{target}: host unreachable on port {port}; check that the device is on, on the "
            f"network and runs sshd, and the --host/--port. Received: {last}"
        )
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return RemoteDiskFullError(
            f"{target}: the device ran out of disk space during {step}; free some space "
            f"(df -h; old releases are in the remote dir's releases/) and push again. "
            f"Received: {last}"
        )
    if step == "upload":
        return TransferError(
            f"{target}: the upload was cut off (connection lost); push again. Received: {last}"
        )
    return SshError(f"{target}: the SSH connection failed during {step}. Received: {last}")


class SshSession:
    """One multiplexed OpenSSH connection (ControlMaster) to a target; use as a context manager."""

    def __init__(self, target: SshTarget, options: SshOptions) -> None:
        self.target = target
        self.options = options
        self._dir = Path(tempfile.mkdtemp(prefix="es-ssh-"))  # short: unix socket path limit
        self._control = self._dir / "cm"
        self._open = False

    def base_argv(self) -> list[str]:
        """`ssh` with the host-key, batch and multiplexing options for this target."""
        opts = self.options
        argv = ["ssh"]
        if opts.config:
            argv += ["-F", str(opts.config)]
        argv += [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={_known_hosts(opts)}",
            "-o",
            f"ConnectTimeout={opts.connect_timeout}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            f"ControlPath={self._control}",
            "-o",
            "LogLevel=ERROR",
        ]
        if opts.identity:
            argv += ["-i", str(opts.identity), "-o", "IdentitiesOnly=yes"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return argv

    def connect(self) -> None:
        """Open the master connection (authenticates once; later commands reuse it)."""
        log = self._dir / "connect.log"
        argv = [
            *self.base_argv(),
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=120",
            "-f",
            "-N",
            "--",
            self.target.destination,
        ]
        # stderr to a file, not a pipe: the backgrounded master would keep a pipe open.
        with open(log, "w") as err:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False
            )
        if proc.returncode != 0:
            raise classify(log.read_text(errors="replace"), self.target, self.options, "connect")
        self._open = True

    def run(
        self,
        script: str,
        *,
        step: str,
        stdin_path: Path | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess:
        """Run the POSIX sh `script` on the target; ssh-level failures raise, others return."""
        argv = self._script_argv(script)
        with contextlib.ExitStack() as stack:
            stdin = (
                stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
            )
            try:
                proc = subprocess.run(
                    argv, stdin=stdin, capture_output=True, text=True, timeout=timeout, check=False
                )
            except subprocess.TimeoutExpired:
                raise SshError(
                    f"{self.target}: {step} did not finish within {timeout:.0f} s; check the "
                    f"device (load, network) and push again. Received: timeout={timeout}"
                ) from None
        if proc.returncode == SSH_EXIT_ERROR and not proc.stdout.strip():
            raise classify(proc.stderr, self.target, self.options, step)
        return proc

    def _script_argv(self, script: str) -> list[str]:
        return [
            *self.base_argv(),
            "-o",
            "ControlMaster=no",
            "--",
            self.target.destination,
            "sh -c " + shlex.quote(script),
        ]

    def stream(
        self,
        script: str,
        *,
        step: str,
        on_line: Callable[[str], None],
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess:
        """`run`, handing each stdout line to `on_line` as it arrives (live progress)."""
        proc = subprocess.Popen(
            self._script_argv(script),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None  # both are pipes
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        reader.start()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire) if timeout else None
        if timer:
            timer.start()
        lines = []
        try:
            for line in stdout:
                lines.append(line)
                on_line(line.rstrip("\n"))
            proc.wait()
        finally:
            if timer:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(10)
        if expired.is_set():
            raise SshError(
                f"{self.target}: {step} did not finish within {timeout:.0f} s; check the "
                f"device (load, network) and push again. Received: timeout={timeout}"
            )
        done = subprocess.CompletedProcess(
            proc.args, proc.returncode, "".join(lines), "".join(errors)
        )
        if done.returncode == SSH_EXIT_ERROR and not done.stdout.strip():
            raise classify(done.stderr, self.target, self.options, step)
        return done

    def close(self) -> None:
        """Stop the master connection and remove the control folder."""
        if self._open:
            subprocess.run(
                [*self.base_argv(), "-O", "exit", "--", self.target.destination],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                check=False,
                timeout=15,
            )
            self._open = False
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remote_path(path: str) -> str:
    """Quote a remote path for sh, keeping a leading `~/` as $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


@contextlib.contextmanager
def session(target: SshTarget, options: SshOptions) -> Iterator[SshSession]:
    """An `SshSession` that is connected on entry and closed on exit."""
    sess = SshSession(target, options)
    try:
        sess.connect()
        yield sess
    finally:
        sess.close()


def parse_targets(hosts: Sequence[str] | None, port: int | None) -> list[SshTarget]:
    """Parse the --host values; duplicates are refused (they would race on one folder)."""
    if not hosts:
        raise DeployError("Pass at least one --host USER@HOST. Received: none")
    targets = [SshTarget.parse(h, port) for h in hosts]
    seen = set()
    for t in targets:
        if str(t) in seen:
            raise DeployError(f"The same --host was given twice. Received: {t}")
        seen.add(str(t))
    return targets
