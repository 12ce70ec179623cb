"""`edgeship deploy web` and `deploy bundle --web` (files, errors), LiteRT.js vendoring, and
`serve --web/--tls-*` option errors. The app itself runs in a browser in test_web_app.py."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tarfile
import zipfile

import pytest
from typer.testing import CliRunner

from edgeship.deploy.errors import DeployError
from edgeship.deploy.web.litertjs import WASM_UTILS, NpmPackage, fetch_tarball, integrity_of
from tests.support.procs import REPO


@pytest.fixture(scope="module")
def cli_site(fashion_runs, tmp_path_factory):
    """`edgeship deploy web RUN --out SITE` of the Fashion-MNIST MLP run, through the CLI."""
    from edgeship.cli import app

    out = tmp_path_factory.mktemp("cli_web") / "site"
    result = CliRunner().invoke(
        app, ["deploy", "web", str(fashion_runs["mlp"]), "--out", str(out), "--title", "Closet"]
    )
    assert result.exit_code == 0, result.output
    assert f"{out}: " in result.output and "--web" in result.output
    return out


def test_deploy_web_writes_a_complete_site(cli_site):
    site = cli_site
    meta = json.loads((site / "models.json").read_text())
    (model,) = meta["models"]
    assert model["file"] == "models/model_int8.tflite" and (site / model["file"]).is_file()
    # batch fixed to 1 in place: the standard metadata's labels zip is still appended
    assert zipfile.ZipFile(site / model["file"]).namelist() == ["labels.txt"]
    assert (model["height"], model["width"], model["resize"]) == (28, 28, "stretch")
    assert model["input"]["dtype"] == "uint8" and model["input"]["table"] == list(range(256))
    assert model["class_names"][9] == "Ankle boot"
    assert "<title>Closet</title>" in (site / "index.html").read_text()
    manifest = json.loads((site / "manifest.webmanifest").read_text())
    assert manifest["name"] == "Closet" and {i["sizes"] for i in manifest["icons"]} == {
        "192x192",
        "512x512",
    }
    core = site / "vendor/litertjs/core"
    assert (core / "dist/index.js").is_file() and (site / "vendor/litertjs/wasm-utils").is_dir()
    builds = sorted(p.name for p in (core / "wasm").iterdir() if p.suffix in (".js", ".wasm"))
    assert builds == [
        "litert_wasm_compat_internal.js",
        "litert_wasm_compat_internal.wasm",
        "litert_wasm_internal.js",
        "litert_wasm_internal.wasm",
        "litert_wasm_threaded_internal.js",
        "litert_wasm_threaded_internal.wasm",
    ]
    # core imports wasm-utils by a relative path: the page needs no inline import map
    assert 'from "../../wasm-utils/dist/index.js";' in (core / "dist/index.js").read_text()
    assert "importmap" not in (site / "index.html").read_text()
    # precompressed copies beside the large files, equal to them once decoded; not precached
    import brotli

    for name in ("wasm/litert_wasm_threaded_internal.wasm", "dist/index.js"):
        data = (core / name).read_bytes()
        assert gzip.decompress((core / f"{name}.gz").read_bytes()) == data
        assert brotli.decompress((core / f"{name}.br").read_bytes()) == data
    assert not (site / "icons/icon-192.png.gz").exists()  # too small, and PNG
    sw = (site / "sw.js").read_text()
    assert "{{" not in sw and '"models/model_int8.tflite"' in sw
    assert '.gz"' not in sw and '.br"' not in sw
    # nothing that points off the site: no http(s) URL in the app's own files
    for name in ("index.html", "app.js", "resize.js", "app.css", "sw.js"):
        assert "https://" not in (site / name).read_text(), name


def _cache_version(site) -> str:
    found = re.search(r'^const VERSION = "([0-9a-f]+)";$', (site / "sw.js").read_text(), re.M)
    assert found, "sw.js names its cache version"
    return found.group(1)


def _flip_a_weight_byte(data: bytes) -> bytes:
    """`data` (a .tflite) with one byte of its largest constant buffer (weights) changed."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    sizes = [model.Buffers(i).DataLength() for i in range(model.BuffersLength())]
    buf = model.Buffers(sizes.index(max(sizes)))
    start = buf._tab.Vector(buf._tab.Offset(4))  # where the buffer's bytes begin in the file
    out = bytearray(data)
    out[start + 7] ^= 0x01
    return bytes(out)


def test_one_model_byte_gives_the_site_a_new_cache_version(cli_site, tmp_path):
    """The service worker's cache is named by the site's content: a retrained model of the
    same file name makes phones drop the old cache; the same files keep it."""
    from edgeship.deploy.web.site import build_site

    model = (cli_site / "models/model_int8.tflite").read_bytes()
    changed = _flip_a_weight_byte(model)
    assert sum(a != b for a, b in zip(model, changed, strict=True)) == 1
    versions = []
    for n, data in enumerate((model, model, changed)):
        path = tmp_path / f"m{n}" / "model_int8.tflite"
        path.parent.mkdir()
        path.write_bytes(data)
        versions.append(_cache_version(build_site([path], tmp_path / f"site{n}", "Closet").path))
    assert versions[0] == versions[1] != versions[2], versions
    assert versions[0] == _cache_version(cli_site)


def test_deploy_web_refuses_a_run_without_a_model(tmp_path):
    empty = tmp_path / "run"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeship",
            "deploy",
            "web",
            str(empty),
            "--out",
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()


def test_deploy_web_refuses_a_folder_that_is_not_a_site(fashion_runs, tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"x")
    from edgeship.deploy.web.site import build_site

    with pytest.raises(DeployError, match="new or empty folder"):
        build_site([fashion_runs["mlp"] / "model_int8.tflite"], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]  # left as it was


