"""`deploy push --serve` and `deploy status`: the classifier service on the device.

The service is a **systemd user unit**, `~/.config/systemd/user/edgeship.service`: Raspberry Pi
OS runs systemd, and a user unit needs no sudo (the push logs in as the device's user, who owns
the release folders), runs with that user's rights only, and is managed with
`systemctl --user`; `loginctl enable-linger` makes it start at boot without a login. The unit
runs `current/venv/bin/python -m edge_runtime serve current/models/...`, so a new release needs
no new unit, only a restart.

A device without a systemd user manager (a container, a minimal image; the tests' loopback
"Pi") gets the same command line started as a plain background process, its pid in
`<remote dir>/serve.pid`, its log in `<remote dir>/serve.log`, and is told so.

With `--serve-token-file FILE` the token is copied to `<remote dir>/serve.token` (mode 0600, over
the SSH session's stdin) and the service reads it with `serve --token-file`: the token is never in
the unit, in a command line (`ps`), in `serve.json` or in the push's output.

A plain push (without `--serve`) to a device whose service is installed (`serve.json` there)
restarts it on the new release with the settings in `serve.json`, through the same steps.

After the switch, the push restarts the service and asks `/healthz` from the device itself
until the new release answers (its working folder is the release). If it does not, `current`
goes back to the previous release, the service is restarted there and checked again, and the
push fails saying so.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeship.deploy.errors import DeployError

UNIT_NAME = "edgeship.service"
DEFAULT_SERVE_PORT = 8080
DEFAULT_SERVE_HOST = "127.0.0.1"
SETTINGS_FILE = "serve.json"
TOKEN_FILE = "serve.token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
NO_FOLDER_EXIT = 4  # status_script's exit status where the remote dir does not exist


@dataclass(frozen=True)
class ServeSettings:
    """Where the service listens and which models (paths relative to a release) it serves."""

    port: int = DEFAULT_SERVE_PORT
    host: str = DEFAULT_SERVE_HOST
    token: bool = False  # POSTs need the token in <remote dir>/serve.token
    camera: str | None = None  # `serve --camera SOURCE` (docs/camera.md)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise DeployError(f"--serve-port must be in 1..65535. Received: {self.port}")
        if not self.host or any(c.isspace() or c in "'\";$`\\" for c in self.host):
            raise DeployError(f"--serve-host must be an address. Received: {self.host!r}")
        if self.camera is not None and (
            not self.camera.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F for c in self.camera)
        ):
            raise DeployError(f"--camera must be one line. Received: {self.camera!r}")

    @property
    def check_host(self) -> str:
        """The address the device asks for /healthz (loopback when bound to all)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def exposed(self) -> bool:
        """Reachable from the network without a token."""
        return not self.token and self.host not in LOOPBACK

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """The settings in a `serve.json`, as the device writes it (device_service.restart);
        DeployError when it is not one."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            port, host = int(data["port"]), str(data["host"])
        except (ValueError, KeyError, TypeError) as err:
            raise DeployError(f"{SETTINGS_FILE} is not edgeship's serve settings ({err})") from None
        return cls(
            port=port, host=host, token=bool(data.get("token", False)), camera=data.get("camera")
        )


def _device_script():
    """edgeship/deploy/pi/remote/device_service.py (the device side's service code) as a module."""
    import importlib.util
    import sys

    name = "edgeship_device_service"
    if name not in sys.modules:
        path = Path(__file__).parent / "remote" / "device_service.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def serve_argv(
    python: str, models: Sequence[str], settings: ServeSettings, remote_dir: str
) -> list[str]:
    """The service's command line (run in the release folder; `remote_dir` absolute)."""
    return _device_script().serve_argv(python, models, asdict(settings), remote_dir)


def unit_text(remote_dir: str, models: Sequence[str], settings: ServeSettings) -> str:
    """The systemd user unit for the release under `remote_dir/current` (absolute path); written
    on the device by release.py (device_service.py)."""
    return _device_script().unit_text(remote_dir, models, asdict(settings))


def token_upload_script(remote_dir: str) -> str:
    """sh: the token file from stdin to `remote_dir/serve.token`, mode 0600 from the start
    (`remote_dir` sh-quoted)."""
    return (
        f"set -e; cd {remote_dir}; umask 077; rm -f .{TOKEN_FILE}.part; "
        f"cat > .{TOKEN_FILE}.part; chmod 600 .{TOKEN_FILE}.part; mv -f .{TOKEN_FILE}.part "
        f"{TOKEN_FILE}"
    )


