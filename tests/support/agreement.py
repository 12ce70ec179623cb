"""Each target's answers against the desktop's: an unpacked `--with-wheels` bundle, images.

    python -m tests.support.agreement BUNDLE_DIR IMAGE_DIR [N]

For every target with wheels in the bundle and every model in its manifest, runs
`python -m edge_runtime predict --json` on every PNG of IMAGE_DIR (made first, when it does not
exist, from the first N Fashion-MNIST test images, default 100) here (the desktop) and in
the target's emulated userland (tests.support.pi, the bundle's own wheels), and prints one
line per target and model: top-1 agreement, identical output lines, the largest difference of
the reported confidence, and the emulated process's wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.pi import ensure_pi_python, site_from_wheels


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def write_test_images(folder: Path, count: int) -> None:
    """The first `count` Fashion-MNIST test images as PNGs (the dataset as edgeship finds it)."""
    from PIL import Image

    from edgeship.train.datasets import load_fashion_mnist

    folder.mkdir(parents=True)
    for i, pixels in enumerate(load_fashion_mnist().x_test[:count]):
        Image.fromarray(pixels[:, :, 0]).save(folder / f"t10k_{i:05d}.png")


def main(argv: list[str] | None = None) -> int:
    """Print the agreement table; exit 1 if a target disagrees with the desktop anywhere."""
    args = list(argv or sys.argv[1:])
    bundle, images = (Path(a).resolve() for a in args[:2])
    if not images.exists():
        write_test_images(images, int(args[2]) if len(args) > 2 else 100)
    manifest = json.loads((bundle / "manifest.json").read_text())
    pngs = sorted(str(p) for p in images.glob("*.png"))
    worst = 0
    for model in manifest["models"]:
        args = ["-m", "edge_runtime", "predict", "--json", model["file"], *pngs]
        desk = _records(
            subprocess.run(
                [sys.executable, *args], cwd=bundle, capture_output=True, text=True, check=True
            ).stdout
        )
        for target in manifest["targets"]:
            wheels = sorted((bundle / "wheels" / target).glob("*.whl"))
            if not wheels:
                continue
            py = ensure_pi_python(target).with_site(site_from_wheels(wheels))
            started = time.perf_counter()
            proc = py.run(args, cwd=bundle, extra_paths=[bundle], timeout=1800)
            seconds = time.perf_counter() - started
            got = _records(proc.stdout)
            if proc.returncode != 0 or len(got) != len(desk):
                print(f"{target} {model['file']}: failed: {proc.stderr[-500:]}")
                worst = 1
                continue
            agree = sum(a["index"] == b["index"] for a, b in zip(desk, got, strict=True))
            same = sum(a == b for a, b in zip(desk, got, strict=True))
            diff = max(
                abs(a["confidence"] - b["confidence"]) for a, b in zip(desk, got, strict=True)
            )
            worst |= agree != len(desk)
            print(
                f"{target:15} {Path(model['file']).name:22} top-1 agreement {agree}/{len(desk)}, "
                f"identical lines {same}/{len(desk)}, max confidence diff {diff:.6f} "
                f"({seconds:.1f} s under qemu)"
            )
    return worst


if __name__ == "__main__":
    sys.exit(main())
