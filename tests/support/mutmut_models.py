"""A pytest plugin for `make mutants` only: the tiny TensorFlow-built models of `edge_models`
are built once and reused by every mutant's test run (each is a new pytest session, and the
models take a minute to train and convert), from a folder inside mutmut's copy (mutants/).

    python -m pytest -p tests.support.mutmut_models ...   (pyproject's [tool.mutmut] does it)

The models are the same files either way; only who builds them changes. Never used by the
suite itself (`make test`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

CACHED = ("edge_models",)  # session fixtures returning {name: .tflite path}
CACHE = Path(__file__).resolve().parents[2] / ".fixture-cache"


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    """The cached files of a CACHED fixture (built, and saved, the first time)."""
    if fixturedef.argname not in CACHED:
        return None
    folder = CACHE / fixturedef.argname
    index = folder / "index.json"
    if not index.is_file():
        built = fixturedef.func(**{a: request.getfixturevalue(a) for a in fixturedef.argnames})
        folder.mkdir(parents=True, exist_ok=True)
        for path in built.values():
            shutil.copy(path, folder / Path(path).name)
        index.write_text(json.dumps({k: Path(p).name for k, p in built.items()}))
    value = {k: folder / name for k, name in json.loads(index.read_text()).items()}
    fixturedef.cached_result = (value, fixturedef.cache_key(request), None)
    return value
