"""`--input-mean R,G,B --input-std R,G,B` on a Keras model: per-channel normalization of
pixels scaled to [0, 1], recorded in both metadata blocks and applied by edge_runtime."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

MEAN, STD = (0.2, 0.5, 0.7), (0.1, 0.3, 0.25)


def test_keras_model_with_per_channel_mean_and_std(tmp_path):
    import keras

    from edge_runtime import EdgeClassifier
    from edge_runtime.metadata.block import read_metadata
    from edgeship.cli import app

    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [
            keras.Input((8, 10, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    model.save(tmp_path / "m.keras")
    result = CliRunner().invoke(
        app,
        [
            "convert",
            str(tmp_path / "m.keras"),
            "--quantize",
            "float32",
            "--out",
            str(tmp_path / "run"),
            "--input-mean",
            ",".join(map(str, MEAN)),
            "--input-std",
            ",".join(map(str, STD)),
        ],
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "run/model_float32.tflite"
    meta = read_metadata(path, sidecar=False)
    assert meta["input"]["mean"] == pytest.approx(list(MEAN))
    assert meta["input"]["std"] == pytest.approx(list(STD))
    clf = EdgeClassifier.load(path)
    assert clf.standard.mean == pytest.approx([255 * m for m in MEAN], rel=1e-5)
    assert clf.standard.std == pytest.approx([255 * s for s in STD], rel=1e-5)
    pixels = np.random.default_rng(0).integers(0, 256, (20, 8, 10, 3), dtype=np.uint8)
    want = keras.ops.softmax(model((pixels / 255.0 - np.array(MEAN)) / np.array(STD))).numpy()
    assert np.abs(clf.predict_proba(pixels) - want).max() < 1e-5


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--input-mean", "0.5,0.5,0.5"], "--input-mean and --input-std go together"),
        (["--input-mean", "0.5,0.5", "--input-std", "0.2,0.2"], "one value per channel"),
        (["--input-mean", "0.5", "--input-std", "0"], "--input-std must be above 0"),
        (["--input-mean", "a,b,c", "--input-std", "1,1,1"], "one number per channel"),
        (
            ["--input-mean", "0.5", "--input-std", "0.2", "--input-scale", "0.1"],
            "Give the pixel scaling once",
        ),
    ],
)
def test_bad_normalization_options_fail_in_one_line(tmp_path, args, says):
    from edgeship.convert.errors import ConvertError
    from edgeship.convert.loading import ModelSignature
    from edgeship.convert.options import input_settings

    with pytest.raises(ConvertError) as info:
        input_settings(
            tmp_path / "m.keras",
            ModelSignature((8, 10, 3), 4),
            None,
            None,
            None,
            0.1 if "--input-scale" in args else None,
            None,
            *(
                dict(zip(args[::2], args[1::2], strict=True)).get(k)
                for k in ("--input-mean", "--input-std")
            ),
        )
    assert says in str(info.value) and "\n" not in str(info.value)
