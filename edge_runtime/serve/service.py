"""The served models and their predictions (off the event loop), counters and the --watch folder."""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import EdgeshipError
from edge_runtime.records import DEFAULT_TOP_K
from edge_runtime.serve.errors import ServeError
from edge_runtime.serve.metrics import CachedBoardState, ServeMetrics
from edge_runtime.serve.options import ServeOptions
from edge_runtime.serve.recent import RecentPredictions, printable_name
from edge_runtime.serve.uploads import UploadBudget

if TYPE_CHECKING:
    import anyio

    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.serve.camera_live import CameraLive
    from edge_runtime.serve.watch import FolderWatcher

RESULTS_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class WatchFailed(ServeError):
    """The --watch thread stopped for good (its folder went): the service exits 1."""

    exit_code = 1


def open_results(path: str | os.PathLike[str]) -> io.BufferedWriter:
    """--results opened for appending, never through a symlink (ELOOP: OSError)."""
    return open(os.open(path, RESULTS_FLAGS, 0o644), "ab")


@dataclass(frozen=True)
class ServedModel:
    """One model file's classifier under its name (the file's stem)."""

    name: str
    classifier: EdgeClassifier

    def info(self) -> dict[str, Any]:
        """The model as /v1/models describes it."""
        clf = self.classifier
        meta = clf.metadata or {}
        return {
            "name": self.name,
            "file": str(clf.path),
            "size_bytes": clf.size_bytes,
            "input": {
                "shape": list(clf.input_shape),
                "dtype": clf.input_spec.dtype.name,
                "scale": clf.input_scale,
                "offset": clf.input_offset,
                "background": clf.background,
            },
            "classes": list(clf.class_names),
            "quantization": (meta.get("quantization") or {}).get("mode")
            or clf.input_spec.dtype.name,
            "backend": f"{clf.backend.name} {clf.backend.version}",
        }


def load_models(options: ServeOptions) -> dict[str, ServedModel]:
    """One classifier per model file, named by its stem (`model_int8`); --labels applied."""
    from edge_runtime.classifier import EdgeClassifier

    models: dict[str, ServedModel] = {}
    for path in map(Path, options.models):
        if path.stem in models:
            raise ServeError(
                f"Two models share the name {path.stem!r} (file stem); rename one. "
                f"Received: {models[path.stem].classifier.path} and {path}"
            )
        clf = EdgeClassifier.load(
            path,
            num_threads=options.threads,
            backend=options.backend,
            labels=options.labels,
            max_model_mb=options.max_model_mb,
        )
        clf.decode_to_size = not options.full_decode
        models[path.stem] = ServedModel(path.stem, clf)
    return models


def _record(model: ServedModel, pred: Any, top_k: int, seconds: float) -> dict[str, Any]:
    """The answer to one image: the CLI's `predict --json` record (same rounding), with the
    model's name and the latency instead of the image's path."""
    from edge_runtime.records import prediction_record

    record = prediction_record("", pred, top_k)
    del record["image"]
    return {"model": model.name, **record, "latency_us": round(seconds * 1e6, 1)}


