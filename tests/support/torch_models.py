"""Two PyTorch classifiers the PyTorch path is measured and tested on (no download).

- `SmallCNN`: Fashion-MNIST's 28x28x1, two convolutions with BatchNorm and a residual add,
  trained in seconds on a subset (`train_small_cnn`).
- `MobileNetV3Style`: MobileNetV3-small's building blocks (depthwise convolutions, hardswish,
  squeeze-excite, inverted residuals) at 224x224x3, random weights, BatchNorm statistics set
  from a few random batches so the activations have a realistic spread.

torch is imported when a model is built, never at import of this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _nn():
    import torch
    from torch import nn

    return torch, nn


def small_cnn(classes: int = 10) -> Any:
    """Conv-BN-ReLU, a residual Conv-BN-ReLU, max-pool, Linear: logits out (no softmax)."""
    torch, nn = _nn()

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8 * 14 * 14, classes)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = y + torch.relu(self.bn2(self.conv2(y)))
            return self.fc(self.pool(y).flatten(1))

    return SmallCNN()


def train_small_cnn(
    x: np.ndarray, y: np.ndarray, epochs: int = 2, seed: int = 0, scale: float = 1 / 255
) -> Any:
    """`small_cnn` trained on uint8 (N, 28, 28[, 1]) images `x * scale`, labels `y`; eval mode."""
    torch, nn = _nn()
    torch.manual_seed(seed)
    model = small_cnn(int(y.max()) + 1)
    images = torch.from_numpy(x.reshape(len(x), 1, 28, 28).astype(np.float32) * scale)
    labels = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            loss_fn(model(images[idx]), labels[idx]).backward()
            opt.step()
    return model.eval()


def mobilenet_v3_style(classes: int = 10, seed: int = 0) -> Any:
    """A MobileNetV3-small-style network at 224x224x3 (random weights, BatchNorm statistics
    calibrated on random batches), eval mode, logits out."""
    torch, nn = _nn()
    torch.manual_seed(seed)

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.fc1 = nn.Conv2d(c, max(8, c // 4), 1)
            self.fc2 = nn.Conv2d(max(8, c // 4), c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))

    class Block(nn.Module):
        def __init__(
            self, cin: int, exp: int, cout: int, k: int, stride: int, se: bool, act: type
        ) -> None:
            super().__init__()
            self.expand = nn.Sequential(
                nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()
            )
            self.depthwise = nn.Sequential(
                nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False),
                nn.BatchNorm2d(exp),
                act(),
            )
            self.se = SqueezeExcite(exp) if se else nn.Identity()
            self.project = nn.Sequential(nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.project(self.se(self.depthwise(self.expand(x))))
            return x + y if self.residual else y

    relu, hs = nn.ReLU, nn.Hardswish
    # (in, expand, out, kernel, stride, squeeze-excite, activation): MobileNetV3-small's table
    table = [
        (16, 16, 16, 3, 2, True, relu),
        (16, 72, 24, 3, 2, False, relu),
        (24, 88, 24, 3, 1, False, relu),
        (24, 96, 40, 5, 2, True, hs),
        (40, 240, 40, 5, 1, True, hs),
        (40, 120, 48, 5, 1, True, hs),
        (48, 288, 96, 5, 2, True, hs),
        (96, 576, 96, 5, 1, True, hs),
    ]
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, 2, 1, bias=False),
        nn.BatchNorm2d(16),
        hs(),
        *[Block(*row) for row in table],
        nn.Conv2d(96, 576, 1, bias=False),
        nn.BatchNorm2d(576),
        hs(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(576, 256),
        hs(),
        nn.Linear(256, classes),
    )
    # BatchNorm's running statistics from a few batches of normalized noise, so that each
    # layer's activations are centred and scaled as in a trained network.
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model((torch.rand(8, 3, 224, 224) - mean) / std)
    return model.eval()


def save_pt2(
    model: Any, shape: tuple[int, int, int], path: str | Path, dynamic_batch: bool = True
) -> Path:
    """`torch.export` `model` for (N, C, H, W) = (N, *shape) and save it as `path` (.pt2):
    any batch size N, or N = 1 only."""
    torch, _ = _nn()
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        program = torch.export.export(
            model.eval(), (torch.zeros(2, *shape),), dynamic_shapes=({0: batch},)
        )
    else:
        program = torch.export.export(model.eval(), (torch.zeros(1, *shape),))
    torch.export.save(program, str(path))
    return Path(path)


def generated_images(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """`n` uint8 RGB photos-like images (N, size, size, 3): smooth colour fields (noise at 7x7
    upsampled), a gradient and a few hard edges, seeded."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(n):
        coarse = rng.integers(0, 256, (7, 7, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32)
        field *= 0.6 + 0.4 * ramp[None, :, None] if i % 2 else 0.6 + 0.4 * ramp[:, None, None]
        top, left = rng.integers(0, size // 2, 2)
        field[top : top + size // 3, left : left + size // 3] = rng.integers(0, 256, 3)
        out[i] = np.clip(field, 0, 255).astype(np.uint8)
    return out
