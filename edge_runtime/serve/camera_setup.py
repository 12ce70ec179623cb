"""`serve --camera`: the camera found and checked before serving (its errors: exit 2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.image.preprocess import needed_size
from edge_runtime.serve.camera_source import CameraError, camera_command, default_size

if TYPE_CHECKING:
    from edge_runtime.serve.service import Service


def attach_camera(service: Service, source: str) -> None:
    """Find the camera `source` (`service.options.camera`) and give the service its `CameraLive`
    (started with the server); CameraError when there is none or --camera-save is unusable."""
    from edge_runtime.serve.camera_live import CameraLive

    options = service.options
    model = service.models[service.default].classifier
    size = options.camera_size or default_size(needed_size(model.input_shape))
    command = camera_command(source, size, options.camera_fps)
    folder = options.camera_save
    if folder is not None and not (Path(folder).is_dir() and os.access(folder, os.W_OK)):
        raise CameraError(
            "--camera-save: not a writable folder; create it first (mkdir -p). "
            f"Received: --camera-save {folder}"
        )
    service.camera = CameraLive(service, command)
