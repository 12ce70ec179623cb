"""The web app's tests: a trained Fashion-MNIST run, its phone-ready models, a camera clip."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

# Pillow's "L" conversion, which the phone-ready models do inside (RGB pixels in).
LUMA = (0.299, 0.587, 0.114)


def train_run(fashion, run: Path, model: str = "mlp", limit: int = 3000, epochs: int = 2) -> Path:
    """A small real run: `model` trained on `limit` Fashion-MNIST images, converted to int8."""
    from convert.run import convert_run
    from train.training import TrainConfig, train

    train(TrainConfig(model=model, epochs=epochs, limit=limit, seed=1), run, data=fashion)
    convert_run(run, modes=["int8"], calibration_samples=200, verify_samples=200)
    return run


def phone_models(run: Path, out: Path) -> list[Path]:
    """`deploy mobile`'s int8 model of `run` (RGB pixels in, uint8): model_int8.tflite."""
    from deploy.mobile import write_mobile_models

    return write_mobile_models(run, out, modes=("int8",))


def mjpeg_clip(frames: list[np.ndarray], path: Path, repeat: int, size: int = 280) -> Path:
    """A Motion-JPEG file (JPEG frames back to back) of `frames`, each shown `repeat` times."""
    with open(path, "wb") as out:
        for frame in frames:
            img = Image.fromarray(frame).convert("RGB").resize((size, size), Image.NEAREST)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            for _ in range(repeat):
                out.write(buf.getvalue())
    return path


def self_signed_pair(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1/localhost, made with the `openssl` CLI."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def interim_phone_model(run: Path, out: Path) -> Path:
    """Until `deploy mobile` lands: the run's Keras model behind RGB uint8 pixels, int8."""
    import json

    import keras
    import tensorflow as tf

    from edge_runtime.metadata import embed_metadata

    meta = json.loads((run / "model.json").read_text())
    model = keras.saving.load_model(run / "model.keras")
    h, w, c = meta["input"]["shape"]
    scale, offset = meta["input"]["scale"], meta["input"]["offset"]
    inp = keras.Input((h, w, 3))
    x = inp
    if c == 1:
        x = keras.layers.Lambda(
            lambda t: tf.reduce_sum(t * tf.constant(LUMA, tf.float32), axis=-1, keepdims=True)
        )(x)
    x = keras.layers.Rescaling(scale, offset)(x)
    wrapped = keras.Model(inp, model(x))
    export = out / "export"
    wrapped.export(
        str(export), verbose=False, input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)]
    )
    conv = tf.lite.TFLiteConverter.from_saved_model(str(export))
    from train.datasets import load_dataset

    calib = load_dataset("fashion-mnist").x_train[:200]
    calib = np.repeat(calib[..., None] if calib.ndim == 3 else calib, 3, axis=-1)
    calib = calib.astype(np.float32)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([c_[None]] for c_ in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    phone_meta = dict(meta)
    phone_meta["input"] = {
        **meta["input"],
        "shape": [h, w, 3],
        "scale": 1.0,
        "offset": 0.0,
        "color_mode": "rgb",
    }
    data = embed_metadata(conv.convert(), phone_meta)
    path = out / "model_int8.tflite"
    path.write_bytes(data)
    return path
