"""The classifier service on the device, for release.py's `activate`: unit, (re)start, health.

A systemd user unit (`~/.config/systemd/user/edgeship.service`) where a user manager runs; else
the same command line as a background process, its pid in serve.pid, its log in serve.log.
Standard library only; imported by release.py from the release folder (and by
edgeship/deploy/pi/service.py, so the desktop writes the very unit the device writes).
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request

UNIT_NAME = "edgeship.service"
SETTINGS_FILE = "serve.json"
TOKEN_FILE = "serve.token"
WEB_DIR = "web"  # `deploy bundle --web`: the static app, beside models/ in a release
HEALTH_WAIT_S = 45


class ServiceError(Exception):
    """The service could not be (re)started or is not healthy: the message says why."""


def _say(step, detail=""):
    print(json.dumps({"step": step, "detail": detail}), flush=True)


def _run(argv, cwd):
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        out = (proc.stderr + "\n" + proc.stdout).strip().splitlines() or ["(no output)"]
        raise ServiceError(f"{' '.join(argv)} failed (exit {proc.returncode}): {out[-1][:300]}")


def serve_argv(python, models, settings, root, web=False):
    """The service's command line (run in the release folder; `root` absolute); `web`: the
    release carries the web app (`deploy bundle --web`), served at /app/."""
    token = ["--token-file", f"{root.rstrip('/')}/{TOKEN_FILE}"] if settings["token"] else []
    camera = ["--camera", settings["camera"]] if settings.get("camera") else []
    return [
        python,
        "-m",
        "edge_runtime",
        "serve",
        *models,
        "--host",
        settings["host"],
        "--port",
        str(settings["port"]),
        *token,
        *(["--web", WEB_DIR] if web else []),
        *camera,
    ]


def has_web(root):
    """Whether the release under `root/current` carries the web app (a `web/` folder)."""
    return os.path.isfile(os.path.join(root, "current", WEB_DIR, "index.html"))


def _percent(text):
    """systemd expands `%` specifiers in these lines: a literal `%` is written `%%`."""
    return text.replace("%", "%%")


def _no_control(text, what):
    """`text`, refused (ValueError) when it holds a control character (a unit is line-based)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(
            f"{what} holds a control character, which a systemd unit cannot carry; rename it. "
            f"Received: {text!r}"
        )
    return text


def systemd_word(arg):
    """One `ExecStart=` word as systemd.service(5) reads it back to `arg`: double-quoted,
    `\\` and `"` backslash-escaped, `$` written `$$` (no variable expansion), `%` as `%%`."""
    _no_control(arg, "An argument of the service's command line")
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$")
    return '"' + _percent(escaped) + '"'


def unit_text(root, models, settings, web=False):
    """The systemd user unit for the release under `root/current` (absolute path)."""
    current = f"{root.rstrip('/')}/current"
    argv = serve_argv(f"{current}/venv/bin/python", models, settings, root, web)
    return "\n".join(
        [
            "[Unit]",
            "Description=edgeship classifier service (python -m edge_runtime serve)",
            "StartLimitIntervalSec=60",
            "StartLimitBurst=5",
            "",
            "[Service]",
            "Type=exec",
            f"WorkingDirectory={_percent(_no_control(current, 'The remote folder'))}",
            "ExecStart=" + " ".join(systemd_word(a) for a in argv),
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


def _alive(pid):
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _is_service(pid):
    """The process is our service: its command line holds `-m edge_runtime serve ` (a stale
    serve.pid, after a reboot, may name any process of this user; unreadable: not ours)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"-m\0edge_runtime\0serve\0" in handle.read()
    except OSError:
        return False


def _stop_process(root):
    pid_file = os.path.join(root, "serve.pid")
    try:
        with open(pid_file, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        pid = None
    if pid and _alive(pid) and _is_service(pid):
        os.kill(pid, 15)
        for _ in range(400):
            if not _alive(pid):
                break
            time.sleep(0.1)
    if os.path.lexists(pid_file):
        os.remove(pid_file)


def _systemd_user():
    if shutil.which("systemctl") is None:
        return False
    proc = subprocess.run(
        ["systemctl", "--user", "show-environment"], capture_output=True, check=False
    )
    return proc.returncode == 0


def read_settings(root):
    """The installed service's settings (serve.json, as `restart` writes it); OSError, ValueError,
    KeyError or TypeError when it is unreadable."""
    with open(os.path.join(root, SETTINGS_FILE), encoding="utf-8") as handle:
        data = json.load(handle)
    return {
        "port": int(data["port"]),
        "host": str(data["host"]),
        "token": bool(data.get("token", False)),
        "camera": data.get("camera"),
    }


def restart(root, models, settings):
    """Write serve.json and (re)start the service on `current`; returns the manager used."""
    token = os.path.join(root, TOKEN_FILE)
    if settings["token"]:
        if not (os.path.exists(token) and os.path.getsize(token)):
            raise ServiceError(f"{token} is missing: push with --serve --serve-token-file FILE")
    elif os.path.lexists(token):
        os.remove(token)
    text = json.dumps(
        {
            "port": settings["port"],
            "host": settings["host"],
            "token": settings["token"],
            "models": list(models),
            "camera": settings.get("camera"),
        }
    )
    with open(os.path.join(root, SETTINGS_FILE), "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    _stop_process(root)
    if _systemd_user():
        unit = os.path.expanduser(f"~/.config/systemd/user/{UNIT_NAME}")
        os.makedirs(os.path.dirname(unit), exist_ok=True)
        with open(unit + ".part", "w", encoding="utf-8") as handle:
            handle.write(unit_text(root, models, settings, has_web(root)))
        os.replace(unit + ".part", unit)
        _run(["systemctl", "--user", "daemon-reload"], root)
        subprocess.run(
            ["systemctl", "--user", "enable", UNIT_NAME], capture_output=True, check=False
        )
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=False)
        linger = subprocess.run(
            ["loginctl", "enable-linger", user.stdout.strip()], capture_output=True, check=False
        )
        if linger.returncode != 0:
            _say("serve", "loginctl enable-linger failed: the service starts at login, not boot")
        _run(["systemctl", "--user", "restart", UNIT_NAME], root)
        return "systemd"
    current = os.path.join(root, "current")
    with open(os.path.join(root, "serve.log"), "ab") as log:
        proc = subprocess.Popen(
            serve_argv("venv/bin/python", models, settings, root, has_web(root)),
            cwd=current,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with open(os.path.join(root, "serve.pid"), "w", encoding="utf-8") as handle:
        handle.write(f"{proc.pid}\n")
    return f"process (no systemd user manager: pid in {root}/serve.pid)"


def health(settings, release):
    """Poll /healthz from the device until the service (of `release`, if given) says ok."""
    host = settings["host"]
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings['port']}/healthz"
    deadline, last = time.monotonic() + HEALTH_WAIT_S, "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as answer:
                data = json.load(answer)
            workdir = os.path.basename(str(data.get("workdir", "")).rstrip("/"))
            if data.get("status") == "ok" and (release is None or workdir == release):
                return data
            last = "answered " + json.dumps(data)[:200]
        except Exception as err:  # noqa: BLE001 - any failure is "not healthy yet"
            last = type(err).__name__ + ": " + str(err)[:200]
        if time.monotonic() > deadline:
            raise ServiceError(f"the service is not healthy at {url} ({last})")
        time.sleep(0.25)
