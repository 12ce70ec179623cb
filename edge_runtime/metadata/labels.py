"""Class names from a labels file (one name per line, in the model's output-index order).

A labels file is the common way classifiers ship their names (`labels.txt` beside a stock
ImageNet model). Line i names output i; a first line `background` is just class 0. Trailing
blank lines are ignored; a blank line between names is an error (it would shift every name
after it). The count must equal the model's number of classes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edge_runtime.errors import LabelsError

MAX_LABELS_BYTES = 16 * 1024 * 1024

Labels = str | os.PathLike[str] | Sequence[str]


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The class names of a labels file: one per line (UTF-8), surrounding spaces stripped."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "not found"
        raise LabelsError(
            f"Labels file {what}. Pass a text file, one class name per line. Received: path={p}"
        )
    if p.stat().st_size > MAX_LABELS_BYTES:
        raise LabelsError(
            f"The labels file is over {MAX_LABELS_BYTES} bytes: not a labels file. "
            f"Received: path={p}"
        )
    try:
        text = p.read_text(encoding="utf-8-sig")  # -sig: a BOM from Windows editors goes
    except UnicodeDecodeError as err:
        raise LabelsError(
            f"The labels file is not UTF-8 text ({err.reason}). Save it as UTF-8. "
            f"Received: path={p}"
        ) from None
    except OSError as err:
        raise LabelsError(
            f"Cannot read the labels file ({err.strerror}). Received: path={p}"
        ) from None
    names = [line.strip() for line in text.splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise LabelsError(
            f"The labels file is empty. Write one class name per line. Received: path={p}"
        )
    if "" in names:
        line = names.index("") + 1
        raise LabelsError(
            f"Line {line} of the labels file is blank: every line must name one "
            f"class, in output order. Received: path={p}"
        )
    return tuple(names)


def resolve_labels(labels: Labels, num_classes: int, source: str = "") -> tuple[str, ...]:
    """`labels` (a labels file's path, or a sequence of names) checked against `num_classes`."""
    if isinstance(labels, (str, os.PathLike)):
        names = read_labels(labels)
        given = f"labels={os.fspath(labels)}"
    elif isinstance(labels, Sequence) and all(isinstance(n, str) for n in labels):
        names = tuple(n.strip() for n in labels)
        given = f"names={list(names)[:10]}"
        if any(not n for n in names):
            raise LabelsError(f"Class names must not be empty. Received: {list(labels)[:10]}")
    else:
        raise LabelsError(
            "labels must be a labels file path or a sequence of class names. "
            f"Received: {type(labels).__name__}"
        )
    if len(names) != num_classes:
        hint = ""
        if len(names) == num_classes + 1 and names[0].lower() in ("background", "???"):
            hint = (
                f" (line 1, {names[0]!r}, is class 0 of {len(names)}-class models: this "
                "model has none; remove that line)"
            )
        raise LabelsError(
            f"{len(names)} class names for a model with {num_classes} outputs: give exactly one "
            f"name per output, in output-index order{hint}. Received: {given}"
            + (f", {source}" if source else "")
        )
    return names