def test_grayscale_int8_model_is_refused_with_the_fix(fashion_runs, tmp_path):
    from edgeship.deploy.web.site import build_site

    with pytest.raises(DeployError, match="deploy mobile"):
        build_site([fashion_runs["mlp"] / "model_int8.tflite"], tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_bundle_web_carries_the_site(fashion_runs, cli_site, tmp_path):
    from edgeship.deploy.pi.bundle import build_bundle, read_manifest

    info = build_bundle(fashion_runs["mlp"], tmp_path / "b.tar.gz", models="int8", web=cli_site)
    top, manifest = read_manifest(info.path)
    assert manifest["web"] == "web"
    assert (
        "web/index.html" in manifest["files"]
        and "web/models/model_int8.tflite" in manifest["files"]
    )
    with tarfile.open(info.path) as tar:
        names = set(tar.getnames())
    assert f"{top}/web/vendor/litertjs/core/wasm/litert_wasm_internal.wasm" in names


def test_litertjs_tarball_is_checked_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESHIP_CACHE", str(tmp_path))
    cached = tmp_path / "npm" / WASM_UTILS.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"tampered")  # a bad cache entry is not used: fetched again, checked
    data = fetch_tarball(WASM_UTILS)
    assert integrity_of(data) == WASM_UTILS.integrity and cached.read_bytes() == data
    wrong = NpmPackage(WASM_UTILS.name, WASM_UTILS.version, "sha512-" + "A" * 86 + "==")
    cached.write_bytes(data)
    with pytest.raises(DeployError, match="does not match its pinned integrity"):
        fetch_tarball(wrong)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--web", "{tmp}"], "not a site written by `edgeship deploy web`"),
        (["--web", "{tmp}/missing"], "needs the folder written by `edgeship deploy web"),
        (["--tls-cert", "{tmp}/c.pem"], "Pass --tls-cert FILE and --tls-key FILE together"),
        (["--tls-cert", "{tmp}/c.pem", "--tls-key", "{tmp}/k.pem"], "must be a PEM file"),
    ],
)
def test_serve_web_and_tls_option_errors(edge_models, tmp_path, extra, message):
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_runtime",
            "serve",
            str(edge_models["cnn_uint8"]),
            "--port",
            "0",
            *(a.format(tmp=tmp_path) for a in extra),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


# --- the web app's resize (edgeship/deploy/web/app/resize.js) is Pillow's, byte for byte ---

NODE_RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
import { toModelPixels } from "./resize.mjs";
const cases = JSON.parse(readFileSync("cases.json", "utf8"));
const src = readFileSync("in.bin");
const parts = [];
for (const c of cases) {
  const rgb = new Uint8Array(src.buffer, src.byteOffset + c.offset, c.w * c.h * 3);
  const model = { width: c.outW, height: c.outH, resize: c.rule, background: "light" };
  parts.push(Buffer.from(toModelPixels(rgb, c.w, c.h, model)));
}
writeFileSync("out.bin", Buffer.concat(parts));
"""


def test_resize_js_equals_pillow_byte_for_byte(tmp_path):
    """60 random photo and model sizes (shrinking by up to 40x, a few enlarging), each under
    both rules, through resize.js in Node: the same bytes as Pillow's BILINEAR with
    `reducing_gap=3.0` ("stretch") and `ImageOps.fit` ("crop"), which edge_runtime uses."""
    import shutil

    import numpy as np
    from PIL import Image, ImageOps

    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js not installed (apt-get install nodejs)")
    rng = np.random.default_rng(31)
    cases, blobs, offset = [], [], 0
    for n in range(60):
        w, h = (int(v) for v in rng.integers(1, 320, 2))
        if n % 3 == 0:  # one dimension shrinks far more than the other (either pass first)
            w, h = (int(rng.integers(200, 400)), int(rng.integers(8, 40)))[:: 1 if n % 2 else -1]
        out_w, out_h = (int(v) for v in rng.integers(1, 48, 2))
        if n % 10 == 7:  # enlarging
            w, h = int(rng.integers(1, out_w + 1)), int(rng.integers(1, out_h + 1))
        y, x = np.mgrid[0:h, 0:w]
        smooth = np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x ^ y) & 255])
        noise = rng.integers(-40, 41, (h, w, 3))
        rgb = np.clip(smooth + noise, 0, 255).astype(np.uint8)
        for rule in ("stretch", "crop"):
            cases.append(
                {"w": w, "h": h, "outW": out_w, "outH": out_h, "rule": rule, "offset": offset}
            )
        blobs.append(rgb.tobytes())
        offset += rgb.nbytes
        for case in cases[-2:]:
            case["rgb"] = rgb
    (tmp_path / "in.bin").write_bytes(b"".join(blobs))
    (tmp_path / "cases.json").write_text(
        json.dumps([{k: v for k, v in c.items() if k != "rgb"} for c in cases])
    )
    shutil.copy(REPO / "edgeship/deploy/web/app/resize.js", tmp_path / "resize.mjs")
    (tmp_path / "run.mjs").write_text(NODE_RUNNER)
    proc = subprocess.run(
        [node, "run.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    got, at, differ = (tmp_path / "out.bin").read_bytes(), 0, []
    for c in cases:
        img = Image.fromarray(c["rgb"])
        size = (c["outW"], c["outH"])
        if c["rule"] == "crop":
            want = ImageOps.fit(img, size, Image.Resampling.BILINEAR)
        else:
            want = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        want = np.asarray(want).tobytes()
        if got[at : at + len(want)] != want:
            differ.append((c["w"], c["h"], *size, c["rule"]))
        at += len(want)
    assert at == len(got)
    assert not differ, f"{len(differ)} of {len(cases)} differ from Pillow: {differ[:5]}"
