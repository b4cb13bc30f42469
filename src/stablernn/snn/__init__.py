"""Stable surrogate gradients for spiking layers (paper B, arXiv:2202.00282): task statistics, Conditions I-IV and
the tail fit, their solvers, the stability design, fluctuation-driven init, and firing-rate control. See
docs/surrogates.md."""
from .conditions import TaskStats
from .design import DesignConfig, apply_design_, design_model, stability_design
from .fluctuation_init import fluctuation_init_

__all__ = ["DesignConfig", "TaskStats", "apply_design_", "design_model", "fluctuation_init_", "stability_design"]
