"""The web app's speed: `python -m studies.web_speed SITE [SITE...] [--runs N] [--json FILE]`.

For each site written by `edgeship deploy web`, served by `python -m edge_runtime serve --web`
on 127.0.0.1 and opened in Debian's headless chromium (Playwright, phone emulation):

- first load, cold (a fresh browser profile): time from navigation to "ready" (LiteRT.js and
  the model loaded and compiled) and the bytes fetched;
- reload (warm, the service worker answering): the same time;
- per image, in the browser (LiteRT.js on WASM): p50/p99 of one `run` on H x W x 3 pixels
  (input tensor, run, output read: `performance.now()`, which chromium rounds to 0.1 ms outside
  a cross-origin-isolated page), against `EdgeClassifier.predict` on the same pixels in Python
  (native LiteRT, its default threads and one thread), and their ratios;
- the site's size on disk, and what a browser needs of it uncompressed (one of the three WASM
  builds); the first load's bytes are those that came over the wire (precompressed).

The server sends COOP/COEP, so the page is cross-origin isolated and takes the threaded build
(every core; `performance.now()` is then precise to 5 us).

Images: Fashion-MNIST test images when the dataset is on disk, else random pixels.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
READY = "window.edgeship && window.edgeship.ready"
WARMUP = 20
LOADS = 3  # cold loads (a fresh context each) and reloads; the medians are reported


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _images(shape: tuple[int, int, int], n: int) -> np.ndarray:
    """n images (uint8, H x W x 3): Fashion-MNIST's test set resized, else random pixels."""
    from PIL import Image

    try:
        from edgeship.train.datasets import load_dataset

        x = load_dataset("fashion-mnist").x_test[:n]
        x = x[..., 0] if x.ndim == 4 else x
        h, w, _ = shape
        return np.stack([np.asarray(Image.fromarray(i).convert("RGB").resize((w, h))) for i in x])
    except Exception:  # noqa: BLE001 - no dataset (or no TensorFlow): random pixels do as well
        return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def native_latency(
    model_path: Path, images: np.ndarray, num_threads: int | None = None
) -> list[float]:
    """Milliseconds of `EdgeClassifier.predict` per image (after a warm-up); `num_threads`:
    the interpreter's (None: its default)."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.native_log import filtered_native_stderr

    with filtered_native_stderr():
        clf = EdgeClassifier.load(model_path, num_threads=num_threads)
    for x in images[:WARMUP]:
        clf.predict(x)
    times = []
    for x in images:
        start = time.perf_counter_ns()
        clf.predict(x)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


def _wait(page, expression: str, timeout_s: float) -> None:
    """Until `expression` is true in the page. Not `page.wait_for_function`: its poller compiles
    the expression in the page (eval), which the app's Content-Security-Policy refuses;
    `page.evaluate` goes through DevTools. Polled every 10 ms (the load times are in seconds)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout_s:g} s: {expression}")
        time.sleep(0.01)


def _load(page, navigate) -> tuple[float, int]:
    """Seconds from `navigate()` to the app being ready, and the bytes that came from the
    server: every request of the page or of its service worker (the context sees both) whose
    response did not come from the service worker."""
    requests = []

    def record(request) -> None:
        requests.append(request)

    page.context.on("request", record)
    start = time.perf_counter()
    navigate()
    _wait(page, READY, 120)
    seconds = time.perf_counter() - start
    page.context.remove_listener("request", record)
    network = 0
    for request in requests:
        response = request.response()
        if response is not None and not response.from_service_worker:
            network += int(response.headers.get("content-length", 0))
    return seconds, network


def site_bytes(site: Path, build: str = "threaded") -> tuple[int, int]:
    """(every file, the precompressed copies included; what one browser needs of it,
    uncompressed: the site's own files but the WASM builds other than `build`). Read from the
    folder itself: a build is a `wasm/NAME.wasm`, a copy is `X.gz`/`X.br` beside `X`."""
    files = [p for p in site.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    builds = {p.name.split(".")[0] for p in files if p.suffix == ".wasm"}
    keep = "litert_wasm_internal" if build == "plain" else f"litert_wasm_{build}_internal"
    others = builds - {keep}
    needed = sum(
        p.stat().st_size
        for p in files
        if not (p.suffix in (".gz", ".br") and p.with_suffix("").is_file())
        and not any(p.name.startswith(f"{b}.") for b in others)
    )
    return total, needed


def _without_isolation(route) -> None:
    """The server's response less COOP/COEP: the page is not cross-origin isolated."""
    response = route.fetch()
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("cross-origin-opener-policy", "cross-origin-embedder-policy")
    }
    route.fulfill(response=response, headers=headers)


