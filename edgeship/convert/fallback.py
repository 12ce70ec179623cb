"""Accuracy-budgeted float fallback (int8, int16x8), after NNCF's `quantize_with_accuracy_control`.

1. Candidates: one per Keras layer; keeping a layer "in float" keeps its output tensor float,
   so its own ops and the ops that read that tensor run in float (an int8 op would quantize
   its float input again with the same range, see `edgeship.convert.graph.float_closure`).
2. Rank: each candidate alone in float, on a ranking subset of the search data; the higher
   the top-1 agreement with Keras (then the lower the output error), the more that layer costs.
3. Search: revert the worst-ranked candidates one at a time, re-checking on all the search
   data after each; a revert that does not improve the budget's metric is stepped back. Stop
   when the budget holds, or when the next revert would put more than `max_float_layers`
   Keras layers in float, or when the candidates run out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeship.convert.errors import ConvertError
from edgeship.convert.graph import Graph, float_closure, op_layers
from edgeship.convert.selective import PartialQuantizer

# Samples of the search data used to rank the layers. The ranking is by output error (NNCF's
# normalized MSE), which tells layers apart even where no top-1 answer flips; NNCF ranks on
# 300 samples, but re-quantizing and running a small model is cheap enough to use 1000.
RANKING_SAMPLES = 1000
DEFAULT_MAX_FLOAT_LAYERS = 5

Predict = Callable[[bytes, np.ndarray], np.ndarray]  # (model bytes, pixels) -> probabilities


@dataclass(frozen=True)
class Budget:
    """What a quantized model must reach: top-1 agreement with Keras, and/or an accuracy
    no more than `max_accuracy_drop` below Keras's (both fractions)."""

    min_agreement: float | None = None
    max_accuracy_drop: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_agreement", "max_accuracy_drop"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise ConvertError(
                    f"{flag} is a fraction between 0 and 1 (e.g. 0.01 for one point). "
                    f"Received: {name}={value}"
                )

    @property
    def given(self) -> bool:
        """True if there is anything to meet."""
        return self.min_agreement is not None or self.max_accuracy_drop is not None

    def met(self, check: Check) -> bool:
        """True if `check` meets every part of the budget."""
        if self.min_agreement is not None and check.agreement < self.min_agreement:
            return False
        if self.max_accuracy_drop is not None:
            drop = check.accuracy_drop
            if drop is None or drop > self.max_accuracy_drop + 1e-12:
                return False
        return True

    def describe(self) -> str:
        """The budget in words, e.g. 'agreement >= 98.00%'."""
        parts = []
        if self.min_agreement is not None:
            parts.append(f"agreement >= {self.min_agreement:.2%}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop:.2%}")
        return " and ".join(parts)


@dataclass(frozen=True)
class Check:
    """A model's outputs against Keras on some samples."""

    samples: int
    agreement: float
    output_error: float
    accuracy: float | None = None
    keras_accuracy: float | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"A check needs samples. Received: samples={self.samples}")
        for name in ("agreement", "accuracy", "keras_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]. Received: {value}")

    @property
    def accuracy_drop(self) -> float | None:
        """Keras accuracy minus the model's (None without labels)."""
        if self.accuracy is None or self.keras_accuracy is None:
            return None
        return self.keras_accuracy - self.accuracy

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-friendly, rounded."""
        return {
            "samples": self.samples,
            "agreement": round(self.agreement, 6),
            "accuracy": None if self.accuracy is None else round(self.accuracy, 6),
            "keras_accuracy": None
            if self.keras_accuracy is None
            else round(self.keras_accuracy, 6),
        }


def check(probs: np.ndarray, keras_probs: np.ndarray, labels: np.ndarray | None) -> Check:
    """Compare a model's probabilities with Keras's (and with the labels, if any)."""
    probs = np.asarray(probs, dtype=np.float64)
    top, ref = probs.argmax(1), keras_probs.argmax(1)
    return Check(
        samples=len(probs),
        agreement=float(np.mean(top == ref)),
        output_error=float(np.mean((probs - keras_probs) ** 2)),
        accuracy=None if labels is None else float(np.mean(top == labels)),
        keras_accuracy=None if labels is None else float(np.mean(ref == labels)),
    )


@dataclass(frozen=True)
class Candidate:
    """Keeping `layer`'s output in float: the ops (`nodes`) and Keras layers that takes."""

    layer: str
    nodes: tuple[str, ...]
    layers: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError(f"A candidate keeps at least one op. Received: layer={self.layer}")


