"""The device side of a deploy: every step that runs on the Pi, for `push` and `fleet` alike.

    tar -xzOf ARCHIVE TOP/release.py | python3 - prepare --dir D --release R --archive A --sha256 S
    python3 D/releases/R/release.py activate --dir D --release R [--serve --port P ...] [--keep N]
    python3 D/releases/R/release.py abort --dir D --release R

`prepare`: the upload's sha256, unpack into releases/.R.partial, verify.py, rename to
releases/R, install.sh (the venv in venvs/<target>-<requirements hash> is reused when the
requirements are unchanged), the smoke test (each model's answer on its sample must be the
desktop's), doctor, and with --bench the on-device bench. Nothing of `current` changes.
`activate`: switch `current` atomically, (re)start the service (--serve, or the settings of an
installed one in serve.json) and ask its /healthz; on failure `current` goes back to the previous
release, the service is restarted there, and it exits 3. Then keep the newest N releases.
`abort`: remove what a failed deploy left (never the release `current` points at).

Standard library only (it runs with the system python3 before any venv exists). Progress goes to
stdout as JSON lines {"step", "detail"}; the last line is {"result": {...}}; an error is one
`error: ...` line on stderr and a non-zero exit.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

MARKER = ".edgeship-release.json"  # in each release: which bundle it came from
RELEASE_PATTERN = "????????T?????????Z-????????-????"
INSTALL_TIMEOUT = 1800
STEP_TIMEOUT = 600


class StepError(Exception):
    """A failed step: its message is the one `error:` line."""


def say(step, detail=""):
    """One progress line on stdout."""
    print(json.dumps({"step": step, "detail": detail}), flush=True)


def one_line(text, limit=300):
    """The line of a command's output that says what went wrong."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["(no output)"])[-1].removeprefix("error: ")[:limit]


def run(argv, step, cwd, timeout=STEP_TIMEOUT, env=None):
    """Run `argv`; return its stdout, or raise with the line that says why it failed."""
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise StepError(f"{step} did not finish within {timeout} s") from None
    if proc.returncode != 0:
        out = proc.stderr + "\n" + proc.stdout
        if "No space left on device" in out or "Disk quota exceeded" in out:
            raise StepError(f"No space left on device during {step}: {one_line(out)}")
        raise StepError(f"{step} failed on the device (exit {proc.returncode}): {one_line(out)}")
    return proc.stdout


def last_json(text, what):
    """The last JSON object line of `text`."""
    for line in reversed(text.strip().splitlines()):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    raise StepError(f"{what} printed no JSON object: {one_line(text)}")


def sha256_of(path):
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- prepare --------------------------------------------------------------------------------


