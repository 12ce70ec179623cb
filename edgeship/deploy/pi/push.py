"""Push a bundle to devices over SSH: probe, upload, then the bundle's own device steps.

On the device, under the remote dir (default `edgeship`, relative to the login's home):

    releases/<id>/        one folder per push (the unpacked bundle); `venv` links to venvs/
    venvs/<target>-<hash>/  one venv per target's requirements: an unchanged one is reused
    current -> releases/<id>    switched atomically only after the install, the smoke test
                                and (with --bench) the bench passed

Before anything is uploaded, one round trip probes the host (`edge_runtime/device/targets.py --json`
run by its python3: machine, bits, Python, OS, board) and picks its target among the bundle's
(`--target` overrides); an unsupported host is refused there, with nothing uploaded.

What runs on the device is the bundle's `release.py` (edgeship/deploy/pi/remote/release.py), the
same for
`deploy push` and `deploy fleet`: `prepare` (sha256, unpack, verify.py, install.sh, smoke test,
doctor, bench), then, once the desktop has written the bench results, `activate` (switch
`current`, restart the service and check /healthz or roll back, keep N). Any failure runs
`abort`, which removes the new release folder and leaves `current` as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgeship.deploy.pi.device_steps as device_steps
import edgeship.deploy.pi.service as service
from edge_runtime.errors import OutputError
from edge_runtime.files import atomic_write_text
from edgeship.deploy.errors import DeployError, RemoteStepError
from edgeship.deploy.pi.bundle_file import LoadedBundle, load_bundle, release_id
from edgeship.deploy.pi.options import DEFAULT_KEEP, check_push_options, with_token
from edgeship.deploy.pi.ssh import SshOptions, SshSession, SshTarget, remote_path
from edgeship.deploy.pi.targets import PROBE_SCRIPT, choose_target, parse_probe

DEFAULT_REMOTE_DIR = "edgeship"
DEFAULT_RESULTS_NAME = "device-bench.json"
INSTALL_TIMEOUT = 1800.0  # a Pi 3 installing NumPy from the index can take minutes
STEP_TIMEOUT = 600.0

# progress(target, step, detail): step in connect, probe, upload, verify, install, smoke, doctor,
# bench, switch, serve, health, rollback, warning, done, failed.
ProgressCallback = Callable[[str, str, str], None]

__all__ = ["PushResult", "push_bundle", "release_id", "results_document"]


@dataclass(frozen=True)
class PushResult:
    """What happened on one host."""

    target: str
    ok: bool
    release: str | None = None
    error: str | None = None
    exit_code: int = 0
    seconds: float = 0.0
    reused_venv: bool | None = None
    bench_path: Path | None = None
    steps: dict[str, float] = field(default_factory=dict)
    device_target: str | None = None  # the OS target installed (edge_runtime.device.targets)
    device: dict[str, Any] | None = None  # the probe's facts
    serve_manager: str | None = None
    serve_at: str | None = None  # host:port of the service restarted on the new release

    def __post_init__(self) -> None:
        if self.ok == bool(self.error):
            raise ValueError(f"A PushResult is ok xor has an error. Received: {self}")


def _results_path(results: Path | None, bundle: Path, target: SshTarget, many: bool) -> Path:
    base = Path(results) if results else bundle.parent / DEFAULT_RESULTS_NAME
    if not many:
        return base
    tag = re.sub(r"[^A-Za-z0-9.-]+", "_", str(target)).strip("_")
    return base.with_name(f"{base.stem}-{tag}{base.suffix or '.json'}")


def results_document(
    host: str,
    bundle: LoadedBundle,
    device: dict[str, Any] | None,
    prepared: dict[str, Any],
) -> dict[str, Any]:
    """The results file of one host (`push --results`, `fleet --results`): one schema."""
    return {
        "schema_version": 1,
        "host": host,
        "target": prepared.get("target"),
        "device": device,
        "doctor": prepared.get("doctor"),
        "release": prepared.get("release"),
        "bundle": bundle.path.name,
        "bundle_sha256": bundle.sha256,
        "models": prepared.get("models", []),
    }


class _Deployer:
    """One push to one host: the transport around the bundle's device steps."""

    def __init__(
        self,
        bundle: LoadedBundle,
        target: SshTarget,
        options: SshOptions,
        remote_dir: str,
        keep: int,
        progress: ProgressCallback,
        device_target: str | None = None,
    ) -> None:
        self.bundle, self.target, self.options = bundle, target, options
        self.override = device_target
        self.device_target: str | None = None
        self.device: dict[str, Any] | None = None
        self.bench_threads: str | None = None
        self.dir = remote_path(remote_dir.rstrip("/") or "/")
        self.keep = keep
        self.progress = progress
        self.release = release_id(bundle.sha256)
        self.steps: dict[str, float] = {}
        self.reused_venv: bool | None = None
        self.serve_manager: str | None = None
        self.serve_at: str | None = None
        self.serve_token_file: Path | None = None

    def _say(self, step: str, detail: str = "") -> None:
        self.progress(str(self.target), step, detail)

    def _step(self, sess: SshSession, step: str, script: str, **kwargs: Any) -> str:
        started = time.perf_counter()
        proc = sess.run(script, step=step, timeout=kwargs.pop("timeout", STEP_TIMEOUT), **kwargs)
        out = device_steps.check(proc, self.target, step)
        self.steps[step] = round(self.steps.get(step, 0.0) + time.perf_counter() - started, 3)
        return out

    def _device(self, sess: SshSession, step: str, script: str, timeout: float) -> dict:
        """Run one of release.py's commands, its progress shown live; return its result."""

        def on_line(line: str) -> None:
            said = device_steps.progress_line(line)
            if said is not None:
                self._say(*said)

        started = time.perf_counter()
        proc = sess.stream(script, step=step, on_line=on_line, timeout=timeout)
        device_steps.check(proc, self.target, step)
        result = device_steps.result_of(proc.stdout, self.target, step)
        self.steps.update(result.get("steps", {}))
        self.steps[step] = round(time.perf_counter() - started, 3)
        return result

    def _cleanup(self, sess: SshSession) -> None:
        """Best effort (the connection may be gone): release.py abort."""
        with contextlib.suppress(DeployError):
            script = device_steps.abort_script(self.dir, self.release)
            sess.run(script, step="cleanup", timeout=120)

    def deploy(
        self, bench: bool, results: Path, serve: service.ServeSettings | None = None
    ) -> Path | None:
        """Run every step; return the bench results path (with `bench`)."""
        b = self.bundle
        self._say("connect", f"ssh {self.target}")
        started = time.perf_counter()
        bench_path = None
        with SshSession(self.target, self.options) as sess:
            sess.connect()
            self.steps["connect"] = round(time.perf_counter() - started, 3)
            device_target = self._probe(sess)
            try:
                self._say("upload", f"{b.size_bytes / 1e6:.1f} MB -> releases/{self.release}")
                self._step(
                    sess,
                    "upload",
                    device_steps.upload_script(self.dir, self.release),
                    stdin_path=b.path,
                )
                script = device_steps.prepare_script(
                    self.dir,
                    self.release,
                    b.top,
                    b.sha256,
                    device_target,
                    bench,
                    self.bench_threads,
                )
                prepared = self._device(sess, "prepare", script, INSTALL_TIMEOUT + STEP_TIMEOUT)
                self.reused_venv = bool(prepared.get("reused_venv"))
                if bench:
                    bench_path = self._write_results(results, prepared)
                if serve is not None and self.serve_token_file is not None:
                    self._say("serve", f"token -> {service.TOKEN_FILE} (mode 0600)")
                    self._step(
                        sess,
                        "serve",
                        service.token_upload_script(self.dir),
                        stdin_path=self.serve_token_file,
                    )
                settings = None if serve is None else dataclasses.asdict(serve)
                script = device_steps.activate_script(self.dir, self.release, settings, self.keep)
                activated = self._device(sess, "activate", script, STEP_TIMEOUT)
                self.serve_manager = activated.get("serve_manager")
                self.serve_at = activated.get("serve_at")
            except BaseException:
                self._cleanup(sess)
                raise
        return bench_path

    def _probe(self, sess: SshSession) -> str:
        """One round trip: the host's facts; pick its target (returned) or refuse before any
        upload."""
        self._say("probe", "machine, Python, OS, board")
        out = self._step(
            sess, "probe", '"${PYTHON:-python3}" - --json', stdin_path=PROBE_SCRIPT, timeout=120
        )
        facts = parse_probe(out)
        if facts is None:
            raise RemoteStepError(
                f"{self.target}: the probe (python3 edge_runtime/device/targets.py --json) printed "
                f"no facts; is python3 installed? Received: {device_steps.one_line(out)}"
            )
        target, note = choose_target(facts, list(self.bundle.manifest["targets"]), self.override)
        self.device, self.device_target = facts, target.name
        self._say("probe", f"{target.name}" + (f" ({note})" if note else ""))
        return target.name

    def _write_results(self, results: Path, prepared: dict[str, Any]) -> Path:
        data = results_document(str(self.target), self.bundle, self.device, prepared)
        try:
            atomic_write_text(results, json.dumps(data, indent=2) + "\n")
        except OutputError as err:
            raise DeployError(
                f"{self.target}: cannot write the bench results ({err.reason}); pass a "
                f"writable --results file; `current` was not switched. Received: path={results}"
            ) from None
        return results


