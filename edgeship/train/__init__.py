"""train: datasets, the model zoo and training for edgeship."""

from edgeship.train.datasets import Dataset, load_dataset
from edgeship.train.errors import DatasetError, TrainError
from edgeship.train.models import build_model
from edgeship.train.training import TrainConfig, TrainResult, train

__all__ = [
    "Dataset",
    "DatasetError",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "build_model",
    "load_dataset",
    "train",
]
