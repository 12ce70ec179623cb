"""`serve`'s security headers (edge_runtime/serve/headers.py) on every response, and /app/
serving only the site's listed files. A real server; the page checked in Debian's chromium."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from edge_runtime.serve.headers import APP_CSP, PAGE_CSP
from tests.support.serving import start_server

INLINE_MAP = '{"imports": {"x": "./x.js"}}'


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A minimal folder as `deploy web` writes it (index.html with an inline import map),
    plus a dotfile and a dot-folder that must not be served."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "index.html").write_text(
        f'<!doctype html><script type="importmap">{INLINE_MAP}</script>'
        '<script type="module" src="app.js"></script>'
    )
    (folder / "app.js").write_text("export {};\n")
    (folder / "sw.js").write_text("// sw\n")
    (folder / "models.json").write_text(json.dumps({"models": []}))
    (folder / ".env").write_text("SECRET=1\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[core]\n")
    return folder


@pytest.fixture(scope="module")
def served(edge_models, site, tmp_path_factory):
    server = start_server(
        [edge_models["mlp_int8"], "--web", site], tmp_path_factory.mktemp("headers")
    )
    (site / "later.txt").write_text("written after the start: not in the site's list\n")
    yield server
    assert server.stop() == 0


def _csp(head: dict[str, str]) -> dict[str, str]:
    return {
        d.split()[0]: d.split(None, 1)[1] if " " in d.strip() else ""
        for d in (p.strip() for p in head["content-security-policy"].split(";"))
        if d
    }


@pytest.mark.parametrize(
    "path",
    ["/", "/healthz", "/metrics", "/v1/models", "/nope", "/app/", "/app/sw.js", "/app/models.json"],
)
def test_every_response_carries_the_headers(served, path):
    status, head, _ = served.request("GET", path)
    assert status == (404 if path == "/nope" else 200)
    assert head["x-content-type-options"] == "nosniff"
    assert head["referrer-policy"] == "no-referrer"
    assert head["x-frame-options"] == "DENY"
    csp = _csp(head)
    assert csp["frame-ancestors"] == "'none'"
    if path == "/":
        assert "'unsafe-inline'" not in head["content-security-policy"]
        assert csp["script-src"].startswith("'sha256-") and csp["default-src"] == "'none'"
    elif path.startswith("/app/"):
        assert head["content-security-policy"].startswith(APP_CSP.split("{")[0])
        assert (
            "'wasm-unsafe-eval'" in csp["script-src"] and "'unsafe-inline'" not in csp["script-src"]
        )
        import base64
        import hashlib

        digest = base64.b64encode(hashlib.sha256(INLINE_MAP.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]  # the site's import map, by hash
    else:
        assert csp["default-src"] == "'none'"


@pytest.mark.parametrize("path", ["/app/.env", "/app/.git/config", "/app/later.txt"])
def test_dotfiles_and_unlisted_files_are_not_served(served, path):
    status, _, body = served.request("GET", path)
    assert status == 404 and b"SECRET" not in body and b"core" not in body


def test_the_page_works_under_its_policy_and_cannot_be_framed(edge_models, served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if shutil.which("/usr/bin/chromium") is None:
        pytest.skip("no /usr/bin/chromium: apt-get install chromium")
    from tests.test_serve_page import CHROMIUM_ARGS

    assert PAGE_CSP.count("{") == 3  # scripts, styles, style attributes: all by hash
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(photo)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            messages: list[str] = []
            page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
            page.add_init_script(
                "document.addEventListener('securitypolicyviolation', (e) => "
                "console.error('csp-violation ' + e.violatedDirective + ' ' + e.blockedURI))"
            )
            page.goto(f"http://127.0.0.1:{served.port}/")
            page.set_input_files("#file", str(photo))
            page.wait_for_selector(".bar.predicted", timeout=30_000)
            assert not [m for m in messages if "csp-violation" in m or "Refused" in m], messages
            # A page of another origin (about:blank's opaque one) framing the page: refused.
            framer = browser.new_page()
            seen: list[str] = []
            framer.on("console", lambda m: seen.append(m.text))
            framer.set_content(f'<iframe src="http://127.0.0.1:{served.port}/"></iframe>')
            child = framer.frames[1] if len(framer.frames) > 1 else None
            assert child is None or not child.query_selector("#file"), seen
        finally:
            browser.close()
    assert re.search(r"frame-ancestors 'none'", PAGE_CSP)
