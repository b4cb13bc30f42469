"""The reset kinds of a spiking neuron after a spike (docs/surrogates.md): one definition for the cells, the fused
kernel, the configs and the stability conditions."""
from __future__ import annotations

from typing import Literal, get_args

Reset = Literal["subtract", "multiplicative", "mult_leak"]
RESETS: tuple[str, ...] = get_args(Reset)
