"""Deep recurrent stacks and deep feed-forward nets, and the typed config that builds them.

Why one module of ~580 lines: the stack, its config and the one builder belong together (every network made
from a config comes through :func:`build_model`, and every consumer steps it through :meth:`DeepRNN.step`);
splitting them would spread one contract over three files.

Everything is batch-first: sequences are ``[batch, time, features]`` (``[batch, time]`` token ids for embeddings).
"""
from __future__ import annotations

import contextlib
import itertools
import math
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cells import (
    ALIFCell,
    DecolleCell,
    ElmanCell,
    GRUCell,
    LIFCell,
    LiGRUCell,
    LRUCell,
    LSTMCell,
    ResLRUCell,
    SpikingLSTMCell,
)
from .cells import output_size as output_size_of
from .cells.base import CellProtocol, SequenceFast, State, check_cell, run_steps
from .cells.lru import Reparam
from .cells.resets import Reset
from .cells.rnn import Activation, activation_fn
from .cells.spiking import default_tau_adapt
from .data.base import TaskInfo
from .fields import check_fields, option, require
from .inits import init_model_
from .snn.conditions import CONDITIONS, Condition, NoRoot  # noqa: F401  (CONDITIONS: re-exported with the config)
from .snn.design import DesignConfig, apply_design_, design_model
from .snn.stats import task_stats
from .surrogate import SurrogateName

EncoderKind = Literal["auto", "identity", "linear", "embedding"]
ReadoutKind = Literal["linear", "tied", "none"]
LayerHook = Callable[[int, Tensor, Tensor, State], tuple[Tensor, State]]
"""``hook(layer, input [B, in_l], cell output [B, out_l], new state) -> (output, state)``: what the stack uses from
there on. The diagnostics use it to observe every layer of a step, or to re-route a state through a node."""


class StepOutput(NamedTuple):
    logits: Tensor | None  # [B, C]; None when decode=False or the stack has no readout
    states: list[State]  # every layer's new state
    outputs: list[Tensor]  # [B, out_l]: what each layer passes up (spikes for spiking layers, plus residual)


class ModelOutput(NamedTuple):
    logits: Tensor  # [B, T, C]
    states: list[State]  # final state of every layer
    layer_outputs: list[Tensor]  # [B, T, out_l] per layer (spikes for spiking layers)


