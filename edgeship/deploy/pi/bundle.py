"""Build the device bundle: one folder in a deterministic .tar.gz, every file in its manifest.

<name>/edge_runtime/      the runtime package source (no __pycache__)
<name>/models/            model_<mode>.tflite (or the run's own .tflite files: a stock model)
<name>/samples/           one PNG per input shape, the smoke test's image
<name>/requirements-<target>.txt   exact pins per target (edgeship.deploy.pi.requirements)
<name>/install.sh         verify, detect the target (edge_runtime/device/targets.py), make or reuse
                          a venv, install
<name>/verify.py          every file against manifest.json (standard library only)
<name>/README.md
<name>/wheels/<target>/   with --with-wheels: every wheel each target needs (offline install)
<name>/web/               with --web: the offline web app (`deploy web`'s), for `serve --web web`
<name>/manifest.json      sha256 of every other file, targets, models, samples, expected answers
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import edge_runtime
from edge_runtime.device.targets import get_target
from edge_runtime.files import atomic_path, sha256_bytes
from edge_runtime.native_log import filtered_native_stderr
from edgeship.deploy.errors import BundleError
from edgeship.deploy.pi.bundle_samples import expected_answers, sample_for
from edgeship.deploy.pi.requirements import requirements_text, target_pins
from edgeship.deploy.pi.targets import parse_target_names

BUNDLE_FORMAT = "edgeship-bundle"
BUNDLE_SCHEMA_VERSION = 2  # 2: per-target requirements and wheels
DEFAULT_MODELS = ("int8", "float32")
# Fixed tar metadata: the same inputs give the same bytes.
TAR_MTIME = 1700000000
REMOTE_FILES = Path(__file__).parent / "remote"
EXECUTABLE = {"install.sh"}

# progress(message): one line per stage of the build.
ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class BundleInfo:
    """A built bundle: where it is, its size and sha256, and what it holds."""

    path: Path
    size_bytes: int
    sha256: str
    top: str
    models: tuple[str, ...]
    wheels: tuple[str, ...]
    files: int
    targets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size_bytes <= 0 or len(self.sha256) != 64 or not self.models:
            raise ValueError(f"Inconsistent BundleInfo. Received: {self}")


@dataclass(frozen=True)
class _Entry:
    """One file of the bundle: its path inside the top folder, its bytes (read once), its mode."""

    name: str
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class _Model:
    """A model the bundle ships: the `--models` item, its file in the run and its entry."""

    item: str
    path: Path
    entry: _Entry


def _file_entry(name: str, path: Path, mode: int = 0o644) -> _Entry:
    """The entry `name` holding the bytes of `path` (the one read of that file)."""
    return _Entry(name, path.read_bytes(), mode)


def parse_model_names(text: str | Sequence[str]) -> tuple[str, ...]:
    """`--models`: `"int8,float32"` -> ("int8", "float32"), in the given order, without duplicates.

    An item is a mode (RUN/model_<mode>.tflite) or any other .tflite name in RUN, so unlike
    `edgeship.convert.parse_modes` it checks no name against the modes (`_model_path` does).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    modes = tuple(dict.fromkeys(m.strip() for m in items if m.strip()))
    if not modes:
        raise BundleError(
            f"--models needs at least one mode, e.g. int8,float32. Received: {text!r}"
        )
    return modes


def _top_name(out: Path) -> str:
    name = out.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name or "edgeship-bundle"


def default_models(run_dir: Path) -> tuple[str, ...]:
    """What a bundle ships without --models: int8 and float32 of an edgeship run; a folder of
    other .tflite files (a stock model, `edgeship label`led) ships all of them."""
    if run_dir.is_dir() and not any(run_dir.glob("model_*.tflite")):
        found = tuple(sorted(p.stem for p in run_dir.glob("*.tflite") if p.is_file()))
        if found:
            return found
    return DEFAULT_MODELS


def _model_path(run_dir: Path, item: str) -> Path:
    """`int8` -> RUN/model_int8.tflite; any other name -> RUN/<name>[.tflite] if it exists."""
    mode_file = run_dir / f"model_{item}.tflite"
    if mode_file.is_file():
        return mode_file
    for candidate in (run_dir / item, run_dir / f"{item}.tflite"):
        if candidate.suffix == ".tflite" and candidate.is_file():
            return candidate
    return mode_file


def _models(run_dir: Path, items: Sequence[str]) -> list[_Model]:
    """Each item's model file, read once and checked: it exists and is a .tflite."""
    if not run_dir.is_dir():
        raise BundleError(
            f"The run folder does not exist. Train and convert first "
            f"(edgeship pipeline --out RUN). Received: run={run_dir}"
        )
    models = []
    for mode in items:
        path = _model_path(run_dir, mode)
        if not path.is_file():
            have = sorted(p.name for p in run_dir.glob("*.tflite")) or ["none"]
            raise BundleError(
                f"The run has no model_{mode}.tflite; convert it first (edgeship convert "
                f"{run_dir}/model.keras --quantize {mode} --out {run_dir}) or pick other "
                f"--models (a mode, or a .tflite file's name in the run). "
                f"Received: path={path}, available={', '.join(have)}"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path.name):
            raise BundleError(
                f"A model's file name holds a control character, which the device's service "
                f"unit (systemd) cannot carry; rename the file. Received: name={path.name!r}"
            )
        entry = _file_entry(f"models/{path.name}", path)
        if len(entry.data) < 8 or entry.data[4:8] != b"TFL3":
            raise BundleError(
                f"Not a TensorFlow Lite model (no TFL3 identifier); re-run edgeship convert. "
                f"Received: path={path}"
            )
        models.append(_Model(mode, path, entry))
    return models


