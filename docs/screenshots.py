"""The README's screenshots of the serve page: `python docs/screenshots.py RUN [--out docs]`.

Starts `python -m edge_runtime serve RUN/model_int8.tflite` on 127.0.0.1, sends three
Fashion-MNIST test images (so "Last predictions" has rows), then in Debian's chromium (Playwright,
/usr/bin/chromium) chooses test image 0, an ankle boot, scaled up and inverted to dark-on-light
as a photo would be, and saves `serve.png` (1280x800) and `serve-phone.png` (360x740).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.serving import start_server  # noqa: E402
from tests.support.webapp import wait_for  # noqa: E402
from tests.test_serve_page import CHROMIUM, CHROMIUM_ARGS, VIEWPORTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from edgeship.train.datasets import load_fashion_mnist

    data = load_fashion_mnist()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = []
        for i in range(3):
            path = tmp / f"test-{i}.png"
            img = Image.fromarray(255 - data.x_test[i][:, :, 0]).resize((224, 224), Image.NEAREST)
            img.save(path)
            photos.append(path)
        served = start_server([args.run / "model_int8.tflite"], tmp)
        try:
            for path in reversed(photos):
                served.predict(path.read_bytes(), **{"X-Filename": path.name})
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for kind, name in (("desktop", "serve.png"), ("phone", "serve-phone.png")):
                    context = browser.new_context(**VIEWPORTS[kind])
                    page = context.new_page()
                    page.goto(f"http://127.0.0.1:{served.port}/")
                    page.set_input_files("#file", str(photos[0]))
                    page.wait_for_selector(".bar.predicted")
                    wait_for(page, "document.querySelectorAll('#recent tr').length > 3")
                    page.screenshot(path=str(args.out / name), full_page=True)
                    print(
                        f"{args.out / name}: {page.inner_text('#answer')}, "
                        f"{page.inner_text('#detail')}"
                    )
                    context.close()
                browser.close()
        finally:
            served.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
