"""`edgeship.deploy.fleet.report`: a rollout's outcome from the records the playbook writes (no
sshd).

The full rollout (tests/test_deploy_fleet.py) always has a refused host beside its rolled-back
one; here each outcome is alone, so the verdict of each is seen on its own."""

from __future__ import annotations

import json

import pytest

from edgeship.deploy.fleet.report import collect

RECAP = "{host} : ok=9    changed={changed}    unreachable={unreachable}    failed=0    skipped=2"


def _record(records, host: str, outcome: str, release: str | None = "r2", error=None) -> None:
    """One host's record as the playbook's record.yml writes it."""
    data = {
        "host": host,
        "outcome": outcome,
        "target": "trixie-arm64",
        "device": None,
        "release": release,
        "prepared": None,
        "activated": None,
        "error": error,
    }
    (records / f"{host}.ansible.json").write_text(json.dumps(data, indent=4) + "\n")


@pytest.fixture(scope="module")
def hosts():
    """Three inventory hosts, as `edgeship.deploy.fleet.inventory` reads them."""
    from edgeship.deploy.fleet.inventory import InventoryHost

    return [InventoryHost.from_vars(name, {"ansible_host": "127.0.0.1"}) for name in "abc"]


@pytest.mark.parametrize(
    ("outcome", "ok"),
    [
        ("updated", True),
        ("unchanged", True),
        ("would update", True),
        ("rolled back", False),
        ("refused", False),
    ],
)
def test_one_bad_outcome_alone_fails_the_rollout(hosts, tmp_path, outcome, ok):
    """Two hosts updated and one `outcome`: a rolled-back host alone makes the rollout
    incomplete (the CLI exits 1 on `report.ok` false)."""
    records = tmp_path / "records"
    records.mkdir()
    _record(records, "a", "updated")
    _record(records, "b", outcome, release="r1", error=None if ok else "smoke test failed")
    _record(records, "c", "updated")
    output = "\n".join(RECAP.format(host=h, changed=3, unreachable=0) for h in "abc")
    report = collect(None, hosts, records, 2 if not ok else 0, output, None, False)
    assert [r.outcome for r in report.rows] == ["updated", outcome, "updated"]
    assert report.ok is ok
    assert report.rows[0].changed == 3 and report.rows[1].release == "r1"
    assert report.rows[1].target == "trixie-arm64" and report.rows[0].error is None
    assert report.rows[1].error == (None if ok else "smoke test failed")
    assert report.ansible_exit == (0 if ok else 2) and report.output == output


def test_hosts_without_a_record_are_unreachable_or_not_reached(hosts, tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    _record(records, "a", "updated")
    output = "PLAY RECAP ***\n" + "\n".join(
        RECAP.format(host=h, changed=n, unreachable=u) for h, n, u in (("a", 2, 0), ("b", 0, 1))
    )
    report = collect(None, hosts, records, 4, output, None, False)
    assert [(r.host, r.outcome, r.changed) for r in report.rows] == [
        ("a", "updated", 2),
        ("b", "unreachable", 0),
        ("c", "not reached", None),
    ]
    assert not report.ok
    table = report.table().splitlines()
    assert table[0].split() == ["host", "target", "outcome", "release", "p50"]
    assert table[2].split() == ["b", "-", "unreachable", "-", "-"]


def test_ansible_failing_before_any_host_is_one_error(hosts, tmp_path):
    """No record and an exit that is not a host failure (1: a playbook error): one DeployError
    with the exit and Ansible's last lines; a host failure (2, 4) gives rows instead."""
    from edgeship.deploy.errors import DeployError

    records = tmp_path / "records"
    records.mkdir()
    output = "PLAY [x]\n\nfirst\nERROR! the playbook could not be parsed\nlast line\n"
    with pytest.raises(DeployError, match=r"\(exit 1\) before any host was reached") as err:
        collect(None, hosts, records, 1, output, None, False)
    assert str(err.value).endswith(
        "Received: first | ERROR! the playbook could not be parsed | last line"
    )
    for code in (0, 2, 4):
        report = collect(None, hosts, records, code, output, None, False)
        assert [r.outcome for r in report.rows] == ["not reached"] * 3 and not report.ok
