"""Weight initialisers shared by the cells (Keras-like defaults, as the papers' TensorFlow code)."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def glorot_uniform_(w: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """U(±sqrt(6 / (fan_in + fan_out))) in place."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return w.uniform_(-bound, bound)


def orthogonal_blocks_(w: Tensor, blocks: int) -> Tensor:
    """Orthogonal init of each ``[H, H]`` gate block of a stacked ``[blocks * H, H]`` recurrent matrix."""
    h = w.shape[0] // blocks
    with torch.no_grad():
        for k in range(blocks):
            torch.nn.init.orthogonal_(w[k * h:(k + 1) * h])
    return w