class DeepRNN(nn.Module):
    """encoder -> L cells -> per-step readout.

    Args:
        cells: the recurrent layers (any objects implementing the cell interface); layer l's ``input_size`` must be
            layer l-1's output width.
        input_size: features per step, or the vocabulary size for ``encoder="embedding"``.
        output_size: classes / vocabulary / regression targets of the readout.
        encoder: ``identity`` (input fed as is), ``linear`` (a learned projection to the first cell's input size),
            ``embedding`` (token ids -> vectors).
        readout: ``linear`` per step, ``tied`` to the embedding (``logits = h E^T + b``; needs the last layer's
            width to equal the embedding size), or ``none`` (a stack of cells without readout: :func:`as_stack`
            of a bare cell).
        residual: add each layer's input to its output where the widths match.
        dropout: dropout before every recurrent layer (the first included), as in the papers' code.
    """

    def __init__(self, cells: Sequence[nn.Module], *, input_size: int, output_size: int,
                 encoder: EncoderKind | nn.Module = "identity", readout: ReadoutKind = "linear",
                 residual: bool = False, dropout: float = 0.0):
        super().__init__()
        if len(cells) == 0:
            raise ValueError("DeepRNN needs at least one cell")
        for l, cell in enumerate(cells):
            if not isinstance(cell, nn.Module):
                raise TypeError(f"layer {l} ({type(cell).__name__}) is not an nn.Module; a cell must subclass "
                                "torch.nn.Module (see stablernn.cells.base)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        for l, cell in enumerate(cells):  # the cell contract, checked once here rather than deep inside LSC later
            if not isinstance(cell, nn.Module):
                raise TypeError(f"layer {l}: DeepRNN cells must be nn.Modules, got {type(cell).__name__}")
            try:
                check_cell(cell)
            except TypeError as e:
                raise TypeError(f"layer {l}: {e}") from None
        self.cells = nn.ModuleList(cells)
        self.input_size, self.output_size = int(input_size), int(output_size)
        self.residual, self.dropout = bool(residual), float(dropout)
        first_in = self.cells[0].input_size
        self.encoder_kind = encoder if isinstance(encoder, str) else "custom"
        if isinstance(encoder, nn.Module):
            self.encoder: nn.Module = encoder
        elif encoder == "identity":
            if input_size != first_in:
                raise ValueError(f"encoder='identity' needs the first cell's input_size ({first_in}) to equal the "
                                 f"task's input size ({input_size}); use encoder='linear' to project")
            self.encoder = nn.Identity()
        elif encoder == "linear":
            self.encoder = nn.Linear(input_size, first_in)
        elif encoder == "embedding":
            self.encoder = nn.Embedding(input_size, first_in)
            nn.init.uniform_(self.encoder.weight, -math.sqrt(3.0 / first_in), math.sqrt(3.0 / first_in))
        else:
            raise ValueError(f"unknown encoder {encoder!r}; choose identity, linear or embedding")
        for l in range(1, len(self.cells)):
            below = output_size_of(self.cells[l - 1])
            if self.cells[l].input_size != below:
                raise ValueError(f"layer {l} has input_size {self.cells[l].input_size} but layer {l - 1} outputs "
                                 f"{below}")
        last = output_size_of(self.cells[-1])
        self.readout_kind = readout
        if readout == "linear":
            self.readout = nn.Linear(last, output_size)
            nn.init.xavier_uniform_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)
        elif readout == "tied":
            if not isinstance(self.encoder, nn.Embedding):
                raise ValueError("readout='tied' needs encoder='embedding'")
            if self.encoder.embedding_dim != last or self.encoder.num_embeddings != output_size:
                raise ValueError(f"readout='tied' needs the last layer's width ({last}) to equal the embedding size "
                                 f"({self.encoder.embedding_dim}) and the output size to equal the vocabulary")
            self.readout = None
            self.readout_bias = nn.Parameter(torch.zeros(output_size))
        elif readout == "none":
            self.readout = None
        else:
            raise ValueError(f"unknown readout {readout!r}; choose linear, tied or none")

    # --- pieces, so LSC and diagnostics can see every transition ---------------------------------------------
    def initial_states(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> list[State]:
        """Zero states of every layer."""
        return [c.initial_state(batch_size, device=device, dtype=dtype) for c in self.cells]

    def encode(self, x: Tensor) -> Tensor:
        """Input -> first layer's input, per step: ``[B, T, F]`` (or ``[B, T]`` ids) -> ``[B, T, in_1]``;
        also works on one step ``[B, F]`` / ``[B]``."""
        self._check_input(x)
        if isinstance(self.encoder, nn.Embedding):
            return self.encoder(x.long())
        return self.encoder(x)

    @property
    def has_readout(self) -> bool:
        return self.readout_kind != "none"

    def decode(self, h: Tensor) -> Tensor:
        """Last layer's output -> logits, per step (``[..., out_L] -> [..., C]``)."""
        if self.readout_kind == "tied":
            return F.linear(h, self.encoder.weight, self.readout_bias)
        if self.readout is None:
            raise ValueError("this stack has no readout (readout='none'); build it with readout='linear' to decode")
        return self.readout(h)

    def layer_input(self, l: int, inp: Tensor) -> Tensor:
        """What layer ``l`` receives from below (dropout applied in training mode)."""
        return F.dropout(inp, self.dropout, self.training) if self.dropout > 0 else inp

    def layer_output(self, l: int, out: Tensor, inp: Tensor) -> Tensor:
        """What layer ``l`` passes up: its cell output, plus its input if residual and the widths match."""
        if self.residual and out.shape[-1] == inp.shape[-1]:
            return out + inp
        return out

    def step(self, x_t: Tensor, states: list[State], *, hook: LayerHook | None = None,
             decode: bool = True) -> StepOutput:
        """One time step through every layer: ``x_t [B, F]`` (or ``[B]`` ids) -> ``(logits_t [B, C], new states,
        per-layer outputs [B, out_l])``.

        The only code that steps a stack: LSC's transitions, the radii, the gradient grid, firing rates, Lyapunov
        spectra and memory capacity all come through here. ``hook`` sees each layer's step (see :data:`LayerHook`);
        ``decode=False`` skips the readout (``logits`` is then None).
        """
        if len(states) != len(self.cells):
            raise ValueError(f"got {len(states)} layer states for a stack of {len(self.cells)} layers")
        h = self.encode(x_t)
        new_states, outs = [], []
        for l, cell in enumerate(self.cells):
            inp = self.layer_input(l, h)
            out, st = cell(inp, states[l])
            if hook is not None:
                out, st = hook(l, inp, out, st)
            h = self.layer_output(l, out, inp)
            new_states.append(st)
            outs.append(h)
        logits = self.decode(h) if decode and self.has_readout else None
        return StepOutput(logits, new_states, outs)

    # --- whole sequences --------------------------------------------------------------------------------------
    def run(self, x: Tensor, states: list[State] | None = None) -> ModelOutput:
        """``x [B, T, F]`` (or ``[B, T]`` ids) -> logits ``[B, T, C]``, final states, per-layer outputs.

        Layer-major: each layer runs over the whole sequence (through the cell's ``forward_sequence`` when it has
        a fast path) before the next.
        """
        if x.dim() < 2:
            raise ValueError(f"DeepRNN expects [batch, time, features] (or [batch, time] token ids), got "
                             f"{list(x.shape)}")
        h = self.encode(x)
        if states is None:
            states = self.initial_states(x.shape[0], device=h.device, dtype=h.dtype if h.is_floating_point()
                                         else None)
        new_states, layer_outputs = [], []
        for l, cell in enumerate(self.cells):
            inp = self.layer_input(l, h)
            if isinstance(cell, SequenceFast):
                out, st = cell.forward_sequence(inp, states[l])
            else:
                out, st = run_steps(cell, inp, states[l])
            h = self.layer_output(l, out, inp)
            new_states.append(st)
            layer_outputs.append(h)
        logits = self.decode(h) if self.has_readout else h
        return ModelOutput(logits, new_states, layer_outputs)

    def forward(self, x: Tensor, states: list[State] | None = None) -> Tensor:
        """``x [B, T, F]`` -> logits ``[B, T, C]``."""
        return self.run(x, states).logits

    def _check_input(self, x: Tensor) -> None:
        if isinstance(self.encoder, nn.Embedding):
            if x.is_floating_point() and x.dim() >= 1 and x.shape[-1] == 1:
                raise ValueError("token inputs must be integer ids shaped [batch, time]")
            return
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features per step but the model expects {self.input_size} "
                             f"(x is {list(x.shape)}, expected [batch, time, {self.input_size}])")