class Service:
    """The models, counters and recent predictions behind the HTTP routes and the watcher."""

    def __init__(self, options: ServeOptions, models: dict[str, ServedModel]) -> None:
        self.options = options
        self.models = models
        self.metrics = ServeMetrics(list(models))
        self.recent = RecentPredictions()
        self._results_lock = threading.Lock()
        self.uploads = UploadBudget(options.max_inflight_bytes)
        self.board_state = CachedBoardState()
        self.on_watch_failure: Callable[[], None] = lambda: None  # set by the server: stop
        self._watcher: FolderWatcher | None = None
        self._stopped_watcher: FolderWatcher | None = None
        self._limiter: anyio.CapacityLimiter | None = None  # made inside the event loop
        self.camera: CameraLive | None = None  # with --camera (set by startup.prepare)

    @property
    def default(self) -> str:
        """The name of the first model: the one used without ?model= and by --watch."""
        return next(iter(self.models))

    def classify(self, model: ServedModel, data: bytes, top_k: int) -> tuple[dict[str, Any], float]:
        """Decode, preprocess and classify one image's bytes (in a worker thread): the
        response record and the seconds it took."""
        from edge_runtime.image.stages import classify_photo

        started = time.perf_counter()
        # decoded to the model's size; the classifier prepares it as predict does
        pred, stages = classify_photo(
            model.classifier, data, max_decoded_bytes=self.options.max_decoded_bytes
        )
        seconds = time.perf_counter() - started
        self.metrics.stages(model.name, stages)
        return _record(model, pred, top_k, seconds), seconds

    async def classify_off_loop(
        self, model: ServedModel, data: bytes, top_k: int
    ) -> tuple[dict[str, Any], float]:
        """`classify` in a worker thread, at most `options.workers` at a time."""
        import anyio.to_thread

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.options.workers)
        return await anyio.to_thread.run_sync(
            self.classify, model, data, top_k, limiter=self._limiter
        )

    def on_watched_file(self, path: Path) -> None:
        """Classify one complete file from --watch; append its JSON line to --results.
        Whatever happens to the file becomes its result line; nothing is raised."""
        from edge_runtime.serve.watch import read_watched_file

        model = self.models[self.default]
        try:
            data = read_watched_file(path, self.options.max_upload_bytes)
            record, seconds = self.classify(model, data, DEFAULT_TOP_K)
        except (OSError, EdgeshipError) as err:
            self.metrics.error("watch_bad_image")
            outcome = {"error": getattr(err, "strerror", None) or str(err)}
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the watcher
            self.metrics.error("internal")
            outcome = {"error": f"{type(err).__name__}: {err}"}
        else:
            self.metrics.prediction(model.name, record["label"], "watch", seconds)
            self.recent.add(record, "watch", path.name)
            outcome = record
        self.append_result({"time": time.time(), "image": printable_name(str(path)), **outcome})

    def append_result(self, line: dict[str, Any]) -> None:
        """One JSON line on --results (none without it); a failure is counted and logged,
        never raised."""
        results = self.options.results
        if results is None:
            return
        text = json.dumps(line, ensure_ascii=False) + "\n"
        try:
            with self._results_lock, open_results(results) as f:
                f.write(text.encode("utf-8", "backslashreplace"))
        except OSError as err:  # disk full, folder gone, a symlink: say so, keep watching
            self.metrics.error("results_write")
            print(
                f"warning: cannot append to --results ({err.strerror}). Received: path={results}",
                file=sys.stderr,
                flush=True,
            )

    def watch_state(self) -> str | None:
        """`ok` or `failed` (the watching thread stopped), None without --watch."""
        if self.options.watch is None:
            return None
        watcher = self._watcher
        return "failed" if watcher is not None and watcher.failure else "ok"

    def raise_if_watch_failed(self) -> None:
        """WatchFailed when the watcher stopped by itself (after the server stopped)."""
        watcher = self._watcher or self._stopped_watcher
        if watcher is not None and watcher.failure:
            raise WatchFailed(
                f"--watch stopped: {watcher.failure}; restart the service (systemd does). "
                f"Received: --watch {printable_name(str(self.options.watch))}"
            )

    def start_watch(self) -> None:
        """Start watching --watch (if set and not yet started)."""
        if self.options.watch is None or self._watcher is not None:
            return
        from edge_runtime.serve.watch import FolderWatcher

        self._watcher = FolderWatcher(
            self.options.watch, self.on_watched_file, lambda: self.on_watch_failure()
        ).start()

    def stop_watch(self) -> None:
        """Stop the watcher, if one runs."""
        if self._watcher is not None:
            self._watcher.stop()
            self._stopped_watcher, self._watcher = self._watcher, None
