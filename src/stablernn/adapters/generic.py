"""The generic step protocol: any module whose one time step the user can write as a pure function.

The user gives ``step(module, x_t [B, in], state) -> (out [B, out], new_state)`` with ``state`` a tuple of
``[B, width]`` tensors, and the widths. The view's cell calls ``step`` on the user's module itself (its own
``Parameter`` objects, nothing copied), so it must not modify the module: the same rule as a stablernn cell. The
step runs under ``torch.func`` (vmap, jacrev) like any stablernn cell. Example (docs/your-model.md)::

    class Diag(nn.Module):                      # h[t] = a ⊙ h[t-1] + B x[t];  y = C h
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.rand(64)); self.B = nn.Linear(8, 64); self.C = nn.Linear(64, 10)
        def forward(self, x):                   # x [B, T, 8]
            ...
    def diag_step(m, x_t, state):
        h = m.a * state[0] + m.B(x_t)
        return h, (h,)
    view = adapt(net, StepSpec(diag_step, state_sizes=(64,), input_size=8, readout="C"))
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..cells.base import check_input
from .base import zeros

StepFn = Callable[[nn.Module, Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]


@dataclass(frozen=True)
class StepSpec:
    """One time step of a user's module, for :func:`~stablernn.adapters.adapt`.

    Args:
        step: ``(module, x_t [B, input_size], state) -> (out [B, output_size], new state)``, pure.
        state_sizes: the width of each piece of ``state`` (a tuple of ``[B, width]`` tensors, zeros at t = 0).
        input_size: features per step.
        output_size: width of ``out`` (default: the first state piece's width).
        stability: indices of the pieces that form the stability state (default: all); the others are carried
            unchanged through the time Jacobian.
        output: ``(module, state) -> out``, the step's output as a function of the state, when it is one (depth
            Jacobians then start at the lower layer's state; see stablernn.cells.base).
        readout: name of the module's ``nn.Linear`` applied to every step's output (the view's readout), or None.
        scale_time_constants: ``(module, m) -> None`` multiplying the module's fixed time constants by ``m`` in
            place (LSC's rescaling); they must be parameters or buffers so LSC's best-weights snapshot has them.
    """

    step: StepFn
    state_sizes: Sequence[int]
    input_size: int
    output_size: int | None = None
    stability: Sequence[int] | None = None
    output: Callable[[nn.Module, tuple[Tensor, ...]], Tensor] | None = None
    readout: str | None = None
    scale_time_constants: Callable[[nn.Module, float], None] | None = None

    def __post_init__(self) -> None:
        if not callable(self.step):
            raise TypeError(f"StepSpec.step must be a function (module, x_t, state) -> (out, state), got "
                            f"{type(self.step).__name__}")
        sizes = list(self.state_sizes)
        if not sizes or any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in sizes):
            raise ValueError(f"StepSpec.state_sizes must be positive integers (one per state piece), got {sizes}")
        if not isinstance(self.input_size, int) or self.input_size < 1:
            raise ValueError(f"StepSpec.input_size must be a positive integer, got {self.input_size!r}")
        bad = [i for i in (self.stability or []) if not 0 <= i < len(sizes)]
        if bad:
            raise ValueError(f"StepSpec.stability indices {bad} are outside the {len(sizes)} state pieces")


def _state_type(n: int) -> type:
    # a NamedTuple class per piece count: stablernn rebuilds states with type(state)(*pieces)
    from typing import NamedTuple

    return NamedTuple(f"StepState{n}", [(f"s{i}", Tensor) for i in range(n)])


class StepCell(nn.Module):
    """The cell of :class:`StepSpec` over a user's module (a submodule here: its tensors are the view's)."""

    def __init__(self, module: nn.Module, spec: StepSpec):
        super().__init__()
        self.module, self.spec = module, spec
        self.input_size = int(spec.input_size)
        self.hidden_size = int(spec.state_sizes[0])
        self.output_size = int(spec.output_size if spec.output_size is not None else spec.state_sizes[0])
        self.sizes = [int(w) for w in spec.state_sizes]
        self.stab = list(spec.stability) if spec.stability is not None else list(range(len(self.sizes)))
        self.State = _state_type(len(self.sizes))
        if spec.output is not None:
            self.output = lambda state: spec.output(self.module, tuple(state))
        if spec.scale_time_constants is not None:
            self.scale_time_constants = self._scale

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> Any:
        ref = next(self.module.parameters())
        return self.State(*[zeros(ref, batch_size, w, device, dtype) for w in self.sizes])

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        check_input(self, x)
        out, new = self.spec.step(self.module, x, tuple(state))
        if len(new) != len(self.sizes):
            raise ValueError(f"the step returned {len(new)} state pieces, StepSpec.state_sizes has {len(self.sizes)}")
        return out, self.State(*new)

    def stability_state(self, state: Any) -> Tensor:
        return torch.cat([state[i] for i in self.stab], -1)

    def with_stability_state(self, state: Any, s: Tensor) -> Any:
        pieces = list(state)
        for i, p in zip(self.stab, s.split([self.sizes[i] for i in self.stab], -1), strict=True):
            pieces[i] = p
        return self.State(*pieces)

    @torch.no_grad()
    def _scale(self, m: float, target: float | None = None) -> None:
        self.spec.scale_time_constants(self.module, m)

    def extra_repr(self) -> str:
        return f"step {getattr(self.spec.step, '__name__', 'fn')}, state {self.sizes}"


__all__ = ["StepCell", "StepSpec"]
