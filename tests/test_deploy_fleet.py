"""`edgeship deploy fleet` on Ansible against 8 real OpenSSH servers on 127.0.0.1.

One inventory of 8 "Pis" (each its own sshd and remote dir, one venv folder shared so only one
host really installs), rolled out with `--serial 3 --max-fail-percent 34`:
- h0's `python3` is Debian trixie's armhf CPython 3.13 under qemu-arm 10: refused before upload;
- h4 runs an earlier release (one `deploy push --serve`), then its Python answers the smoke test
  wrongly (a `sitecustomize` on its PYTHONPATH, switched on by a flag file): rolled back, its
  previous release still serving;
- the others are updated, with one results file each.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from tests._sshd import Sshd, SshdUnavailable, free_port
from tests.test_deploy_push import wheel_env  # noqa: F401 - the fixture
from tests.test_deploy_targets import trixie_armhf_python  # noqa: F401 - the fixture

pytestmark = [pytest.mark.ssh, pytest.mark.emulated]
runner = CliRunner()
HOSTS = [f"h{i}" for i in range(8)]
ARMHF, WRONG = "h0", "h4"
TOKEN = "fleet-token-3f9c1e7a5b"  # the services' token: must appear in no output

# h4's Python: once the flag exists, `python -m edge_runtime predict` answers class -1.
WRONG_ANSWER = """
import json, os, sys
if os.path.exists({flag!r}) and sys.argv[1:2] == ["predict"]:
    print(json.dumps({{"index": -1, "label": "wrong"}}), flush=True)
    os._exit(0)
"""


class Fleet:
    """8 sshd "Pis", their inventory, and what the tests look at on each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, Sshd] = {}
        self.dirs: dict[str, Path] = {}
        self.ports: dict[str, int] = {}
        self.flag = root / "answer-wrongly"
        self.inventory = root / "inventory.ini"
        self.known_hosts = root / "known_hosts"

    def current(self, host: str) -> str | None:
        link = self.dirs[host] / "current"
        return os.readlink(link) if link.is_symlink() else None

    def releases(self, host: str) -> list[str]:
        folder = self.dirs[host] / "releases"
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def state(self) -> dict[str, tuple[str | None, list[str]]]:
        return {h: (self.current(h), self.releases(h)) for h in HOSTS}

    def health(self, host: str) -> dict:
        url = f"http://127.0.0.1:{self.ports[host]}/healthz"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)

    def fleet(self, bundle: Path, *extra: str, env: dict[str, str] | None = None):
        args = ["deploy", "fleet", str(bundle), "--inventory", str(self.inventory)]
        args += ["--known-hosts", str(self.known_hosts), "--forks", str(len(HOSTS))]
        return runner.invoke(app, [*args, *extra], env=env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, wheel_env, trixie_armhf_python):  # noqa: F811 - fixtures above
    pytest.importorskip("ansible", reason="deploy fleet needs ansible-core (the fleet extra)")
    root = tmp_path_factory.mktemp("fleet")
    f = Fleet(root)
    (root / "venvs").mkdir()
    wrong = root / "wrong"
    wrong.mkdir()
    (wrong / "sitecustomize.py").write_text(WRONG_ANSWER.format(flag=str(f.flag)))
    lines = ["[pis]"]
    try:
        for name in HOSTS:
            env = dict(wheel_env)
            if name == ARMHF:
                env["PYTHON"] = str(trixie_armhf_python)
            if name == WRONG:
                env["PYTHONPATH"] = str(wrong)
            folder = root / name
            folder.mkdir()
            if f.servers:  # one client key for all
                for key in ("client_key", "client_key.pub"):
                    shutil.copy(f.servers[HOSTS[0]].root / key, folder / key)
            f.servers[name] = Sshd(folder, setenv=env).start()
            remote = root / f"device-{name}" / "edgeship"
            remote.mkdir(parents=True)
            (remote / "venvs").symlink_to(root / "venvs")  # one install for the fleet
            f.dirs[name] = remote
    except SshdUnavailable as exc:
        for server in f.servers.values():
            server.stop()
        pytest.skip(f"no sshd: {exc}")
    # The services' ports, once every sshd listens: a port free_port() gave earlier could have
    # gone to a later sshd (seen: a health check that reached an sshd's banner).
    taken = {server.port for server in f.servers.values()}
    for name in HOSTS:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        f.ports[name] = port
        lines.append(
            f"{name} ansible_host=127.0.0.1 ansible_port={f.servers[name].port} "
            f"edgeship_remote_dir={f.dirs[name]} edgeship_serve_port={port}"
        )
    key = f.servers[HOSTS[0]].client_key
    lines += ["", "[pis:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}"]
    f.inventory.write_text("\n".join(lines) + "\n")
    f.known_hosts.write_text("".join(s.known_hosts.read_text() for s in f.servers.values()))
    yield f
    for name, remote in f.dirs.items():
        pid = remote / "serve.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
        f.servers[name].stop()