def push_bundle(
    bundle: str | os.PathLike,
    targets: Sequence[SshTarget],
    options: SshOptions,
    *,
    remote_dir: str = DEFAULT_REMOTE_DIR,
    bench: bool = False,
    results: str | os.PathLike | None = None,
    keep: int = DEFAULT_KEEP,
    progress: ProgressCallback | None = None,
    device_target: str | None = None,
    bench_threads: str | None = None,
    serve: service.ServeSettings | None = None,
    serve_token_file: str | os.PathLike | None = None,
) -> list[PushResult]:
    """Deploy `bundle` to every target in parallel; one `PushResult` per target, in order.

    Each host's OS target is probed (`device_target` forces one); an unsupported host fails
    before anything is uploaded to it. `bench_threads` ("1,2,4") benches each thread count.
    `serve_token_file` (with `serve`): the service's token, copied to the device with mode 0600.
    Without `serve`, a device whose service is installed gets it restarted on the new release.
    """
    if not targets:
        raise DeployError("Pass at least one --host USER@HOST. Received: none")
    b = load_bundle(bundle)
    check_push_options(b, device_target, bench_threads)
    if serve_token_file is not None:
        serve = with_token(serve, Path(serve_token_file))
    say = progress or (lambda _t, _s, _d: None)
    many = len(targets) > 1

    def one(target: SshTarget) -> PushResult:
        started = time.perf_counter()
        deployer = _Deployer(b, target, options, remote_dir, keep, say, device_target)
        deployer.bench_threads = bench_threads
        deployer.serve_token_file = Path(serve_token_file) if serve_token_file else None
        out = _results_path(Path(results) if results else None, b.path, target, many)
        try:
            bench_path = deployer.deploy(bench, out, serve)
        except DeployError as err:
            say(str(target), "failed", str(err))
            return PushResult(
                target=str(target),
                ok=False,
                error=str(err),
                exit_code=err.exit_code,
                seconds=round(time.perf_counter() - started, 3),
                steps=deployer.steps,
                reused_venv=deployer.reused_venv,
                device_target=deployer.device_target,
                device=deployer.device,
            )
        seconds = round(time.perf_counter() - started, 3)
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in deployer.steps.items())
        say(str(target), "done", f"releases/{deployer.release} in {seconds:.1f} s ({steps})")
        return PushResult(
            target=str(target),
            ok=True,
            release=deployer.release,
            seconds=seconds,
            reused_venv=deployer.reused_venv,
            bench_path=bench_path,
            steps=deployer.steps,
            device_target=deployer.device_target,
            device=deployer.device,
            serve_manager=deployer.serve_manager,
            serve_at=deployer.serve_at,
        )

    if not many:
        return [one(targets[0])]
    with ThreadPoolExecutor(max_workers=min(len(targets), 16)) as pool:
        return list(pool.map(one, targets))
