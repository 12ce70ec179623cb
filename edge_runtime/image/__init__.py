"""From an image to the model's input: decode to size (`shrink`), Pillow preprocessing
(`preprocess`), pixel scaling (`scaling`), the one-image fast path's tables (`fastpath`) and
the photo's trip timed stage by stage (`stages`)."""