def status_script(remote_dir: str) -> str:
    """sh: one JSON line: `current`, the service settings, its health and a metrics summary."""
    code = r"""
import json, os, re, sys, urllib.request
out = {"current": None, "settings": None, "health": None, "metrics": None, "error": None}
try:
    out["current"] = os.readlink("current")
except OSError:
    pass
try:
    with open("serve.json", encoding="utf-8") as f:
        out["settings"] = json.load(f)
except (OSError, ValueError):
    pass
s = out["settings"]
if s:
    host = "127.0.0.1" if s["host"] in ("0.0.0.0", "::", "") else s["host"]
    base = "http://%s:%d" % (("[%s]" % host) if ":" in host else host, s["port"])
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            out["health"] = json.load(r)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = {"predictions": {}, "errors": {}, "gauges": {}}
        pred = r'edgeship_predictions_total\{model="(.*?)",label="(.*?)",source="(\w+)"\} (\S+)'
        gauge = r"(edgeship_(?:uptime_seconds|cpu_temperature_celsius|throttled_now)) (\S+)"
        for line in text.splitlines():
            g = re.match(pred, line)
            if g:
                key = g.group(1) + "/" + g.group(2)
                m["predictions"][key] = m["predictions"].get(key, 0) + int(float(g.group(4)))
            g = re.match(r'edgeship_errors_total\{kind="(.*?)"\} (\S+)', line)
            if g:
                m["errors"][g.group(1)] = int(float(g.group(2)))
            g = re.match(gauge, line)
            if g:
                m["gauges"][g.group(1)] = float(g.group(2))
        out["metrics"] = m
    except Exception as err:
        out["error"] = "%s: %s" % (type(err).__name__, err)
print(json.dumps(out))
"""
    return f"cd {remote_dir} || exit {NO_FOLDER_EXIT}; python3 -c {shlex.quote(code)}"


def status_data(stdout: str) -> dict[str, Any] | None:
    """The status script's JSON (its last line starting with "{"), or None if it printed none."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def service_down(data: dict[str, Any]) -> bool:
    """Whether a status says the service is installed (serve.json) but did not answer."""
    return bool(data.get("settings")) and not data.get("health")


def status_lines(target: str, data: dict) -> list[str]:
    """`deploy status` as text, one fact a line."""
    current = data.get("current") or "none"
    lines = [f"{target}: current -> {current}"]
    settings, health = data.get("settings"), data.get("health")
    if not settings:
        lines.append("  service: not installed (push with --serve)")
        return lines
    where = f"{settings['host']}:{settings['port']}"
    if health is None:
        lines.append(f"  service: DOWN on {where} ({data.get('error') or 'no answer'})")
        return lines
    workdir = os.path.basename(str(health.get("workdir", "")).rstrip("/"))
    same = "" if current.endswith(workdir) else f" (serving {workdir}, not current!)"
    lines.append(
        f"  service: {health.get('status')} on {where}, pid {health.get('pid')}, up "
        f"{health.get('uptime_s', 0):.0f} s, models {', '.join(health.get('models', []))}"
        f"{', token required' if health.get('token_required') else ''}{same}"
    )
    metrics = data.get("metrics") or {}
    preds = metrics.get("predictions") or {}
    total = sum(preds.values())
    top = ", ".join(f"{k} {v}" for k, v in sorted(preds.items(), key=lambda kv: -kv[1])[:5])
    lines.append(f"  predictions: {total}" + (f" ({top})" if top else ""))
    errors = metrics.get("errors") or {}
    lines.append(
        "  errors: "
        + (", ".join(f"{k} {v}" for k, v in sorted(errors.items())) if errors else "none")
    )
    gauges = metrics.get("gauges") or {}
    if "edgeship_cpu_temperature_celsius" in gauges:
        throttled = gauges.get("edgeship_throttled_now")
        extra = "" if throttled is None else f", throttled {'yes' if throttled else 'no'}"
        lines.append(f"  board: {gauges['edgeship_cpu_temperature_celsius']:.1f} C{extra}")
    return lines
