"""tune: search the model that fits a device (Optuna; measured on the device itself)."""

from edgeship.tune.device import Device, DeviceError, Measurement
from edgeship.tune.errors import DeviceFailuresError, NoFeasibleTrialError, TuneError
from edgeship.tune.search import Budgets, TuneOptions, run_search
from edgeship.tune.space import SearchSpace, load_space

__all__ = [
    "Budgets",
    "Device",
    "DeviceError",
    "DeviceFailuresError",
    "Measurement",
    "NoFeasibleTrialError",
    "SearchSpace",
    "TuneError",
    "TuneOptions",
    "load_space",
    "run_search",
]
