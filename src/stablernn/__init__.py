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
from .models import FFN, DeepRNN, ModelConfig, build_model

__version__ = "0.1.0"

__all__ = [
    "FFN",
    "ALIFCell",
    "Cell",
    "DeepRNN",
    "ElmanCell",
    "GRUCell",
    "LIFCell",
    "LRUCell",
    "LSTMCell",
    "ModelConfig",
    "ResLRUCell",
    "build_model",
    "check_cell",
    "surrogate",
]