def candidates(graph: Graph, layer_names: Sequence[str]) -> list[Candidate]:
    """One candidate per Keras layer that has compute ops, in graph order."""
    layers = op_layers(graph, layer_names)
    out = []
    for layer in dict.fromkeys(layers[op.index] for op in graph.ops if op.index in layers):
        ops = float_closure(graph, layers, layer)
        nodes = tuple(dict.fromkeys(graph.output_name(op) for op in ops))
        kept = tuple(dict.fromkeys(layers[op.index] for op in ops if op.index in layers))
        out.append(Candidate(layer=layer, nodes=nodes, layers=kept))
    return out


@dataclass(frozen=True)
class Ranked:
    """A candidate and the search data's check with it alone in float."""

    candidate: Candidate
    check: Check


@dataclass(frozen=True)
class Step:
    """One revert tried during the search, and whether it stayed."""

    layer: str
    check: Check
    kept: bool


@dataclass(frozen=True, eq=False)
class FallbackResult:
    """The model the search ended with and how it got there."""

    model_bytes: bytes
    float_nodes: tuple[str, ...]
    float_layers: tuple[str, ...]
    before: Check
    after: Check
    met: bool
    ranking: tuple[Ranked, ...]
    steps: tuple[Step, ...] = field(default=())
    stopped: str = ""


def _quality(budget: Budget, c: Check) -> tuple[float, float, float]:
    """What a revert must raise to stay: accuracy under an accuracy budget, else agreement."""
    if budget.max_accuracy_drop is not None and c.accuracy is not None:
        return (c.accuracy, c.agreement, -c.output_error)
    return (c.agreement, -c.output_error, 0.0)


def rank(
    quantizer: PartialQuantizer,
    cands: Sequence[Candidate],
    predict: Predict,
    x: np.ndarray,
    keras_probs: np.ndarray,
) -> list[Ranked]:
    """Each candidate alone in float on `x`, most helpful (= most costly layer) first: lowest
    output error against Keras, then highest agreement."""
    ranked = []
    for cand in cands:
        probs = predict(quantizer.quantize(cand.nodes), x)
        ranked.append(Ranked(cand, check(probs, keras_probs, None)))
    return sorted(ranked, key=lambda r: (r.check.output_error, -r.check.agreement))


def search(
    quantizer: PartialQuantizer,
    layer_names: Sequence[str],
    predict: Predict,
    x: np.ndarray,
    keras_probs: np.ndarray,
    labels: np.ndarray | None,
    budget: Budget,
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS,
    ranking: Sequence[Ranked] | None = None,
) -> FallbackResult:
    """Keep the costliest layers in float until `budget` holds on `x` (see the module doc)."""
    if not budget.given:
        raise ConvertError("--fallback needs a budget: --min-agreement X or --max-accuracy-drop X.")
    if budget.max_accuracy_drop is not None and labels is None:
        raise ConvertError(
            "--max-accuracy-drop needs labelled data: an edgeship run (model.json) or "
            "--calibration-data DIR with one folder per class. Use --min-agreement instead. "
            "Received: no labels"
        )
    graph = quantizer.graph
    layers = op_layers(graph, layer_names)
    by_node = {graph.output_name(op): layers.get(op.index) for op in graph.ops}

    base = quantizer.quantize(())
    before = check(predict(base, x), keras_probs, labels)
    if ranking is None:
        n = min(len(x), RANKING_SAMPLES)
        ranking = rank(quantizer, candidates(graph, layer_names), predict, x[:n], keras_probs[:n])

    nodes: tuple[str, ...] = ()
    current, model, steps = before, base, []
    stopped = "the budget holds"
    for ranked in ranking:
        if budget.met(current):
            break
        trial = tuple(dict.fromkeys(nodes + ranked.candidate.nodes))
        trial_layers = {by_node[n] for n in trial if by_node.get(n)}
        if len(trial_layers) > max_float_layers:
            continue
        trial_model = quantizer.quantize(trial)
        result = check(predict(trial_model, x), keras_probs, labels)
        kept = _quality(budget, result) > _quality(budget, current)
        steps.append(Step(ranked.candidate.layer, result, kept))
        if kept:
            nodes, current, model = trial, result, trial_model
    met = budget.met(current)
    if not met:
        stopped = (
            f"the candidates ran out within --fallback-max-layers {max_float_layers}"
            if ranking
            else "no layer to keep in float"
        )
    float_layers = tuple(
        dict.fromkeys(
            layers[op.index]
            for op in graph.ops
            if graph.output_name(op) in nodes and op.index in layers
        )
    )
    return FallbackResult(
        model_bytes=model,
        float_nodes=nodes,
        float_layers=float_layers,
        before=before,
        after=current,
        met=met,
        ranking=tuple(ranking),
        steps=tuple(steps),
        stopped=stopped,
    )