def measure_site(browser, site: Path, runs: int, loads: int = LOADS, isolated: bool = True) -> dict:
    """Load, reload and per-image figures of one site (served by edge_runtime serve --web);
    `isolated=False` strips COOP/COEP from every response (the plain build)."""
    import tempfile

    from tests.support.serving import start_server

    meta = json.loads((site / "models.json").read_text())
    first = site / meta["models"][0]["file"]
    logs = Path(tempfile.mkdtemp(prefix="web_speed-"))
    served = start_server([first.resolve(), "--web", site.resolve()], logs)
    port = served.port
    try:
        origin = f"http://127.0.0.1:{port}/app/"
        cold, cold_bytes, reload, reload_bytes = [], [], [], []
        for i in range(loads):
            context = browser.new_context(**PHONE)
            if not isolated:
                context.route("**/*", _without_isolation)
            page = context.new_page()
            seconds, network = _load(page, functools.partial(page.goto, origin))
            cold.append(seconds)
            cold_bytes.append(network)
            if i < loads - 1:
                context.unroute_all(behavior="ignoreErrors")
                context.close()
        _wait(page, "window.edgeship.offline === true", 120)
        for _ in range(loads):
            seconds, network = _load(page, page.reload)
            reload.append(seconds)
            reload_bytes.append(network)
        models = []
        for m in meta["models"]:
            shape = (m["height"], m["width"], 3)
            images = _images(shape, runs)
            all_images = np.ascontiguousarray(np.concatenate([images[:WARMUP], images]))
            web_ms = page.evaluate(
                """async ([b64, size, name, warmup]) => {
                    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                    const times = [];
                    for (let i = 0; i * size < bytes.length; i++) {
                        const px = bytes.subarray(i * size, (i + 1) * size);
                        const r = await window.edgeship.classifyPixels(px, name);
                        if (i >= warmup) times.push(r.ms);
                    }
                    return times;
                }""",
                [
                    base64.b64encode(all_images.tobytes()).decode(),
                    int(np.prod(shape)),
                    m["name"],
                    len(images[:WARMUP]),
                ],
            )
            native_ms = native_latency(site / m["file"], images)
            native_1t = native_latency(site / m["file"], images, num_threads=1)
            web_p50, native_p50 = _percentile(web_ms, 50), _percentile(native_ms, 50)
            one_p50 = _percentile(native_1t, 50)
            models.append(
                {
                    "model": m["name"],
                    "input": list(shape),
                    "size_bytes": m["size_bytes"],
                    "web_ms": {
                        "p50": web_p50,
                        "p99": _percentile(web_ms, 99),
                        "mean": statistics.fmean(web_ms),
                    },
                    "native_ms": {
                        "p50": native_p50,
                        "p99": _percentile(native_ms, 99),
                        "mean": statistics.fmean(native_ms),
                    },
                    "native_1thread_ms": {"p50": one_p50, "p99": _percentile(native_1t, 99)},
                    "ratio_p50": web_p50 / native_p50 if native_p50 else None,
                    "ratio_p50_1thread": web_p50 / one_p50 if one_p50 else None,
                    "ratio_mean": statistics.fmean(web_ms) / statistics.fmean(native_ms),
                    "runs": len(web_ms),
                }
            )
        backend = page.evaluate("window.edgeship.backend")
        build, threads = page.evaluate("[window.edgeship.build, window.edgeship.threads]")
        context.unroute_all(behavior="ignoreErrors")
        context.close()
    finally:
        served.stop()
    total, fetched = site_bytes(site, build)
    return {
        "site": str(site),
        "backend": backend,
        "build": build,
        "threads": threads,
        "first_load_s": statistics.median(cold),
        "first_load_bytes": statistics.median(cold_bytes),
        "reload_s": statistics.median(reload),
        "reload_network_bytes": statistics.median(reload_bytes),
        "site_bytes": total,
        "site_bytes_one_build": fetched,
        "models": models,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure each SITE and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(
        prog="python -m studies.web_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sites", nargs="+", type=Path, metavar="SITE")
    parser.add_argument("--runs", type=int, default=200, help="images per model (default 200)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="strip COOP/COEP from the responses: the page takes the plain (one-thread) build",
    )
    args = parser.parse_args(argv)
    for site in args.sites:
        if not (site / "models.json").is_file():
            print(f"error: not a site written by `edgeship deploy web`: {site}", file=sys.stderr)
            return 2
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            results = [
                measure_site(browser, site, args.runs, isolated=not args.plain)
                for site in args.sites
            ]
        finally:
            browser.close()
    for r in results:
        print(f"== {r['site']} ({r['backend']}, {r['build']} build, {r['threads']} threads)")
        print(
            f"first load (cold, median of {LOADS}): {r['first_load_s']:.2f} s, "
            f"{r['first_load_bytes'] / 1e6:.2f} MB; reload (service worker, median of {LOADS}): "
            f"{r['reload_s']:.2f} s, "
            f"{r['reload_network_bytes'] / 1e6:.2f} MB over the network"
        )
        print(
            f"site: {r['site_bytes'] / 1e6:.2f} MB on disk, "
            f"{r['site_bytes_one_build'] / 1e6:.2f} MB for one browser (uncompressed)"
        )
        for m in r["models"]:
            w, n = m["web_ms"], m["native_ms"]
            print(
                f"  {m['model']} {m['input']}: browser p50 {w['p50']:.2f} ms p99 {w['p99']:.2f} ms"
                f" mean {w['mean']:.3f} ms | EdgeClassifier.predict p50 {n['p50']:.3f} ms"
                f" p99 {n['p99']:.3f} ms mean {n['mean']:.3f} ms | ratio p50 "
                f"{m['ratio_p50']:.1f}x, mean {m['ratio_mean']:.1f}x ({m['runs']} images) | "
                f"one native thread p50 {m['native_1thread_ms']['p50']:.3f} ms, ratio p50 "
                f"{m['ratio_p50_1thread']:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
