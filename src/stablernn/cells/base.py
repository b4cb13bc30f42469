"""The cell step interface every recurrent layer implements (README.md, docs/lsc.md "Your own cell").

A cell is an ``nn.Module`` with an explicit, immutable state (a NamedTuple of ``[batch, .]`` tensors):

- ``initial_state(batch_size, device=, dtype=) -> State``
- ``forward(x [B, input_size], state) -> (out [B, output_size], new_state)``: one time step, no mutation of the
  module or of the state it got;
- ``stability_state(state) -> s [B, d]``: the continuous part whose one-step Jacobian is the time transition;
- ``with_stability_state(state, s) -> State``: the inverse, recomputing what depends on ``s``.

A user's own cell only needs these four methods (and ``input_size`` / ``hidden_size``); subclassing :class:`Cell` is
optional. Everything else (stacks, LSC, diagnostics, training) works through them. Two optional extras:
``output_size`` (when the output width differs from ``hidden_size``) and ``output(state) -> out``, the step's output
as a function of the state: when a cell has it, depth Jacobians run from the lower layer's stability state through
its output (e.g. through the spike and its surrogate gradient); without it they start at the layer's input.
A third optional extra, ``scale_time_constants(m, target=None)``, multiplies the cell's fixed time constants by ``m``
in place (τ → m·τ): LSC uses it where a leak, not a weight, bounds the time radius from below (LIF/ALIF δ, LRU |λ|)
or moves all together (the LSTM's forget gates),
and passes its time target so that a cell can stop shrinking a constant where that would raise another eigenvalue.
A fourth, :class:`HasStateJacobian`, gives the one-step Jacobians in closed form (:class:`StructuredJacobian`); LSC's
warm engine then multiplies with them instead of autograd pullbacks (docs/lsc.md "Closed-form Jacobians").
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

State = Any  # a NamedTuple of [B, .] tensors
# the shortest time constant (steps) a ``scale_time_constants`` leaves: δ = e^{-10} ≈ 5e-5, no memory left (the
# papers' τ = 0.1). Shrinking further changes nothing while the recurrent weights carry the radius, and a constant
# shrunk to 1e-9 would take ~150 rescaling steps to come back when it is needed again.
MIN_TIME_CONSTANT = 0.1


@runtime_checkable
class CellProtocol(Protocol):
    """The structural type of a cell (what every consumer calls): a user's cell needs no base class, only this.
    :func:`check_cell` verifies it, keyword arguments included."""

    input_size: int
    hidden_size: int

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> State: ...

    def __call__(self, x: Tensor, state: State) -> tuple[Tensor, State]: ...

    def stability_state(self, state: State) -> Tensor: ...

    def with_stability_state(self, state: State, s: Tensor) -> State: ...


# --- optional capabilities: checked with isinstance, never with hasattr ---------------------------------------------
@runtime_checkable
class HasOutput(Protocol):
    """The step's output as a function of the state, ``output(state) -> [B, output_size]``: depth and decoder
    Jacobians then run from the stability state through it (e.g. through the spike and its surrogate gradient)."""

    def output(self, state: State) -> Tensor: ...


@dataclass
class StructuredJacobian:
    """A batch of one-step Jacobians ``J [B, n_out, n_in]`` in the form every covered cell's has: a shared weight
    between per-sample diagonal scalings, plus a per-sample block-diagonal part,

        J[i-th out block, j-th in block] = Σ_g diag(rows[:, i, g]) W_g diag(cols[:, j]) + diag(diag[:, i, j])

    with ``weight = [W_1; ...; W_G]`` ``[G*H, m]``, ``cols [B, k_in, m]``, ``rows [B, k_out, G, H]``, ``diag [B,
    k_out, k_in, H]`` or None (then ``n_in = k_in*m``, ``n_out = k_out*H``; with ``diag``, ``m = H``). A product
    ``J v`` is then one matmul with the shared ``W`` for the whole batch plus elementwise work, where the
    materialised ``J`` would stream ``B n²`` numbers from memory per product (docs/lsc.md "Closed-form Jacobians")."""

    weight: Tensor
    cols: Tensor
    rows: Tensor
    diag: Tensor | None = None

    @classmethod
    def of_input(cls, weight: Tensor, x: Tensor, rows: Tensor) -> StructuredJacobian:
        """An input Jacobian ``d s / d x`` for ``x [B, in]``: ``rows`` times the input weight ``weight [G*H, in]``
        (one input block, no per-sample column scaling, no diagonal part)."""
        return cls(weight, x.new_ones(1, 1, weight.shape[1]).expand(x.shape[0], 1, -1), rows)

    @classmethod
    def of_blocks(cls, diag: Tensor) -> StructuredJacobian:
        """A purely block-diagonal Jacobian, ``diag [B, k_out, k_in, H]`` (no shared weight: ``G = 0``, an empty
        ``weight [0, H]``), e.g. the LRU's time transition, 2 x 2 blocks of ``diag(Re λ)``, ``diag(Im λ)``."""
        B, k_out, k_in, H = diag.shape
        return cls(diag.new_zeros(0, H), diag.new_ones(1, 1, H).expand(B, k_in, H), diag.new_zeros(B, k_out, 0, H),
                   diag)

    def _sizes(self) -> tuple[int, int, int, int, int, int]:
        B, k_in, m = self.cols.shape
        _, k_out, G, H = self.rows.shape
        return B, k_in, m, k_out, G, H

    def mv(self, V: Tensor) -> Tensor:
        """Rows ``V [B, K, n_in] -> (J v)ᵀ`` ``[B, K, n_out]``."""
        B, k_in, m, k_out, G, H = self._sizes()
        K = V.shape[1]
        s = V.reshape(B, K, k_in, m)
        q = (s * self.cols[:, None]).sum(2)
        p = (q @ self.weight.mT).reshape(B, K, 1, G, H)
        # broadcast products and short sums: the k and g axes are 1-4 long, where einsum's batched matmuls cost more
        out = (self.rows[:, None] * p).sum(3)
        if self.diag is not None:
            out = out + (self.diag[:, None] * s[:, :, None]).sum(3)
        return out.reshape(B, K, k_out * H)

    def rmv(self, U: Tensor) -> Tensor:
        """Rows ``U [B, K, n_out] -> (Jᵀ u)ᵀ`` ``[B, K, n_in]``."""
        B, k_in, m, k_out, G, H = self._sizes()
        K = U.shape[1]
        u = U.reshape(B, K, k_out, H)
        p = (self.rows[:, None] * u[:, :, :, None]).sum(2).reshape(B, K, G * H)
        s = (p @ self.weight)[:, :, None, :] * self.cols[:, None]
        if self.diag is not None:
            s = s + (self.diag[:, None] * u[:, :, :, None]).sum(2)
        return s.reshape(B, K, k_in * m)

    def dense(self) -> Tensor:
        """The Jacobians ``[B, n_out, n_in]``."""
        B, k_in, m, k_out, G, H = self._sizes()
        M = torch.einsum("bigh,ghm->bihm", self.rows, self.weight.reshape(G, H, m))
        J = M[:, :, :, None, :] * self.cols[:, None, None]  # [B, k_out, H, k_in, m]
        if self.diag is not None:
            J.diagonal(dim1=2, dim2=4).add_(self.diag)
        return J.reshape(B, k_out * H, k_in * m)

    def scale_columns(self, D: Tensor) -> StructuredJacobian:
        """``J`` times a block-diagonal ``[diag(D_1), ..., diag(D_k)]`` on the right (``D [B, k, m]``, this ``J``
        with one input block and no diagonal part): a depth transition, ``input_jacobian`` of the upper cell times
        ``output_jacobian`` of the lower one."""
        if self.cols.shape[1] != 1 or self.diag is not None:
            raise ValueError("scale_columns needs a Jacobian with one input block and no diagonal part")
        return replace(self, cols=self.cols * D)