def _bundle(deploy_run, folder: Path, models: str) -> Path:
    from edgeship.deploy.pi.bundle import build_bundle

    return build_bundle(deploy_run, folder / f"{models}.tar.gz", models=models).path


@pytest.fixture(scope="module")
def first_bundle(deploy_run, tmp_path_factory) -> Path:
    """One model (one smoke test a host: the rollouts stay short)."""
    return _bundle(deploy_run, tmp_path_factory.mktemp("b1"), "float32")


@pytest.fixture(scope="module")
def second_bundle(deploy_run, tmp_path_factory) -> Path:
    """Another bundle of the same run: a new release for every host."""
    return _bundle(deploy_run, tmp_path_factory.mktemp("b2"), "int8")


def _rows(result) -> dict[str, list[str]]:
    """The printed table: host -> [target, outcome, release, p50]."""
    rows = {}
    for line in result.stdout.splitlines():
        cells = line.split("  ")
        cells = [c.strip() for c in cells if c.strip()]
        if cells and cells[0] in HOSTS:
            rows[cells[0]] = cells[1:]
    return rows


def _played(result) -> set[str]:
    """The hosts of Ansible's PLAY RECAP (its output, relayed on stderr): those it ran on."""
    recap = re.compile(r"^(\S+)\s+:\s+ok=\d+")
    return {m.group(1) for m in map(recap.match, result.stderr.splitlines()) if m}


def _summary(results: Path) -> dict[str, dict]:
    return {h["host"]: h for h in json.loads((results / "fleet.json").read_text())["hosts"]}


@pytest.fixture(scope="module")
def h4_serving(fleet, first_bundle):
    """h4 runs the first bundle with its service (one `deploy push --serve`): the release the
    rollout's rollback must leave serving. The other hosts start empty."""
    server = fleet.servers[WRONG]
    result = runner.invoke(
        app,
        [
            "deploy",
            "push",
            str(first_bundle),
            *server.cli_args(),
            "--remote-dir",
            str(fleet.dirs[WRONG]),
            "--serve",
            "--serve-port",
            str(fleet.ports[WRONG]),
        ],
    )
    assert result.exit_code == 0, result.output
    assert fleet.current(WRONG) is not None


@pytest.fixture(scope="module")
def rollout(fleet, h4_serving, second_bundle, tmp_path_factory):
    """The second bundle to all 8 with --serve, h4 answering wrongly: h0 refused, h4 rolled
    back, the 6 others updated."""
    before = fleet.state()
    fleet.flag.write_text("on")
    results = tmp_path_factory.mktemp("results")
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    # Ansible told to show every diff, as verbosely as it can (item: the token in no output).
    loud = {"ANSIBLE_DIFF_ALWAYS": "True", "ANSIBLE_VERBOSITY": "3"}
    result = fleet.fleet(
        second_bundle,
        "--serve",
        "--serial",
        "3",
        "--max-fail-percent",
        "34",
        "--results",
        str(results),
        "--serve-token-file",
        str(token_file),
        env=loud,
    )
    return result, results, before


UPDATED = [h for h in HOSTS if h not in (ARMHF, WRONG)]