class FFN(nn.Module):
    """Deep feed-forward net (arXiv:2308.12075, Fig. 2): ``depth`` x [Linear(width) -> activation] -> Linear(output).

    ``init``: ``glorot`` (normal, variance 2/(fan_in+fan_out)), ``he`` (normal, 2/fan_in) or ``orthogonal``;
    biases 0. Inputs ``[B, F]`` or sequences ``[B, T, F]`` (flattened to ``[B, T*F]``); output ``[B, C]``.
    """

    def __init__(self, depth: int, width: int, *, input_size: int, output_size: int,
                 activation: FFNActivation = "relu", init: FFNInit = "glorot"):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"FFN needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.depth, self.width, self.activation = depth, width, activation
        self.input_size, self.output_size = input_size, output_size
        self._act: Callable[[Tensor], Tensor] = _ffn_activation(activation)
        sizes = [input_size] + [width] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.out = nn.Linear(width, output_size)
        for lin in [*self.layers, self.out]:
            _init_linear(lin, init)

    def flatten(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1) if x.dim() > 2 else x
        if x.shape[-1] != self.input_size:
            raise ValueError(f"FFN expects {self.input_size} input features (after flattening), got {x.shape[-1]}")
        return x

    def layer_forward(self, l: int, h: Tensor) -> Tensor:
        """Hidden layer ``l`` (0-based) applied to the previous activation: ``[B, in_l] -> [B, width]``."""
        return self._act(self.layers[l](h))

    def hidden(self, x: Tensor) -> list[Tensor]:
        """Every hidden activation ``[B, width]``, layer by layer."""
        h, hs = self.flatten(x), []
        for l in range(self.depth):
            h = self.layer_forward(l, h)
            hs.append(h)
        return hs

    def forward(self, x: Tensor) -> Tensor:
        """``[B, F]`` or ``[B, T, F]`` -> logits ``[B, C]``."""
        return self.out(self.hidden(x)[-1])


