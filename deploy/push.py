"""Push a bundle to devices over SSH: upload, verify, install, smoke-test, bench, switch.

On the device, under the remote dir (default `edgeship`, relative to the login's home):

    releases/<id>/        one folder per push (the unpacked bundle); `venv` links to venvs/
    venvs/<target>-<hash>/  one venv per target's requirements: an unchanged one is reused
    current -> releases/<id>    switched atomically (`ln -s` + `mv -T`) only after the
                                install, the smoke test and (with --bench) the bench passed

Before anything is uploaded, one round trip probes the host (`edge_runtime/targets.py --json`
run by its python3: machine, bits, Python, OS, board) and picks its target among the bundle's
(`--target` overrides); an unsupported host is refused there, with nothing uploaded.
A failure at any step removes the new release folder and leaves `current` as it was. The bench
runs in the new release before the switch, so a failed bench is a failed deploy, never a
"failed" report about a release that is already current.

With `--serve` (deploy/service.py), after the switch the service is (re)started on the new
release and its `/healthz` asked from the device; if it is not healthy, `current` goes back to
the previous release and the service is restarted there before the push fails. A push without
`--serve` to a device whose service is installed (its `serve.json` there) does the same with the
installed settings, so the service never keeps serving the release that `current` left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import service
from deploy.bundle import read_manifest
from deploy.errors import (
    DeployError,
    ManifestMismatchError,
    RemoteDiskFullError,
    RemoteStepError,
    TransferError,
)
from deploy.ssh import SshOptions, SshSession, SshTarget, remote_path
from deploy.targets import PROBE_SCRIPT, choose_target, parse_probe
from edge_runtime.errors import OutputError
from edge_runtime.files import atomic_write_text

DEFAULT_REMOTE_DIR = "edgeship"
DEFAULT_KEEP = 3
DEFAULT_RESULTS_NAME = "device-bench.json"
INSTALL_TIMEOUT = 1800.0  # a Pi 3 installing NumPy from the index can take minutes
STEP_TIMEOUT = 600.0

# progress(target, step, detail): step in connect, probe, upload, verify, install, smoke, doctor,
# bench, switch, done, failed.
ProgressCallback = Callable[[str, str, str], None]


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
    device_target: str | None = None  # the OS target installed (edge_runtime.targets)
    device: dict[str, Any] | None = None  # the probe's facts
    serve_manager: str | None = None
    serve_at: str | None = None  # host:port of the service restarted on the new release

    def __post_init__(self) -> None:
        if self.ok == bool(self.error):
            raise ValueError(f"A PushResult is ok xor has an error. Received: {self}")


@dataclass(frozen=True)
class _Bundle:
    path: Path
    sha256: str
    size_bytes: int
    top: str
    manifest: dict[str, Any]

    def venv_key(self, target: str) -> str:
        """The venv folder of `target`'s requirements (unchanged requirements: same venv)."""
        return f"{target}-{self.manifest['targets'][target]['requirements_sha256'][:12]}"


