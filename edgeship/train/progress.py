"""A Keras callback that drives a Rich progress bar (the CLI passes one in)."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class _InfoColumn(ProgressColumn):
    """The task's optional `info` field (stages that add tasks without one show nothing)."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("info", "")))


def make_progress(console=None) -> Progress:
    """A Rich progress display for training and other long stages."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _InfoColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def rich_training_callback(progress: Progress, epochs: int, steps_per_epoch: int):
    """A Keras callback advancing one bar per epoch, with the running loss and accuracy."""
    from edgeship.train.quiet import import_keras

    keras = import_keras()
    callback_base: Any = keras.callbacks.Callback  # Keras ships no type information

    class _RichCallback(callback_base):
        def on_epoch_begin(self, epoch, logs=None):
            self.task = progress.add_task(
                f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch, info=""
            )

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            info = f"loss {logs.get('loss', 0):.4f} acc {logs.get('accuracy', 0):.4f}"
            progress.update(self.task, completed=batch + 1, info=info)

    return _RichCallback()
