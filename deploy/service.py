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

After the switch, the push restarts the service and asks `/healthz` from the device itself
until the new release answers (its working folder is the release). If it does not, `current`
goes back to the previous release, the service is restarted there and checked again, and the
push fails saying so.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

UNIT_NAME = "edgeship.service"
DEFAULT_SERVE_PORT = 8080
DEFAULT_SERVE_HOST = "127.0.0.1"
HEALTH_WAIT_S = 45
SETTINGS_FILE = "serve.json"


@dataclass(frozen=True)
class ServeSettings:
    """Where the service listens and which models (paths relative to a release) it serves."""

    port: int = DEFAULT_SERVE_PORT
    host: str = DEFAULT_SERVE_HOST

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--serve-port must be in 1..65535. Received: {self.port}")
        if not self.host or any(c.isspace() or c in "'\";$`\\" for c in self.host):
            raise ValueError(f"--serve-host must be an address. Received: {self.host!r}")

    @property
    def check_host(self) -> str:
        """The address the device asks for /healthz (loopback when bound to all)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host


def serve_argv(python: str, models: Sequence[str], settings: ServeSettings) -> list[str]:
    """The service's command line (run in the release folder)."""
    return [
        python,
        "-m",
        "edge_runtime",
        "serve",
        *models,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
    ]


def _percent(text: str) -> str:
    """systemd expands `%` specifiers in these lines: a literal `%` is written `%%`."""
    return text.replace("%", "%%")


def unit_text(remote_dir: str, models: Sequence[str], settings: ServeSettings) -> str:
    """The systemd user unit for the release under `remote_dir/current` (absolute path)."""
    current = f"{remote_dir.rstrip('/')}/current"
    argv = serve_argv(f"{current}/venv/bin/python", models, settings)
    return "\n".join(
        [
            "[Unit]",
            "Description=edgeship classifier service (python -m edge_runtime serve)",
            "StartLimitIntervalSec=60",
            "StartLimitBurst=5",
            "",
            "[Service]",
            "Type=exec",
            f"WorkingDirectory={_percent(current)}",
            "ExecStart=" + _percent(" ".join(shlex.quote(a) for a in argv)),
            "Environment=PYTHONUNBUFFERED=1",
            "Restart=on-failure",
            "RestartSec=2",
            # SIGTERM: the server finishes the requests in flight and exits 0.
            "KillSignal=SIGTERM",
            "TimeoutStopSec=40",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def restart_script(abs_dir: str, models: Sequence[str], settings: ServeSettings) -> str:
    """sh: write the settings, install the unit and (re)start the service on the release that
    `abs_dir/current` points at; prints `manager: systemd` or `manager: process ...`."""
    d = shlex.quote(abs_dir)
    unit = shlex.quote(unit_text(abs_dir, models, settings))
    argv = " ".join(shlex.quote(a) for a in serve_argv("venv/bin/python", models, settings))
    settings_json = shlex.quote(
        json.dumps({"port": settings.port, "host": settings.host, "models": list(models)})
    )
    return f"""set -e
cd {d}
printf '%s\\n' {settings_json} > {SETTINGS_FILE}
if [ -f serve.pid ]; then
    pid=$(cat serve.pid)
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        i=0; while kill -0 "$pid" 2>/dev/null && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
    fi
    rm -f serve.pid
fi
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1
then
    unit="$HOME/.config/systemd/user/{UNIT_NAME}"
    mkdir -p "$(dirname "$unit")"
    printf '%s' {unit} > "$unit.part"
    mv "$unit.part" "$unit"
    systemctl --user daemon-reload
    systemctl --user enable {UNIT_NAME} >/dev/null 2>&1 || true
    loginctl enable-linger "$(id -un)" >/dev/null 2>&1 || \\
        echo "note: loginctl enable-linger failed: the service starts at login, not at boot"
    systemctl --user restart {UNIT_NAME}
    echo "manager: systemd"
else
    cd current
    nohup setsid {argv} >> {d}/serve.log 2>&1 < /dev/null &
    echo $! > {d}/serve.pid
    echo "manager: process (no systemd user manager: pid in {abs_dir}/serve.pid)"
fi
"""


def health_script(remote_dir: str, settings: ServeSettings, release: str | None) -> str:
    """sh: poll /healthz from the device until the service (of `release`, when given) says ok
    (`remote_dir` sh-quoted).

    Prints the health JSON; exits 3 with an `error:` line after HEALTH_WAIT_S seconds."""
    url = f"http://{settings.check_host}:{settings.port}/healthz"
    if ":" in settings.check_host:
        url = f"http://[{settings.check_host}]:{settings.port}/healthz"
    code = f"""
import json, os, sys, time, urllib.request
url, want = {url!r}, {release!r}
deadline, last = time.monotonic() + {HEALTH_WAIT_S}, "no answer"
while True:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            data = json.load(r)
        workdir = os.path.basename(str(data.get("workdir", "")).rstrip("/"))
        if data.get("status") == "ok" and (want is None or workdir == want):
            print(json.dumps(data))
            sys.exit(0)
        last = "answered " + json.dumps(data)[:200]
    except Exception as err:
        last = type(err).__name__ + ": " + str(err)[:200]
    if time.monotonic() > deadline:
        print("error: the service is not healthy at " + url + " (" + last + ")", file=sys.stderr)
        sys.exit(3)
    time.sleep(0.25)
"""
    return f"cd {remote_dir} && python3 -c {shlex.quote(code)}"