@runtime_checkable
class HasStateJacobian(Protocol):
    """Closed-form one-step Jacobians (no autograd), what LSC's warm engine multiplies with instead of vmapped
    pullbacks (docs/lsc.md "Closed-form Jacobians"). Each returns None when the cell's configuration is not covered
    (the caller then falls back to autograd), never an approximation; all run without gradient.

    - ``state_jacobian(x [B, in], state) -> StructuredJacobian`` (``[B, d, d]``): of ``s -> stability_state(cell(x,
      with_stability_state(state, s))[1])`` at ``s = stability_state(state)`` (the time transition, spikes
      recomputed from ``s``);
    - ``input_jacobian(x [B, in], state) -> StructuredJacobian`` (``[B, d, in]``, one input block, no diagonal
      part): of ``x -> stability_state(cell(x, state)[1])``;
    - ``output_jacobian(state) -> [B, k, out]``: of ``s -> output(with_stability_state(state, s))``, which must be
      elementwise per block: ``d = k * out`` and ``d out_j / d s_{i*out + j} = D[:, i, j]`` (all else zero)."""

    def state_jacobian(self, x: Tensor, state: State) -> StructuredJacobian | None: ...

    def input_jacobian(self, x: Tensor, state: State) -> StructuredJacobian | None: ...

    def output_jacobian(self, state: State) -> Tensor | None: ...


