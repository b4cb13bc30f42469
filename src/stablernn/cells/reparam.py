"""How an LRU / diagonal SSM parameterises its eigenvalue moduli (StableSSM, Wang & Li 2023, arXiv:2311.14495):
``exp`` = exp(-exp(nu)) (the LRU's own), ``softplus``, and the paper's ``best``; with the inverse maps LSC's
time-constant rescaling needs. Pure functions, shared by the cells (lru.py) and the scans (scan.py)."""
from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

Reparam = Literal["exp", "softplus", "best"]
REPARAMS: tuple[str, ...] = get_args(Reparam)


def lru_modulus(nu: Tensor, reparam: Reparam = "exp") -> Tensor:
    """ρ(ν), the (signed) eigenvalue modulus of the reparameterisation ``reparam``: |ρ| < 1 for real ν (``best``:
    ρ ∈ [-1, 1), -1 only at ν = 0)."""
    if reparam == "exp":
        return torch.exp(-torch.exp(nu))
    if reparam == "softplus":
        return torch.exp(-F.softplus(nu))
    if reparam == "best":
        return 1.0 - 1.0 / (nu * nu + 0.5)
    raise ValueError(f"unknown LRU reparam {reparam!r}; choose one of {', '.join(REPARAMS)}")


def lru_nu(mod: Tensor, reparam: Reparam = "exp", sign: Tensor | None = None) -> Tensor:
    """The ν with ``|ρ(ν)| = mod`` (``mod`` in (0, 1)): the inverse of :func:`lru_modulus`. For ``best`` a
    negative ``sign`` picks the branch ν² < 1/2 where ρ < 0."""
    if reparam == "exp":
        return torch.log(-torch.log(mod))
    if reparam == "softplus":
        return torch.log(torch.expm1(-torch.log(mod)))
    if reparam == "best":
        pos = torch.sqrt(1.0 / (1.0 - mod) - 0.5)
        if sign is None:
            return pos
        neg = torch.sqrt((1.0 / (1.0 + mod) - 0.5).clamp(min=0.0))
        return torch.where(sign < 0, neg, pos)
    raise ValueError(f"unknown LRU reparam {reparam!r}; choose one of {', '.join(REPARAMS)}")
