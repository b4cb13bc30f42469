"""Training: typed configs, the :func:`fit` loop, checkpoints."""
from ..io import load_checkpoint, load_state_dict_from
from .config import RunConfig, TrainConfig, load_config_file
from .loop import DivergenceWarning, NonFiniteError, evaluate, fit, resolve_device
from .runs import LoadedRun, load_run

__all__ = ["DivergenceWarning", "LoadedRun", "NonFiniteError", "RunConfig", "TrainConfig", "evaluate", "fit",
           "load_checkpoint", "load_config_file", "load_run", "load_state_dict_from", "resolve_device"]
