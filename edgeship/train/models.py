"""The model zoo: the tutorial's MLP and a small CNN built for the edge."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from edgeship.train.errors import TrainError

# The training recipe per architecture. The MLP is the tutorial's, unchanged: 5 epochs of
# adam at its default rate, batch 32. The CNN: 15 epochs of adam with the learning rate
# decayed from 1e-3 to ~0 along a half cosine, batch 64. An earlier 10-epoch, constant-rate
# CNN landed on either side of 0.91 depending on the seed (0.9036-0.9117 for seeds 0-2); this
# one scored 0.9195 / 0.9190 / 0.9183 on seeds 0 / 1 / 2, in 137-147 s on 2 cores.
# The "mobile" family (depthwise-separable blocks, `edgeship tune`'s third family): 10 epochs,
# cosine, batch 64.
DEFAULT_EPOCHS = {"mlp": 5, "cnn": 15, "mobile": 10}
DEFAULT_BATCH_SIZE = {"mlp": 32, "cnn": 64, "mobile": 64}
LEARNING_RATE = 1e-3  # adam's default
LR_SCHEDULES = {"mlp": "constant", "cnn": "cosine", "mobile": "cosine"}


def _resized(keras, input_shape: tuple[int, int, int], resolution: int | None) -> list:
    """The input, then a bilinear resize to `resolution` when it differs from the input's
    height: the model resizes inside, so every stage still feeds it the dataset's images."""
    head = [keras.Input(shape=input_shape, name="image")]
    if resolution is not None and int(resolution) != input_shape[0]:
        if not 4 <= int(resolution) <= 4 * input_shape[0]:
            raise TrainError(
                f"resolution must be between 4 and {4 * input_shape[0]}. "
                f"Received: resolution={resolution}"
            )
        head.append(keras.layers.Resizing(int(resolution), int(resolution), name="resize"))
    return head


def build_mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    width: int = 128,
    resolution: int | None = None,
):
    """The tutorial's network: Flatten -> Dense(128, relu) -> Dense(classes, softmax)."""
    import keras

    return keras.Sequential(
        [
            *_resized(keras, input_shape, resolution),
            keras.layers.Flatten(),
            keras.layers.Dense(int(width), activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="mlp",
    )


def build_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    filters: int = 32,
    resolution: int | None = None,
):
    """A small CNN: two conv blocks (32, 64 filters) and a linear head on the pooled features,
    ~50k parameters on 28x28 (~58 KiB as int8): every kernel has an int8 implementation.
    `filters` sets the first block's (the second has twice as many)."""
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            *_resized(keras, input_shape, resolution),
            layers.Conv2D(int(filters), 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(2 * int(filters), 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.4),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name="cnn",
    )


def build_mobile(
    input_shape: tuple[int, int, int],
    num_classes: int,
    filters: int = 16,
    depth: int = 2,
    resolution: int | None = None,
):
    """Depthwise-separable blocks (MobileNet's): a 3x3 stem, then `depth` blocks of depthwise
    3x3 + pointwise 1x1 (the filters doubling every other block, the first of each pair
    striding by 2), global average pooling and a linear head. Few weights for its accuracy."""
    import keras

    layers = keras.layers
    body = [
        *_resized(keras, input_shape, resolution),
        layers.Conv2D(int(filters), 3, padding="same", use_bias=False),
        layers.BatchNormalization(momentum=0.9),
        layers.ReLU(6.0),
    ]
    width = int(filters)
    for block in range(int(depth)):
        stride = 2 if block % 2 == 0 else 1
        width = width * 2 if block % 2 == 0 else width
        body += [
            layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(6.0),
            layers.Conv2D(width, 1, use_bias=False),
            layers.BatchNormalization(momentum=0.9),
            layers.ReLU(6.0),
        ]
    body += [
        layers.GlobalAveragePooling2D(),
        layers.Dropout(0.2),
        layers.Dense(num_classes, activation="softmax"),
    ]
    return keras.Sequential(body, name="mobile")


def learning_rate_callback(name: str, epochs: int):
    """The Keras callback that applies `name`'s learning-rate schedule, or None (constant)."""
    if LR_SCHEDULES.get(name, "constant") == "constant":
        return None
    import keras

    def cosine(epoch: int, _rate: float) -> float:
        return LEARNING_RATE * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    return keras.callbacks.LearningRateScheduler(cosine)


MODELS: dict[str, Callable] = {"mlp": build_mlp, "cnn": build_cnn, "mobile": build_mobile}
# What each family's builder takes besides the shape and classes (`TrainConfig.params`).
PARAMETERS = {
    "mlp": ("width", "resolution"),
    "cnn": ("filters", "resolution"),
    "mobile": ("filters", "depth", "resolution"),
}


def check_model(name: str, params: Iterable[str] = ()) -> None:
    """`TrainError` unless `name` is a model of MODELS and `params` are among its PARAMETERS."""
    if name not in MODELS:
        raise TrainError(
            f"Unknown model. Choose one of: {', '.join(MODELS)}. Received: model={name}"
        )
    unknown = sorted(set(params) - set(PARAMETERS[name]))
    if unknown:
        raise TrainError(
            f"The {name} model takes {', '.join(PARAMETERS[name])}. Received: {', '.join(unknown)}"
        )


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, **params: int):
    """Build and compile the named architecture (adam, sparse categorical cross-entropy);
    `params` (see PARAMETERS) size it."""
    check_model(name, params)
    model = MODELS[name](tuple(input_shape), num_classes, **params)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
