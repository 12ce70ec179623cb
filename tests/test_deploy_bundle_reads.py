"""build_bundle reads each file it ships once (an audit hook counts the opens)."""

from __future__ import annotations

import collections
import os
import sys
import tarfile
from pathlib import Path

from edgeship.deploy.pi.bundle import REMOTE_FILES, build_bundle

_opens: collections.Counter[str] | None = None


def _count_opens(event: str, args: tuple) -> None:
    if _opens is not None and event == "open" and isinstance(args[0], (str, os.PathLike)):
        _opens[str(Path(os.fspath(args[0])).resolve())] += 1


sys.addaudithook(_count_opens)  # audit hooks stay for the session: it counts only when asked


def test_each_bundled_file_is_read_once(deploy_run, tmp_path):
    global _opens
    site = tmp_path / "site"
    (site / "wasm").mkdir(parents=True)
    (site / "index.html").write_text("<p>app</p>")
    (site / "wasm" / "core.wasm").write_bytes(b"\0asm" + bytes(5000))
    _opens = collections.Counter()
    try:
        info = build_bundle(deploy_run, tmp_path / "b.tar.gz", web=site, targets="trixie-arm64")
    finally:
        opens, _opens = _opens, None
    with tarfile.open(info.path, "r:gz") as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    web = [p.resolve() for p in site.rglob("*") if p.is_file()]
    remote = [p.resolve() for p in REMOTE_FILES.iterdir() if p.is_file() and p.name in names]
    assert len(web) == 2 and len(remote) == 5, (web, remote)
    assert {str(p): opens[str(p)] for p in web + remote} == {str(p): 1 for p in web + remote}
    for model in sorted(deploy_run.glob("*.tflite")):
        # one read for the bundle, one by edge_runtime running it for the expected answer
        assert opens[str(model.resolve())] <= 2, (model, opens[str(model.resolve())])
