"""Peak RSS growth of a real `serve` process per photo: `python -m studies.photo_memory MODEL...`

For each image of `tests/test_serve_photo.py` (a 6300x6300 palette PNG with transparency, 16-bit
PNGs of 4000x4000 and 6300x6300, a 12 MP JPEG) and each model: a fresh `python -m edge_runtime
serve` on 127.0.0.1, one small warm-up image, then the photo; prints a Markdown row with the
status and the growth of `VmHWM` (/proc/PID/status) over that one request (docs/photos.md).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

from tests.support.serving import start_server
from tests.test_serve_photo import _png, gray16, palette_with_alpha, photo_jpeg, vm_hwm_mb


def main(models: list[str]) -> int:
    """Print one Markdown row per image and model."""
    small = _png(Image.new("RGB", (64, 64), (90, 120, 30)))
    images = [
        ("palette+alpha 6300x6300 PNG", palette_with_alpha()),
        ("16-bit 4000x4000 PNG", gray16((4000, 4000))),
        ("12 MP JPEG", photo_jpeg()),
        ("16-bit 6300x6300 PNG", gray16((6300, 6300))),
    ]
    print("| image | upload | model | status | peak RSS growth |\n|---|---:|---|---:|---:|")
    with tempfile.TemporaryDirectory() as logs:
        for name, data in images:
            for model in models:
                served = start_server([model, "--max-upload-mb", "12"], Path(logs))
                try:
                    assert served.predict(small)[0] == 200
                    before = vm_hwm_mb(served.proc.pid)
                    status, _, _ = served.request(
                        "POST", "/v1/predict", data, {"Content-Type": "image/png"}
                    )
                    growth = vm_hwm_mb(served.proc.pid) - before
                finally:
                    served.stop()
                print(
                    f"| {name} | {len(data) / 1e3:.0f} kB | {Path(model).stem} | {status} | "
                    f"+{growth:.0f} MB |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
