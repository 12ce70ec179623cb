"""The served page with phone photos, in Debian's chromium (Playwright), for
`studies.photo_speed`: upload bytes and time at 20 Mbit/s, and the answers' agreement."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from studies.photo_models import SIZES, phone_jpeg, scene
from tests.support.serving import start_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
LINK_BITS_PER_S = 20e6  # a phone's Wi-Fi, throttled by CDP
# The size of what the page's fetch posts to /v1/predict, recorded as it sends it.
RECORD = """
window.__sent = [];
const realFetch = window.fetch;
window.fetch = (url, init) => {
  if (String(url).includes("v1/predict") && init && init.body) window.__sent.push(init.body.size);
  return realFetch(url, init);
};
"""


def _ask(
    browser, port: int, model: str, photo: Path, margin: int | None, throttle: bool
) -> dict[str, Any]:
    """One photo through a fresh page: the label, the bytes posted and the seconds from
    choosing the file to the answer on screen."""
    context = browser.new_context()
    page = context.new_page()
    page.add_init_script(RECORD)
    if throttle:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 5,
                "downloadThroughput": LINK_BITS_PER_S / 8,
                "uploadThroughput": LINK_BITS_PER_S / 8,
            },
        )
    try:
        query = "" if margin is None else f"?margin={margin}"
        page.goto(f"http://127.0.0.1:{port}/{query}")
        page.wait_for_selector("#model option", state="attached")
        page.select_option("#model", model)
        t0 = time.perf_counter()
        page.set_input_files("#file", str(photo))
        page.wait_for_selector(".bar.predicted", timeout=120_000)
        seconds = time.perf_counter() - t0
        return {
            "label": page.inner_text("#answer"),
            "bytes": page.evaluate("window.__sent")[0],
            "seconds": seconds,
        }
    finally:
        context.close()


def page_measurements(
    model_paths: dict[str, Path],
    photos: dict[str, list[Path]],
    n: int,
    folder: Path,
    margins: tuple[int, ...] = (4,),
) -> dict[str, Any]:
    """Upload bytes and time for a 12 MP photo at 20 Mbit/s (before: as it is; after: scaled
    in the browser), and the page's top-1 vs `predict` on the original 12 MP files."""
    from playwright.sync_api import sync_playwright

    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.native_log import filtered_native_stderr

    names = {"MLP": "mlp", "MobileNetV2": "mobilenet", "fruit": "fruit"}
    served = []
    for key, stem in names.items():
        link = folder / f"{stem}.tflite"
        link.write_bytes(model_paths[key].read_bytes())
        served.append(link)
    photo = folder / "upload_12mp.jpg"
    photo.write_bytes(phone_jpeg(scene(1), SIZES["12 MP"]))
    server = start_server([p.resolve() for p in served], folder)
    port = server.port
    result: dict[str, Any] = {"photo_bytes": photo.stat().st_size, "link_mbit_s": 20}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            upload = []
            for model in ("mobilenet", "mlp"):
                for way, margin in (("before", 0), ("after", None)):
                    runs = [_ask(browser, port, model, photo, margin, True) for _ in range(3)]
                    upload.append(
                        {
                            "model": model,
                            "way": way,
                            "bytes": runs[0]["bytes"],
                            "seconds_p50": round(statistics.median(r["seconds"] for r in runs), 3),
                            "label": runs[0]["label"],
                        }
                    )
                    print(json.dumps(upload[-1]), file=sys.stderr, flush=True)
            result["upload"] = upload
            agree = []
            for margin in margins:
                for model, kind in (("mlp", "fashion"), ("fruit", "fruit")):
                    chosen = [q for q in photos[kind] if q.stem.endswith("12MP")][:n]
                    with filtered_native_stderr():
                        clf = EdgeClassifier.load(folder / f"{model}.tflite")
                    same = sum(
                        _ask(browser, port, model, q, margin, False)["label"]
                        == clf.predict(q)[0].label
                        for q in chosen
                    )
                    agree.append(
                        {
                            "margin": margin,
                            "model": model,
                            "photos": f"{kind} at 12 MP",
                            "n": len(chosen),
                            "equal": same,
                            "agreement": round(same / max(len(chosen), 1), 4),
                        }
                    )
                    print(json.dumps(agree[-1]), file=sys.stderr, flush=True)
            result["agreement"] = agree
            browser.close()
    finally:
        server.stop()
    return result
