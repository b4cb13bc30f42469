"""stablernn: stable training of recurrent, spiking and state-space networks.

LSC pre-training (every one-step transition Jacobian brought to a target radius) and stable surrogate gradients for
spiking neurons, on one explicit-state cell interface. See README.md and docs/.
"""
from . import surrogate
from .cells import (
    ALIFCell,
    Cell,
    ElmanCell,
    GRUCell,
    LIFCell,
    LRUCell,
    LSTMCell,
    ResLRUCell,
    check_cell,
)
from .data import DataConfig, load_task
from .models import FFN, DeepRNN, ModelConfig, build_model
from .stability.lsc_config import LSCConfig
from .train import RunConfig, TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "FFN",
    "ALIFCell",
    "Cell",
    "DataConfig",
    "DeepRNN",
    "ElmanCell",
    "GRUCell",
    "LIFCell",
    "LRUCell",
    "LSCConfig",
    "LSTMCell",
    "ModelConfig",
    "ResLRUCell",
    "RunConfig",
    "TrainConfig",
    "build_model",
    "check_cell",
    "fit",
    "load_task",
    "surrogate",
]