def _load_bundle(path: str | os.PathLike) -> _Bundle:
    path = Path(path)
    top, manifest = read_manifest(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    for key in ("targets", "models", "files"):
        if key not in manifest:
            raise DeployError(f"The bundle's manifest lacks `{key}`; rebuild it. Received: {path}")
    return _Bundle(path, digest.hexdigest(), path.stat().st_size, top, manifest)


def _one_line(text: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    line = (errors or lines or ["(no output)"])[-1]
    return line.removeprefix("error: ")[:limit]


def _check(proc, target: SshTarget, step: str) -> str:
    """Raise the error a failed remote step deserves; return its stdout when it succeeded."""
    if proc.returncode == 0:
        return proc.stdout
    out = proc.stderr + "\n" + proc.stdout
    if "No space left on device" in out or "Disk quota exceeded" in out:
        raise RemoteDiskFullError(
            f"{target}: the device ran out of disk space during {step}; free some space "
            f"(df -h) and push again; the previous release is untouched. "
            f"Received: {_one_line(out)}"
        )
    if "edgeship-transfer-mismatch" in out:
        raise TransferError(
            f"{target}: the uploaded bundle's sha256 differs from the local one (transfer cut "
            f"off or corrupted); push again. Received: {_one_line(out)}"
        )
    if "manifest mismatch" in out:
        raise ManifestMismatchError(f"{target}: the device refused the bundle: {_one_line(out)}")
    raise RemoteStepError(
        f"{target}: {step} failed on the device (exit {proc.returncode}); the previous release "
        f"is untouched. Received: {_one_line(out)}"
    )


def release_id(bundle_sha256: str) -> str:
    """A sortable, unique release folder name: UTC time (ms), bundle hash, 4 random hex digits."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1000):03d}Z"
    return f"{stamp}-{bundle_sha256[:8]}-{os.urandom(2).hex()}"


def _results_path(results: Path | None, bundle: Path, target: SshTarget, many: bool) -> Path:
    base = Path(results) if results else bundle.parent / DEFAULT_RESULTS_NAME
    if not many:
        return base
    tag = re.sub(r"[^A-Za-z0-9.-]+", "_", str(target)).strip("_")
    return base.with_name(f"{base.stem}-{tag}{base.suffix or '.json'}")


def _parse_json_line(text: str, what: str, target: SshTarget) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise RemoteStepError(f"{target}: {what} printed no JSON object. Received: {_one_line(text)}")


class _Deployer:
    """The steps of one push to one host."""

    def __init__(
        self,
        bundle: _Bundle,
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
        self.doctor: dict[str, Any] | None = None
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

    def _step(
        self,
        sess: SshSession,
        step: str,
        script: str,
        *,
        stdin_path: Path | None = None,
        timeout: float = STEP_TIMEOUT,
    ) -> str:
        started = time.perf_counter()
        proc = sess.run(script, step=step, stdin_path=stdin_path, timeout=timeout)
        out = _check(proc, self.target, step)
        self.steps[step] = round(self.steps.get(step, 0.0) + time.perf_counter() - started, 3)
        return out

    def _cleanup(self, sess: SshSession) -> None:
        rel = shlex.quote(self.release)
        script = (
            f"cd {self.dir}/releases 2>/dev/null || exit 0; "
            f"rm -rf .{rel}.tar.gz.part .{rel}.partial; "
            # kept only when it stayed current (--serve failed with nothing to roll back to)
            f'[ "$(readlink ../current)" = releases/{rel} ] || rm -rf {rel}'
        )
        with contextlib.suppress(DeployError):  # best effort: the connection may be gone
            sess.run(script, step="cleanup", timeout=120)

    def deploy(
        self, bench: bool, results: Path | None, serve: service.ServeSettings | None = None
    ) -> tuple[Path | None, bool]:
        """Run every step; return (bench results path, venv reused)."""
        b, rel = self.bundle, shlex.quote(self.release)
        self._say("connect", f"ssh {self.target}")
        started = time.perf_counter()
        with SshSession(self.target, self.options) as sess:
            sess.connect()
            self.steps["connect"] = round(time.perf_counter() - started, 3)
            self._probe(sess)
            venv_key = b.venv_key(self.device_target)
            try:
                self._say("upload", f"{b.size_bytes / 1e6:.1f} MB -> releases/{self.release}")
                self._step(
                    sess,
                    "upload",
                    (
                        f"set -e; mkdir -p {self.dir}/releases {self.dir}/venvs; "
                        f"cd {self.dir}/releases; test ! -e {rel}; cat > .{rel}.tar.gz.part"
                    ),
                    stdin_path=b.path,
                )
                self._say("verify", "sha256 of the upload and of every file")
                self._step(
                    sess,
                    "verify",
                    (
                        f"set -e; cd {self.dir}/releases; "
                        f"got=$(sha256sum .{rel}.tar.gz.part | cut -d' ' -f1); "
                        f'if [ "$got" != {b.sha256} ]; then '
                        f'echo "error: edgeship-transfer-mismatch: sha256 $got" >&2; exit 3; fi; '
                        f"mkdir .{rel}.partial; "
                        f"tar -xzf .{rel}.tar.gz.part -C .{rel}.partial --strip-components=1 "
                        f"--no-same-owner; rm -f .{rel}.tar.gz.part; "
                        f"python3 .{rel}.partial/verify.py; mv .{rel}.partial {rel}"
                    ),
                )
                self._say("install", f"{self.device_target}: venvs/{venv_key}")
                out = self._step(
                    sess,
                    "install",
                    (
                        f"set -e; cd {self.dir}; venvs=$(cd venvs && pwd); cd releases/{rel}; "
                        f"EDGESHIP_TARGET={shlex.quote(self.device_target)} "
                        f'./install.sh --venv "$venvs"/{venv_key}'
                    ),
                    timeout=INSTALL_TIMEOUT,
                )
                self.reused_venv = "reusing venv" in out
                self._say("install", "venv reused" if self.reused_venv else "venv installed")
                self._smoke(sess)
                self._doctor(sess)
                bench_path = self._bench(sess, results) if bench else None
                previous, installed = self._installed(sess)
                if serve is None and installed is not None:
                    self._say("serve", "the installed service restarts on the new release")
                    serve = installed
                self._switch(sess, f"releases/{self.release}")
                if serve is not None:
                    self._serve(sess, serve, previous)
            except BaseException:
                self._cleanup(sess)
                raise
            self._prune(sess)
        return bench_path, bool(self.reused_venv)

    def _installed(self, sess: SshSession) -> tuple[str, service.ServeSettings | None]:
        """`current`'s target now, and the installed service's settings (None: none)."""
        out = self._step(sess, "switch", service.installed_script(self.dir))
        previous, _, settings = out.partition("\n")
        if not settings.strip():
            return previous.strip(), None
        try:
            return previous.strip(), service.ServeSettings.from_json(settings)
        except (ValueError, KeyError, TypeError) as err:
            raise RemoteStepError(
                f"{self.target}: the installed service's {service.SETTINGS_FILE} is unreadable "
                f"({err}); push with --serve to install the service again; `current` was not "
                f"switched. Received: {_one_line(settings)}"
            ) from None

    def _probe(self, sess: SshSession) -> None:
        """One round trip: the host's facts; pick its target or refuse before any upload."""
        self._say("probe", "machine, Python, OS, board")
        out = self._step(
            sess, "probe", '"${PYTHON:-python3}" - --json', stdin_path=PROBE_SCRIPT, timeout=120
        )
        facts = parse_probe(out)
        if facts is None:
            raise RemoteStepError(
                f"{self.target}: the probe (python3 edge_runtime/targets.py --json) printed no "
                f"facts; is python3 installed? Received: {_one_line(out)}"
            )
        target, note = choose_target(facts, list(self.bundle.manifest["targets"]), self.override)
        self.device, self.device_target = facts, target.name
        self._say("probe", f"{target.name}" + (f" ({note})" if note else ""))

    def _doctor(self, sess: SshSession) -> None:
        """`python -m edge_runtime doctor --json` in the new release; kept for the results."""
        model = self.bundle.manifest["models"][0]["file"]
        started = time.perf_counter()
        proc = sess.run(
            (
                f"cd {self.dir}/releases/{shlex.quote(self.release)} && "
                f"venv/bin/python -m edge_runtime doctor --json --dir . {shlex.quote(model)}"
            ),
            step="doctor",
            timeout=STEP_TIMEOUT,
        )
        self.steps["doctor"] = round(time.perf_counter() - started, 3)
        try:
            self.doctor = _parse_json_line(proc.stdout, "doctor --json", self.target)
        except RemoteStepError as err:  # an old or broken doctor never fails a deploy
            self._say("doctor", f"no report ({err})")
            return
        counts = {s: 0 for s in ("fail", "warn")}
        for check in self.doctor.get("checks", []):
            if check.get("status") in counts:
                counts[check["status"]] += 1
        worst = [
            f"{c['name']}: {c['detail']}"
            for c in self.doctor.get("checks", [])
            if c.get("status") == "fail"
        ]
        summary = f"{counts['fail']} fail, {counts['warn']} warn"
        self._say("doctor", summary + (f" ({'; '.join(worst)})" if worst else ""))
    def _switch(self, sess: SshSession, target: str) -> None:
        """Point `current` at `target` (releases/<id>) atomically."""
        self._say("switch", f"current -> {target}")
        tmp = shlex.quote(f".current.{self.release}")
        self._step(
            sess,
            "switch",
            f"set -e; cd {self.dir}; ln -sfn {shlex.quote(target)} {tmp}; mv -T {tmp} current",
        )

    def _serve(self, sess: SshSession, settings: service.ServeSettings, previous: str) -> None:
        """(Re)start the service on the new release and check /healthz from the device; on
        failure switch back to `previous`, restart it there, and raise."""
        models = [m["file"] for m in self.bundle.manifest["models"]]
        abs_dir = self._step(sess, "serve", f"cd {self.dir} && pwd").strip()
        if self.serve_token_file is not None:
            self._say("serve", f"token -> {service.TOKEN_FILE} (mode 0600)")
            self._step(
                sess, "serve", service.token_upload_script(self.dir),
                stdin_path=self.serve_token_file,
            )
        self._say("serve", f"restart on port {settings.port}")
        out = self._step(sess, "serve", service.restart_script(abs_dir, models, settings))
        self.serve_manager = next(
            (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("manager:")),
            None,
        )
        self.serve_at = f"{settings.host}:{settings.port}"
        self._say("health", f"http://{settings.check_host}:{settings.port}/healthz on the device")
        try:
            self._step(sess, "health", service.health_script(self.dir, settings, self.release))
        except DeployError as err:
            if not previous.startswith("releases/"):
                raise RemoteStepError(
                    f"{self.target}: the service did not become healthy on the new release and "
                    f"there is no previous release to go back to. Received: {err}"
                ) from None
            self._say("rollback", f"current -> {previous}")
            self._switch(sess, previous)
            self._step(sess, "rollback", service.restart_script(abs_dir, models, settings))
            back = shlex.quote(previous.rsplit("/", 1)[-1])
            try:
                self._step(sess, "rollback", service.health_script(self.dir, settings, None))
                state = f"the previous release {back} serves again"
            except DeployError as again:
                state = f"the previous release {back} is current but not healthy either ({again})"
            raise RemoteStepError(
                f"{self.target}: the new release's service is not healthy; rolled back: "
                f"{state}. Received: {err}"
            ) from None

    def _smoke(self, sess: SshSession) -> None:
        for model in self.bundle.manifest["models"]:
            self._say("smoke", f"predict {model['file']} {model['sample']}")
            out = self._step(
                sess,
                "smoke",
                (
                    f"cd {self.dir}/releases/{shlex.quote(self.release)} && "
                    f"venv/bin/python -m edge_runtime predict --json "
                    f"{shlex.quote(model['file'])} {shlex.quote(model['sample'])}"
                ),
            )
            got = _parse_json_line(out, "the smoke test (predict --json)", self.target)
            if got.get("index") != model["index"]:
                raise RemoteStepError(
                    f"{self.target}: smoke test failed: {model['file']} on {model['sample']} "
                    f"answered {got.get('label')!r} (class {got.get('index')}) on the device but "
                    f"{model['label']!r} (class {model['index']}) on the desktop. Received: {got}"
                )

    def _prune(self, sess: SshSession) -> None:
        """Remove all but the newest `keep` releases (never `current`)."""
        if self.keep <= 0:
            return
        script = (
            f"cd {self.dir}/releases || exit 0; cur=$(readlink ../current | sed 's|.*/||'); "
            f"ls -1 | grep -E '^[0-9]{{8}}T[0-9]{{9}}Z-[0-9a-f]{{8}}-[0-9a-f]{{4}}$' | sort -r | "
            f"tail -n +{self.keep + 1} | {{ failed=0; while read -r r; do "
            f'[ "$r" = "$cur" ] || rm -rf "$r" || failed=1; done; exit $failed; }}'
        )
        try:
            _check(sess.run(script, step="prune", timeout=300), self.target, "prune")
        except DeployError as err:  # old releases left are not a failed deploy: a warning
            self._say("warning", f"old releases were not all removed (--keep {self.keep}): {err}")

    def _bench(self, sess: SshSession, results: Path) -> Path:
        runs = []
        for model in self.bundle.manifest["models"]:
            self._say("bench", model["file"])
            threads = f" --threads {shlex.quote(self.bench_threads)}" if self.bench_threads else ""
            out = self._step(
                sess,
                "bench",
                (
                    f"cd {self.dir}/releases/{shlex.quote(self.release)} && "
                    f"venv/bin/python -m edge_runtime bench "
                    f"{shlex.quote(model['file'])} --json{threads}"
                ),
            )
            lines = [ln for ln in out.splitlines() if ln.startswith("{")] or [out]
            for line in lines:  # one JSON line per thread count
                runs.append(
                    {
                        "file": model["file"],
                        "mode": model.get("mode"),
                        **_parse_json_line(line, "bench --json", self.target),
                    }
                )
        data = {
            "schema_version": 1,
            "host": str(self.target),
            "target": self.device_target,
            "device": self.device,
            "doctor": self.doctor,
            "release": self.release,
            "bundle": self.bundle.path.name,
            "bundle_sha256": self.bundle.sha256,
            "models": runs,
        }
        try:
            atomic_write_text(results, json.dumps(data, indent=2) + "\n")
        except OutputError as err:
            raise DeployError(
                f"{self.target}: cannot write the bench results ({err.reason}); pass a "
                f"writable --results file; `current` was not switched. Received: path={results}"
            ) from None
        return results


def _check_push_options(
    b: _Bundle, device_target: str | None, bench_threads: str | None
) -> None:
    """`--target` and `--threads`, refused before any host is contacted."""
    from edge_runtime.bench import parse_threads
    from edge_runtime.targets import get_target

    if device_target is not None:
        try:
            get_target(device_target)
        except ValueError as err:
            raise DeployError(f"--target: {err}") from None
        if device_target not in b.manifest["targets"]:
            raise DeployError(
                f"--target {device_target} is not in the bundle (built for "
                f"{', '.join(b.manifest['targets'])}); rebuild it with `edgeship deploy bundle "
                f"RUN --target {device_target}`. Received: --target={device_target}"
            )
    if bench_threads is not None:
        try:
            parse_threads(bench_threads)
        except ValueError as err:
            raise DeployError(str(err)) from None


def _with_token(serve: service.ServeSettings | None, path: Path) -> service.ServeSettings:
    """`serve` needing the token in `path`, checked (readable, one line) before any host."""
    from edge_runtime.errors import EdgeshipError
    from edge_runtime.serve_options import read_token_file

    if serve is None:
        raise DeployError(
            "--serve-token-file goes with --serve; add --serve. "
            f"Received: --serve-token-file {path}"
        )
    try:
        read_token_file(path, option="--serve-token-file")
    except EdgeshipError as err:
        raise DeployError(str(err)) from None
    return dataclasses.replace(serve, token=True)


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
    b = _load_bundle(bundle)
    _check_push_options(b, device_target, bench_threads)
    if serve_token_file is not None:
        serve = _with_token(serve, Path(serve_token_file))
    say = progress or (lambda _t, _s, _d: None)
    many = len(targets) > 1

    def one(target: SshTarget) -> PushResult:
        started = time.perf_counter()
        deployer = _Deployer(b, target, options, remote_dir, keep, say, device_target)
        deployer.bench_threads = bench_threads
        deployer.serve_token_file = Path(serve_token_file) if serve_token_file else None
        out = _results_path(Path(results) if results else None, b.path, target, many)
        try:
            bench_path, reused = deployer.deploy(bench, out, serve)
        except DeployError as err:
            say(str(target), "failed", str(err))
            return PushResult(
                target=str(target),
                ok=False,
                error=str(err),
                exit_code=err.exit_code,
                release=None,
                seconds=round(time.perf_counter() - started, 3),
                reused_venv=deployer.reused_venv,
                steps=deployer.steps,
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
            reused_venv=reused,
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
