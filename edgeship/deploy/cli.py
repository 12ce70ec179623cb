"""`edgeship deploy bundle|push`: the Typer layer (Rich output on stderr, results on stdout)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.deploy.fleet.cli import fleet_command
from edgeship.deploy.pi import cli_options as release

deploy_app = typer.Typer(
    name="deploy",
    help="Bundle a run's models for a Raspberry Pi and push them over SSH; export for phones.",
    no_args_is_help=True,
    add_completion=False,
)


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _plain(text: object) -> str:
    """Device, model or user text made literal for Rich (a `[/x]` in it is printed, not parsed)."""
    from rich.markup import escape

    return escape(str(text))


@deploy_app.command("bundle")
def bundle_command(
    run: Annotated[
        Path, typer.Argument(help="Run directory holding model_<mode>.tflite (or any .tflite).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The bundle file to write (.tar.gz).")],
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated modes (or .tflite names in the run) to ship; default "
            "int8,float32, or every .tflite of a run without model_<mode>.tflite files.",
        ),
    ] = None,
    with_wheels: Annotated[
        bool,
        typer.Option("--with-wheels", help="Add every wheel each target needs (offline Pi)."),
    ] = False,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Comma-separated OS targets out of trixie-arm64, bookworm-arm64, "
            "bookworm-armhf, or all.",
        ),
    ] = "all",
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Add the offline web app (`deploy web`, int8) under web/: serve it with "
            "`python -m edge_runtime serve ... --web web`.",
        ),
    ] = False,
) -> None:
    """Build FILE.tar.gz: edge_runtime, models, sample images, install.sh, manifest."""
    import tempfile

    from edgeship.deploy.pi.bundle import build_bundle

    console = _console()

    def say(msg: str) -> None:
        console.print(f"[dim]bundle:[/] {_plain(msg)}")

    with tempfile.TemporaryDirectory(prefix="edgeship-web-") as tmp:
        site = None
        if web:  # the web app is built here and handed to the bundle as a folder
            from edgeship.deploy.web.site import write_web_site

            say("writing the web app (deploy web)")
            site = write_web_site(run, Path(tmp) / "web").path
        info = build_bundle(
            run, out, models=models, with_wheels=with_wheels, progress=say, targets=target, web=site
        )
    wheels = f", {len(info.wheels)} wheels" if info.wheels else ""
    typer.echo(
        f"{info.path}: {info.size_bytes / 1e6:.2f} MB, {info.files} files, "
        f"{len(info.models)} models{wheels}, targets {','.join(info.targets)}, "
        f"sha256 {info.sha256[:16]}"
    )


@deploy_app.command("mobile")
def mobile_command(
    run: Annotated[Path, typer.Argument(help="Run directory holding model.keras.")],
    out: Annotated[Path, typer.Option("--out", help="The folder to write the models to.")],
    models: Annotated[
        str,
        typer.Option(
            "--models", help="Comma-separated modes out of int8, float32, float16, dynamic."
        ),
    ] = "int8",
) -> None:
    """Phone-ready models: RGB pixels in, preprocessing in the graph, metadata for MediaPipe."""
    from edgeship.deploy.mobile.models import write_mobile_models

    for path in write_mobile_models(run, out, models):
        typer.echo(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
    typer.echo(f"{out / 'README.txt'}: how to load them in MediaPipe and Android Studio")


@deploy_app.command("web")
def web_command(
    run: Annotated[Path, typer.Argument(help="Run directory (model.json, model_<mode>.tflite).")],
    out: Annotated[Path, typer.Option("--out", help="The site folder to write (replaced).")],
    models: Annotated[
        str, typer.Option("--models", help="Comma-separated modes of `deploy mobile`'s models.")
    ] = "int8",
    title: Annotated[str, typer.Option("--title", help="The app's name.")] = "edgeship",
) -> None:
    """Write SITE: a static web app that classifies in the phone's browser, offline (LiteRT.js)."""
    from edgeship.deploy.web.site import write_web_site

    modes = tuple(m.strip() for m in models.split(",") if m.strip())
    info = write_web_site(run, out, modes=modes or ("int8",), title=title)
    typer.echo(
        f"{info.path}: {info.size_bytes / 1e6:.2f} MB, {info.files} files, "
        f"models {', '.join(info.models)}; serve it: python -m edge_runtime serve "
        f"MODEL.tflite --web {info.path} (the app at /app/), or any static host"
    )