def test_the_token_is_in_no_output_even_with_diffs_and_vvv(fleet, rollout):
    """ANSIBLE_DIFF_ALWAYS=True and -vvv: the token reaches the hosts (serve.token, 0600) and
    appears nowhere in what `deploy fleet` printed or wrote to --results."""
    result, results, _ = rollout
    assert "<127.0.0.1> ESTABLISH SSH CONNECTION" in result.output  # -vvv was in effect
    assert TOKEN not in result.output
    for path in results.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    for host in UPDATED:
        copied = fleet.dirs[host] / "serve.token"
        assert copied.read_text().strip() == TOKEN and copied.stat().st_mode & 0o777 == 0o600


def test_the_rollout_refuses_armhf_and_leaves_no_upload(fleet, rollout):
    result, results, _ = rollout
    assert result.exit_code == 1, result.output
    rows = _rows(result)
    assert rows[ARMHF][:2] == ["-", "refused"], rows
    assert "unsupported device, nothing uploaded" in result.stderr
    assert not (fleet.dirs[ARMHF] / "releases").exists(), "nothing uploaded to h0"
    summary = _summary(results)
    assert summary[ARMHF]["outcome"] == "refused" and not summary[ARMHF]["release"]


def test_the_rollout_rolls_back_the_wrong_answer(fleet, rollout):
    """h4: the smoke test caught it before the switch; the previous release still serves."""
    result, results, before = rollout
    rows = _rows(result)
    assert rows[WRONG][1] == "rolled back", rows
    previous = before[WRONG][0]
    assert fleet.current(WRONG) == previous and fleet.releases(WRONG) == before[WRONG][1]
    assert rows[WRONG][2] == previous.rsplit("/", 1)[1]
    health = fleet.health(WRONG)
    assert health["status"] == "ok" and Path(health["workdir"]).name == rows[WRONG][2]
    summary = _summary(results)
    assert "smoke test failed" in summary[WRONG]["error"] and "class -1" in summary[WRONG]["error"]


def test_the_rollout_updates_the_rest(fleet, rollout):
    """One release name for the rollout, each service on it, one results file per host (push's
    schema); none for h4 (it failed in `prepare`) or h0 (it never got that far)."""
    result, results, before = rollout
    rows = _rows(result)
    assert len({rows[h][2] for h in UPDATED}) == 1, rows  # one release name for the rollout
    for host in UPDATED:
        assert rows[host][1] == "updated", rows[host]
        assert before[host][0] is None
        assert fleet.current(host) == f"releases/{rows[host][2]}"
        assert Path(fleet.health(host)["workdir"]).name == rows[host][2]
        data = json.loads((results / f"{host}.json").read_text())
        assert data["host"] == host and data["release"] == rows[host][2]
        assert data["target"] == rows[host][0] and data["device"]["bits"] == 64
        assert data["doctor"]["device"]["target"] == data["target"]
        assert data["bundle"] == "int8.tar.gz" and data["models"] == []
    assert sorted(p.name for p in results.iterdir()) == sorted(
        ["fleet.json"] + [f"{h}.json" for h in UPDATED]
    )


