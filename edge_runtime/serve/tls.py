"""`serve --tls-cert/--tls-key`: the TLS context, loaded once; and the secrets' file modes.

The key is read once, here, into the one `ssl.SSLContext` the server uses (connections.py
wraps each accepted socket itself, so the handshake is counted and timed from accept). An
encrypted key is never prompted for: its passphrase comes from `--tls-key-password-file`, or
the error says how to give it or decrypt the key. A TLS key, its passphrase file or a
`--token-file` that group or others may read is a warning at start (`--strict-permissions`:
a refusal), since the docs ask for mode 0600.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.errors import EdgeRuntimeError

if TYPE_CHECKING:
    import ssl


class TlsError(EdgeRuntimeError):
    """The TLS pair, its passphrase or a secret's file mode cannot be used as given."""


class _NoPassphrase(Exception):
    """Raised by the passphrase callback: the key is encrypted and none was given."""


def _passphrase(path: Path) -> bytes:
    """The first line of --tls-key-password-file."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as err:
        raise TlsError(
            f"Cannot read --tls-key-password-file ({err.strerror}). "
            f"Received: --tls-key-password-file {path}"
        ) from None
    if not lines or not lines[0].strip():
        raise TlsError(
            "--tls-key-password-file must hold the passphrase on its first line. "
            f"Received: --tls-key-password-file {path} (empty)"
        )
    return lines[0].rstrip(b"\r\n")


def server_context(
    cert: Path | None, key: Path | None, password_file: Path | None = None
) -> ssl.SSLContext | None:
    """The server's `ssl.SSLContext` (None without a certificate): the pair loaded once, so a
    wrong or encrypted key fails at startup with one line and no prompt."""
    if cert is None or key is None:
        if password_file is not None:
            raise TlsError(
                "--tls-key-password-file goes with --tls-cert and --tls-key. "
                f"Received: --tls-key-password-file {password_file} only"
            )
        return None
    import ssl

    given = _passphrase(password_file) if password_file is not None else None

    def password() -> bytes:
        if given is None:
            raise _NoPassphrase
        return given

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    received = f"Received: --tls-cert {cert} --tls-key {key}"
    try:
        context.load_cert_chain(str(cert), str(key), password=password)
    except _NoPassphrase:
        raise TlsError(
            f"The TLS key is encrypted (it has a passphrase). Pass "
            f"--tls-key-password-file FILE (the passphrase on one line, mode 0600), or decrypt "
            f"the key once: openssl pkey -in {key} -out key-plain.pem. {received}"
        ) from None
    except (ssl.SSLError, OSError) as err:
        if given is not None and _encrypted(key):
            raise TlsError(
                f"The passphrase in --tls-key-password-file does not decrypt the TLS key ({err})."
                f" {received} --tls-key-password-file {password_file}"
            ) from None
        raise TlsError(
            f"The TLS certificate and key do not load together ({err}). Pass the key that "
            f"belongs to the certificate. {received}"
        ) from None
    return context


def _encrypted(key: Path) -> bool:
    """The PEM key has a passphrase (PKCS#8 or the legacy Proc-Type header)."""
    try:
        head = key.read_bytes()[:4096]
    except OSError:
        return False
    return b"ENCRYPTED" in head


def loose_secrets(secrets: list[tuple[str, Path | None]]) -> list[str]:
    """One line per secret file that group or others may read or write ('--option path: ...')."""
    problems = []
    for option, path in secrets:
        if path is None:
            continue
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue  # unreadable: the option's own check says so
        if mode & 0o077:
            problems.append(
                f"{option} {path} is open to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
    return problems