def same_methods(cell: Any, base: type, names: tuple[str, ...]) -> bool:
    """Whether ``cell``'s class uses ``base``'s own ``names`` (a subclass that overrides one changes the step, so a
    closed form or fused kernel written for ``base`` no longer describes it)."""
    cls = type(cell)
    return all(getattr(cls, m) is getattr(base, m) for m in names)


@runtime_checkable
class ScalesTimeConstants(Protocol):
    """``scale_time_constants(m, target=None)``: multiply the cell's fixed time constants by ``m`` in place (LSC's
    leak rescaling; ``target`` is the time radius sought, so a cell can stop where shrinking would raise another
    eigenvalue, or keep the constants that do not set the radius: the LRU's |λ| below it). Constants must live in
    parameters or buffers so snapshots and checkpoints carry them."""

    def scale_time_constants(self, m: float, target: float | None = None) -> None: ...


@runtime_checkable
class SequenceFast(Protocol):
    """``forward_sequence(x [B, T, in], state) -> (out [B, T, out], state)``: a whole-sequence path that matches the
    step loop to float tolerance (fused kernels, parallel scans)."""

    def forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]: ...


@runtime_checkable
class SpikingCell(Protocol):
    """A spiking layer (LIF/ALIF, the spiking LSTM, and cells built like them): its output is a spike function of
    a membrane-like variable minus ``threshold``."""

    spike: Any
    threshold: Tensor


@runtime_checkable
class HasBias(Protocol):
    """A per-neuron ``bias`` (what the initial firing-rate fit moves)."""

    bias: Tensor


@runtime_checkable
class LIFLike(SpikingCell, HasBias, Protocol):
    """A spiking layer the stability conditions can read and design (paper B, arXiv:2202.00282): input and
    recurrent weights ``[n, in]``, ``[n, n]`` (post, pre), the recurrent mask, the reset kind, whether it is
    recurrent and whether it adapts (ALIF: ``beta``, ``decay_a``)."""

    decay: Tensor
    weight_ih: Tensor
    weight_hh: Tensor
    rec_mask: Tensor
    reset: str
    recurrent: bool
    adaptive: bool


@runtime_checkable
class MatrixRecurrent(Protocol):
    """A recurrence through one weight matrix ``weight_hh [gates * H, H]`` (Elman, GRU, LSTM, LIF/ALIF, Li-GRU, the
    spiking LSTM): what the low-rank + sparse option reparameterises."""

    weight_hh: Tensor


@runtime_checkable
class HasRecMask(Protocol):
    """A fixed mask on the recurrent matrix (LIF/ALIF: no self-connections)."""

    rec_mask: Tensor


@runtime_checkable
class HasCells(Protocol):
    """A stack of layers (``DeepRNN`` and adapted user stacks): what layer-wise tools walk."""

    cells: Any


@runtime_checkable
class HasInputWeight(Protocol):
    """An input weight matrix ``weight_ih [gates * H, in]`` through which everything the cell receives from below
    enters its state (Elman, GRU, LSTM, LIF/ALIF, Li-GRU): LSC's closed-form rescaling scales it to move the encoder
    and depth radii (with :class:`MatrixRecurrent`'s ``weight_hh`` for the time radius of cells without a clock)."""

    weight_ih: Tensor


