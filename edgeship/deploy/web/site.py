"""`edgeship deploy web`: a static, offline web app that runs the phone-ready models in the browser.

The site (any static host, or `python -m edge_runtime serve --web SITE` at /app/):

    index.html, app.js, resize.js, app.css   the page (plain ES modules, no build step)
    sw.js                                   the service worker: offline after the first visit
    manifest.webmanifest, icons/            installable (home screen)
    models/model_<mode>.tflite              `deploy mobile`'s models (RGB pixels in)
    models.json                             what the page needs of each model: H x W, the
                                            resize rule, the pixel table, output quantization,
                                            class names (from the model's edgeship metadata)
    vendor/litertjs/                        LiteRT.js, vendored (litertjs.py): the
                                            threaded, plain and compat WASM builds
    NAME.gz, NAME.br                        precompressed copies of the large files
                                            (precompress.py), for servers that send them
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.deploy.errors import DeployError
from edgeship.deploy.web.litertjs import CORE, WASM_BUILDS, vendor_litertjs
from edgeship.deploy.web.precompress import is_precompressed, precompress

ASSETS = Path(__file__).with_name("app")
PAGE_FILES = ("index.html", "app.js", "resize.js", "app.css")
SITE_MARKER = "models.json"
ICON_SIZES = (192, 512)


@dataclass(frozen=True)
class SiteInfo:
    """A written site: its folder, its models, file count and total bytes."""

    path: Path
    models: tuple[str, ...]
    files: int
    size_bytes: int


def model_entry(path: Path) -> dict[str, Any]:
    """What the page needs to feed `path` raw RGB pixels and read its answer."""
    import numpy as np

    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.native_log import filtered_native_stderr

    with filtered_native_stderr():
        clf = EdgeClassifier.load(path)
    height, width, channels = clf.input_shape
    spec, out = clf.input_spec, clf.output_spec
    if channels != 3 or len(spec.shape) != 4:
        raise DeployError(
            "The web app runs phone-ready models (RGB pixels in, H x W x 3): make them with "
            f"`edgeship deploy mobile`. Received: path={path}, input shape={list(spec.shape)}"
        )
    pixels: dict[str, Any] | None
    if spec.dtype.kind == "f":
        pixels = {"dtype": "float32", "scale": clf.input_scale, "offset": clf.input_offset}
    elif spec.dtype == np.uint8:
        # raw pixel -> tensor value, all 256 (the classifier's own table: identity for uint8 in)
        pixels = {"dtype": "uint8", "table": [int(v) for v in clf._lut]}
    else:
        pixels = None
    if pixels is None or out.dtype not in (np.uint8, np.float32):
        raise DeployError(
            "LiteRT.js exchanges uint8 and float32 tensors only (no int8): make the model with "
            f"`edgeship deploy mobile`. Received: path={path}, input {spec.dtype.name}, "
            f"output {out.dtype.name}"
        )
    return {
        "name": path.stem,
        "file": f"models/{path.name}",
        "size_bytes": path.stat().st_size,
        "height": int(height),
        "width": int(width),
        "resize": clf.resize_rule,
        "background": clf.background,
        "input": {"shape": [1, int(height), int(width), 3], **pixels},
        "output": {
            "dtype": out.dtype.name,
            "scale": out.scale if out.quantized else 0.0,
            "zero_point": out.zero_point if out.quantized else 0,
            "probabilities": bool(clf.outputs_probabilities),
        },
        "class_names": list(clf.class_names),
    }


def fixed_batch(data: bytes) -> bytes:
    """`data` with batch 1 where its tensor signatures say -1 (LiteRT.js needs static shapes).

    Only the signature changes (the shapes already say 1), so the model computes the same. The
    int32s are overwritten in place: every other byte stays, the labels zip appended to the
    flatbuffer (standard metadata) included.
    """
    import numpy as np

    from edge_runtime.metadata.block import _schema_module

    schema = _schema_module()
    buf = bytearray(data)
    model = schema.Model.GetRootAs(buf, 0)
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            sig = subgraph.Tensors(t).ShapeSignatureAsNumpy()
            if isinstance(sig, np.ndarray) and sig.size and sig[0] == -1:
                sig[0] = 1  # a view into `buf`
    return bytes(buf)


def _icon(size: int, dest: Path) -> None:
    """A plain app icon: a dark tile with a light hanger-like mark (drawn, no font needed)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (25, 38, 64))
    draw = ImageDraw.Draw(img)
    s = size / 16
    draw.rounded_rectangle(
        (3 * s, 7 * s, 13 * s, 12 * s), radius=s, outline=(240, 240, 240), width=max(1, int(s))
    )
    draw.ellipse(
        (6.5 * s, 2.5 * s, 9.5 * s, 5.5 * s), outline=(240, 240, 240), width=max(1, int(s))
    )
    draw.line((8 * s, 5.5 * s, 8 * s, 7 * s), fill=(240, 240, 240), width=max(1, int(s)))
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, optimize=True)