def _run_metadata(run_dir: Path) -> dict[str, Any]:
    """The run's model.json, or {} when there is none (a folder of foreign .tflite files)."""
    json_path = run_dir / "model.json"
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}
    return {}


def _check_same_source(model: _Model, run_meta: dict[str, Any]) -> None:
    """Refuse a .tflite converted from another model.keras than the run's model.json."""
    from edge_runtime.metadata.block import read_embedded_metadata, same_source

    path = model.path
    meta = read_embedded_metadata(model.entry.data, f"path={path}")
    if meta is not None and not same_source(run_meta, meta):
        run = path.parent
        raise BundleError(
            f"{path.name} is stale: converted from another model.keras (its metadata differs "
            f"from model.json); re-run `edgeship convert {run}/model.keras --out {run}`. "
            f"Received: path={path}, model={meta.get('model')}, run model={run_meta.get('model')}"
        )


def _runtime_entries() -> list[_Entry]:
    """The edge_runtime package source, as installed here (no caches)."""
    root = Path(edge_runtime.__file__).resolve().parent
    entries = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (
            path.is_file()
            and "__pycache__" not in rel.parts
            and path.suffix not in {".pyc", ".pyo"}
        ):
            entries.append(_file_entry(f"edge_runtime/{rel.as_posix()}", path))
    return entries


def _sample_entries(models: list[_Model]) -> tuple[list[_Entry], dict[str, dict[str, Any]]]:
    """One PNG per sample (an input shape), and per model entry what the desktop answers."""
    samples: dict[str, dict[str, bytes]] = {}  # sample name -> {model entry: png}
    with filtered_native_stderr():  # the interpreter's "Created ... XNNPACK delegate" line
        for m in models:
            name, png = sample_for(m.path, m.entry.data)
            samples.setdefault(name, {})[m.entry.name] = png
        expected = expected_answers([(m.entry.name, m.path) for m in models], samples)
    entries = [_Entry(name, next(iter(pngs.values()))) for name, pngs in sorted(samples.items())]
    return entries, expected


def _target_entries(target_names: Sequence[str]) -> tuple[list[_Entry], dict[str, dict[str, Any]]]:
    """Each target's requirements file, and its manifest entry (no wheels yet)."""
    entries, info = [], {}
    for name in target_names:
        t = get_target(name)
        data = requirements_text(t).encode()
        req = f"requirements-{name}.txt"
        entries.append(_Entry(req, data))
        info[name] = {
            "image": t.image,
            "python": t.python,
            "arch": t.arch,
            "runtime": t.runtime_dist,
            "requirements": req,
            "requirements_sha256": sha256_bytes(data),
            "pins": dict(target_pins(t)),
            "system_site_packages": t.system_site,
            "system_packages": list(t.system_packages),
            "wheels": [],
        }
    return entries, info


def _remote_entries() -> list[_Entry]:
    """The device's own files: the install script, verify.py, release.py, the service, README."""
    return [
        _file_entry(name, REMOTE_FILES / name, 0o755 if name in EXECUTABLE else 0o644)
        for name in ("install.sh", "verify.py", "release.py", "device_service.py", "README.md")
    ]


def _wheel_entries(target_names: Sequence[str], say: ProgressCallback) -> dict[str, list[_Entry]]:
    """With --with-wheels: target -> the entries of every wheel it needs (cached download)."""
    from edgeship.deploy.pi.wheels import download_wheels

    by_target = {}
    for name in target_names:
        t = get_target(name)
        say(f"getting the {name} wheels ({t.wheel_machine}, CPython {t.python}; cached)")
        by_target[name] = [_file_entry(f"wheels/{name}/{w.name}", w) for w in download_wheels(name)]
    return by_target


def _web_entries(site: Path) -> list[_Entry]:
    """The files of the web app's folder `site` as entries under web/."""
    if not site.is_dir():
        raise BundleError(f"The web app's folder does not exist. Received: web={site}")
    return [
        _file_entry(f"web/{p.relative_to(site).as_posix()}", p)
        for p in sorted(site.rglob("*"))
        if p.is_file()
    ]