@runtime_checkable
class HasInputWeightParts(Protocol):
    """An input weight kept in parts that LSC's closed-form rescaling scales by one factor, ``input_weight_parts() ->
    (W_1, ..., W_k)``: the LRU's complex ``B`` as its real and imaginary parts (``b_re``, ``b_im``). Like
    :class:`HasInputWeight`, everything the cell receives from below must enter its state through them, so that
    scaling all parts by ``m`` scales the encoder / depth Jacobian by ``m``."""

    def input_weight_parts(self) -> tuple[Tensor, ...]: ...


def is_spiking(cell: Any) -> bool:
    """The one test of "is this layer spiking?" (firing rates, rate control, the stability design, LSC's activity
    guard all use it)."""
    return isinstance(cell, SpikingCell)


class Cell(nn.Module):
    """Base class for cells: sizes, input checking and the default whole-sequence loop."""

    input_size: int
    hidden_size: int

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None):
        super().__init__()
        check_size("input_size", input_size)
        check_size("hidden_size", hidden_size)
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.output_size = int(output_size if output_size is not None else hidden_size)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> State:
        raise NotImplementedError

    def stability_state(self, state: State) -> Tensor:
        raise NotImplementedError

    def with_stability_state(self, state: State, s: Tensor) -> State:
        raise NotImplementedError

    def forward_sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """All steps: ``x [B, T, input_size] -> (out [B, T, output_size], final state)``.

        Cells with a faster whole-sequence path override this; it must match the step loop to float tolerance.
        """
        return run_steps(self, x, state)

    def _zeros(self, batch_size: int, width: int, device: Any, dtype: Any) -> Tensor:
        ref = next(self.parameters(), None)
        device = device if device is not None else (ref.device if ref is not None else None)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
        return torch.zeros(batch_size, width, device=device, dtype=dtype)


@runtime_checkable
class _DeclaresOutputSize(Protocol):
    output_size: int


def output_size(cell: nn.Module) -> int:
    """A cell's output width (``output_size`` if it declares one, else ``hidden_size``)."""
    return int(cell.output_size if isinstance(cell, _DeclaresOutputSize) else cell.hidden_size)


def run_steps(cell: nn.Module, x: Tensor, state: State) -> tuple[Tensor, State]:
    """The one time loop: ``x [B, T, F] -> (out [B, T, out], final state)``.

    Iterates ``x.unbind(1)``: indexing ``x[:, t]`` inside the loop would make every step's backward allocate a full
    ``[B, T, F]`` zero tensor.
    """
    outs = []
    for x_t in x.unbind(1):
        out, state = cell(x_t, state)
        outs.append(out)
    return torch.stack(outs, 1), state


def check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_input(cell: nn.Module, x: Tensor) -> None:
    """Raise a clear error when a step's input is not ``[B, input_size]``."""
    if x.dim() != 2 or x.shape[-1] != cell.input_size:
        raise ValueError(
            f"{type(cell).__name__} expects one step of input shaped [batch, {cell.input_size}], got "
            f"{list(x.shape)}; sequences are [batch, time, features] and go through DeepRNN or forward_sequence"
        )


def check_cell(cell: nn.Module, batch_size: int = 2) -> None:
    """Check that ``cell`` implements the interface exactly as :class:`~stablernn.models.DeepRNN`, LSC and the
    diagnostics call it (a user's own cell included); raises ``TypeError`` saying what is missing or inconsistent.

    Checked: int ``input_size`` / ``hidden_size`` (and ``output_size`` if present);
    ``initial_state(batch_size, device=..., dtype=...)`` accepting both keywords and returning a NamedTuple of
    ``[batch, .]`` tensors of the requested dtype; ``forward(x [B, input_size], state) -> (out [B, output_size],
    new_state)`` with ``new_state`` of the same NamedTuple type; ``stability_state(state) -> [B, d]`` and
    ``with_stability_state`` its inverse; the optional ``output(state) -> [B, output_size]`` and
    ``scale_time_constants`` (callable). One step of batch ``batch_size`` runs without gradients, and the global
    RNG is left as it was (so checking a cell never changes a seeded run).
    """
    name = type(cell).__name__
    for attr in ("input_size", "hidden_size"):
        v = getattr(cell, attr, None)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise TypeError(f"{name} needs a positive int attribute {attr!r} (got {v!r})")
    out_size = getattr(cell, "output_size", None)
    if out_size is not None and (not isinstance(out_size, int) or isinstance(out_size, bool) or out_size < 1):
        raise TypeError(f"{name}.output_size must be a positive int when present, got {out_size!r}")
    for meth in ("initial_state", "stability_state", "with_stability_state"):
        if not callable(getattr(cell, meth, None)):
            raise TypeError(f"{name} needs a method {meth}(...) (DeepRNN, LSC and the diagnostics call it; see "
                            "stablernn.cells.base)")
    if not callable(cell):
        raise TypeError(f"{name} must be callable as cell(x, state) (an nn.Module with forward)")
    for opt in ("output", "scale_time_constants"):
        if hasattr(cell, opt) and not callable(getattr(cell, opt)):
            raise TypeError(f"{name}.{opt} must be a method when present")
    params = list(cell.parameters()) if hasattr(cell, "parameters") else []
    ref = params[0] if params else None
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        _check_cell_step(cell, name, batch_size, device, dtype)


