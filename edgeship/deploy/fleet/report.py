"""A rollout's outcome per host: the records the playbook wrote, the results files, the table."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import OutputError
from edge_runtime.files import atomic_write_text
from edgeship.deploy.errors import DeployError
from edgeship.deploy.pi.bundle_file import LoadedBundle

GOOD = ("updated", "unchanged", "would update")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@dataclass(frozen=True)
class HostRow:
    """One host of the rollout."""

    host: str
    target: str | None
    outcome: str  # updated, unchanged, would update, refused, rolled back, unreachable, not reached
    release: str | None
    p50_us: float | None
    changed: int | None  # Ansible's count of changed tasks
    error: str | None


@dataclass(frozen=True)
class FleetReport:
    """Every host's row, Ansible's exit code and output."""

    rows: list[HostRow]
    ansible_exit: int
    output: str

    @property
    def ok(self) -> bool:
        """Every reached host is updated or unchanged, and none was left out."""
        return all(r.outcome in GOOD for r in self.rows)

    def table(self) -> str:
        """host, target, outcome, release, p50 as aligned text."""
        head = ("host", "target", "outcome", "release", "p50")
        lines = [head] + [
            (
                r.host,
                r.target or "-",
                r.outcome,
                r.release or "-",
                f"{r.p50_us:.0f} us" if r.p50_us is not None else "-",
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )


def _p50(prepared: dict[str, Any] | None) -> float | None:
    models = (prepared or {}).get("models") or []
    return models[0].get("latency_us", {}).get("p50") if models else None


def _recap(output: str) -> dict[str, tuple[int, int]]:
    """host -> (changed, unreachable) from the PLAY RECAP."""
    found = {}
    for line in output.splitlines():
        match = _RECAP.match(line.strip())
        if match:
            found[match.group(1)] = (int(match.group(3)), int(match.group(4)))
    return found


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OutputError as err:
        raise DeployError(
            f"cannot write the rollout's results ({err.reason}); pass a writable --results "
            f"folder. Received: path={path}"
        ) from None


def collect(
    bundle: LoadedBundle,
    hosts: list,
    records: Path,
    ansible_exit: int,
    output: str,
    results: Path | None,
    check: bool,
) -> FleetReport:
    """The rows of every inventory host, in inventory order; writes --results DIR."""
    from edgeship.deploy.pi.push import results_document

    recap = _recap(output)
    if ansible_exit not in (0, 2, 4) and not any(records.iterdir()):
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        raise DeployError(
            f"ansible-playbook failed (exit {ansible_exit}) before any host was reached. "
            f"Received: {' | '.join(tail)[-400:]}"
        )
    rows, documents = [], {}
    for host in hosts:
        path = records / f"{host.name}.ansible.json"
        changed, unreachable = recap.get(host.name, (None, 0))
        if path.exists():
            rec = json.loads(path.read_text())
            prepared = rec.get("prepared") or None
            rows.append(
                HostRow(
                    host.name,
                    rec.get("target") or None,
                    rec["outcome"],
                    rec.get("release") or None,
                    _p50(prepared),
                    changed,
                    rec.get("error") or None,
                )
            )
            if prepared:
                documents[host.name] = results_document(
                    host.name, bundle, rec.get("device") or None, prepared
                )
        else:
            outcome = "unreachable" if unreachable else "not reached"
            rows.append(HostRow(host.name, None, outcome, None, None, changed, None))
    report = FleetReport(rows, ansible_exit, output)
    if results is not None:
        results = Path(results)
        for name, doc in documents.items():
            _write(results / f"{name}.json", doc)
        summary = {
            "schema_version": 1,
            "bundle": bundle.path.name,
            "bundle_sha256": bundle.sha256,
            "check": check,
            "ok": report.ok,
            "hosts": [r.__dict__ for r in rows],
        }
        _write(results / "fleet.json", summary)
    return report
