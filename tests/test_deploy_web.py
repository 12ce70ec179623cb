"""`edgeship deploy web` and `deploy bundle --web` (files, errors), LiteRT.js vendoring, and
`serve --web/--tls-*` option errors. The app itself runs in a browser in test_web_app.py."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tarfile
import zipfile

import pytest
from typer.testing import CliRunner

from deploy.errors import DeployError
from deploy.litertjs import WASM_UTILS, NpmPackage, fetch_tarball, integrity_of
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
    assert ".gz\"" not in sw and ".br\"" not in sw
    # nothing that points off the site: no http(s) URL in the app's own files
    for name in ("index.html", "app.js", "resize.js", "app.css", "sw.js"):
        assert "https://" not in (site / name).read_text(), name


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
    from deploy.web import build_site

    with pytest.raises(DeployError, match="new or empty folder"):
        build_site([fashion_runs["mlp"] / "model_int8.tflite"], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]  # left as it was


def test_grayscale_int8_model_is_refused_with_the_fix(fashion_runs, tmp_path):
    from deploy.web import build_site

    with pytest.raises(DeployError, match="deploy mobile"):
        build_site([fashion_runs["mlp"] / "model_int8.tflite"], tmp_path / "site")
    assert not (tmp_path / "site").exists()


def test_bundle_web_carries_the_site(fashion_runs, cli_site, tmp_path):
    from deploy.bundle import build_bundle, read_manifest

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