def _ffn_activation(name: str) -> Callable[[Tensor], Tensor]:
    extra = {"sin": torch.sin, "cos": torch.cos, "linear": lambda t: t}
    return extra[name] if name in extra else activation_fn(name)


def _init_linear(lin: nn.Linear, init: str) -> None:
    fan_out, fan_in = lin.weight.shape
    with torch.no_grad():
        if init == "glorot":
            lin.weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)))
        elif init == "he":
            lin.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        elif init == "orthogonal":
            nn.init.orthogonal_(lin.weight)
        else:
            raise ValueError(f"unknown init {init!r}; choose glorot, he or orthogonal")
        lin.bias.zero_()


# --- typed config -----------------------------------------------------------------------------------------------
SpikingCellKind = Literal["lif", "alif"]
SPIKING_CELLS: tuple[str, ...] = typing.get_args(SpikingCellKind)
CellKind = Literal["lstm", "gru", "relu_rnn", "sigmoid_rnn", "tanh_rnn", "swish_rnn", SpikingCellKind, "lru", "reslru",
                   "ffn", "ligru", "ligru_stable", "spiking_lstm", "decolle"]
CELL_KINDS: tuple[str, ...] = typing.get_args(CellKind)
# kinds whose recurrence is a weight matrix ``weight_hh`` (the low-rank + sparse option applies to them)
MATRIX_RECURRENT_KINDS: tuple[str, ...] = tuple(k for k in CELL_KINDS if k not in ("lru", "reslru", "ffn"))
# Elman cells (ElmanCell with the named activation): their memory is the recurrent matrix alone, no gate or leak
ELMAN_KINDS: tuple[str, ...] = tuple(k for k in CELL_KINDS if k.endswith("_rnn"))
# the classic cells the stabilisers of stablernn.inits (rec_init, layer_norm) apply to
CLASSIC_KINDS: tuple[str, ...] = ("lstm", "gru", *ELMAN_KINDS)
RecInit = Literal["default", "orthogonal", "identity"]
# paper B (arXiv:2202.00282): Conditions I-IV, plus the fitted tail q of q-PseudoSpike (docs/surrogates.md)
FFNActivation = Literal[Activation, "sin", "cos", "linear"]
FFNInit = Literal["glorot", "he", "orthogonal"]


