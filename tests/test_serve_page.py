"""The service's page in a real browser: Debian's chromium driven by Playwright (no download).

Choose a photo, see the label, the confidence and the class-probability bars (the predicted bar
highlighted), on a desktop window and on a phone-sized one (no sideways scrolling there).
"""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.support.serving import start_server
from tests.support.webapp import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {
        "viewport": {"width": 360, "height": 740},
        "device_scale_factor": 3,
        "is_mobile": True,
        "has_touch": True,
    },
}


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if shutil.which(CHROMIUM) is None:
        pytest.skip("no /usr/bin/chromium: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    return tmp_path_factory.mktemp("camera")


@pytest.fixture(scope="module")
def server(edge_models, tmp_path_factory, watched):
    served = start_server(
        [edge_models["cnn_uint8"], edge_models["mlp_int8"], "--watch", watched],
        tmp_path_factory.mktemp("page"),
    )
    yield served
    assert served.stop() == 0


@pytest.mark.parametrize("kind", sorted(VIEWPORTS))
def test_choose_a_photo_and_see_label_and_bars(browser, server, tmp_path, kind):
    photo = tmp_path / "shirt.png"
    Image.fromarray(
        np.clip(np.random.default_rng(3).normal(160, 30, (96, 96, 3)), 0, 255).astype(np.uint8)
    ).save(photo)
    status, want = server.predict(photo.read_bytes(), "?model=cnn_uint8&top_k=10")
    assert status == 200

    context = browser.new_context(**VIEWPORTS[kind])
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_selector("#model option", state="attached")
        assert page.is_visible("#model")  # two models: the chooser shows
        page.select_option("#model", "cnn_uint8")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".bar.predicted", timeout=30_000)
        assert page.inner_text("#answer") == want["label"]
        detail = page.inner_text("#detail")
        assert f"{want['confidence'] * 100:.1f}%" in detail and "ms on the device" in detail
        bars = page.query_selector_all("#bars .bar")
        assert len(bars) == 10
        predicted = page.query_selector_all("#bars .bar.predicted")
        assert [b.get_attribute("data-index") for b in predicted] == [str(want["index"])]
        # The bars as drawn: each fill's rendered width over its track's is the class's share.
        shares = [
            b.query_selector(".fill").bounding_box()["width"]
            / b.query_selector(".track").bounding_box()["width"]
            for b in bars
        ]
        probabilities = dict.fromkeys(range(10), 0.0)
        probabilities.update({e["index"]: e["confidence"] for e in want["top_k"]})
        for i, share in enumerate(shares):
            assert share == pytest.approx(probabilities[i], abs=0.02), (i, shares)
        assert page.is_visible("#photo")
        wait_for(page, "document.querySelectorAll('#recent tbody tr').length > 0", timeout=10_000)
        assert "shirt.png" in page.inner_text("#recent")
        # Everything fits the width: no sideways scrolling, bars inside the window.
        width = VIEWPORTS[kind]["viewport"]["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        box = page.query_selector("#bars").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= width
        # A file that is no image: the server's message, on the page.
        bad = tmp_path / "fake.png"
        bad.write_bytes(b"not a picture")
        page.set_input_files("#file", str(bad))
        wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert "not an image" in page.inner_text("#error")
        assert page.query_selector_all("#bars .bar") == []
    finally:
        context.close()


def test_watched_files_show_in_last_predictions(browser, server, watched):
    context = browser.new_context(**VIEWPORTS["phone"])
    page = context.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.port}/")
        Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(watched / "frame-0001.png")
        wait_for(  # the page polls /v1/recent every 3 s
            page,
            "document.getElementById('recent').innerText.includes('frame-0001.png')",
            timeout=30_000,
        )
        row = page.locator("#recent tbody tr", has_text="frame-0001.png").first.inner_text()
        assert "watch" in row
    finally:
        context.close()


def test_token_field_and_dropped_photo(browser, edge_models, tmp_path):
    """With --token the page asks for it; a photo dropped on the page is classified."""
    served = start_server([edge_models["cnn_uint8"], "--token", "pi-s3cret"], tmp_path)
    context = browser.new_context(**VIEWPORTS["desktop"])
    page = context.new_page()
    try:
        photo = tmp_path / "drop.png"
        Image.fromarray(np.full((40, 40, 3), 70, np.uint8)).save(photo)
        status, want = served.predict(
            photo.read_bytes(), "?top_k=10", Authorization="Bearer pi-s3cret"
        )
        assert status == 200
        page.goto(f"http://127.0.0.1:{served.port}/")
        page.wait_for_selector("#token", state="visible")
        assert not page.is_visible("#model")  # one model: no chooser
        page.set_input_files("#file", str(photo))  # no token yet: refused, said on the page
        wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert "Bearer" in page.inner_text("#error")
        page.fill("#token", "pi-s3cret")
        b64 = base64.b64encode(photo.read_bytes()).decode()
        page.evaluate(
            """([name, b64]) => {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const data = new DataTransfer();
                data.items.add(new File([bytes], name, { type: "image/png" }));
                document.getElementById("drop").dispatchEvent(
                    new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
            }""",
            ["drop.png", b64],
        )
        page.wait_for_selector(".bar.predicted")
        assert page.inner_text("#answer") == want["label"]
        assert page.inner_text("#error") == ""
    finally:
        context.close()
        assert served.stop() == 0


def test_a_1001_class_model_shows_its_ten_likeliest_bars(browser, tmp_path):
    """An ImageNet-sized head: the page drew 1001 bar rows (the answer lost far down a phone's
    screen); now the 10 likeliest classes, best first, the predicted one on top."""
    import keras

    from tests.conftest import _convert

    keras.utils.set_random_seed(12)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                1001,
                activation="softmax",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.5),
            ),
        ]
    )
    path = tmp_path / "imagenet.tflite"
    path.write_bytes(_convert(model, tmp_path / "export", (8, 8, 3), "float32", None))
    photo = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), np.uint8)).save(photo)
    served = start_server([path], tmp_path)
    context = browser.new_context(**VIEWPORTS["phone"])
    page = context.new_page()
    try:
        status, want = served.predict(photo.read_bytes(), "?top_k=10")
        assert status == 200
        page.goto(f"http://127.0.0.1:{served.port}/")
        page.wait_for_selector("#model option", state="attached")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".bar.predicted", timeout=30_000)
        bars = page.query_selector_all("#bars .bar")
        assert [b.get_attribute("data-index") for b in bars] == [
            str(e["index"]) for e in want["top_k"]
        ]
        assert bars[0].get_attribute("class") == "bar predicted"
    finally:
        context.close()
        assert served.stop() == 0
