"""stablernn: stable training of recurrent, spiking and state-space networks.

LSC pre-training (every one-step transition Jacobian brought to a target radius) and stable surrogate gradients for
spiking neurons, on one explicit-state cell interface. See README.md and docs/.
"""
from . import surrogate
from .cells import ALIFCell, Cell, ElmanCell, GRUCell, LIFCell, LRUCell, LSTMCell, ResLRUCell, check_cell
from .data import DataConfig, load_task
from .diagnostics import firing_rates, gradient_grid
from .dynamics.capacity import information_processing_capacity
from .dynamics.lyapunov import flossing_loss, lyapunov_spectrum
from .dynamics.memory import DynamicsConfig, dynamics_profile, memory_capacity, readout_scaling
from .lsc.config import LSCConfig
from .lsc.measures import WarmState, warm_norm, warm_radius
from .lsc.pretrain import LSCReport, lsc_pretrain
from .lsc.radii import radii_over_time
from .models import FFN, DeepRNN, ModelConfig, build_model
from .snn.conditions import TaskStats
from .snn.design import DesignConfig, apply_design_, design_model, stability_design
from .snn.fluctuation_init import fluctuation_init_
from .sweep import SweepSpec, load_spec, load_sweep, run_sweep, write_report
from .train import RunConfig, TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "FFN",
    "ALIFCell",
    "Cell",
    "DataConfig",
    "DeepRNN",
    "DesignConfig",
    "DynamicsConfig",
    "ElmanCell",
    "GRUCell",
    "LIFCell",
    "LRUCell",
    "LSCConfig",
    "LSCReport",
    "LSTMCell",
    "ModelConfig",
    "ResLRUCell",
    "RunConfig",
    "SweepSpec",
    "TaskStats",
    "TrainConfig",
    "WarmState",
    "apply_design_",
    "build_model",
    "check_cell",
    "design_model",
    "dynamics_profile",
    "firing_rates",
    "fit",
    "flossing_loss",
    "fluctuation_init_",
    "gradient_grid",
    "information_processing_capacity",
    "load_spec",
    "load_sweep",
    "load_task",
    "lsc_pretrain",
    "lyapunov_spectrum",
    "memory_capacity",
    "radii_over_time",
    "readout_scaling",
    "run_sweep",
    "stability_design",
    "surrogate",
    "warm_norm",
    "warm_radius",
    "write_report",
]
