"""The search space: model families and their sizes, input resolution, quantization, epochs.

Defaults suit the dataset (28, 24, 20 for Fashion-MNIST's 28x28; for a folder dataset, its
image size and about 85 % and 70 % of it); `--space FILE` (YAML or JSON) overrides any key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeship.tune.errors import TuneError

FAMILIES = ("mlp", "cnn", "mobile")
# int8-fallback: int8 with convert's rescue (`--fallback`), the costliest layers in float.
QUANTIZATIONS = ("int8", "int16x8", "float16", "dynamic", "int8-fallback")
KEYS = ("families", "mlp", "cnn", "mobile", "resolution", "quantization", "epochs", "batch_size")
FAMILY_KEYS = {"mlp": ("width",), "cnn": ("filters",), "mobile": ("filters", "depth")}


def default_resolutions(height: int) -> tuple[int, ...]:
    """The input sizes tried for images `height` pixels high: it, ~85 % and ~70 % of it."""
    if height == 28:
        return (28, 24, 20)
    return tuple(
        sorted({height, max(8, round(height * 0.85)), max(8, round(height * 0.7))}, reverse=True)
    )


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may pick: every list is a categorical choice, `epochs` a (min, max) range."""

    families: tuple[str, ...] = FAMILIES
    mlp: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"width": (32, 64, 128, 256)})
    cnn: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"filters": (8, 16, 32)})
    mobile: dict[str, tuple[int, ...]] = field(
        default_factory=lambda: {"filters": (8, 16, 32), "depth": (2, 3, 4)}
    )
    resolution: tuple[int, ...] = (28, 24, 20)
    quantization: tuple[str, ...] = QUANTIZATIONS
    epochs: tuple[int, int] = (1, 5)
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_choices("families", self.families, FAMILIES)
        _check_choices("quantization", self.quantization, QUANTIZATIONS)
        for family in FAMILIES:
            sizes = getattr(self, family)
            if not isinstance(sizes, dict) or set(sizes) != set(FAMILY_KEYS[family]):
                raise TuneError(
                    f"The space's `{family}` needs exactly {', '.join(FAMILY_KEYS[family])}. "
                    f"Received: {family}={sizes!r}"
                )
            for key, values in sizes.items():
                _check_ints(f"{family}.{key}", values, 1, 4096)
        _check_ints("resolution", self.resolution, 4, 1024)
        lo, hi = self.epochs if len(self.epochs) == 2 else (0, -1)
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi <= 1000):
            raise TuneError(
                "The space's `epochs` is [min, max] with 1 <= min <= max. "
                f"Received: {self.epochs!r}"
            )
        if not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= 65536:
            raise TuneError(
                f"The space's `batch_size` is a positive integer. Received: {self.batch_size!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (what the study records)."""
        return {
            "families": list(self.families),
            **{f: {k: list(v) for k, v in getattr(self, f).items()} for f in FAMILIES},
            "resolution": list(self.resolution),
            "quantization": list(self.quantization),
            "epochs": list(self.epochs),
            "batch_size": self.batch_size,
        }


def _check_choices(name: str, values: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(values, tuple) or not values or any(v not in allowed for v in values):
        raise TuneError(
            f"The space's `{name}` is a non-empty list of {', '.join(allowed)}. "
            f"Received: {name}={list(values) if isinstance(values, tuple) else values!r}"
        )


def _check_ints(name: str, values: Any, lo: int, hi: int) -> None:
    ok = (
        isinstance(values, tuple)
        and values
        and all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in values)
    )
    if not ok:
        raise TuneError(
            f"The space's `{name}` is a non-empty list of integers from {lo} to {hi}. "
            f"Received: {name}={list(values) if isinstance(values, tuple) else values!r}"
        )


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: _tupled(v) for k, v in value.items()}
    return value


def default_space(image_height: int) -> SearchSpace:
    """The default space for a dataset of images `image_height` pixels high."""
    return SearchSpace(resolution=default_resolutions(image_height))


def space_from_dict(data: Any, image_height: int, where: str = "--space") -> SearchSpace:
    """A space from a mapping: the keys given replace the defaults'."""
    if not isinstance(data, dict):
        raise TuneError(
            f"{where} must hold a mapping of {', '.join(KEYS)}. Received: {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise TuneError(
            f"{where} has unknown keys {', '.join(map(str, unknown))}; the keys are "
            f"{', '.join(KEYS)}. Received: {sorted(map(str, data))}"
        )
    base = default_space(image_height).to_dict()
    for family in FAMILIES:  # a family's sizes may be given in part
        if isinstance(data.get(family), dict):
            data = {**data, family: {**base[family], **data[family]}}
    merged = {**base, **data}
    return SearchSpace(**{k: _tupled(v) for k, v in merged.items()})


def load_space(path: str | os.PathLike, image_height: int) -> SearchSpace:
    """Read a `--space` file (YAML, or JSON: its file name ends in .json)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TuneError(
            f"Cannot read the --space file ({type(err).__name__}). Received: path={p}"
        ) from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (ValueError, ImportError) as err:
        line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TuneError(
            f"The --space file is not valid {'JSON' if p.suffix == '.json' else 'YAML'}"
            f" ({line}). Received: path={p}"
        ) from None
    except Exception as err:  # yaml.YAMLError and its kin
        line = " ".join(str(err).split())[:200]
        raise TuneError(
            f"The --space file is not valid YAML ({line}). Received: path={p}"
        ) from None
    return space_from_dict(data, image_height, where=f"The --space file {p}")
