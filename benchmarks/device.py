"""Read the on-device results (`python -m edge_runtime bench --json`, one or many) from a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.errors import BenchError


def load_device_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Device entries: one JSON object, a list, `{"results"|"models": [...]}`, or JSON lines.

    Each entry needs `model` (the path benchmarked on the device; matched by file name) and
    `latency_us` with at least `p50`.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchError(
            f"Cannot read the --device file ({type(err).__name__}). Pass the JSON that "
            f"`python -m edge_runtime bench --json` printed. Received: path={p}"
        ) from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise BenchError(
                f"The --device file is not JSON nor JSON lines ({err.msg}, line {err.lineno}). "
                f"Received: path={p}"
            ) from None
    if isinstance(data, dict):
        data = data.get("results", data.get("models", [data]))
    entries = data if isinstance(data, list) else []
    good = [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("model"), str)
        and isinstance(e.get("latency_us"), dict)
        and isinstance(e["latency_us"].get("p50"), (int, float))
    ]
    if not good or len(good) != len(entries):
        raise BenchError(
            "Each entry of the --device file needs `model` (a path) and `latency_us` with `p50`, "
            "as `python -m edge_runtime bench --json` prints. "
            f"Received: path={p}, {len(entries)} entries, {len(good)} usable"
        )
    return good


def match_device(entries: list[dict[str, Any]], filename: str) -> dict[str, Any] | None:
    """The device entry for the model file `filename` (by file name), or None."""
    for entry in entries:
        if Path(entry["model"].replace("\\", "/")).name == filename:
            return entry
    return None
