"""Dynamics diagnostics: Lyapunov spectra (QR on jvp products), linear memory capacity, nonlinear information
processing capacity, and their profile. See docs/dynamics.md."""
from .capacity import information_processing_capacity
from .lyapunov import flossing_loss, lyapunov_spectrum
from .memory import DynamicsConfig, dynamics_profile, memory_capacity, readout_scaling

__all__ = ["DynamicsConfig", "dynamics_profile", "flossing_loss", "information_processing_capacity",
           "lyapunov_spectrum", "memory_capacity", "readout_scaling"]
