"""LSC on the issue-15 cells and options (Li-GRU, spiking LSTM, DECOLLE, low-rank + sparse recurrence, LRU
reparameterisations), in the style of ``test_lsc.py``: a fast smoke test per kind, and the acceptance runs at width
64, depth 2 and 5 (slow).
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from stablernn.lsc.pretrain import lsc_pretrain
from stablernn.models import ModelConfig, build_model
from test_lsc import _assert_reached, _batches, assert_lsc_smoke

torch.set_num_threads(1)

# (kind, extra ModelConfig fields): each new cell at its defaults, the low-rank + sparse option on a gated, a spiking
# and a new cell, and the two new LRU reparameterisations
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ligru": ("ligru", {}),
    "ligru_stable": ("ligru_stable", {}),
    "spiking_lstm": ("spiking_lstm", {}),
    "decolle": ("decolle", {}),
    "gru_lowrank": ("gru", {"recurrent_rank": 8, "recurrent_density": 0.5}),
    "lif_lowrank": ("lif", {"recurrent_rank": 8, "recurrent_density": 0.5}),
    "ligru_lowrank": ("ligru", {"recurrent_rank": 8, "recurrent_density": 0.5}),
    "lru_softplus": ("lru", {"reparam": "softplus"}),
    "lru_best": ("lru", {"reparam": "best"}),
}


def _model(variant: str, layers: int, width: int, seed: int = 0) -> nn.Module:
    kind, extra = VARIANTS.get(variant, (variant, {}))
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell=kind, layers=layers, width=width, **extra), input_size=8, output_size=10,
                       seq_len=8)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lsc_smoke_new_kinds(variant, digits):
    assert_lsc_smoke(_model(variant, 2, 8), digits)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ligru", "decolle"])
def test_lsc_reaches_target_small_new_kinds(variant, digits):
    rep = lsc_pretrain(_model(variant, 2, 16), _batches(digits), lr=2e-2, max_steps=300, progress=False,
                       activity=None)  # the radius mechanics, as in test_lsc.py
    assert rep.stop_reason.startswith("converged"), rep.stop_reason
    _assert_reached(rep)


# --- slow: the acceptance runs ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("layers", [2, 5])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lsc_reaches_target_width64_new_kinds(variant, layers, digits):
    """Each new cell / option at width 64, depth 2 and 5, target 0.5 (decoder 1), as for the existing cells. The
    stabilised Li-GRU reaches it with its layer-norm eps = 1 (with eps = 1e-5 it ended at time radius 3.9 / 38:
    src/stablernn/cells/ligru.py)."""
    model = _model(variant, layers, 64)
    # activity=None: the radius mechanics, as test_lsc.py's acceptance runs. With the activity guard on (the default)
    # the LIF-based decolle and lif_lowrank meet the targets only by silencing every layer, the guard refits their
    # biases and the time radius then ends at 0.57-0.63 (measured 2026-11-29; docs/lsc.md, "Activity guard")
    rep = lsc_pretrain(model, _batches(digits), lr=2e-2, max_steps=1500, time_limit=None, progress=False,
                       activity=None)
    _assert_reached(rep)
    assert rep.stop_reason.startswith("converged"), rep.stop_reason
