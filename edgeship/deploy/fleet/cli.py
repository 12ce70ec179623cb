"""`edgeship deploy fleet`: the Typer layer of the Ansible rollout (edgeship/deploy/fleet/)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeship.deploy.pi import cli_options as release


def _failed(message: str):
    from edgeship.deploy.errors import DeployError

    error = DeployError(message)
    error.exit_code = 1  # a host of the rollout failed (the README's exit codes)
    return error


def fleet_command(
    bundle: Annotated[
        Path | None, typer.Argument(help="The bundle from `edgeship deploy bundle`.")
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="Ansible inventory (INI or YAML) of the Pis."),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", help="Only these hosts (an Ansible pattern).")
    ] = None,
    serial: Annotated[
        str | None,
        typer.Option("--serial", help="Batch size, N or N%; the first batch is the canary."),
    ] = None,
    max_fail_percent: Annotated[
        int | None,
        typer.Option(
            "--max-fail-percent",
            help="Stop the rollout when more than this % of a batch failed.",
        ),
    ] = None,
    bench: release.Bench = False,
    threads: release.Threads = None,
    serve: release.Serve = False,
    serve_port: release.ServePort = None,
    serve_host: release.ServeHost = None,
    serve_token_file: release.ServeTokenFile = None,
    camera: release.Camera = None,
    keep: release.Keep = release.DEFAULT_KEEP,
    results: Annotated[
        Path | None,
        typer.Option("--results", help="Folder: one JSON per host and fleet.json."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Report what would change; change nothing.")
    ] = False,
    forks: Annotated[
        int | None, typer.Option("--forks", help="Hosts handled at once (Ansible forks).")
    ] = None,
    known_hosts: Annotated[
        Path | None,
        typer.Option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)."),
    ] = None,
    write: Annotated[
        Path | None,
        typer.Option(
            "--write",
            help="Write the playbook, role and an example inventory into this folder, and stop.",
        ),
    ] = None,
) -> None:
    """Roll a bundle out to an Ansible inventory in batches: the same steps as `push`."""
    from edgeship.deploy.errors import DeployError
    from edgeship.deploy.fleet.rollout import FleetOptions, run_fleet, write_playbook

    if write is not None:
        if bundle is not None or inventory is not None:
            raise DeployError(
                "--write DIR writes the playbook and stops; leave out BUNDLE and --inventory. "
                f"Received: --write {write}"
            )
        files = write_playbook(write)
        for path in files:
            typer.echo(str(path))
        return
    if bundle is None or inventory is None:
        raise DeployError(
            "Pass a BUNDLE and --inventory FILE (or --write DIR). "
            f"Received: bundle={bundle}, --inventory={inventory}"
        )
    options = FleetOptions(
        limit=limit,
        serial=serial,
        max_fail_percent=max_fail_percent,
        bench=bench,
        threads=threads,
        serve=serve,
        serve_port=serve_port,
        serve_host=serve_host,
        serve_token_file=serve_token_file,
        camera=camera,
        keep=keep,
        check=check,
        forks=forks,
        known_hosts=known_hosts,
        results=results,
    )
    report = run_fleet(bundle, inventory, options, on_line=lambda ln: print(ln, file=sys.stderr))
    typer.echo(report.table())
    if not report.ok:
        good = ("updated", "unchanged", "would update")
        bad = [f"{r.host} ({r.outcome})" for r in report.rows if r.outcome not in good]
        raise _failed(
            f"rollout incomplete on {len(bad)} of {len(report.rows)} hosts: {', '.join(bad)}"
        )
