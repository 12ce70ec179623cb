"""One prediction as a record: the JSON object and the line `predict` prints."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.prediction import Prediction

DEFAULT_TOP_K = 3


def prediction_record(
    image: str, prediction: Prediction, top_k: int = DEFAULT_TOP_K
) -> dict[str, Any]:
    """The JSON object of one image: `image`, `index`, `label`, `confidence`, `top_k`."""
    return {
        "image": image,
        "index": prediction.index,
        "label": prediction.label,
        "confidence": round(prediction.confidence, 6),
        "top_k": [
            {**entry, "confidence": round(entry["confidence"], 6)}
            for entry in prediction.top_k(top_k)
        ],
    }


def format_prediction(
    image: str, prediction: Any, top_k: int = DEFAULT_TOP_K, as_json: bool = False
) -> str:
    """One output line for one image (JSON object or human text)."""
    record = prediction_record(image, prediction, top_k)
    if as_json:
        return json.dumps(record, ensure_ascii=False)
    text = f"{image}: {record['label']} ({record['confidence']:.1%})"
    if len(record["top_k"]) > 1:
        others = ", ".join(f"{e['label']} {e['confidence']:.1%}" for e in record["top_k"])
        text += f"  [top-{len(record['top_k'])}: {others}]"
    return text