def _manifest_entry(fields: dict[str, Any], entries: list[_Entry]) -> _Entry:
    """manifest.json: `fields`, then the sha256 of every entry (by name)."""
    files = {e.name: sha256_bytes(e.data) for e in sorted(entries, key=lambda e: e.name)}
    manifest = {**fields, "files": files}
    return _Entry("manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


class _HashingWriter:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def _write_tar(out: Path, top: str, entries: list[_Entry]) -> tuple[int, str]:
    """A gzip'd tar with sorted entries, fixed mtimes and owners, no gzip timestamp; its size
    and sha256 (hashed as written)."""
    dirs = sorted({str(Path(e.name).parent) for e in entries} - {"."})
    all_dirs = sorted({p for d in dirs for p in [d, *map(str, Path(d).parents)]} - {"."})

    def info(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(f"{top}/{name}" if name else top)
        ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, TAR_MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with (
        atomic_path(out) as tmp,
        open(tmp, "wb") as raw,
        gzip.GzipFile(
            filename="",
            mode="wb",
            fileobj=(written := _HashingWriter(raw)),
            mtime=0,
            compresslevel=9,
        ) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        tar.addfile(info("", tarfile.DIRTYPE, 0o755))
        for d in all_dirs:
            tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for e in sorted(entries, key=lambda e: e.name):
            tar.addfile(info(e.name, tarfile.REGTYPE, e.mode, len(e.data)), io.BytesIO(e.data))
    return written.size, written.digest.hexdigest()


def build_bundle(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    models: str | Sequence[str] | None = None,
    with_wheels: bool = False,
    progress: ProgressCallback | None = None,
    targets: str | Sequence[str] | None = None,
    web: str | os.PathLike[str] | None = None,
) -> BundleInfo:
    """Build the device bundle of `run_dir`'s models into the .tar.gz `out`.

    `models`: modes (`model_<mode>.tflite`) or names of .tflite files in the run; default
    `default_models(run_dir)`. `targets` (default: all) are the OS targets it installs on
    (`edge_runtime.device.targets`); each gets its requirements file and, `with_wheels`, every wheel
    it needs under wheels/<target>/. `web`: a folder (the site `deploy web` wrote: the CLI
    writes it) shipped under web/. Each file is read once.
    """
    say = progress or (lambda _msg: None)
    run_dir, out = Path(run_dir), Path(out)
    if out.is_dir():
        raise BundleError(
            f"--out is a folder; name the bundle file to write, e.g. --out "
            f"{out / 'edgeship-bundle.tar.gz'}. Received: out={out}"
        )
    items = parse_model_names(default_models(run_dir) if models is None else models)
    target_names = parse_target_names(targets)
    model_list = _models(run_dir, items)
    run_meta = _run_metadata(run_dir)
    if run_meta:
        for m in model_list:
            _check_same_source(m, run_meta)
    entries = [*(m.entry for m in model_list), *_runtime_entries()]

    say("making sample images and the desktop's answers")
    samples, expected = _sample_entries(model_list)
    req_entries, target_info = _target_entries(target_names)
    entries += [*samples, *req_entries, *_remote_entries()]
    wheels: list[str] = []
    if with_wheels:
        for name, found in _wheel_entries(target_names, say).items():
            entries += found
            target_info[name]["wheels"] = [e.name.rsplit("/", 1)[1] for e in found]
            wheels += [e.name for e in found]
    if web is not None:
        entries += _web_entries(Path(web))

    say("hashing files")
    top = _top_name(out)
    fields = {
        "format": BUNDLE_FORMAT,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "name": top,
        "run": run_dir.resolve().name,
        "model": run_meta.get("model"),
        "class_names": run_meta.get("class_names"),
        "targets": target_info,
        "models": [
            {
                "file": m.entry.name,
                "mode": m.item,
                "size_bytes": len(m.entry.data),
                **expected[m.entry.name],
            }
            for m in model_list
        ],
        "wheels": wheels,
        "web": "web" if web is not None else None,
    }
    entries.append(_manifest_entry(fields, entries))

    say(f"writing {out}")
    size, sha256 = _write_tar(out, top, entries)
    return BundleInfo(
        path=out,
        size_bytes=size,
        sha256=sha256,
        top=top,
        models=tuple(m.entry.name for m in model_list),
        wheels=tuple(wheels),
        files=len(entries),
        targets=target_names,
    )


def read_manifest(bundle: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """The top folder name and the manifest of a bundle .tar.gz; `BundleError` if it is not one."""
    path = Path(bundle)
    if not path.is_file():
        raise BundleError(
            f"The bundle file does not exist; build it with `edgeship deploy bundle RUN --out "
            f"{path.name}`. Received: path={path}"
        )
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] == "manifest.json" and member.isfile():
                    handle = tar.extractfile(member)  # a regular file: never None
                    manifest = json.loads(handle.read() if handle else b"null")
                    break
            else:
                raise BundleError(
                    f"Not an edgeship bundle: no TOP/manifest.json inside; build it with "
                    f"`edgeship deploy bundle`. Received: path={path}"
                )
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise BundleError(
            f"The bundle is not a readable .tar.gz ({err}); rebuild it. Received: path={path}"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"Not an edgeship bundle manifest. Received: path={path}")
    return parts[0], manifest
