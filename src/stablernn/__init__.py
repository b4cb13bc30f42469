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
from .inits import chrono_init_, lsuv_init_, recurrent_init_
from .lsc.activity import ActivityReport, guard_activity
from .lsc.config import LSCConfig
from .lsc.pretrain import LSCReport, lsc_pretrain
from .lsc.radii import radii_over_time
from .lsc.theory import theory_targets
from .models import FFN, DeepRNN, ModelConfig, build_model
from .snn.conditions import TaskStats
from .snn.design import DesignConfig, apply_design_, design_model, stability_design
from .snn.fluctuation_init import fluctuation_init_
from .sweep import SweepSpec, load_spec, load_sweep, run_sweep, write_report
from .train import LoadedRun, RunConfig, TrainConfig, fit, load_run
from .train.stable import resolve_stable

__version__ = "0.1.0"

__all__ = [
    "FFN",
    "ALIFCell",
    "ActivityReport",
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
    "LoadedRun",
    "ModelConfig",
    "ResLRUCell",
    "RunConfig",
    "SweepSpec",
    "TaskStats",
    "TrainConfig",
    "apply_design_",
    "build_model",
    "check_cell",
    "chrono_init_",
    "design_model",
    "dynamics_profile",
    "firing_rates",
    "fit",
    "flossing_loss",
    "fluctuation_init_",
    "gradient_grid",
    "guard_activity",
    "information_processing_capacity",
    "load_run",
    "load_spec",
    "load_sweep",
    "load_task",
    "lsc_pretrain",
    "lsuv_init_",
    "lyapunov_spectrum",
    "memory_capacity",
    "radii_over_time",
    "readout_scaling",
    "recurrent_init_",
    "resolve_stable",
    "run_sweep",
    "stability_design",
    "surrogate",
    "theory_targets",
    "write_report",
]
