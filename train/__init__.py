"""train: datasets, the model zoo and training for edgeship."""

from train.datasets import Dataset, load_dataset
from train.errors import DatasetError, TrainError
from train.models import build_model
from train.training import TrainConfig, TrainResult, train

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
