"""`edgeship tune` against the zoo's fixed models: `python -m studies.tune_study`.

On Fashion-MNIST, two budgets (A: <= 64 KiB and <= 50 us p50 on this machine; B: <= 16 KiB),
each searched by `edgeship tune` (a subprocess: the files are the contract) with
`--trials N`, and the tutorial MLP and the CNN (their own recipes, int8) trained and measured
the same way: test accuracy of the int8 .tflite through edge_runtime, size, p50 from
`python -m edge_runtime bench` in its own process. Prints a Markdown table and writes
OUT/tune_study.json. Long (minutes per trial on 2 cores): run it niced.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUDGETS = {
    "A: <= 64 KiB, <= 50 us p50": ["--max-size-kb", "64", "--max-latency-ms", "0.05"],
    "B: <= 16 KiB": ["--max-size-kb", "16"],
}
SPACE = """# studies.tune_study's space: the default's, with 2-5 epochs
epochs: [2, 5]
"""


def _bench(tflite: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "bench", str(tflite), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def _test_accuracy(tflite: Path) -> float:
    from edgeship.train import load_dataset
    from edgeship.tune.trial import tflite_accuracy

    data = load_dataset("fashion-mnist")
    return tflite_accuracy(tflite, data.x_test, data.y_test)


def baseline(name: str, out: Path) -> dict:
    """Train `name` with its own recipe, convert to int8, measure."""
    from edgeship.convert import convert_model
    from edgeship.train import TrainConfig, train

    run = out / name
    start = time.perf_counter()
    if not (run / "model_int8.tflite").is_file():
        train(TrainConfig(model=name), run)
        convert_model(run / "model.keras", run, modes="int8").raise_for_failures()
    tflite = run / "model_int8.tflite"
    bench = _bench(tflite)
    return {
        "model": f"{name} (int8)",
        "test_accuracy": round(_test_accuracy(tflite), 4),
        "size_kb": round(tflite.stat().st_size / 1024, 1),
        "p50_us": bench["latency_us"]["p50"],
        "seconds": round(time.perf_counter() - start),
    }


def search(label: str, flags: list[str], out: Path, trials: int, limit: int | None) -> dict:
    """One `edgeship tune` search; its chosen model's figures."""
    folder = out / ("tune_" + label[0])
    space = out / "space.yaml"
    space.write_text(SPACE)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeship",
            "tune",
            "--out",
            str(folder),
            "--trials",
            str(trials),
            "--space",
            str(space),
            *(["--limit", str(limit)] if limit else []),
            *flags,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    seconds = round(time.perf_counter() - start)
    if proc.returncode != 0:
        return {
            "model": "tune: none feasible",
            "error": proc.stderr.strip()[-400:],
            "seconds": seconds,
            "trials": trials,
        }
    meta = json.loads((folder / "best" / "model.json").read_text())
    t = meta["tune"]
    tflite = folder / "best" / t["model_file"]
    return {
        "model": f"tune trial {t['trial']}: {json.dumps(t['params'])}",
        "test_accuracy": t["test_accuracy"],
        "validation_accuracy": t["validation_accuracy"],
        "size_kb": round(tflite.stat().st_size / 1024, 1),
        "p50_us": t["p50_us"],
        "seconds": seconds,
        "trials": trials,
        "limit": limit,
    }


def _fits(row: dict, label: str) -> str:
    if "size_kb" not in row:
        return "-"
    ok = row["size_kb"] <= (64 if label.startswith("A") else 16)
    if label.startswith("A"):
        ok = ok and row["p50_us"] <= 50
    return "yes" if ok else "no"


def main(argv: list[str] | None = None) -> None:
    """Run the study; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/tune_study"))
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="train each trial on N training images (default: all 60,000)",
    )
    parser.add_argument("--only", choices=["A", "B"], default=None)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    base = [baseline("mlp", args.out), baseline("cnn", args.out)]
    results = {}
    for label, flags in BUDGETS.items():
        if args.only and not label.startswith(args.only):
            continue
        results[label] = search(label, flags, args.out, args.trials, args.limit)
        (args.out / "tune_study.json").write_text(
            json.dumps({"baselines": base, "searches": results}, indent=2) + "\n"
        )
    print("| budget | model | test acc | KiB | p50 µs | fits | time |")
    print("|---|---|---|---|---|---|---|")
    for label, row in results.items():
        for r in [row, *base]:
            print(
                f"| {label} | {r['model']} | {r.get('test_accuracy', '-')} | "
                f"{r.get('size_kb', '-')} | {r.get('p50_us', '-')} | {_fits(r, label)} | "
                f"{r['seconds']} s |"
            )


if __name__ == "__main__":
    main()
