"""Read the on-device results (`python -m edge_runtime bench --json`, one or many) from a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgeship.bench.errors import BenchError


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
    target = None
    if isinstance(data, dict):
        target = data.get("target")  # `deploy push --bench` results name the device's target
        data = data.get("results", data.get("models", [data]))
    entries = data if isinstance(data, list) else []
    if target:
        entries = [{"target": target, **e} if isinstance(e, dict) else e for e in entries]
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
    """The device entry for the model file `filename` (by file name), or None.

    Several entries for one file (`bench --threads 1,2,4`): the first, with `by_threads`
    listing each thread count's p50 and whether the device throttled meanwhile.
    """
    found = [e for e in entries if Path(e["model"].replace("\\", "/")).name == filename]
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    by_threads = [
        {
            "threads": e.get("threads"),
            "p50": e["latency_us"]["p50"],
            "throttled": e.get("throttled"),
        }
        for e in found
    ]
    return {**found[0], "by_threads": by_threads}


def device_p50_text(dev: dict[str, Any] | None) -> str:
    """The device's p50 for a table cell: `9.1`, or `9.1 / 5.2 / 3.9 (1/2/4 threads)`."""
    if not dev:
        return "-"
    runs = dev.get("by_threads")
    if not runs:
        p50 = (dev.get("latency_us") or {}).get("p50")
        return "-" if p50 is None else f"{p50:.1f}"
    values = " / ".join(f"{r['p50']:.1f}" for r in runs)
    counts = "/".join(str(r["threads"] or "default") for r in runs)
    return f"{values} ({counts} threads)"


def device_summary(entries: list[dict[str, Any]] | None) -> str | None:
    """One line: the devices' targets and thread counts, and whether any run throttled."""
    if not entries:
        return None
    targets = sorted({str(e.get("target")) for e in entries if e.get("target")})
    threads = sorted({e["threads"] for e in entries if e.get("threads")})
    text = f"device results: target {', '.join(targets) or 'not recorded'}"
    text += f", threads {', '.join(map(str, threads)) or 'default'}"
    throttled = [Path(e["model"]).name for e in entries if e.get("throttled")]
    if throttled:
        text += f"; THROTTLED during {', '.join(sorted(set(throttled)))}"
    return text
