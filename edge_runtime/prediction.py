"""`Prediction`: one image's answer from `EdgeClassifier.predict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt


@dataclass(slots=True, eq=False)
class Prediction:
    """One image's answer: the top class `index`, its `label`, `confidence` and all scores.

    Plain, not frozen: a frozen dataclass's `__init__` costs ~0.6 us more per image, a third
    of the whole interpreter call on the tutorial MLP (docs/runtime.md, "Speed").
    """

    index: int
    label: str
    confidence: float
    probabilities: npt.NDArray[np.float32]
    class_names: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.probabilities):
            raise ValueError(
                f"index must be in [0, {len(self.probabilities)}). Received: index={self.index}"
            )

    def top_k(self, k: int = 3) -> list[dict[str, Any]]:
        """The `k` best classes as `{"index", "label", "confidence"}`, best first."""
        k = max(1, min(int(k), len(self.probabilities)))
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        names = self.class_names
        return [
            {
                "index": int(i),
                "label": names[i] if i < len(names) else str(int(i)),
                "confidence": float(self.probabilities[i]),
            }
            for i in order
        ]