def _inside(path):
    """`path` (relative, '/'-separated) stays inside the release: not absolute, no '..' out."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    depth = 0
    for part in path.split("/"):
        if part == "..":
            depth -= 1
        elif part not in ("", "."):
            depth += 1
        if depth < 0:
            return False
    return True


def _through_link(path, links):
    """True if a leading part of `path` (as written, before any '..') is a symlink member."""
    parts = path.split("/")
    return any("/".join(parts[:i]) in links for i in range(1, len(parts)))


def checked_members(members):
    """The archive's members with the top folder stripped, each checked here, whatever the
    Python (Debian 12's 3.11.2 has no tarfile data filter): only files, folders and links that
    stay inside the release, no devices or FIFOs, no setuid/setgid/sticky or world-writable
    modes. StepError (one line, nothing written) on the first bad member."""
    import stat

    unsafe_modes = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH
    kept, links = [], set()
    top = members[0].name.split("/", 1)[0] if members else ""
    for member in members:
        parts = member.name.split("/", 1)
        if parts[0] != top or top in ("", ".", ".."):
            raise StepError(
                f"the bundle is unsafe to unpack, nothing was written: {member.name!r} is "
                f"outside the bundle's top folder {top!r}"
            )
        if len(parts) == 2 and parts[1]:
            member.name = parts[1].rstrip("/")
            kept.append(member)
            if member.issym():
                links.add(member.name)
    files = set()
    for member in kept:
        name = member.name
        why = None
        if not _inside(name) or ".." in name.split("/"):
            why = "a path outside the release"
        elif _through_link(name, links):
            why = "a path through a symlink"
        elif not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            why = "not a file, folder or link (a device or FIFO)"
        elif not member.issym() and member.mode & unsafe_modes:
            why = f"a mode that is setuid, setgid, sticky or world-writable ({member.mode:04o})"
        elif member.issym():
            target = member.linkname
            joined = "/".join([*name.split("/")[:-1], target])
            if target.startswith("/") or not _inside(joined) or _through_link(joined, links):
                why = f"a symlink that points outside the release ({target})"
        elif member.islnk():
            target = member.linkname.split("/", 1)[-1]
            if target not in files:
                why = f"a hard link to something that is not a file of the release ({target})"
            member.linkname = target
        if why:
            raise StepError(
                f"the bundle is unsafe to unpack, nothing was written: {name!r} is {why}"
            )
        if member.isreg():
            files.add(name)
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    return kept


def unpack(releases, release, archive, want_sha):
    """Check the upload's sha256, unpack it into .R.partial, verify.py, rename to R."""
    got = sha256_of(archive)
    if got != want_sha:
        raise StepError(f"edgeship-transfer-mismatch: sha256 {got}")
    partial = os.path.join(releases, f".{release}.partial")
    final = os.path.join(releases, release)
    if os.path.lexists(final):
        raise StepError(f"releases/{release} exists already")
    with tarfile.open(archive, "r:gz") as tar:
        members = checked_members(tar.getmembers())  # before anything is written
        os.mkdir(partial)
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(partial, members=members, **kwargs)
    os.remove(archive)
    out = run([sys.executable, "verify.py"], "verify", partial)
    os.rename(partial, final)
    return final, out


def install(folder, venvs, target, manifest):
    """install.sh in the release, the venv shared by every release with these requirements."""
    key = f"{target}-{manifest['targets'][target]['requirements_sha256'][:12]}"
    say("install", f"{target}: venvs/{key}")
    env = dict(os.environ, EDGESHIP_TARGET=target)
    out = run(
        ["./install.sh", "--venv", os.path.join(venvs, key)],
        "install",
        folder,
        INSTALL_TIMEOUT,
        env,
    )
    reused = "reusing venv" in out
    say("install", "venv reused" if reused else "venv installed")
    return reused


def smoke(folder, manifest):
    """Each model's answer on its sample must be the one the desktop gave."""
    for model in manifest["models"]:
        say("smoke", f"predict {model['file']} {model['sample']}")
        out = run(
            [
                "venv/bin/python",
                "-m",
                "edge_runtime",
                "predict",
                "--json",
                model["file"],
                model["sample"],
            ],
            "smoke",
            folder,
        )
        got = last_json(out, "the smoke test (predict --json)")
        if got.get("index") != model["index"]:
            raise StepError(
                f"smoke test failed: {model['file']} on {model['sample']} answered "
                f"{got.get('label')!r} (class {got.get('index')}) on the device but "
                f"{model['label']!r} (class {model['index']}) on the desktop. Received: {got}"
            )


def doctor(folder, manifest):
    """`doctor --json` in the new release: kept for the results, never fails a deploy."""
    model = manifest["models"][0]["file"]
    proc = subprocess.run(
        ["venv/bin/python", "-m", "edge_runtime", "doctor", "--json", "--dir", ".", model],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    try:
        report = last_json(proc.stdout, "doctor --json")
    except StepError as err:
        say("doctor", f"no report ({err})")
        return None
    checks = report.get("checks", [])
    fails = [f"{c['name']}: {c['detail']}" for c in checks if c.get("status") == "fail"]
    warns = sum(1 for c in checks if c.get("status") == "warn")
    say("doctor", f"{len(fails)} fail, {warns} warn" + (f" ({'; '.join(fails)})" if fails else ""))
    return report


def bench(folder, manifest, threads):
    """`bench --json` of each model (each thread count) in the new release."""
    runs = []
    for model in manifest["models"]:
        say("bench", model["file"])
        extra = ["--threads", threads] if threads else []
        out = run(
            ["venv/bin/python", "-m", "edge_runtime", "bench", model["file"], "--json", *extra],
            "bench",
            folder,
        )
        lines = [ln for ln in out.splitlines() if ln.startswith("{")] or [out]
        for line in lines:  # one JSON line per thread count
            runs.append(
                {"file": model["file"], "mode": model.get("mode"), **last_json(line, "bench")}
            )
    return runs


def prepare(args):
    """Everything before `current` moves; on failure nothing of the new release is left."""
    try:
        return _prepare(args)
    except BaseException:
        abort(args)
        raise


def _prepare(args):
    root = os.path.abspath(os.path.expanduser(args.dir))
    releases, venvs = os.path.join(root, "releases"), os.path.join(root, "venvs")
    os.makedirs(venvs, exist_ok=True)
    steps, started = {}, time.perf_counter()

    def lap(step):
        nonlocal started
        now = time.perf_counter()
        steps[step] = round(steps.get(step, 0.0) + now - started, 3)
        started = now

    say("verify", "sha256 of the upload and of every file")
    folder, _ = unpack(releases, args.release, os.path.join(releases, args.archive), args.sha256)
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
        manifest = json.load(handle)
    marker = {"bundle_sha256": args.sha256, "target": args.target}
    with open(os.path.join(folder, MARKER), "w", encoding="utf-8") as handle:
        json.dump(marker, handle, sort_keys=True)
    lap("verify")
    reused = install(folder, venvs, args.target, manifest)
    lap("install")
    smoke(folder, manifest)
    lap("smoke")
    report = doctor(folder, manifest)
    lap("doctor")
    runs = bench(folder, manifest, args.threads) if args.bench else []
    if args.bench:
        lap("bench")
    return {
        "release": args.release,
        "target": args.target,
        "reused_venv": reused,
        "doctor": report,
        "models": runs,
        "steps": steps,
    }


# --- activate: switch, service, health, rollback, keep N -------------------------------------


def switch(root, target, release):
    """Point `current` at `target` (releases/<id>) atomically."""
    say("switch", f"current -> {target}")
    tmp = os.path.join(root, f".current.{release}")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, os.path.join(root, "current"))


def prune(root, keep):
    """Remove all but the newest `keep` releases (never `current`); a failure is a warning."""
    if keep <= 0:
        return
    import fnmatch

    releases = os.path.join(root, "releases")
    current = os.path.basename(os.readlink(os.path.join(root, "current")))
    names = sorted(n for n in os.listdir(releases) if fnmatch.fnmatch(n, RELEASE_PATTERN))
    failed = []
    for name in names[::-1][keep:]:
        if name == current:
            continue
        try:
            shutil.rmtree(os.path.join(releases, name))
        except OSError as err:
            failed.append(f"{name}: {err}")
    if failed:  # old releases left are not a failed deploy: one warning line
        say("warning", f"old releases were not all removed (--keep {keep}): {'; '.join(failed)}")


def activate(args):
    """Switch `current`, restart and check the service (or roll back), keep N."""
    try:
        return _activate(args)
    except Exception as err:
        if type(err).__name__ == "ServiceError":  # device_service's
            raise StepError(str(err)) from None
        raise


def _activate(args):
    # beside this file in the release (not there when `prepare` runs from the upload)
    from device_service import (
        SETTINGS_FILE,
        ServiceError,
        health,
        read_settings,
        restart,
        unit_text,
    )

    root = os.path.abspath(os.path.expanduser(args.dir))
    try:
        previous = os.readlink(os.path.join(root, "current"))
    except OSError:
        previous = ""
    settings = None
    if args.serve:
        settings = {
            "port": args.port,
            "host": args.host,
            "token": args.token,
            "camera": args.camera,
        }
    elif os.path.exists(os.path.join(root, SETTINGS_FILE)):
        try:
            settings = read_settings(root)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StepError(
                f"the installed service's {SETTINGS_FILE} is unreadable ({err}); push with "
                f"--serve to install the service again; `current` was not switched"
            ) from None
        say("serve", "the installed service restarts on the new release")
    folder = os.path.join(root, "releases", args.release)
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as handle:
        models = [m["file"] for m in json.load(handle)["models"]]
    if settings is not None:
        try:  # a name systemd cannot carry is refused before the switch
            unit_text(root, models, settings)
        except ValueError as err:
            raise StepError(f"{err}; `current` was not switched") from None
    switch(root, f"releases/{args.release}", args.release)
    result = {
        "release": args.release,
        "previous": previous,
        "serve_manager": None,
        "serve_at": None,
    }
    if settings is not None:
        say("serve", f"restart on port {settings['port']}")
        result["serve_manager"] = restart(root, models, settings).split(" ", 1)[0]
        result["serve_at"] = f"{settings['host']}:{settings['port']}"
        say("health", f"/healthz on port {settings['port']} on the device")
        try:
            health(settings, args.release)
        except ServiceError as err:
            if not previous.startswith("releases/"):
                raise StepError(
                    "the service did not become healthy on the new release and there is no "
                    f"previous release to go back to. Received: {err}"
                ) from None
            say("rollback", f"current -> {previous}")
            switch(root, previous, args.release)
            restart(root, models, settings)
            back = previous.rsplit("/", 1)[-1]
            try:
                health(settings, None)
                state = f"the previous release {back} serves again"
            except ServiceError as again:
                state = f"the previous release {back} is current but not healthy either ({again})"
            raise StepError(
                f"the new release's service is not healthy; rolled back: {state}. Received: {err}"
            ) from None
    prune(root, args.keep)
    return result


def abort(args):
    """Remove what a failed deploy of `release` left (kept only when it is `current`)."""
    root = os.path.abspath(os.path.expanduser(args.dir))
    releases = os.path.join(root, "releases")
    names = [f".{args.release}.tar.gz.part", f".{args.release}.partial"]
    for name in [*names, f".{args.release}.release.py"]:
        path = os.path.join(releases, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    try:
        current = os.readlink(os.path.join(root, "current"))
    except OSError:
        current = ""
    if current != f"releases/{args.release}":
        shutil.rmtree(os.path.join(releases, args.release), ignore_errors=True)
    return {"release": args.release, "removed": current != f"releases/{args.release}"}


def main(argv=None):
    """prepare | activate | abort; exit 0, or 3 with one `error:` line."""
    parser = argparse.ArgumentParser(prog="release.py")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "activate", "abort"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True)
        p.add_argument("--release", required=True)
    p = sub.choices["prepare"]
    p.add_argument("--archive", required=True, help="the upload, relative to releases/")
    p.add_argument("--sha256", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--bench", action="store_true")
    p.add_argument("--threads")
    p = sub.choices["activate"]
    p.add_argument("--serve", action="store_true")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--token", action="store_true")
    p.add_argument("--camera", default=None, help="the service's --camera SOURCE")
    p.add_argument("--keep", type=int, default=3)
    args = parser.parse_args(argv)
    step = {"prepare": prepare, "activate": activate, "abort": abort}[args.command]
    try:
        result = step(args)
    except StepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except OSError as err:
        print(f"error: {args.command} failed on the device: {err}", file=sys.stderr)
        return 3
    print(json.dumps({"result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
