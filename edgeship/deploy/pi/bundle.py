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
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edge_runtime
from edge_runtime.device.targets import get_target
from edge_runtime.files import atomic_path, sha256_bytes
from edge_runtime.native_log import filtered_native_stderr
from edgeship.deploy.errors import BundleError
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
    """One file of the bundle: its path inside the top folder and its content or source."""

    name: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644

    def read(self) -> bytes:
        return self.data if self.data is not None else self.source.read_bytes()


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


def _model_entries(run_dir: Path, modes: Sequence[str]) -> list[_Entry]:
    if not run_dir.is_dir():
        raise BundleError(
            f"The run folder does not exist. Train and convert first "
            f"(edgeship pipeline --out RUN). Received: run={run_dir}"
        )
    entries = []
    for mode in modes:
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
        head = path.read_bytes()[:8]
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise BundleError(
                f"Not a TensorFlow Lite model (no TFL3 identifier); re-run edgeship convert. "
                f"Received: path={path}"
            )
        entries.append(_Entry(f"models/{path.name}", source=path))
    return entries


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


def _check_same_source(model: Path, run_meta: dict[str, Any]) -> None:
    """Refuse a .tflite converted from another model.keras than the run's model.json."""
    from edge_runtime.metadata.block import read_metadata, same_source

    meta = read_metadata(model, sidecar=False)
    if meta is not None and not same_source(run_meta, meta):
        run = model.parent
        raise BundleError(
            f"{model.name} is stale: converted from another model.keras (its metadata differs "
            f"from model.json); re-run `edgeship convert {run}/model.keras --out {run}`. "
            f"Received: path={model}, model={meta.get('model')}, run model={run_meta.get('model')}"
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
            entries.append(_Entry(f"edge_runtime/{rel.as_posix()}", source=path))
    return entries


def _fashion_mnist_image(source: str | None) -> np.ndarray | None:
    """The first Fashion-MNIST test image (28, 28, 1) uint8 from the dataset folder, if there."""
    if not source:
        return None
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = Path(source) / name
        if path.is_file():
            try:
                opener = gzip.open if name.endswith(".gz") else open
                with opener(path, "rb") as handle:
                    head = handle.read(16 + 28 * 28)
            except OSError:
                return None
            if len(head) == 16 + 28 * 28 and head[:4] == b"\x00\x00\x08\x03":
                return np.frombuffer(head[16:], dtype=np.uint8).reshape(28, 28, 1).copy()
    return None


def _synthetic_image(shape: tuple[int, int, int]) -> np.ndarray:
    """A deterministic light blob on a dark background of `shape` (H, W, C)."""
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 3), (xx - w / 2) / (w / 4))
    img = np.clip(230 * (1 - r), 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], c, axis=2)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _sample_for(model: Path) -> tuple[str, bytes]:
    """A sample image (file name, PNG bytes) that fits `model`'s input."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.metadata.block import read_metadata

    meta = read_metadata(model) or {}
    shape = tuple((meta.get("input") or {}).get("shape") or ())
    if len(shape) != 3:
        desc = EdgeClassifier.load(model).describe()
        shape = tuple(desc.get("image_shape") or ())
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise BundleError(
            f"Cannot make a sample image for the model: its input is not an image (H, W, 1|3). "
            f"Received: path={model}, shape={shape}"
        )
    shape = tuple(int(s) for s in shape)
    dataset = meta.get("dataset") or {}
    arr = None
    if dataset.get("name") == "fashion-mnist" and shape == (28, 28, 1):
        arr = _fashion_mnist_image(dataset.get("source"))
    kind = "fashion-mnist" if arr is not None else "synthetic"
    if arr is None:
        arr = _synthetic_image(shape)
    h, w, c = shape
    return f"samples/{kind}_{h}x{w}x{c}.png", _png(arr)


def _expected_answers(models: list[_Entry], samples: dict[str, bytes]) -> dict[str, Any]:
    """Run each model on its sample here, through edge_runtime: what the device must answer."""
    from edge_runtime.cli import predict_lines

    expected = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-bundle-") as tmp:
        for entry in models:
            sample_name = next(name for name, m in samples.items() if entry.name in m)
            sample_path = Path(tmp) / Path(sample_name).name
            sample_path.write_bytes(samples[sample_name][entry.name])
            record = json.loads(predict_lines(entry.source, [sample_path], as_json=True)[0])
            expected[entry.name] = {
                "sample": sample_name,
                "index": record["index"],
                "label": record["label"],
                "confidence": record["confidence"],
            }
    return expected


def _write_tar(out: Path, top: str, entries: list[_Entry]) -> None:
    """A gzip'd tar with sorted entries, fixed mtimes and owners, no gzip timestamp."""
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
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        tar.addfile(info("", tarfile.DIRTYPE, 0o755))
        for d in all_dirs:
            tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for entry in sorted(entries, key=lambda e: e.name):
            data = entry.read()
            tar.addfile(info(entry.name, tarfile.REGTYPE, entry.mode, len(data)), io.BytesIO(data))


