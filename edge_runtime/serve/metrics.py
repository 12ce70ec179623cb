"""The service's counters in Prometheus text format (version 0.0.4), standard library only.

One `ServeMetrics` per server: predictions by model and class, errors by kind, a latency
histogram per model, uptime, and the board's temperature and throttle state when this machine
exposes them (a Raspberry Pi does), read by `edge_runtime.device.doctor`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter

# Seconds. A Pi 4 runs the int8 MLP in ~0.1 ms and a small CNN in a few ms; a photo's decode
# can take tens of ms. The buckets cover 100 us .. 2.5 s.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BOARD_STATE_TTL_S = 5.0  # /metrics reads the board (vcgencmd) at most this often


class Histogram:
    """Durations counted in LATENCY_BUCKETS (and +Inf) with their sum; its owner holds the lock."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def copy(self) -> Histogram:
        """A copy to render outside the owner's lock."""
        other = Histogram()
        other.counts, other.total = list(self.counts), self.total
        return other

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Its Prometheus exposition lines: cumulative buckets, sum, count. `labels`:
        'a="x",b="y"' or ""."""
        out, running = [], 0
        prefix = f"{labels}," if labels else ""
        braces = f"{{{labels}}}" if labels else ""
        for bound, n in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{{prefix}le="{bound}"}} {running}')
        out.append(f"{name}_sum{braces} {self.total:.6f}")
        out.append(f"{name}_count{braces} {running}")
        return out


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def board_state() -> tuple[float | None, int | None]:
    """(SoC temperature in degrees C, `get_throttled` bits), each None where unknown: the
    doctor's readings (thermal zone 0; vcgencmd or the firmware's sysfs), which honour
    `EDGESHIP_ROOT` like the doctor does."""
    from edge_runtime.device.doctor import pi_state

    state = pi_state()
    throttled = state.get("throttled")
    return state.get("temperature_c"), None if throttled is None else int(throttled, 16)


class CachedBoardState:
    """`board_state()` read at most once per `ttl_s` seconds, however often /metrics is
    scraped (`vcgencmd` is a process: a flood of scrapes must not be a flood of processes)."""

    def __init__(self, ttl_s: float = BOARD_STATE_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._value: tuple[float | None, int | None] = (None, None)

    def __call__(self) -> tuple[float | None, int | None]:
        """The board's (temperature, throttled bits), fresh or at most `ttl_s` old."""
        with self._lock:  # concurrent scrapes wait for the one reading
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self.ttl_s:
                self._value = board_state()
                self._read_at = time.monotonic()
            return self._value


class ServeMetrics:
    """Thread-safe counters of one server; `render()` gives the `/metrics` text."""

    def __init__(self, models: list[str]) -> None:
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._models = list(models)
        self._predictions: Counter[tuple[str, str, str]] = Counter()
        self._errors: Counter[str] = Counter()
        self._latency = {m: Histogram() for m in models}
        # per (model, stage): read, decode, preprocess, invoke, postprocess (image.stages)
        self._stages: dict[tuple[str, str], Histogram] = {}

    def uptime_s(self) -> float:
        """Seconds since the server started."""
        return time.monotonic() - self._started

    def prediction(self, model: str, label: str, source: str, seconds: float) -> None:
        """Count one prediction (source: `http` or `watch`) and its latency."""
        with self._lock:
            self._predictions[(model, label, source)] += 1
            self._latency[model].observe(seconds)

    def stages(self, model: str, seconds: dict[str, float]) -> None:
        """Count one photo's time in each stage (`edge_runtime.image.stages.classify_photo`)."""
        with self._lock:
            for stage, value in seconds.items():
                key = (model, stage)
                if key not in self._stages:
                    self._stages[key] = Histogram()
                self._stages[key].observe(value)

    def error(self, kind: str) -> None:
        """Count one failed request or watched file by kind (`bad_image`, `too_large`, ...)."""
        with self._lock:
            self._errors[kind] += 1

    def snapshot(self) -> dict[str, object]:
        """The counters as plain data (for `/healthz` and `deploy status`)."""
        with self._lock:
            total = sum(self._predictions.values())
            return {
                "predictions": total,
                "errors": sum(self._errors.values()),
                "uptime_s": round(self.uptime_s(), 1),
            }

    def render(self, temperature_c: float | None, throttled: int | None) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            predictions = sorted(self._predictions.items())
            errors = sorted(self._errors.items())
            latency = {m: h.copy() for m, h in self._latency.items()}
            stages = {k: h.copy() for k, h in sorted(self._stages.items())}
        out = [
            "# HELP edgeship_predictions_total Predictions served, by model, class and source.",
            "# TYPE edgeship_predictions_total counter",
        ]
        for (model, label, source), n in predictions:
            out.append(
                f'edgeship_predictions_total{{model="{_label(model)}",label="{_label(label)}",'
                f'source="{source}"}} {n}'
            )
        out += [
            "# HELP edgeship_errors_total Requests or watched files refused, by kind.",
            "# TYPE edgeship_errors_total counter",
        ]
        out += [f'edgeship_errors_total{{kind="{_label(k)}"}} {n}' for k, n in errors]
        out += [
            "# HELP edgeship_predict_latency_seconds Decode, preprocess and inference per image.",
            "# TYPE edgeship_predict_latency_seconds histogram",
        ]
        for model in self._models:
            out += latency[model].lines(
                "edgeship_predict_latency_seconds", f'model="{_label(model)}"'
            )
        out += [
            "# HELP edgeship_stage_seconds A photo's time per stage: read, decode, preprocess, "
            "invoke, postprocess.",
            "# TYPE edgeship_stage_seconds histogram",
        ]
        for (model, stage), histogram in stages.items():
            labels = f'model="{_label(model)}",stage="{_label(stage)}"'
            out += histogram.lines("edgeship_stage_seconds", labels)
        out += [
            "# HELP edgeship_uptime_seconds Seconds since the server started.",
            "# TYPE edgeship_uptime_seconds gauge",
            f"edgeship_uptime_seconds {self.uptime_s():.3f}",
        ]
        if temperature_c is not None:
            out += [
                "# HELP edgeship_cpu_temperature_celsius SoC temperature (thermal_zone0).",
                "# TYPE edgeship_cpu_temperature_celsius gauge",
                f"edgeship_cpu_temperature_celsius {temperature_c:.3f}",
            ]
        if throttled is not None:
            out += [
                "# HELP edgeship_throttled_bits `vcgencmd get_throttled` (0: never throttled).",
                "# TYPE edgeship_throttled_bits gauge",
                f"edgeship_throttled_bits {throttled}",
                "# HELP edgeship_throttled_now 1 while under-voltage, capping or throttling.",
                "# TYPE edgeship_throttled_now gauge",
                f"edgeship_throttled_now {int(bool(throttled & 0xF))}",
            ]
        return "\n".join(out) + "\n"