@dataclass
class ModelConfig:
    """What network to build. Fields a cell kind does not use are ignored by it; every value is checked on
    construction (``ValueError`` naming the field and the allowed values)."""

    cell: CellKind = option("lstm", "layer kind (the *_rnn are Elman cells; ffn: a feed-forward net on the "
                            "flattened sequence)")
    layers: int = option(2, "number of stacked layers")
    width: int = option(128, "units per layer")
    encoder: EncoderKind = option("auto", "input encoder; auto: embedding for token tasks, identity otherwise")
    embedding_size: int | None = option(None, "encoder output size for encoder=embedding/linear (default: width)")
    readout: ReadoutKind = option("linear", "per-step readout: linear, or tied to the embedding")
    residual: bool = option(False, "add each layer's input to its output where the widths match")
    dropout: float = option(0.0, "dropout before every recurrent layer, in [0, 1)")
    tau: float = option(20.0, "[lif, alif] membrane time constant in steps (the papers' code: 0.1)")
    tau_adapt: float | None = option(None, "[alif] adaptation time constant in steps (default: half the sequence "
                                     "length)")
    threshold: float = option(1.0, "[lif, alif] firing threshold")
    beta: float = option(1.8, "[alif] adaptation strength: how much each spike raises the threshold")
    reset: Reset = option("subtract", "[lif, alif] reset after a spike")
    detach_reset: bool = option(True, "[lif, alif] no gradient through the reset")
    surrogate: SurrogateName = option("fast_sigmoid", "[lif, alif] surrogate-gradient shape (or another "
                                      "library's alias); docs/surrogates.md")
    dampening: float = option(1.0, "[lif, alif] surrogate peak gamma = f(0)")
    sharpness: float = option(1.0, "[lif, alif] surrogate sharpness s: its area is gamma/s")
    tail: float | None = option(None, "[lif, alif] tail q of q_pseudospike, > 1 (default: 1.56)")
    learn_tau: bool = option(False, "[lif, alif] learn the time constants")
    learn_threshold: bool = option(False, "[lif, alif] learn the thresholds")
    # paper B (arXiv:2202.00282): III/IV/tail set the surrogate's dampening / sharpness / tail, I/II the
    # recurrent weights of every LIF/ALIF layer at build time
    conditions: tuple[Condition, ...] = option((), "[lif, alif] stability conditions applied at build time")
    condition_fallback: NoRoot = option("clip", "[lif, alif] Condition IV / tail without a root in range: clip "
                                        "(least-violating value of the model), match (re-solve on simulated "
                                        "voltages) or raise; docs/surrogates.md")
    r_min: float = option(0.4, "[lru, reslru] smallest eigenvalue modulus at init")
    r_max: float = option(0.99, "[lru, reslru] largest eigenvalue modulus at init")
    max_phase: float = option(math.pi / 10, "[lru, reslru] largest eigenvalue phase at init (radians)")
    state_size: int | None = option(None, "[lru, reslru] complex state size (default: width)")
    activation: FFNActivation = option("relu", "[ffn] activation of the hidden layers")
    init: FFNInit = option("glorot", "[ffn] weight init: glorot or he (normal), or orthogonal")
    # low-rank + sparse recurrence (Tumma et al. 2023, arXiv:2310.03915): W_hh = (U V^T) * M per gate block
    recurrent_rank: int | None = option(None, "[matrix recurrences] rank r of the recurrent weight (None: dense)")
    recurrent_density: float = option(1.0, "[matrix recurrences] density p of the recurrent weight's sparse mask, "
                                      "in (0, 1]")
    recurrent_radius: float | None = option(None, "[matrix recurrences] initial spectral radius of a low-rank/sparse "
                                            "recurrent weight (None: the dense init's)")
    # StableSSM (Wang & Li 2023, arXiv:2311.14495): how the LRU's eigenvalue moduli are parameterised
    reparam: Reparam = option("exp", "[lru, reslru] eigenvalue modulus map: exp = exp(-exp(nu)), softplus, or "
                              "the paper's best")
    # the stabilisers users use today (stablernn.inits), side by side with LSC
    rec_init: RecInit = option("default", "[elman, gru, lstm] recurrent matrix: the cell's own, orthogonal per gate "
                               "block, or identity (IRNN, arXiv:1504.00941)")
    chrono: bool = option(False, "[lstm, gru] chrono init of the gate biases (arXiv:1804.11188)")
    chrono_t_max: float | None = option(None, "[lstm, gru] longest memory chrono init aims at, in steps (None: the "
                                        "task's sequence length)")
    layer_norm: bool = option(False, "[elman, gru, lstm] layer norm inside the cell (the fused kernels then fall "
                              "back to the step loop)")
    lsuv: bool = option(False, "LSUV data-dependent scaling of every layer's input weights (arXiv:1511.06422), "
                        "applied by train before LSC")

    def __post_init__(self) -> None:
        validate_model_config(self)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the field and the allowed values."""
    check_fields(cfg)
    for name in ("layers", "width"):
        v = getattr(cfg, name)
        require(v >= 1, f"{name} must be a positive integer, got {v!r}")
    for name in ("embedding_size", "state_size"):
        v = getattr(cfg, name)
        require(v is None or v >= 1, f"{name} must be a positive integer or None, got {v!r}")
    require(0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}")
    require(cfg.tau > 0, f"tau must be > 0 (steps), got {cfg.tau}")
    require(cfg.tau_adapt is None or cfg.tau_adapt > 0,
            f"tau_adapt must be > 0 (steps), got {cfg.tau_adapt}")
    require(cfg.dampening > 0 and cfg.sharpness > 0,
            f"dampening and sharpness must be > 0, got {cfg.dampening} and {cfg.sharpness}")
    require(cfg.tail is None or cfg.tail > 1, f"tail q must be > 1, got {cfg.tail}")
    require(0.0 <= cfg.r_min <= cfg.r_max <= 1.0,
            f"need 0 <= r_min <= r_max <= 1, got r_min={cfg.r_min}, r_max={cfg.r_max}")
    if cfg.conditions and cfg.cell not in (*SPIKING_CELLS, "decolle"):
        raise ValueError(f"conditions apply to spiking cells (lif, alif, decolle), not to cell {cfg.cell!r}")
    low_rank = cfg.recurrent_rank is not None or cfg.recurrent_density != 1.0 or cfg.recurrent_radius is not None
    if low_rank and cfg.cell not in MATRIX_RECURRENT_KINDS:
        raise ValueError(f"recurrent_rank / recurrent_density / recurrent_radius apply to cells with a recurrent "
                         f"weight matrix ({', '.join(MATRIX_RECURRENT_KINDS)}), not to {cfg.cell!r}")
    if low_rank and {"I", "II"} & set(cfg.conditions):
        raise ValueError("conditions I/II draw dense recurrent weights; drop them or the low-rank + sparse options")
    require(cfg.recurrent_rank is None or 1 <= cfg.recurrent_rank <= cfg.width,
            f"recurrent_rank must be an integer in 1..width ({cfg.width}), got {cfg.recurrent_rank!r}")
    require(0.0 < cfg.recurrent_density <= 1.0, f"recurrent_density must be in (0, 1], got {cfg.recurrent_density}")
    require(cfg.recurrent_radius is None or cfg.recurrent_radius >= 0.0,
            f"recurrent_radius must be >= 0 (None: the dense init's radius), got {cfg.recurrent_radius}")
    classic = CLASSIC_KINDS
    if cfg.rec_init != "default" and cfg.cell not in classic:
        raise ValueError(f"rec_init={cfg.rec_init!r} applies to {', '.join(classic)}, not to cell {cfg.cell!r}; "
                         "use rec_init='default'")
    if cfg.chrono and cfg.cell not in ("lstm", "gru"):
        raise ValueError(f"chrono init applies to lstm and gru, not to cell {cfg.cell!r}; set chrono=False")
    if cfg.chrono_t_max is not None and not cfg.chrono_t_max > 2:
        raise ValueError(f"chrono_t_max must be > 2 steps (or None for the task's seq_len), got {cfg.chrono_t_max}")
    if cfg.layer_norm and cfg.cell not in classic:
        raise ValueError(f"layer_norm applies to {', '.join(classic)}, not to cell {cfg.cell!r}; set "
                         "layer_norm=False")
    if cfg.lsuv and cfg.cell in ("lru", "reslru", "ffn"):
        raise ValueError(f"lsuv scales input weights (weight_ih), which cell {cfg.cell!r} does not have; set "
                         "lsuv=False")


def make_cell(cfg: ModelConfig, input_size: int, hidden_size: int, seq_len: int = 100) -> nn.Module:
    """One layer of kind ``cfg.cell`` (with the low-rank + sparse recurrent weight when the config asks for it)."""
    cell = _make_base_cell(cfg, input_size, hidden_size, seq_len)
    if cfg.recurrent_rank is not None or cfg.recurrent_density != 1.0 or cfg.recurrent_radius is not None:
        from .cells.lowrank import low_rank_sparse_

        low_rank_sparse_(cell, cfg.recurrent_rank, cfg.recurrent_density, cfg.recurrent_radius)
    return cell


def _make_base_cell(cfg: ModelConfig, input_size: int, hidden_size: int, seq_len: int) -> nn.Module:
    kind = cfg.cell
    if kind in ("ligru", "ligru_stable"):
        return LiGRUCell(input_size, hidden_size, stable=kind == "ligru_stable")
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size, layer_norm=cfg.layer_norm)
    if kind == "gru":
        return GRUCell(input_size, hidden_size, layer_norm=cfg.layer_norm)
    if kind in ELMAN_KINDS:
        return ElmanCell(input_size, hidden_size, activation=kind[: -len("_rnn")],  # type: ignore[arg-type]
                         layer_norm=cfg.layer_norm)
    if kind in ("lif", "alif", "decolle", "spiking_lstm"):
        from .surrogate import get

        spike = get(cfg.surrogate, cfg.dampening, cfg.sharpness, cfg.tail)
        if kind == "spiking_lstm":
            # cfg.threshold is the LIF/ALIF membrane threshold; the spiking LSTM's ϑ on its cell state keeps its own
            return SpikingLSTMCell(input_size, hidden_size, spike=spike)
        common = {"tau": cfg.tau, "threshold": cfg.threshold, "reset": cfg.reset, "detach_reset": cfg.detach_reset,
                      "spike": spike, "learn_tau": cfg.learn_tau, "learn_threshold": cfg.learn_threshold}
        if kind == "lif":
            return LIFCell(input_size, hidden_size, **common)
        if kind == "decolle":
            return DecolleCell(input_size, hidden_size, **common)
        tau_a = cfg.tau_adapt if cfg.tau_adapt is not None else default_tau_adapt(seq_len)
        return ALIFCell(input_size, hidden_size, beta=cfg.beta, tau_adapt=tau_a, **common)
    lru = {"r_min": cfg.r_min, "r_max": cfg.r_max, "max_phase": cfg.max_phase, "reparam": cfg.reparam}
    if kind == "lru":
        return LRUCell(input_size, hidden_size, cfg.state_size, **lru)
    if kind == "reslru":
        return ResLRUCell(input_size, hidden_size, cfg.state_size, **lru)
    raise ValueError(f"unknown cell {kind!r}; choose one of {', '.join(CELL_KINDS)}")


def build_model(cfg: ModelConfig, task: TaskInfo | None = None, *, input_size: int | None = None,
                output_size: int | None = None, seq_len: int | None = None, tokens: bool | None = None,
                seed: int = 0) -> nn.Module:
    """The one builder: the network ``cfg`` describes for ``task`` (its sizes, sequence length, input kind and input
    statistics), with ``cfg.conditions`` applied to its spiking layers (paper B, arXiv:2202.00282, Conditions
    I-IV and the tail fit; the first layer reads :func:`stablernn.snn.stats.task_stats`, the condition draws use
    ``seed``). Everything that makes a network from a config (``train``, ``diagnose --run``, ``dynamics --run``,
    reports, ``load_run``) comes through here, so they all get the same network.

    Without ``task``, give ``input_size`` and ``output_size`` (``seq_len`` defaults to 100, ``tokens`` to False);
    conditions then need a ``task`` for the input statistics. Explicit sizes override the task's.
    """
    if task is None and (input_size is None or output_size is None):
        raise ValueError("build_model needs a task (TaskInfo) or both input_size and output_size")
    input_size = int(input_size if input_size is not None else task.input_size)
    output_size = int(output_size if output_size is not None else task.output_size)
    seq_len = int(seq_len if seq_len is not None else (task.seq_len if task is not None else 100))
    tokens = bool(tokens if tokens is not None else (task is not None and task.input_kind == "tokens"))
    model = init_model_(_architecture(cfg, input_size, output_size, seq_len, tokens), cfg, seq_len)
    if cfg.conditions:
        if task is None:
            raise ValueError(f"conditions {list(cfg.conditions)} need the task's input statistics: pass the task "
                             "(build_model(cfg, data.info))")
        design = DesignConfig(shape=cfg.surrogate, conditions=tuple(cfg.conditions), dampening=cfg.dampening,
                              sharpness=cfg.sharpness, tail=cfg.tail, on_no_root=cfg.condition_fallback)
        apply_design_(model, design_model(model, task_stats(task), design, seed=seed, seq_len=seq_len))
    return model


def _architecture(cfg: ModelConfig, input_size: int, output_size: int, seq_len: int, tokens: bool) -> nn.Module:
    if cfg.cell == "ffn":
        return FFN(cfg.layers, cfg.width, input_size=input_size * (seq_len if not tokens else 1),
                   output_size=output_size, activation=cfg.activation, init=cfg.init)  # type: ignore[arg-type]
    encoder = cfg.encoder
    if encoder == "auto":
        encoder = "embedding" if tokens else "identity"
    if tokens and encoder != "embedding":
        raise ValueError("token inputs need encoder='embedding' (or 'auto')")
    # a learned encoder maps to the first layer's input width; identity feeds the task's features as they are
    first_in = (cfg.embedding_size or cfg.width) if encoder in ("embedding", "linear") else input_size
    cells, in_size = [], first_in
    for _ in range(cfg.layers):
        cell = make_cell(cfg, in_size, cfg.width, seq_len)
        cells.append(cell)
        in_size = output_size_of(cell)
    return DeepRNN(cells, input_size=input_size, output_size=output_size, encoder=encoder, readout=cfg.readout,
                   residual=cfg.residual, dropout=cfg.dropout)


# --- helpers every consumer of a stack uses ------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (dropout off) while measuring or taking Jacobians (random ops cannot run under ``vmap``); restores
    each submodule's own mode after."""
    if not isinstance(module, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.train(mode)


def detach_states(states: list[Any]) -> list[Any]:
    """States with every piece detached (carried between steps without backpropagating across them)."""
    return [type(s)(*[p.detach() for p in s]) for s in states]


def param_dtype(module: Any, default: torch.dtype | None = None) -> torch.dtype | None:
    """The dtype of a module's first parameter (``default`` for a module without parameters)."""
    ref = next(iter(module.parameters()), None) if isinstance(module, nn.Module) else None
    return ref.dtype if ref is not None else default


# --- one view of anything steppable ----------------------------------------------------------------------------
StackAdapter = tuple[Callable[[Any], bool], Callable[[Any], "DeepRNN"]]
_STACK_ADAPTERS: list[StackAdapter] = []


def register_stack_adapter(can_adapt: Callable[[Any], bool], adapt: Callable[[Any], DeepRNN]) -> None:
    """Let :func:`as_stack` take other models (``stablernn.adapters`` registers torch.nn, snnTorch, Norse, ...):
    a layer above this one plugs in without this module importing it."""
    _STACK_ADAPTERS.append((can_adapt, adapt))


def as_stack(model: Any) -> DeepRNN:
    """The ``DeepRNN`` every stack consumer steps: a ``DeepRNN`` as is; a bare cell as a one-layer stack without
    readout (sharing the cell's parameters); any other model through a registered adapter. Raises ``TypeError``
    saying what is supported."""
    if isinstance(model, DeepRNN):
        return model
    if isinstance(model, nn.Module) and isinstance(model, CellProtocol):
        return DeepRNN([model], input_size=int(model.input_size), output_size=output_size_of(model),
                       readout="none")
    for can_adapt, adapt in _STACK_ADAPTERS:
        if can_adapt(model):
            return adapt(model)
    raise TypeError(f"{type(model).__name__} is neither a stack of cells (DeepRNN), a cell (initial_state, forward, "
                    "stability_state, with_stability_state, input_size, hidden_size; see stablernn.cells.base), an "
                    "FFN, nor a model an adapter in stablernn.adapters recognises; check_cell(model) says what a cell "
                    "lacks")
