"""Wall time of a rollout to N loopback "Pis": `deploy fleet` (Ansible) vs `deploy push`.

    python -m studies.fleet_speed BUNDLE [--hosts 8,16] [--out FILE.json]

For each N: N real sshd on 127.0.0.1 (tests/_sshd.py, throwaway keys; pip offline from the
cached wheels), one remote dir each, one shared venv folder (installed once, in a warm-up push).
Then, timed:
- `fleet`: `deploy fleet` with forks N to all N hosts (`current` removed first, so every host
  gets the whole update: upload, prepare, activate);
- `push`: `deploy push`'s `push_bundle` to the same N hosts at once (one thread per host, as
  `push --host ... --host ...` does), the same steps on the device;
- `fleet, unchanged`: the same rollout again, which finds every host on this bundle.
The per-host overhead of Ansible is (fleet - push) / N. Needs root (sshd) and ansible-core.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _start_hosts(root: Path, count: int, setenv: dict[str, str]) -> tuple[list, Path, Path]:
    from tests._sshd import Sshd

    servers, lines = [], ["[pis]"]
    (root / "venvs").mkdir()
    for i in range(count):
        folder = root / f"s{i}"
        folder.mkdir()
        if servers:
            for key in ("client_key", "client_key.pub"):
                shutil.copy(servers[0].root / key, folder / key)
        servers.append(Sshd(folder, setenv=setenv).start())
        remote = root / f"device{i}" / "edgeship"
        remote.mkdir(parents=True)
        (remote / "venvs").symlink_to(root / "venvs")
        lines.append(
            f"pi{i} ansible_host=127.0.0.1 ansible_port={servers[-1].port} ansible_user=root "
            f"ansible_ssh_private_key_file={servers[0].client_key} edgeship_remote_dir={remote}"
        )
    inventory = root / "inventory.ini"
    inventory.write_text("\n".join(lines) + "\n")
    known = root / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in servers))
    return servers, inventory, known


def _push_all(bundle: Path, servers: list, root: Path, known: Path) -> float:
    from edgeship.deploy.pi.push import push_bundle
    from edgeship.deploy.pi.ssh import SshOptions, SshTarget

    options = SshOptions(identity=servers[0].client_key, known_hosts=known)

    def one(i: int):
        target = SshTarget("127.0.0.1", user="root", port=servers[i].port)
        (result,) = push_bundle(
            bundle, [target], options, remote_dir=str(root / f"device{i}" / "edgeship")
        )
        if not result.ok:
            raise SystemExit(f"push failed: {result.error}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(one, range(len(servers))))
    return time.perf_counter() - started


def _fleet(bundle: Path, inventory: Path, known: Path, forks: int, expect: str) -> float:
    from edgeship.deploy.fleet import FleetOptions, run_fleet

    started = time.perf_counter()
    report = run_fleet(bundle, inventory, FleetOptions(forks=forks, known_hosts=known))
    seconds = time.perf_counter() - started
    outcomes = {r.outcome for r in report.rows}
    if outcomes != {expect}:
        raise SystemExit(f"fleet rollout: expected all {expect}, got {report.table()}")
    return seconds


def measure(bundle: Path, count: int) -> dict:
    """One row: the wall times for `count` hosts."""
    from edge_runtime.device.targets import TARGETS
    from edgeship.deploy.pi.wheels import download_wheels

    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    if system:
        import subprocess

        python = subprocess.run(
            [system, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    target = next(t.name for t in TARGETS if t.bits == 64 and t.python == python)
    wheels = download_wheels(target, platform.machine(), python)
    env = {"PIP_FIND_LINKS": str(wheels[0].parent), "PIP_NO_INDEX": "1"}
    with tempfile.TemporaryDirectory(prefix="es-fleet-bench-") as tmp:
        root = Path(tmp)
        servers, inventory, known = _start_hosts(root, count, env)
        try:
            _push_all(bundle, servers, root, known)  # warm-up: the venv, installed once
            for i in range(count):
                (root / f"device{i}" / "edgeship" / "current").unlink()
            fleet = _fleet(bundle, inventory, known, count, "updated")
            push = _push_all(bundle, servers, root, known)
            unchanged = _fleet(bundle, inventory, known, count, "unchanged")
        finally:
            for server in servers:
                server.stop()
    return {
        "hosts": count,
        "forks": count,
        "fleet_s": round(fleet, 1),
        "push_s": round(push, 1),
        "fleet_unchanged_s": round(unchanged, 1),
        "overhead_per_host_s": round((fleet - push) / count, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print a Markdown table (and --out JSON)."""
    parser = argparse.ArgumentParser(prog="python -m studies.fleet_speed")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--hosts", default="8,16")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = []
    for count in (int(n) for n in args.hosts.split(",")):
        runs = [measure(args.bundle, count) for _ in range(args.repeat)]
        row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print("| hosts (forks) | fleet | push | fleet, unchanged | Ansible per host |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['hosts']} ({r['forks']}) | {r['fleet_s']} s | {r['push_s']} s | "
            f"{r['fleet_unchanged_s']} s | {r['overhead_per_host_s']} s |"
        )
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
