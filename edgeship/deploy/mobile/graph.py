"""The phone-ready graph: RGB pixels (0-255) in, edgeship's preprocessing as Keras layers (or,
for a PyTorch model, as a torch module in front of it: `torch_phone_model`).

edge_runtime prepares an image in Pillow (`edge_runtime.image.preprocess`): convert to L for a
grayscale model, invert when the model's background is dark and the image's border is light
(mean > 127), then `pixel * scale + offset`. A phone app has none of that, so these layers put
the same steps in front of the trained model, and the app feeds H x W x 3 RGB pixels.

- `PilGray(exact=True)` is Pillow's `convert("L")` bit for bit: `(R*19595 + G*38470 + B*7471
  + 0x8000) >> 16` (ITU-R 601-2 in 16-bit fixed point). Every term is an integer below 2^24, so
  float32 holds it exactly, and `floor(x / 65536)` is the shift. `exact=False` is the same
  weights as one linear map, rounding left to the next tensor's quantization: a full-int8
  graph has no integer FLOOR, so the int8 model uses it (one grey level off at worst).
- `InvertLightBackground`: the mean of the outer rows and columns (corners twice, as
  `border_mean` does) above 127 selects `255 - x`.
"""

from __future__ import annotations

from typing import Any

# Pillow's rgb2l weights (libImaging/Convert.c): 16-bit fixed point of 0.299, 0.587, 0.114.
PIL_L_WEIGHTS = (19595, 38470, 7471)
PIL_L_ROUND = 0x8000
BORDER_THRESHOLD = 127.0
# The same weights as int8 can hold them: symmetric per-channel quantization stores w / s with
# s = max(w) / 127, so 0.587 -> 127 and the others round to 65 and 25. Over 217 (their sum),
# a grey pixel (R = G = B) stays itself exactly; a coloured one is within 0.25 % of Pillow's.
INT8_L_WEIGHTS = (65.0, 127.0, 25.0)
INT8_L_DIVISOR = 217.0


def _layers():
    import keras
    from keras import ops

    class PilGray(keras.layers.Layer):
        """RGB (..., 3) -> L (..., 1) with Pillow's weights; `exact` adds Pillow's rounding."""

        def __init__(self, exact: bool = True, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.exact = exact

        def call(self, x):
            r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
            if self.exact:
                w_r, w_g, w_b = PIL_L_WEIGHTS
                fixed = r * float(w_r) + g * float(w_g) + b * float(w_b) + float(PIL_L_ROUND)
                return ops.floor(fixed * (1.0 / 65536.0))
            weights = ops.convert_to_tensor(INT8_L_WEIGHTS, dtype=x.dtype) / INT8_L_DIVISOR
            return ops.matmul(x, ops.reshape(weights, (3, 1)))

    class InvertLightBackground(keras.layers.Layer):
        """`255 - x` for an image whose border mean (all channels) is above 127, else `x`."""

        def call(self, x):
            border = ops.concatenate(
                [
                    x[:, 0, :, :],
                    x[:, -1, :, :],
                    x[:, :, 0, :],
                    x[:, :, -1, :],
                ],
                axis=1,
            )
            mean = ops.mean(border, axis=(1, 2), keepdims=True)[:, :, :, None]
            return ops.where(ops.greater(mean, BORDER_THRESHOLD), 255.0 - x, x)

    return keras, PilGray, InvertLightBackground


def phone_model(
    model: Any,
    *,
    height: int,
    width: int,
    channels: int,
    invert_light_background: bool,
    scale: float,
    offset: float,
    exact_gray: bool = True,
):
    """A Keras model taking (N, H, W, 3) RGB pixels 0-255 and running `model` behind
    edgeship's preprocessing (grayscale if `channels == 1`, the inversion rule, scaling)."""
    keras, PilGray, InvertLightBackground = _layers()
    pixels = keras.Input((height, width, 3), name="pixels")
    x = pixels
    if channels == 1:
        x = PilGray(exact=exact_gray, name="pil_gray")(x)
    if invert_light_background:
        x = InvertLightBackground(name="invert_light_background")(x)
    if scale != 1.0 or offset != 0.0:
        x = keras.layers.Rescaling(scale, offset, name="pixel_scaling")(x)
    outputs = model(x, training=False)
    return keras.Model(pixels, outputs, name=f"{model.name}_phone")


def torch_phone_model(
    model: Any,
    *,
    channels: int,
    invert_light_background: bool,
    scale: float | list[float],
    offset: float | list[float],
    softmax: bool = False,
):
    """A torch module taking (N, H, W, 3) RGB pixels 0-255 (channels last, as the phone sends
    them) and running the PyTorch `model` (N, C, H, W) behind edgeship's preprocessing: the
    same steps as `phone_model`, with the scaling per channel (--input-mean/--input-std).
    `softmax`: end in one (a model that outputs logits), so a phone app's scores are
    probabilities."""
    import torch

    class PhoneModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32).reshape(-1))
            self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32).reshape(-1))
            self.register_buffer("gray", torch.tensor(PIL_L_WEIGHTS, dtype=torch.float32))

        def forward(self, pixels):
            x = pixels
            if channels == 1:  # Pillow's convert("L"), bit for bit (see the module docstring)
                fixed = (x * self.gray).sum(-1, keepdim=True) + float(PIL_L_ROUND)
                x = torch.floor(fixed * (1.0 / 65536.0))
            if invert_light_background:
                border = torch.cat(
                    [x[:, 0, :, :], x[:, -1, :, :], x[:, :, 0, :], x[:, :, -1, :]], dim=1
                )
                light = border.mean(dim=(1, 2)).reshape(-1, 1, 1, 1) > BORDER_THRESHOLD
                x = torch.where(light, 255.0 - x, x)
            x = x * self.scale + self.offset
            y = self.model(x.permute(0, 3, 1, 2))
            return torch.softmax(y, dim=-1) if softmax else y

    phone = PhoneModel()
    phone.training = False  # (not .eval(): an exported program's module refuses train())
    return phone