def _manifest(title: str) -> dict[str, Any]:
    return {
        "name": title,
        "short_name": title[:12],
        "start_url": "./",
        "scope": "./",
        "display": "standalone",
        "background_color": "#f6f7f9",
        "theme_color": "#192640",
        "icons": [
            {"src": f"icons/icon-{n}.png", "sizes": f"{n}x{n}", "type": "image/png"}
            for n in ICON_SIZES
        ],
    }


def _precache(site: Path) -> list[str]:
    """Every file the service worker caches on install (the WASM builds: the one used, later;
    the precompressed copies: never, the browser asks for the file itself)."""
    wasm = {f"vendor/litertjs/core/wasm/{b}.{e}" for b in WASM_BUILDS for e in ("js", "wasm")}
    names = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*")
        if p.is_file() and not is_precompressed(p)
    )
    return ["./", *(n for n in names if n not in wasm and n != "sw.js")]


def _version(site: Path) -> str:
    """A hash of every file: a new site gets a new cache (the old one is dropped)."""
    h = hashlib.sha256()
    for p in sorted(site.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(site).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def build_site(models: Sequence[Path], out: str | os.PathLike, title: str = "edgeship") -> SiteInfo:
    """Write the web app for the phone-ready `models` into the folder `out` (replaced whole)."""
    out = Path(out)
    if not models:
        raise DeployError("The web app needs at least one model. Received: none")
    if out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / SITE_MARKER).is_file())
    ):
        raise DeployError(
            "--out must be a new or empty folder, or a site written before by `deploy web` "
            f"(it is replaced). Received: out={out}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (stage / "models").mkdir()
        for m in models:
            data = fixed_batch(Path(m).read_bytes())
            (stage / "models" / Path(m).name).write_bytes(data)
        entries = [model_entry(stage / "models" / Path(m).name) for m in models]
        for name in PAGE_FILES:
            text = (ASSETS / name).read_text(encoding="utf-8")
            (stage / name).write_text(text.replace("{{TITLE}}", _html(title)), encoding="utf-8")
        (stage / SITE_MARKER).write_text(
            json.dumps({"title": title, "litertjs": CORE.version, "models": entries}, indent=1)
        )
        (stage / "manifest.webmanifest").write_text(json.dumps(_manifest(title), indent=1))
        for n in ICON_SIZES:
            _icon(n, stage / "icons" / f"icon-{n}.png")
        vendor_litertjs(stage / "vendor" / "litertjs")
        sw = (ASSETS / "sw.js").read_text(encoding="utf-8")
        sw = sw.replace('"{{VERSION}}"', json.dumps(_version(stage)))
        sw = sw.replace('["{{PRECACHE}}"]', json.dumps(_precache(stage)))
        (stage / "sw.js").write_text(sw, encoding="utf-8")
        precompress(stage)
        os.chmod(stage, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    files = [p for p in out.rglob("*") if p.is_file()]
    return SiteInfo(
        out, tuple(e["name"] for e in entries), len(files), sum(p.stat().st_size for p in files)
    )


def _html(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def write_web_site(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    modes: Sequence[str] = ("int8",),
    title: str = "edgeship",
) -> SiteInfo:
    """`edgeship deploy web`: `deploy mobile`'s models of `run_dir`, then the site around them."""
    from edgeship.deploy.mobile.models import write_mobile_models

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgeship-web-", dir=out.parent) as tmp:
        models = write_mobile_models(Path(run_dir), Path(tmp), modes=tuple(modes))
        return build_site(models, out, title)