def build_bundle(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    models: str | Sequence[str] | None = None,
    with_wheels: bool = False,
    progress: ProgressCallback | None = None,
    targets: str | Sequence[str] | None = None,
    web: str | os.PathLike | None = None,
) -> BundleInfo:
    """Build the device bundle of `run_dir`'s models into the .tar.gz `out`.

    `models`: modes (`model_<mode>.tflite`) or names of .tflite files in the run; default
    `default_models(run_dir)`. `targets` (default: all) are the OS targets it installs on
    (`edge_runtime.device.targets`); each gets its requirements file and, `with_wheels`, every wheel
    it needs under wheels/<target>/. `web`: a folder (the site `deploy web` wrote: the CLI
    writes it) shipped under web/.
    """
    say = progress or (lambda _msg: None)
    run_dir, out = Path(run_dir), Path(out)
    if out.is_dir():
        raise BundleError(
            f"--out is a folder; name the bundle file to write, e.g. --out "
            f"{out / 'edgeship-bundle.tar.gz'}. Received: out={out}"
        )
    modes = parse_model_names(default_models(run_dir) if models is None else models)
    target_names = parse_target_names(targets)
    model_entries = _model_entries(run_dir, modes)
    run_meta = _run_metadata(run_dir)
    if run_meta:
        for entry in model_entries:
            _check_same_source(entry.source, run_meta)
    entries: list[_Entry] = [*model_entries, *_runtime_entries()]

    say("making sample images and the desktop's answers")
    samples: dict[str, dict[str, bytes]] = {}  # sample name -> {model entry: png}
    with filtered_native_stderr():  # the interpreter's "Created ... XNNPACK delegate" line
        for entry in model_entries:
            name, png = _sample_for(entry.source)
            samples.setdefault(name, {})[entry.name] = png
        expected = _expected_answers(model_entries, samples)
    for name, by_model in sorted(samples.items()):
        entries.append(_Entry(name, data=next(iter(by_model.values()))))

    target_info: dict[str, dict[str, Any]] = {}
    for name in target_names:
        t = get_target(name)
        data = requirements_text(t).encode()
        req = f"requirements-{name}.txt"
        entries.append(_Entry(req, data=data))
        target_info[name] = {
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
    for name in ("install.sh", "verify.py", "release.py", "device_service.py", "README.md"):
        mode = 0o755 if name in EXECUTABLE else 0o644
        entries.append(_Entry(name, source=REMOTE_FILES / name, mode=mode))

    wheels: list[str] = []
    if with_wheels:
        from edgeship.deploy.pi.wheels import download_wheels

        for name in target_names:
            t = get_target(name)
            say(f"getting the {name} wheels ({t.wheel_machine}, CPython {t.python}; cached)")
            found = download_wheels(name)
            entries.extend(_Entry(f"wheels/{name}/{w.name}", source=w) for w in found)
            target_info[name]["wheels"] = [w.name for w in found]
            wheels.extend(f"wheels/{name}/{w.name}" for w in found)

    if web is not None:
        entries.extend(_web_entries(Path(web)))

    say("hashing files")
    files = {e.name: sha256_bytes(e.read()) for e in sorted(entries, key=lambda e: e.name)}
    manifest = {
        "format": BUNDLE_FORMAT,
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "name": _top_name(out),
        "run": run_dir.resolve().name,
        "model": run_meta.get("model"),
        "class_names": run_meta.get("class_names"),
        "targets": target_info,
        "models": [
            {"file": e.name, "mode": mode, "size_bytes": len(e.read()), **expected[e.name]}
            for mode, e in zip(modes, model_entries, strict=True)
        ],
        "wheels": wheels,
        "web": "web" if web is not None else None,
        "files": files,
    }
    entries.append(_Entry("manifest.json", data=(json.dumps(manifest, indent=2) + "\n").encode()))

    top = _top_name(out)
    say(f"writing {out}")
    _write_tar(out, top, entries)
    data = out.read_bytes()
    return BundleInfo(
        path=out,
        size_bytes=len(data),
        sha256=sha256_bytes(data),
        top=top,
        models=tuple(e.name for e in model_entries),
        wheels=tuple(wheels),
        files=len(entries),
        targets=target_names,
    )


def _web_entries(site: Path) -> list[_Entry]:
    """The files of the web app's folder `site` as entries under web/."""
    if not site.is_dir():
        raise BundleError(f"The web app's folder does not exist. Received: web={site}")
    return [
        _Entry(f"web/{p.relative_to(site).as_posix()}", data=p.read_bytes())
        for p in sorted(site.rglob("*"))
        if p.is_file()
    ]


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
                    manifest = json.loads(tar.extractfile(member).read())
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
