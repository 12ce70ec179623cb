"""The page sends only what the model needs: a 12 MP photo is scaled upright in chromium and
posted as a small JPEG, and the answer is the one `edge_runtime predict` gives the original."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.procs import REPO
from tests.support.serving import start_server
from tests.test_serve_page import VIEWPORTS, browser  # noqa: F401 - the chromium fixture

MARGIN = 4  # the page's UPLOAD_MARGIN
# Chromium does not hand a Blob body to Playwright's request events: record what the page's
# fetch sends to /v1/predict (content type and bytes) as it sends it.
RECORD_POSTS = """
window.__posted = [];
const realFetch = window.fetch;
window.fetch = async (url, init) => {
  if (String(url).includes("v1/predict") && init && init.body) {
    const bytes = new Uint8Array(await new Response(init.body).arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 8192)
      text += String.fromCharCode(...bytes.subarray(i, i + 8192));
    window.__posted.push({type: init.headers["Content-Type"], data: btoa(text)});
  }
  return realFetch(url, init);
};
"""


def rotated_photo(path, stored=(4032, 3024)):
    """A 12 MP phone JPEG stored wide and shown tall (EXIF 6): its stored left quarter is
    white, the top quarter once upright; the rest a smooth, mid-bright scene."""
    w, h = stored
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    small = np.dstack([150 + 60 * np.sin(x / 6), 130 + 50 * np.cos(y / 5), 110 + x])
    img = Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize(stored)
    img.paste((255, 255, 255), (0, 0, w // 4, h))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=92, exif=exif.tobytes())


@pytest.fixture(scope="module")
def server(edge_models, tmp_path_factory):
    served = start_server(
        [edge_models["cnn_uint8"], edge_models["mlp_int8"]], tmp_path_factory.mktemp("upload")
    )
    yield served
    assert served.stop() == 0


@pytest.mark.parametrize("model", ["cnn_uint8", "mlp_int8"])
def test_a_12_mp_photo_is_sent_upright_at_the_models_size(
    browser,  # noqa: F811
    server,
    edge_models,  # noqa: F811
    tmp_path,
    model,
):
    photo = tmp_path / "IMG_0001.jpg"
    rotated_photo(photo)
    want = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_runtime",
                "predict",
                str(edge_models[model]),
                str(photo),
                "--json",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            check=True,
        ).stdout
    )
    context = browser.new_context(**VIEWPORTS["desktop"])
    page = context.new_page()
    page.add_init_script(RECORD_POSTS)
    try:
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_selector("#model option", state="attached")
        page.select_option("#model", model)
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".bar.predicted", timeout=60_000)
        answer, detail = page.inner_text("#answer"), page.inner_text("#detail")
        (posted,) = page.evaluate("window.__posted")
    finally:
        context.close()
    assert answer == want["label"]
    body = base64.b64decode(posted["data"])
    assert posted["type"] == "image/jpeg"
    sent = Image.open(io.BytesIO(body))
    side = 28 if model.startswith("mlp") else 32  # the models' square input
    # upright (3024 x 4032 shown), its shorter side MARGIN x the model's: 128 x 171 or 112 x 149
    upright = (MARGIN * side, round(4032 * MARGIN * side / 3024))
    assert sent.format == "JPEG" and sent.size == upright
    assert len(body) <= sent.size[0] * sent.size[1] * 3  # no more than its raw pixels
    assert len(body) * 50 < photo.stat().st_size
    top = np.asarray(sent.convert("L"))[: sent.size[1] // 5]
    assert top.mean() > 245  # the white quarter is on top: the EXIF rotation was applied
    assert f"sent {len(body) / 1e3:.0f} kB of {photo.stat().st_size / 1e3:.0f} kB" in detail