deploy_app.command("fleet")(fleet_command)


# The SSH options that `push` and `status` share.
_Hosts = Annotated[
    list[str], typer.Option("--host", help="USER@HOST[:PORT]; repeat for several devices.")
]
_Port = Annotated[int | None, typer.Option("--port", help="SSH port (default: 22).")]
_Identity = Annotated[Path | None, typer.Option("--identity", help="Private key file (ssh -i).")]
_KnownHosts = Annotated[
    Path | None,
    typer.Option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)."),
]
_SshConfig = Annotated[Path | None, typer.Option("--ssh-config", help="ssh config file (ssh -F).")]
_RemoteDir = Annotated[
    str, typer.Option("--remote-dir", help="Folder on the device (relative to home).")
]
_ConnectTimeout = Annotated[
    int, typer.Option("--connect-timeout", help="Seconds to wait for the TCP connection.")
]


def _ssh_options(
    identity: Path | None, known_hosts: Path | None, ssh_config: Path | None, connect_timeout: int
):
    """The `edgeship.deploy.pi.ssh.SshOptions` of the shared options."""
    from edgeship.deploy.pi.ssh import SshOptions

    return SshOptions(
        identity=identity,
        known_hosts=known_hosts,
        config=ssh_config,
        connect_timeout=connect_timeout,
    )


_STYLE = {"failed": "bold red", "done": "bold green", "warning": "bold yellow"}


@deploy_app.command("push")
def push_command(
    bundle: Annotated[Path, typer.Argument(help="The bundle from `edgeship deploy bundle`.")],
    host: _Hosts,
    port: _Port = None,
    identity: _Identity = None,
    known_hosts: _KnownHosts = None,
    ssh_config: _SshConfig = None,
    remote_dir: _RemoteDir = "edgeship",
    bench: release.Bench = False,
    results: Annotated[
        Path | None,
        typer.Option(
            "--results",
            help="With --bench: the results file (default: device-bench.json beside "
            "the bundle; one file per host when several).",
        ),
    ] = None,
    keep: release.Keep = release.DEFAULT_KEEP,
    connect_timeout: _ConnectTimeout = 10,
    target: Annotated[
        str | None,
        typer.Option("--target", help="Install this OS target, not the probed one."),
    ] = None,
    threads: release.Threads = None,
    serve: release.Serve = False,
    serve_port: release.ServePort = None,
    serve_host: release.ServeHost = None,
    serve_token_file: release.ServeTokenFile = None,
    camera: release.Camera = None,
) -> None:
    """Upload, verify, install, smoke-test, switch `current` (bench, serve) on each host."""
    from edgeship.deploy.errors import DeployError
    from edgeship.deploy.pi.push import push_bundle
    from edgeship.deploy.pi.ssh import parse_targets

    chosen = release.ReleaseOptions(
        bench=bench,
        threads=threads,
        serve=serve,
        serve_port=serve_port,
        serve_host=serve_host,
        serve_token_file=serve_token_file,
        camera=camera,
        keep=keep,
    )
    settings = chosen.serve_settings
    targets = parse_targets(host, port)
    options = _ssh_options(identity, known_hosts, ssh_config, connect_timeout)
    console = _console()
    if settings is not None and serve_token_file is None and settings.exposed:
        console.print(
            f"[bold yellow]warning:[/] --serve-host {_plain(settings.host)} without "
            "--serve-token-file: anyone on the network can use the classifier"
        )

    def progress(target: str, step: str, detail: str) -> None:
        if step == "failed":
            return  # reported once, below
        style = _STYLE.get(step, "cyan")
        console.print(f"[bold]{_plain(target)}[/] [{style}]{step:>7}[/] {_plain(detail)}")

    found = push_bundle(
        bundle,
        targets,
        options,
        remote_dir=remote_dir,
        bench=bench,
        results=results,
        keep=keep,
        progress=progress,
        device_target=target,
        bench_threads=threads,
        serve=settings,
        serve_token_file=serve_token_file,
    )
    for r in found:
        if r.ok:
            venv = "venv reused" if r.reused_venv else "venv installed"
            extra = f", bench -> {r.bench_path}" if r.bench_path else ""
            if r.serve_at:
                extra += f", serving on {r.serve_at} ({r.serve_manager})"
            typer.echo(
                f"ok {r.target}: {r.device_target}, release {r.release}, {venv}, "
                f"{r.seconds:.1f} s{extra}"
            )
    failed = [r for r in found if not r.ok]
    if len(failed) == 1 and len(found) == 1:
        raise DeployError(f"deploy failed: {failed[0].error}")
    if failed:
        for r in failed:
            console.print(f"[bold red]failed[/] {_plain(r.error)}")
        raise DeployError(
            f"deploy failed on {len(failed)} of {len(found)} hosts: "
            + ", ".join(r.target for r in failed)
            + " (see above); the other hosts were deployed"
        )


