"""Measure candidate models on the device `--device` names: `local` (this machine, one
`python -m edge_runtime bench` process per model) or an SSH host (one bundle of several
candidates per upload, benched by the bundle's own device steps, as `deploy push --bench`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeship.tune.errors import TuneError

BENCH_RUNS = 200
BENCH_WARMUP = 20
# The device's own tree for tune's uploads, beside (never inside) a real deployment's.
REMOTE_DIR = "edgeship-tune"


class DeviceError(TuneError):
    """The device could not measure a candidate (unreachable, a failed install or bench)."""

    exit_code = 1


@dataclass(frozen=True)
class Measurement:
    """A model's figures from the device-side bench."""

    p50_us: float
    p99_us: float
    peak_rss_mb: float

    def __post_init__(self) -> None:
        if min(self.p50_us, self.p99_us, self.peak_rss_mb) < 0:
            raise ValueError(f"Measurements are non-negative. Received: {self}")


def _from_bench(entry: dict) -> Measurement:
    lat = entry["latency_us"]
    return Measurement(float(lat["p50"]), float(lat["p99"]), float(entry["peak_rss_mb"]))


@dataclass(frozen=True)
class Device:
    """Where candidates are measured: `local`, or `USER@HOST[:PORT]` over SSH."""

    spec: str = "local"
    threads: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    connect_timeout: int = 10
    remote_dir: str = REMOTE_DIR

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise TuneError(f"--threads must be at least 1. Received: {self.threads}")
        if not self.is_local:  # a malformed host or a missing key: now, not after a trial
            self._ssh_setup()

    def _ssh_setup(self) -> tuple:
        from edgeship.deploy.errors import DeployError
        from edgeship.deploy.pi import SshOptions
        from edgeship.deploy.pi.ssh import SshTarget

        try:
            return SshTarget.parse(self.spec), SshOptions(
                identity=self.identity,
                known_hosts=self.known_hosts,
                connect_timeout=self.connect_timeout,
            )
        except DeployError as err:
            raise TuneError(
                f"--device must be local or USER@HOST[:PORT] with a usable key: {err}"
            ) from None

    @property
    def is_local(self) -> bool:
        """Whether the candidates run on this machine."""
        return self.spec == "local"

    def measure(self, models: list[Path], workdir: Path) -> dict[Path, Measurement]:
        """Each model's p50/p99 latency (batch 1) and peak RSS, measured on the device."""
        if self.is_local:
            return {m: self._local(m) for m in models}
        return self._ssh(models, workdir)

    def _local(self, model: Path) -> Measurement:
        cmd = [
            sys.executable,
            "-m",
            "edge_runtime",
            "bench",
            str(model),
            "--json",
            "--runs",
            str(BENCH_RUNS),
            "--warmup",
            str(BENCH_WARMUP),
        ]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"local bench of {model.name} failed: {tail}")
        return _from_bench(json.loads(lines[-1]))

    def _ssh(self, models: list[Path], workdir: Path) -> dict[Path, Measurement]:
        from edgeship.bench.device import load_device_results, match_device
        from edgeship.bench.models import mode_of
        from edgeship.deploy.errors import DeployError
        from edgeship.deploy.pi import build_bundle, push_bundle

        target, options = self._ssh_setup()
        upload = workdir / "upload"
        shutil.rmtree(upload, ignore_errors=True)
        upload.mkdir(parents=True)
        names = []
        for model in models:  # one folder of candidates: trial_<n>_<mode>.tflite
            name = f"trial_{model.parent.name}_{mode_of(model)}.tflite"
            shutil.copyfile(model, upload / name)
            names.append(name)
        bundle, results = workdir / "candidates.tar.gz", workdir / "device-bench.json"
        try:
            build_bundle(upload, bundle, models=[n.removesuffix(".tflite") for n in names])
            pushed = push_bundle(
                bundle,
                [target],
                options,
                remote_dir=self.remote_dir,
                bench=True,
                results=results,
                keep=1,
                bench_threads=str(self.threads) if self.threads else None,
            )[0]
        except DeployError as err:
            raise DeviceError(str(err).splitlines()[0]) from None
        if not pushed.ok:
            raise DeviceError((pushed.error or "push failed").splitlines()[0])
        entries = load_device_results(results)
        found = {}
        for model, name in zip(models, names, strict=True):
            entry = match_device(entries, name)
            if entry is None:
                raise DeviceError(f"the device returned no bench for {name}")
            found[model] = _from_bench(entry)
        return found
