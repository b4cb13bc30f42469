"""stablernn: stable training of recurrent, spiking and state-space networks.

LSC pre-training (every one-step transition Jacobian brought to a target radius) and stable surrogate gradients for
spiking neurons, on one explicit-state cell interface. See README.md and docs/.
"""
from . import fields, surrogate
from .adapters import StepSpec, adapt, can_adapt
from .cells import (
    ALIFCell,
    Cell,
    DecolleCell,
    ElmanCell,
    GRUCell,
    LIFCell,
    LiGRUCell,
    LRUCell,
    LSTMCell,
    ResLRUCell,
    SpikingLSTMCell,
    check_cell,
    low_rank_sparse_,
)
from .data import DataConfig, load_task
from .diagnostics import firing_rates, gradient_grid
from .dynamics.capacity import information_processing_capacity
from .dynamics.lyapunov import flossing_loss, lyapunov_spectrum
from .dynamics.memory import DynamicsConfig, dynamics_profile, memory_capacity, readout_scaling
from .errors import MissingDependencyError, NonFiniteError, RunBusyError
from .export import export_nir
from .inits import chrono_init_, lsuv_init_, recurrent_init_
from .io import RunLock, is_locked
from .lsc.activity import ActivityReport, guard_activity
from .lsc.config import LSCConfig
from .lsc.measures import WarmState, warm_norm, warm_radius
from .lsc.pretrain import LSCReport, lsc_pretrain
from .lsc.radii import radii_over_time
from .lsc.theory import stable_targets, theory_targets
from .models import FFN, DeepRNN, ModelConfig, build_model
from .optim import AdaBelief, Lookahead
from .snn.conditions import TaskStats
from .snn.design import DesignConfig, apply_design_, design_model, stability_design
from .snn.fluctuation_init import fluctuation_init_
from .sweep import SweepSpec, load_spec, load_sweep, run_sweep, write_report
from .train import DivergenceWarning, LoadedRun, RunConfig, TrainConfig, fit, load_run
from .train.losses import local_losses
from .train.stable import resolve_stable

__version__ = "0.1.0"

__all__ = [
    "FFN",
    "ALIFCell",
    "ActivityReport",
    "AdaBelief",
    "Cell",
    "DataConfig",
    "DecolleCell",
    "DeepRNN",
    "DesignConfig",
    "DivergenceWarning",
    "DynamicsConfig",
    "ElmanCell",
    "GRUCell",
    "LIFCell",
    "LRUCell",
    "LSCConfig",
    "LSCReport",
    "LSTMCell",
    "LiGRUCell",
    "LoadedRun",
    "Lookahead",
    "MissingDependencyError",
    "ModelConfig",
    "NonFiniteError",
    "ResLRUCell",
    "RunBusyError",
    "RunConfig",
    "RunLock",
    "SpikingLSTMCell",
    "StepSpec",
    "SweepSpec",
    "TaskStats",
    "TrainConfig",
    "WarmState",
    "adapt",
    "apply_design_",
    "build_model",
    "can_adapt",
    "check_cell",
    "chrono_init_",
    "design_model",
    "dynamics_profile",
    "export_nir",
    "fields",
    "firing_rates",
    "fit",
    "flossing_loss",
    "fluctuation_init_",
    "gradient_grid",
    "guard_activity",
    "information_processing_capacity",
    "is_locked",
    "load_run",
    "load_spec",
    "load_sweep",
    "load_task",
    "local_losses",
    "low_rank_sparse_",
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
    "stable_targets",
    "surrogate",
    "theory_targets",
    "warm_norm",
    "warm_radius",
    "write_report",
]
