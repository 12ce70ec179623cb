"""Class scores -> probabilities, one rule for the runtime, convert's check and bench's Keras row.

- Several outputs: probabilities as they are (a softmax head), else their softmax (logits).
- **One output** (a binary classifier, Keras's `Dense(1, activation="sigmoid")`): the score
  is P(class 1); it becomes two columns `[1 - p, p]`, so class 0 is the first name of a
  two-line labels file and class 1 the second. A single logit (no sigmoid in the model, trained
  with `from_logits=True`) gets a sigmoid first; a softmax of one value would be 1.0 always.

Whether the scores already are probabilities is the caller's knowledge when it has it (the
runtime reads the .tflite graph, `edge_runtime.metadata.graph`); `None` guesses from the values, as
is done for a Keras model's outputs: rows that are distributions (or one column within [0, 1]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["as_probabilities", "class_count"]


def class_count(output_units: int) -> int:
    """The number of classes of a model with `output_units` scores: one unit is a binary model."""
    return 2 if output_units == 1 else output_units


def _looks_like_probabilities(scores: npt.NDArray[np.float32]) -> bool:
    if scores.size == 0:
        return True
    if scores.shape[1] == 1:
        return bool(scores.min() >= -1e-6 and scores.max() <= 1 + 1e-6)
    return bool(scores.min() >= -1e-6 and np.abs(scores.sum(axis=1) - 1.0).max() <= 0.05)


def as_probabilities(
    scores: npt.ArrayLike, probabilities: bool | None = None
) -> npt.NDArray[np.float32]:
    """(N, units) scores -> float32 (N, classes) probabilities (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        scores = scores.reshape(len(scores), -1)
    if probabilities is None:
        probabilities = _looks_like_probabilities(scores)
    if scores.shape[1] == 1:
        p = scores[:, 0] if probabilities else 1.0 / (1.0 + np.exp(-scores[:, 0]))
        p = np.clip(p, 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1).astype(np.float32, copy=False)
    if probabilities:
        return scores
    e: npt.NDArray[np.float32] = np.exp(scores - scores.max(axis=1, keepdims=True))
    total: npt.NDArray[np.float32] = e.sum(axis=1, keepdims=True)
    return (e / total).astype(np.float32, copy=False)
