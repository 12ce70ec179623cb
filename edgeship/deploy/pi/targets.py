"""Deploy targets on the desktop side: parse `--target`, probe a host over SSH, pick or refuse.

The table of targets and the detection itself live in `edge_runtime.device.targets` (standard
library only): the same file runs on the device (install.sh, `deploy push`'s probe) and here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge_runtime.device import targets as _targets
from edge_runtime.device.targets import TARGET_NAMES, Target, get_target, match
from edgeship.deploy.errors import BundleError, UnsupportedTargetError

PROBE_SCRIPT = Path(_targets.__file__)


def parse_target_names(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """`"trixie-arm64,bookworm-armhf"` -> names in the table's order; None / "all" -> all."""
    if text is None:
        return TARGET_NAMES
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [i.strip() for i in items if i.strip()]
    if names == ["all"]:
        return TARGET_NAMES
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown or not names:
        raise BundleError(
            f"--target takes one or more of {', '.join(TARGET_NAMES)} (comma-separated) or "
            f"all. Received: {text!r}"
        )
    return tuple(n for n in TARGET_NAMES if n in names)


def describe(facts: dict[str, Any]) -> str:
    """One line: board, OS, machine and bits, Python."""
    board = facts.get("board") or "unknown board"
    os_name = facts.get("os_name") or facts.get("os_id") or "unknown OS"
    return (
        f"{board}, {os_name}, {facts.get('machine')} {facts.get('bits')}-bit, "
        f"Python {facts.get('python')}"
    )


def choose_target(
    facts: dict[str, Any], bundle_targets: Sequence[str], override: str | None = None
) -> tuple[Target, str]:
    """The target to install on a host with `facts` (or `override`); refuse with one line."""
    where = describe(facts)
    if override:
        try:
            target = get_target(override)
        except ValueError as err:
            raise UnsupportedTargetError(str(err)) from None
        note = f"--target {override} (the device looks like: {where})"
    else:
        found, note = match(facts)
        if found is None:
            raise UnsupportedTargetError(f"unsupported device, nothing uploaded: {note}")
        target = found
    if target.name not in bundle_targets:
        raise UnsupportedTargetError(
            f"the device is {target.name} but the bundle was built for "
            f"{', '.join(bundle_targets)}; nothing uploaded: rebuild it with `edgeship deploy "
            f"bundle RUN --target {target.name}` (or all targets). Received: {where}"
        )
    return target, note


def parse_probe(text: str) -> dict[str, Any] | None:
    """The facts of `python3 targets.py --json`'s output line, or None."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                return None
            facts = record.get("facts") if isinstance(record, dict) else None
            return facts if isinstance(facts, dict) else None
    return None