@deploy_app.command("status")
def status_command(
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="USER@HOST[:PORT]; repeat for several devices."),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Every host of this Ansible inventory."),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", help="With --inventory: an Ansible host pattern.")
    ] = None,
    port: _Port = None,
    identity: _Identity = None,
    known_hosts: _KnownHosts = None,
    ssh_config: _SshConfig = None,
    remote_dir: _RemoteDir = "edgeship",
    connect_timeout: _ConnectTimeout = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per host.")] = False,
) -> None:
    """The running release, the service's health and a summary of its metrics, per host."""
    import json

    from edgeship.deploy.errors import DeployError
    from edgeship.deploy.pi.service import (
        NO_FOLDER_EXIT,
        service_down,
        status_data,
        status_lines,
        status_script,
    )
    from edgeship.deploy.pi.ssh import parse_targets, remote_path, session

    if bool(host) == (inventory is not None):
        raise DeployError(
            "Pass --host USER@HOST... or --inventory FILE (one of them). "
            f"Received: --host {host or []}, --inventory {inventory}"
        )
    if limit is not None and inventory is None:
        raise DeployError(f"--limit goes with --inventory. Received: --limit {limit}")
    if inventory is not None:
        _inventory_status(inventory, limit, known_hosts, identity, connect_timeout, as_json)
        return
    down = []
    options = _ssh_options(identity, known_hosts, ssh_config, connect_timeout)
    script = status_script(remote_path(remote_dir.rstrip("/") or "/"))
    for target in parse_targets(host, port):
        label = str(target)
        with session(target, options) as sess:
            proc = sess.run(script, step="status", timeout=60)
        if proc.returncode == NO_FOLDER_EXIT:
            raise DeployError(
                f"{label}: no edgeship folder there; push a bundle first. "
                f"Received: --remote-dir {remote_dir}"
            )
        data = status_data(proc.stdout) if proc.returncode == 0 else None
        if data is None:
            raise DeployError(
                f"{label}: status failed on the device (exit {proc.returncode}). "
                f"Received: {(proc.stderr or proc.stdout).strip()[-300:]}"
            )
        if as_json:
            typer.echo(json.dumps({"host": label, **data}))
        else:
            typer.echo("\n".join(status_lines(label, data)))
        if service_down(data):
            down.append(label)
    if down:
        raise DeployError(f"the service is down on {', '.join(down)}")


def _inventory_status(
    inventory: Path,
    limit: str | None,
    known_hosts: Path | None,
    identity: Path | None,
    connect_timeout: int,
    as_json: bool,
) -> None:
    """`deploy status --inventory`: every host through Ansible (edgeship/deploy/fleet/status.py); an
    unreachable host is a row saying why, and then exit 1."""
    import json

    from edgeship.deploy.errors import DeployError
    from edgeship.deploy.fleet.status import inventory_status
    from edgeship.deploy.pi.service import service_down, status_lines

    found = inventory_status(
        inventory,
        limit,
        known_hosts=known_hosts,
        identity=identity,
        connect_timeout=connect_timeout,
    )
    for h in found:
        if as_json:
            typer.echo(
                json.dumps(
                    {"host": h.host, "unreachable": h.unreachable, "error": h.error}
                    | (h.data or {})
                )
            )
        elif h.data is not None:
            typer.echo("\n".join(status_lines(h.host, h.data)))
        else:
            typer.echo(f"{h.host}: {'UNREACHABLE' if h.unreachable else 'FAILED'} ({h.error})")
    lost = [h.host for h in found if h.data is None]
    down = [h.host for h in found if h.data is not None and service_down(h.data)]
    if lost:
        typer.echo(
            f"error: {len(lost)} of {len(found)} hosts could not be read: {', '.join(lost)}"
            + (f"; the service is down on {', '.join(down)}" if down else ""),
            err=True,
        )
        raise typer.Exit(1)
    if down:
        raise DeployError(f"the service is down on {', '.join(down)}")