def test_a_second_run_changes_nothing(fleet, rollout, second_bundle, tmp_path):
    before = fleet.state()
    result = fleet.fleet(
        second_bundle, "--serve", "--limit", f"all:!{ARMHF}:!{WRONG}", "--results", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert _played(result) == set(HOSTS) - {ARMHF, WRONG}, "--limit: Ansible left h0, h4 alone"
    summary = _summary(tmp_path)
    assert sorted(summary) == sorted(set(HOSTS) - {ARMHF, WRONG})
    for host, row in summary.items():
        assert row["outcome"] == "unchanged" and row["changed"] == 0, row
        assert row["release"] == before[host][0].rsplit("/", 1)[1]
    assert fleet.state() == before


def test_check_changes_nothing(fleet, rollout, first_bundle, tmp_path):
    before = fleet.state()
    result = fleet.fleet(first_bundle, "--serve", "--check", "--results", str(tmp_path))
    rows = _rows(result)
    assert rows[ARMHF][1] == "refused", rows
    assert rows[WRONG][1] == "unchanged", "h4 runs the first bundle (rolled back to it)"
    for host in set(HOSTS) - {ARMHF, WRONG}:
        assert rows[host][1] == "would update", rows[host]
    assert fleet.state() == before, "--check changed nothing on any host"


def test_a_failed_first_batch_stops_the_rollout(fleet, rollout, first_bundle, tmp_path):
    """A small subset in batches of 2: the first batch (h0 refused, h5 updated) is 50% failed,
    past 34%, so h6 and h7, which run the second bundle, never get the first one. (A batch that
    fails entirely stops any play: half of one is what checks the threshold.)"""
    before = fleet.state()
    first, late = "h5", ["h6", "h7"]
    result = fleet.fleet(
        first_bundle,
        "--limit",
        f"{ARMHF}:{first}:{late[0]}:{late[1]}",
        "--serial",
        "2",
        "--max-fail-percent",
        "34",
        "--results",
        str(tmp_path),
    )
    assert result.exit_code == 1, result.output
    assert _played(result) == {ARMHF, first}, "the first batch of the --limit hosts, no other"
    rows = _rows(result)
    assert rows[ARMHF][1] == "refused" and rows[first][1] == "updated", rows
    assert fleet.current(first) == f"releases/{rows[first][2]}" != before[first][0]
    for host in late:
        assert rows[host][1] == "not reached", rows
    assert "not reached" in result.stderr.splitlines()[-1]
    after = fleet.state()
    assert {h: after[h] for h in late} == {h: before[h] for h in late}, "the later hosts keep it"


def _tree(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of each file (symlinks: their target)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if "__pycache__" in rel:
            continue
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_push_and_fleet_leave_identical_release_trees(fleet, rollout, second_bundle):
    host = "h1"
    by_fleet = fleet.current(host)
    server = fleet.servers[host]
    result = runner.invoke(
        app,
        [
            "deploy",
            "push",
            str(second_bundle),
            *server.cli_args(),
            "--known-hosts",
            str(fleet.known_hosts),
            "--remote-dir",
            str(fleet.dirs[host]),
        ],
    )
    assert result.exit_code == 0, result.output
    by_push = fleet.current(host)
    assert by_push != by_fleet
    a, b = _tree(fleet.dirs[host] / by_fleet), _tree(fleet.dirs[host] / by_push)
    assert a == b and ".edgeship-release.json" in a and "release.py" in a


def test_status_of_the_inventory(fleet, rollout):
    result = runner.invoke(
        app,
        [
            "deploy",
            "status",
            "--inventory",
            str(fleet.inventory),
            "--limit",
            f"all:!{ARMHF}",
            "--known-hosts",
            str(fleet.known_hosts),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["host"] for d in data] == HOSTS[1:]
    for d in data:
        assert d["health"]["status"] == "ok" and d["current"] == fleet.current(d["host"])


def test_status_reads_every_host_with_the_inventorys_own_settings(fleet, rollout, tmp_path):
    """Four hosts, the second one down, each host's known_hosts only in its
    ansible_ssh_common_args (no --known-hosts): every host reported, the dead one marked
    with Ansible's reason, exit 1."""
    key = fleet.servers[HOSTS[0]].client_key
    dead = free_port()  # nothing listens there
    rows = []
    for name in ("h1", "dead", "h2", "h3"):
        port = fleet.servers[name].port if name != "dead" else dead
        known = fleet.servers[name if name != "dead" else "h1"].known_hosts
        remote = fleet.dirs.get(name, fleet.dirs["h1"])
        rows.append(
            f"{name} ansible_host=127.0.0.1 ansible_port={port} edgeship_remote_dir={remote} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={known}'"
        )
    inventory = tmp_path / "four.ini"
    inventory.write_text(
        "[pis]\n"
        + "\n".join(rows)
        + f"\n\n[pis:vars]\nansible_user=root\nansible_ssh_private_key_file={key}\n"
    )
    result = runner.invoke(app, ["deploy", "status", "--inventory", str(inventory), "--json"])
    assert result.exit_code == 1, result.output
    data = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [d["host"] for d in data] == ["h1", "dead", "h2", "h3"]
    assert data[1]["unreachable"] and data[1]["error"], data[1]
    for d in (data[0], data[2], data[3]):
        assert not d["unreachable"] and d["current"] == fleet.current(d["host"]), d
        assert d["health"]["status"] == "ok"
    text = runner.invoke(app, ["deploy", "status", "--inventory", str(inventory)])
    assert text.exit_code == 1
    assert "dead: UNREACHABLE (" in text.stdout and "h3: current -> releases/" in text.stdout
