"""`deploy mobile` of a PyTorch run: the phone graph
(`edgeship.deploy.mobile.graph.torch_phone_model`) converted by litert-torch, RGB pixels in
(channels last), no TensorFlow."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Any

from edgeship.deploy.errors import DeployError, MobileError

# Modes a PyTorch run's phone model is made in: no calibration needed.
TORCH_MOBILE_MODES = ("float32", "float16", "dynamic")


def torch_phone_bytes(spec: str, meta: dict[str, Any], mode: str) -> bytes:
    """The phone model of the PyTorch model `spec` (`FILE.pt2` or `FILE.py:FUNCTION`) in `mode`."""
    from edgeship.convert.errors import ConvertError
    from edgeship.convert.torch_source import load_torch_module, unwrap
    from edgeship.deploy.mobile.graph import torch_phone_model
    from edgeship.train.quiet import captured_stderr

    if mode not in TORCH_MOBILE_MODES:
        raise MobileError(
            f"A PyTorch run's phone models are {', '.join(TORCH_MOBILE_MODES)} (int8 needs the "
            "run's dataset to calibrate the RGB graph; convert's own model_int8.tflite takes "
            "float input with the standard metadata, which MediaPipe reads). "
            f"Received: models={mode}"
        )
    block = meta["input"]
    height, width, channels = (int(d) for d in block["shape"])
    try:
        module, _ = load_torch_module(spec)
    except ConvertError as err:
        raise MobileError(str(err)) from None
    module = unwrap(module)
    graph = torch_phone_model(
        module,
        channels=channels,
        invert_light_background=block.get("background") == "dark",
        scale=block.get("scale", 1.0),
        offset=block.get("offset", 0.0),
        softmax=bool((meta.get("source_model") or {}).get("logits")),
    )
    import litert_torch
    import torch

    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            captured_stderr(),
        ):
            warnings.simplefilter("ignore")
            data = bytes(
                litert_torch.convert(graph, (torch.zeros(1, height, width, 3),)).model_content()
            )
        if mode == "float32":
            return data
        from edgeship.convert.engine import quantize_tflite

        return quantize_tflite(data, mode).model_bytes  # the quantization engine's recipe
    except Exception as err:  # noqa: BLE001 - the converter raises anything
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DeployError(
            f"litert-torch could not convert the phone model ({first}). Received: model={spec}"
        ) from None