def _check_cell_step(cell: Any, name: str, batch_size: int, device: torch.device, dtype: torch.dtype) -> None:
    try:
        state = cell.initial_state(batch_size, device=device, dtype=dtype)
    except TypeError as e:
        if "keyword" in str(e) or "argument" in str(e):
            raise TypeError(f"{name}.initial_state must accept initial_state(batch_size, *, device=None, dtype=None) "
                            f"(DeepRNN, LSC and the diagnostics pass both keywords); calling it failed: {e}") from None
        raise
    if not (isinstance(state, tuple) and hasattr(state, "_fields")):
        raise TypeError(f"{name}.initial_state must return a NamedTuple of tensors, got {type(state).__name__}")
    for field, t in zip(state._fields, state, strict=True):
        if not isinstance(t, Tensor) or t.dim() < 1 or t.shape[0] != batch_size:
            got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{name}.initial_state({batch_size}) field {field!r} must be a [batch, .] tensor with "
                            f"batch {batch_size}, got {got}")
        if t.is_floating_point() and t.dtype != dtype:
            raise TypeError(f"{name}.initial_state(..., dtype={dtype}) returned {field!r} as {t.dtype}; honour the "
                            "dtype keyword (None: the parameters' dtype)")
    x = torch.zeros(batch_size, cell.input_size, device=device, dtype=dtype)
    res = cell(x, state)
    if not (isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], Tensor)):
        got = type(res).__name__ + (f" of length {len(res)}" if isinstance(res, tuple) else "")
        raise TypeError(f"{name}.forward(x, state) must return a pair (out [batch, output_size], new_state), got "
                        f"{got}")
    out, new = res
    width = output_size(cell)
    if tuple(out.shape) != (batch_size, width):
        raise TypeError(f"{name} step returned out {list(out.shape)}, expected [{batch_size}, {width}] "
                        "(batch, output_size or hidden_size)")
    if type(new) is not type(state):
        raise TypeError(f"{name}.forward must return its new state as the same NamedTuple type as initial_state "
                        f"({type(state).__name__}), got {type(new).__name__}")
    s = cell.stability_state(new)
    if not isinstance(s, Tensor) or s.dim() != 2 or s.shape[0] != batch_size:
        got = list(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise TypeError(f"{name}.stability_state must return a [batch, d] tensor, got {got}")
    rebuilt_state = cell.with_stability_state(new, s)
    if type(rebuilt_state) is not type(state):
        raise TypeError(f"{name}.with_stability_state must return a {type(state).__name__}, got "
                        f"{type(rebuilt_state).__name__}")
    rebuilt = cell.stability_state(rebuilt_state)
    if rebuilt.shape != s.shape or not torch.allclose(rebuilt, s):
        raise TypeError(f"{name}.with_stability_state is not the inverse of stability_state")
    if isinstance(cell, HasOutput):
        o = cell.output(rebuilt_state)
        if not isinstance(o, Tensor) or tuple(o.shape) != (batch_size, width):
            got = list(o.shape) if isinstance(o, Tensor) else type(o).__name__
            raise TypeError(f"{name}.output(state) must return [{batch_size}, {width}] like the step's out, got {got}")


def split_state(s: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
    """Split a concatenated stability state ``[B, sum(sizes)]`` into its pieces."""
    return tuple(torch.split(s, sizes, dim=-1))


