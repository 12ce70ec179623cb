"""A throwaway OpenSSH server on 127.0.0.1 for the deploy tests (and by hand).

    python -m tests._sshd DIR     # start one, print how to reach it, stop it with Ctrl-C

Host and client keys are made with ssh-keygen in the folder; `AuthorizedKeysFile` points
there, `StrictModes no`, `PidFile` in the folder; `stop()` ends it by that PID. Optional
`SetEnv` lines let the tests point pip at a local wheel folder (offline, fast installs).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.procs import terminate

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")


class SshdUnavailable(RuntimeError):
    """No sshd / ssh-keygen here, or we cannot run it (not root)."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "edgeship-test") -> Path:
    """An ed25519 key pair without passphrase at `path` (+ `.pub`)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def _which(name: str) -> bool:
    return any((Path(d) / name).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


@dataclass
class Sshd:
    """One running sshd: its port, its folder, a client key and a known_hosts file for it."""

    root: Path
    setenv: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def user(self) -> str:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name

    @property
    def target(self) -> str:
        return f"{self.user}@127.0.0.1"

    def start(self) -> Sshd:
        """Make keys and config, start `sshd -D -e -f CONFIG`, wait until it accepts."""
        if not SSHD.exists() or not _which("ssh-keygen") or not _which("ssh"):
            raise SshdUnavailable("openssh-server / openssh-client not installed")
        if os.geteuid() != 0:
            raise SshdUnavailable("sshd needs root here (privilege separation)")
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            keygen(self.host_key, "edgeship-test-host")
        if not self.client_key.exists():
            keygen(self.client_key)
        (self.root / "authorized_keys").write_text(Path(str(self.client_key) + ".pub").read_text())
        self.port = self.port or free_port()
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "MaxStartups 50",
            "LogLevel ERROR",
        ]
        if self.setenv:
            lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in self.setenv.items()))
        config = self.root / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115 - lives as long as sshd
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SshdUnavailable(
                    f"sshd exited with {self.proc.returncode}: "
                    f"{(self.root / 'sshd.log').read_text(errors='replace')[-500:]}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise SshdUnavailable(f"sshd did not listen on port {self.port}")

    def stop(self) -> None:
        """Stop this sshd by its PID (and reap it)."""
        if self.proc is None:
            return
        terminate(self.proc, 10)
        self.proc = None

    def cli_args(self) -> list[str]:
        """The `edgeship deploy push` options that reach this server."""
        return [
            "--host",
            self.target,
            "--port",
            str(self.port),
            "--identity",
            str(self.client_key),
            "--known-hosts",
            str(self.known_hosts),
        ]


if __name__ == "__main__":
    server = Sshd(Path(sys.argv[1]).resolve()).start()
    print(f"sshd pid {server.proc.pid}: edgeship deploy push BUNDLE {' '.join(server.cli_args())}")
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
