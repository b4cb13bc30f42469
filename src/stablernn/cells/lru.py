"""Linear recurrent unit (LRU, a diagonal complex state-space layer) and its residual block (arXiv:2303.06349; paper A).

    λ = ρ(ν) e^{iθ}                       (|ρ(ν)| < 1 for every real ν)
    x[t] = λ ⊙ x[t-1] + γ ⊙ (B u[t])       x ∈ C^N, B ∈ C^{N×in}, γ = exp(γ_log) (normalisation)
    y[t] = Re(C x[t]) + D u[t]             C ∈ C^{out×N}

The modulus map ρ is the cell's ``reparam`` (StableSSM, Wang & Li 2023, arXiv:2311.14495, §3.3): ``exp``
ρ = exp(-exp(ν)) (the LRU's own, a ZOH-discretised Λ = -e^ν), ``softplus`` ρ = exp(-softplus(ν)), and ``best``
ρ = 1 - 1/(ν² + 1/2), the discrete-time reparameterisation the paper derives as the one whose gradient scale does
not depend on the memory (ρ ∈ [-1, 1): it turns negative for ν² < 1/2, a phase of π, and touches -1 only at
ν = 0; the ring init starts every ν at ν² > 1/2).

Complex numbers are kept as real pairs so ``torch.func`` sees real tensors; the stability state is
``[Re x, Im x]`` (``[B, 2N]``) and the time transition's radius is ``max |λ|`` for any input.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import MIN_TIME_CONSTANT, Cell, StructuredJacobian, check_input, same_methods, split_state
from .reparam import REPARAMS, Reparam, lru_modulus, lru_nu


class LRUState(NamedTuple):
    re: Tensor  # [B, N]
    im: Tensor  # [B, N]


def lru_step(u: Tensor, re: Tensor, im: Tensor, *, nu_log: Tensor, theta: Tensor, gamma_log: Tensor,
             b_re: Tensor, b_im: Tensor, c_re: Tensor, c_im: Tensor, d: Tensor, reparam: Reparam = "exp"
             ) -> tuple[Tensor, Tensor, Tensor]:
    """One LRU step on real pairs. ``u [B, in]``, ``re/im [B, N]`` -> ``(y [B, out], re', im')``.
    ``d`` is a vector (elementwise skip, in == out) or an ``[out, in]`` matrix; ``reparam`` maps ``nu_log`` to the
    eigenvalue modulus (:func:`lru_modulus`)."""
    mod = lru_modulus(nu_log, reparam)
    lam_re, lam_im = mod * torch.cos(theta), mod * torch.sin(theta)
    gamma = torch.exp(gamma_log)
    bu_re, bu_im = F.linear(u, b_re), F.linear(u, b_im)
    new_re = lam_re * re - lam_im * im + gamma * bu_re
    new_im = lam_re * im + lam_im * re + gamma * bu_im
    skip = u * d if d.dim() == 1 else F.linear(u, d)
    y = F.linear(new_re, c_re) - F.linear(new_im, c_im) + skip
    return y, new_re, new_im


class LRUCell(Cell):
    """LRU layer with ring initialisation: |λ| uniform on the ring [r_min, r_max], phase in [0, max_phase].

    Args:
        input_size: width of u; hidden_size: width of the output y; state_size: N complex states
            (default ``hidden_size``).
        reparam: the eigenvalue-modulus map ρ(ν) (``exp``, ``softplus``, ``best``; see the module docstring). The
            ring init is the same |λ| for every choice.
    """

    def __init__(self, input_size: int, hidden_size: int, state_size: int | None = None, *, r_min: float = 0.4,
                 r_max: float = 0.99, max_phase: float = math.pi / 10, reparam: Reparam = "exp", fast: bool = True):
        super().__init__(input_size, hidden_size)
        if reparam not in REPARAMS:
            raise ValueError(f"unknown LRU reparam {reparam!r}; choose one of {', '.join(REPARAMS)}")
        self.reparam = reparam
        self.fast = bool(fast)  # forward_sequence by scan.py's whole-sequence paths instead of the step loop
        if not 0.0 <= r_min < r_max < 1.0:
            raise ValueError(f"LRU ring needs 0 <= r_min < r_max < 1, got r_min={r_min}, r_max={r_max}")
        N = int(state_size or hidden_size)
        self.state_size = N
        u1, u2 = torch.rand(N), torch.rand(N)
        mod2 = u1 * (r_max**2 - r_min**2) + r_min**2  # |λ|², uniform: |λ| has density ∝ r on the ring
        # ``exp`` keeps the original formula bit for bit (and the same random draws for every reparam)
        nu = torch.log(-0.5 * torch.log(mod2)) if reparam == "exp" else lru_nu(torch.sqrt(mod2), reparam)
        self.nu_log = nn.Parameter(nu)
        self.theta = nn.Parameter(max_phase * u2)
        mod = lru_modulus(nu, reparam)
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1.0 - mod**2)))
        self.b_re = nn.Parameter(torch.randn(N, input_size) / math.sqrt(2 * input_size))
        self.b_im = nn.Parameter(torch.randn(N, input_size) / math.sqrt(2 * input_size))
        self.c_re = nn.Parameter(torch.randn(hidden_size, N) / math.sqrt(N))
        self.c_im = nn.Parameter(torch.randn(hidden_size, N) / math.sqrt(N))
        if input_size == hidden_size:
            self.d = nn.Parameter(torch.randn(hidden_size))
        else:
            self.d = nn.Parameter(torch.randn(hidden_size, input_size) / math.sqrt(input_size))

    def eigenvalues(self) -> Tensor:
        """λ as a complex vector ``[N]``."""
        mod = lru_modulus(self.nu_log, self.reparam)
        # polar needs a non-negative modulus: a negative ρ (``best``) is |ρ| at phase θ + π
        return torch.polar(mod.abs(), self.theta + math.pi * (mod < 0).to(mod.dtype))

    @torch.no_grad()
    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """Every |λ| → |λ|^(1/m) in place (the time constant -1/log|λ| = exp(-ν) times m, never below
        ``MIN_TIME_CONSTANT``); phases kept. LSC calls it: the time radius is max |λ|, and the gradient of a max
        moves one eigenvalue per step. When shrinking (m < 1) with a ``target`` in (0, 1), the eigenvalues already at
        or below it are kept: they do not set the radius, and shrinking them only shortens the memory (one common
        factor from the ring init's max |λ| 0.99 down to 0.5 sends most |λ| to the floor; docs/lsc.md "The LRU")."""
        if not m > 0:
            raise ValueError(f"time-constant scale must be > 0, got {m}")
        before = self.nu_log.clone()
        keep = lru_modulus(before, self.reparam).abs() <= target if m < 1 and target is not None and \
            0.0 < target < 1.0 else None
        self._scale_all(m)
        if keep is not None:
            self.nu_log.copy_(torch.where(keep, before, self.nu_log))

    @torch.no_grad()
    def _scale_all(self, m: float) -> None:
        """Every |λ| → |λ|^(1/m) (no target)."""
        if self.reparam == "exp":
            self.nu_log.sub_(math.log(m)).clamp_(max=-math.log(MIN_TIME_CONSTANT))
            return
        rho = lru_modulus(self.nu_log, self.reparam)
        # the same |λ| → |λ|^(1/m) as for ``exp``, through the inverse map; 1 - 1e-7 keeps the inverse finite
        new = (rho.abs().clamp(min=1e-30) ** (1.0 / m)).clamp(min=math.exp(-1.0 / MIN_TIME_CONSTANT), max=1 - 1e-7)
        nu = lru_nu(new, self.reparam, sign=rho)
        if self.reparam == "best":  # ρ is even in ν: keep each ν on its own side of 0
            nu = torch.where(self.nu_log < 0, -nu, nu)
        self.nu_log.copy_(nu)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LRUState:
        z = self._zeros(batch_size, self.state_size, device, dtype)
        return LRUState(z, z)

    def input_weight_parts(self) -> tuple[Tensor, Tensor]:
        """``(b_re, b_im)``, the complex ``B`` through which the input enters the state
        (cells.base.HasInputWeightParts): ``d [Re x', Im x'] / d u = [γ B_re; γ B_im]`` is linear in them, so LSC's
        closed-form rescaling of both by ``m`` moves the encoder / depth radius by exactly ``m`` (docs/lsc.md "The
        LRU")."""
        return self.b_re, self.b_im

    # --- closed-form Jacobians (cells.base.HasStateJacobian; docs/lsc.md "Closed-form Jacobians") ----------------
    def _closed_form(self) -> bool:
        """Covered: the step and state maps are this class's own."""
        return same_methods(self, LRUCell, ("forward", "stability_state", "with_stability_state"))

    @torch.no_grad()
    def state_jacobian(self, x: Tensor, state: LRUState) -> StructuredJacobian | None:
        """``d [Re x', Im x'] / d [Re x, Im x]`` ``[B, 2N, 2N]``: the blocks ``[[diag(Re λ), -diag(Im λ)],
        [diag(Im λ), diag(Re λ)]]`` (the real form of ``diag(λ)``, the same for every input), whose radius is
        ``max |λ|``."""
        if not self._closed_form():
            return None
        mod = lru_modulus(self.nu_log, self.reparam)  # signed for ``best``: the step uses it as it is
        lam_re, lam_im = mod * torch.cos(self.theta), mod * torch.sin(self.theta)
        blocks = torch.stack([torch.stack([lam_re, -lam_im]), torch.stack([lam_im, lam_re])])  # [2, 2, N]
        return StructuredJacobian.of_blocks(blocks.to(state.re.dtype).expand(state.re.shape[0], 2, 2, -1))

    @torch.no_grad()
    def input_jacobian(self, x: Tensor, state: LRUState) -> StructuredJacobian | None:
        """``d [Re x', Im x'] / d u = [diag(γ) B_re; diag(γ) B_im]`` ``[B, 2N, in]`` (weight ``[B_re; B_im]``, the
        real block reading the first part and the imaginary block the second)."""
        if not self._closed_form():
            return None
        gamma = torch.exp(self.gamma_log).to(x.dtype).expand(x.shape[0], -1)
        zero = torch.zeros_like(gamma)
        rows = torch.stack([torch.stack([gamma, zero], 1), torch.stack([zero, gamma], 1)], 1)  # [B, 2, 2, N]
        return StructuredJacobian.of_input(torch.cat([self.b_re, self.b_im]).to(x.dtype), x, rows)

    def output_jacobian(self, state: LRUState) -> Tensor | None:
        """None: the output ``Re(C x) + D u`` reads the input too, so it is not a function of the state
        (cells.base.HasOutput) and the depth transition starts at the layer's input."""
        return None

    def forward(self, x: Tensor, state: LRUState) -> tuple[Tensor, LRUState]:
        check_input(self, x)
        y, re, im = lru_step(x, state.re, state.im, nu_log=self.nu_log, theta=self.theta, gamma_log=self.gamma_log,
                             b_re=self.b_re, b_im=self.b_im, c_re=self.c_re, c_im=self.c_im, d=self.d,
                             reparam=self.reparam)
        return y, LRUState(re, im)

    def forward_sequence(self, x: Tensor, state: LRUState) -> tuple[Tensor, LRUState]:
        """All steps, ``x [B, T, input_size] -> (y [B, T, out], final state)``: when ``self.fast`` (and the step is
        not overridden) a parallel scan over time on CUDA or a fused sequential kernel on CPU (``scan.py``), else
        the step loop."""
        if self.fast and type(self).forward is LRUCell.forward:
            from .scan import lru_cell_sequence

            return lru_cell_sequence(self, x, state)
        return super().forward_sequence(x, state)

    def stability_state(self, state: LRUState) -> Tensor:
        return torch.cat([state.re, state.im], dim=-1)

    def with_stability_state(self, state: LRUState, s: Tensor) -> LRUState:
        re, im = split_state(s, [self.state_size, self.state_size])
        return LRUState(re, im)


class ResLRUCell(Cell):
    """Residual LRU block (as paper A's code): ``x' = Dense(x)`` (if widths differ) -> ``u = LayerNorm(x')`` -> LRU ->
    ``out = x' + Drop(GLU(Drop(GELU(y))))`` with ``GLU(y) = σ(y W1 + b1) ⊙ (y W3 + b3)``.

    No ``input_weight_parts`` (cells.base.HasInputWeightParts), unlike the bare LRU: the layer norm makes its encoder
    and depth radii depend on the data, LSC's per-step rescaling of the inner ``B`` then chased them, and the saved
    weights ended off target (measured: docs/lsc.md "The LRU").

    ``dropout`` is the block's internal dropout (the papers' code fixed it at 0.1; default here 0.0).
    """

    def __init__(self, input_size: int, hidden_size: int, state_size: int | None = None, *, dropout: float = 0.0,
                 **lru_options: Any):
        super().__init__(input_size, hidden_size)
        W = hidden_size
        self.proj = nn.Linear(input_size, W) if input_size != W else None
        self.norm = nn.LayerNorm(W)
        self.lru = LRUCell(W, W, state_size or 2 * W, **lru_options)
        self.glu_gate = nn.Linear(W, W)
        self.glu_value = nn.Linear(W, W)
        self.dropout = float(dropout)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> LRUState:
        return self.lru.initial_state(batch_size, device=device, dtype=dtype)

    def scale_time_constants(self, m: float, target: float | None = None) -> None:
        """The inner LRU's :meth:`LRUCell.scale_time_constants`."""
        self.lru.scale_time_constants(m, target)

    # --- closed-form Jacobians: the time transition only (the input passes a layer norm) ---------------------------
    def state_jacobian(self, x: Tensor, state: LRUState) -> StructuredJacobian | None:
        """The inner LRU's :meth:`LRUCell.state_jacobian` (the state sees neither the projection, the layer norm nor
        the GLU); None if this block's step or state maps are overridden."""
        if not same_methods(self, ResLRUCell, ("forward", "stability_state", "with_stability_state")):
            return None
        return self.lru.state_jacobian(x, state)

    def input_jacobian(self, x: Tensor, state: LRUState) -> StructuredJacobian | None:
        """None: not covered (the layer norm's Jacobian is not of the structured form)."""
        return None

    def output_jacobian(self, state: LRUState) -> Tensor | None:
        """None: the block's output reads its input (residual, ``D u``)."""
        return None

    def forward(self, x: Tensor, state: LRUState) -> tuple[Tensor, LRUState]:
        check_input(self, x)
        xp = self.proj(x) if self.proj is not None else x
        y, state = self.lru(self.norm(xp), state)
        h = F.dropout(F.gelu(y), self.dropout, self.training)
        h = torch.sigmoid(self.glu_gate(h)) * self.glu_value(h)
        return xp + F.dropout(h, self.dropout, self.training), state

    def forward_sequence(self, x: Tensor, state: LRUState) -> tuple[Tensor, LRUState]:
        """All steps: the per-step layers (projection, LayerNorm, GELU, GLU) batched over time around the LRU's
        fast path when ``self.lru.fast``, else the step loop. Equal to the loop except that dropout, when
        active, draws its masks in a different order."""
        if not (self.lru.fast and type(self).forward is ResLRUCell.forward):
            return super().forward_sequence(x, state)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"ResLRUCell.forward_sequence expects [batch, time, {self.input_size}], got "
                             f"{list(x.shape)}")
        xp = self.proj(x) if self.proj is not None else x
        y, state = self.lru.forward_sequence(self.norm(xp), state)
        h = F.dropout(F.gelu(y), self.dropout, self.training)
        h = torch.sigmoid(self.glu_gate(h)) * self.glu_value(h)
        return xp + F.dropout(h, self.dropout, self.training), state

    def stability_state(self, state: LRUState) -> Tensor:
        return self.lru.stability_state(state)

    def with_stability_state(self, state: LRUState, s: Tensor) -> LRUState:
        return self.lru.with_stability_state(state, s)
