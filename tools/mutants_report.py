"""The score per module of the last `mutmut run` (`make mutants`), and its survivors.

    python tools/mutants_report.py [--survivors]

Reads mutmut's results under mutants/ (one `.meta` file per mutated module). Score: killed
(a test failed, or it timed out) over the mutants that some test runs.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

KILLED = ("killed", "timeout", "caught by type check")


def main(argv: list[str]) -> int:
    """Print one Markdown row per mutated module; with --survivors, each survivor's name."""
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        print("No mutmut results under mutants/: run `make mutants` first.", file=sys.stderr)
        return 2
    print("| module | mutants | killed | survived | no tests | not run | score |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    survivors = []
    for meta in metas:
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        killed = sum(counts[s] for s in KILLED)
        tested = killed + counts["survived"]
        module = meta.relative_to("mutants").as_posix().removesuffix(".meta")
        score = f"{100 * killed / tested:.0f} %" if tested else "-"
        print(
            f"| {module} | {len(codes)} | {killed} | {counts['survived']} | "
            f"{counts['no tests']} | {counts['not checked']} | {score} |"
        )
        survivors += sorted(k for k, c in codes.items() if status_by_exit_code[c] == "survived")
    if "--survivors" in argv:
        print("\nSurvivors (`mutmut show NAME` prints the change):")
        print("\n".join(survivors) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
