"""What a search leaves: TUNE/trials.csv, report.md, front.png, and best/ (a run folder)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from edge_runtime.files import atomic_path, atomic_write_text
from edgeship.tune.errors import NoFeasibleTrialError

COLUMNS = (
    "trial",
    "state",
    "family",
    "width",
    "filters",
    "depth",
    "resolution",
    "quantization",
    "epochs",
    "accuracy",
    "size_kb",
    "p50_us",
    "p99_us",
    "peak_rss_mb",
    "feasible",
    "violations",
    "worker",
    "error",
)


def _complete(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _meets_budgets(t) -> bool:
    """Whether every constraint of trial `t` is met (<= 0)."""
    return all(v <= 0 for v in t.constraints.values())


def feasible_trials(study) -> list:
    """Complete trials whose every constraint is met (<= 0)."""
    return [t for t in _complete(study) if _meets_budgets(t)]


def pareto_front(trials: list) -> list:
    """Trials no other beats on accuracy, p50 and size at once (higher, lower, lower)."""

    def key(t) -> tuple[float, float, float]:
        return (t.value, -t.user_attrs["p50_us"], -t.user_attrs["size_bytes"])

    front = []
    for t in trials:
        a = key(t)
        if not any(
            all(x >= y for x, y in zip(key(o), a, strict=True)) and key(o) != a for o in trials
        ):
            front.append(t)
    return sorted(front, key=lambda t: -t.value)


def choose(study):
    """The chosen trial: the most accurate feasible one (ties: the faster); None if none."""
    good = feasible_trials(study)
    if not good:
        return None
    return max(good, key=lambda t: (t.value, -t.user_attrs["p50_us"]))


def _row(t) -> dict[str, Any]:
    p, u = t.params, t.user_attrs
    family = p.get("family", "")
    cons = t.constraints
    return {
        "trial": t.number,
        "state": t.state.name.lower(),
        "family": family,
        "width": p.get(f"{family}.width", ""),
        "filters": p.get(f"{family}.filters", ""),
        "depth": p.get(f"{family}.depth", ""),
        "resolution": p.get("resolution", ""),
        "quantization": p.get("quantization", ""),
        "epochs": p.get("epochs", ""),
        "accuracy": "" if t.value is None else f"{t.value:.4f}",
        "size_kb": f"{u['size_bytes'] / 1024:.1f}" if "size_bytes" in u else "",
        "p50_us": u.get("p50_us", ""),
        "p99_us": u.get("p99_us", ""),
        "peak_rss_mb": u.get("peak_rss_mb", ""),
        "feasible": "" if t.value is None else str(_meets_budgets(t)).lower(),
        "violations": "; ".join(f"{k} +{v:g}" for k, v in cons.items() if v > 0),
        "worker": u.get("worker", ""),
        "error": u.get("error", ""),
    }


def misses(study, n: int = 3) -> list[str]:
    """The `n` complete trials closest to the budgets, each with what it missed by."""

    def excess(t) -> float:  # relative: each overshoot over its own budget scale
        return sum(max(v, 0.0) / (abs(v) + 1.0) for v in t.constraints.values())

    out = []
    for t in sorted(_complete(study), key=excess)[:n]:
        row = _row(t)
        out.append(
            f"trial {t.number} ({row['family']}, {row['quantization']}, acc "
            f"{row['accuracy']}, {row['size_kb']} KiB, p50 {row['p50_us']} us) missed "
            f"{row['violations']}"
        )
    return out


def write_trials_csv(study, out: Path) -> Path:
    """TUNE/trials.csv: one row per trial, every worker's."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        writer.writerow(_row(t))
    path = out / "trials.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def write_front_png(study, out: Path) -> Path | None:
    """TUNE/front.png: accuracy vs p50, marker area = size, feasible vs not."""
    trials = [t for t in _complete(study) if "p50_us" in t.user_attrs]
    if not trials:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    good = {t.number for t in feasible_trials(study)}
    for ok, color, label in ((True, "tab:green", "feasible"), (False, "tab:red", "infeasible")):
        pts = [t for t in trials if (t.number in good) == ok]
        if pts:
            ax.scatter(
                [t.user_attrs["p50_us"] for t in pts],
                [t.value for t in pts],
                s=[max(8.0, t.user_attrs["size_bytes"] / 1024) for t in pts],
                c=color,
                alpha=0.6,
                label=label,
                edgecolors="black",
                linewidths=0.5,
            )
    front = pareto_front([t for t in trials if t.number in good])
    if front:
        xs = sorted((t.user_attrs["p50_us"], t.value) for t in front)
        ax.plot([x for x, _ in xs], [y for _, y in xs], "g--", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, batch 1 (µs, measured on the device)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("edgeship tune: marker area = .tflite size (KiB)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = out / "front.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_report_md(study, out: Path, budgets, device: str, chosen, test_acc) -> Path:
    """TUNE/report.md: the budgets, the Pareto front, the chosen trial and why."""
    good = feasible_trials(study)
    lines = [
        "# edgeship tune",
        "",
        f"Study `{study.study_name}`, device `{device}`: "
        f"{len(study.get_trials(deepcopy=False))} trials, {len(_complete(study))} complete, "
        f"{len(good)} within the budgets.",
        "",
        "Budgets: "
        + (", ".join(f"{k} {v}" for k, v in vars(budgets).items() if v is not None) or "none"),
        "",
    ]
    lines += [
        "## Pareto front (feasible trials: accuracy, p50, size)",
        "",
        "| trial | family | size | res | quant | epochs | val acc | KiB | p50 µs | p99 µs "
        "| RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in pareto_front(good):
        r = _row(t)
        size = r["width"] or (f"{r['filters']}" + (f"x{r['depth']}" if r["depth"] else ""))
        lines.append(
            f"| {r['trial']} | {r['family']} | {size} | {r['resolution']} | "
            f"{r['quantization']} | {r['epochs']} | {r['accuracy']} | {r['size_kb']} | "
            f"{r['p50_us']} | {r['p99_us']} | {r['peak_rss_mb']} |"
        )
    lines.append("")
    if chosen is None:
        lines += ["## No trial met every budget", "", *[f"- {m}" for m in misses(study)]]
    else:
        lines += [
            "## Chosen",
            "",
            f"Trial {chosen.number}: the most accurate of the "
            f"{len(good)} feasible trials (validation accuracy {chosen.value:.4f}; test "
            f"accuracy {test_acc:.4f}, measured once after the search). Its run folder is "
            "`best/`.",
            "",
            "Parameters: `" + json.dumps(chosen.params) + "`",
        ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_best(chosen, out: Path, rebuild) -> tuple[Path, float]:
    """Copy the chosen trial's run folder to TUNE/best/ (rebuilt from its parameters when it
    ran on another worker), then measure its test accuracy once and record it in model.json."""
    from edgeship.train import load_dataset
    from edgeship.tune.trial import tflite_accuracy

    best = out / "best"
    src = Path(chosen.user_attrs.get("folder", ""))
    tmp = out / f".best.{os.getpid()}.tmp"  # several workers may finish at once
    shutil.rmtree(tmp, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        rebuild(chosen.params, tmp)
    meta_path = tmp / "model.json"
    meta = json.loads(meta_path.read_text())
    tflite = next(tmp.glob("model_*.tflite"))
    data = load_dataset(
        meta["dataset"]["source"] if meta["dataset"]["name"] != "fashion-mnist" else "fashion-mnist"
    )
    test_acc = round(tflite_accuracy(tflite, data.x_test, data.y_test), 6)
    meta["tune"] = {
        **meta.get("tune", {}),
        "trial": chosen.number,
        "validation_accuracy": chosen.value,
        "test_accuracy": test_acc,
        "p50_us": chosen.user_attrs["p50_us"],
        "p99_us": chosen.user_attrs["p99_us"],
        "peak_rss_mb": chosen.user_attrs["peak_rss_mb"],
        "model_file": tflite.name,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    for _ in range(3):
        shutil.rmtree(best, ignore_errors=True)
        try:
            tmp.rename(best)
            break
        except OSError:  # another worker's best/ landed in between
            continue
    shutil.rmtree(tmp, ignore_errors=True)
    return best, test_acc


def write_outputs(study, out: Path, budgets, device: str, rebuild) -> dict[str, Any]:
    """Every output; raises NoFeasibleTrialError (after writing them) when none is feasible."""
    write_trials_csv(study, out)
    write_front_png(study, out)
    chosen = choose(study)
    best, test_acc = (None, None) if chosen is None else write_best(chosen, out, rebuild)
    write_report_md(study, out, budgets, device, chosen, test_acc)
    if chosen is None:
        closest = misses(study)
        raise NoFeasibleTrialError(
            "No trial met every budget; loosen a budget or search more (--trials). Closest: "
            + (" | ".join(closest) or "none completed")
            + f". Received: {out / 'trials.csv'}"
        )
    return {"chosen": chosen, "best": best, "test_accuracy": test_acc}
