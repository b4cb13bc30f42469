"""Deep recurrent stacks and deep feed-forward nets, and the typed config that builds them.

Everything is batch-first: sequences are ``[batch, time, features]`` (``[batch, time]`` token ids for embeddings).
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
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
from .cells.base import State
from .cells.rnn import activation_fn
from .cells.spiking import default_tau_adapt

EncoderKind = Literal["auto", "identity", "linear", "embedding"]
ReadoutKind = Literal["linear", "tied"]


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
        readout: ``linear`` per step, or ``tied`` to the embedding (``logits = h E^T + b``; needs the last layer's
            width to equal the embedding size).
        residual: add each layer's input to its output where the widths match.
        dropout: dropout before every recurrent layer (the first included), as in the papers' code.
    """

    def __init__(self, cells: Sequence[nn.Module], *, input_size: int, output_size: int,
                 encoder: EncoderKind | nn.Module = "identity", readout: ReadoutKind = "linear",
                 residual: bool = False, dropout: float = 0.0):
        super().__init__()
        if len(cells) == 0:
            raise ValueError("DeepRNN needs at least one cell")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
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
        else:
            raise ValueError(f"unknown readout {readout!r}; choose linear or tied")

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

    def decode(self, h: Tensor) -> Tensor:
        """Last layer's output -> logits, per step (``[..., out_L] -> [..., C]``)."""
        if self.readout is None:
            return F.linear(h, self.encoder.weight, self.readout_bias)
        return self.readout(h)

    def layer_input(self, l: int, inp: Tensor) -> Tensor:
        """What layer ``l`` receives from below (dropout applied in training mode)."""
        return F.dropout(inp, self.dropout, self.training) if self.dropout > 0 else inp

    def layer_output(self, l: int, out: Tensor, inp: Tensor) -> Tensor:
        """What layer ``l`` passes up: its cell output, plus its input if residual and the widths match."""
        if self.residual and out.shape[-1] == inp.shape[-1]:
            return out + inp
        return out

    def step(self, x_t: Tensor, states: list[State]) -> tuple[Tensor, list[State], list[Tensor]]:
        """One time step through every layer: ``x_t [B, F]`` (or ``[B]`` ids) ->
        ``(logits_t [B, C], new states, per-layer outputs [B, out_l])``."""
        h = self.encode(x_t)
        new_states, outs = [], []
        for l, cell in enumerate(self.cells):
            inp = self.layer_input(l, h)
            out, st = cell(inp, states[l])
            h = self.layer_output(l, out, inp)
            new_states.append(st)
            outs.append(h)
        return self.decode(h), new_states, outs

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
            seq = getattr(cell, "forward_sequence", None)
            if seq is not None:
                out, st = seq(inp, states[l])
            else:
                from .cells.base import run_steps

                out, st = run_steps(cell, inp, states[l])
            h = self.layer_output(l, out, inp)
            new_states.append(st)
            layer_outputs.append(h)
        return ModelOutput(self.decode(h), new_states, layer_outputs)

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
    """Deep feed-forward net (spec §2.6): ``depth`` x [Linear(width) -> activation] -> Linear(output).

    ``init``: ``glorot`` (normal, variance 2/(fan_in+fan_out)), ``he`` (normal, 2/fan_in) or ``orthogonal``;
    biases 0. Inputs ``[B, F]`` or sequences ``[B, T, F]`` (flattened to ``[B, T*F]``); output ``[B, C]``.
    """

    def __init__(self, depth: int, width: int, *, input_size: int, output_size: int, activation: str = "relu",
                 init: Literal["glorot", "he", "orthogonal"] = "glorot"):
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
CELL_KINDS: tuple[str, ...] = ("lstm", "gru", "relu_rnn", "sigmoid_rnn", "tanh_rnn", "swish_rnn", "lif", "alif",
                               "lru", "reslru", "ffn", "ligru", "ligru_stable", "spiking_lstm", "decolle")
# kinds whose recurrence is a weight matrix ``weight_hh`` (the low-rank + sparse option applies to them)
MATRIX_RECURRENT_KINDS: tuple[str, ...] = tuple(k for k in CELL_KINDS if k not in ("lru", "reslru", "ffn"))


@dataclass
class ModelConfig:
    """What network to build. Fields a cell kind does not use are ignored by it."""

    cell: str = "lstm"  # one of CELL_KINDS
    layers: int = 2
    width: int = 128
    encoder: EncoderKind = "auto"  # auto: embedding for token tasks, identity otherwise
    embedding_size: int | None = None  # for encoder="embedding" (default: width)
    readout: ReadoutKind = "linear"
    residual: bool = False
    dropout: float = 0.0
    # spiking cells (lif, alif)
    tau: float = 20.0  # membrane time constant in steps (the papers' code: 0.1)
    tau_adapt: float | None = None  # ALIF adaptation time constant in steps; None = half the sequence length
    threshold: float = 1.0
    beta: float = 1.8
    reset: str = "subtract"  # subtract | multiplicative | mult_leak
    detach_reset: bool = True
    surrogate: str = "fast_sigmoid"
    dampening: float = 1.0
    sharpness: float = 1.0
    tail: float | None = None  # q of q_pseudospike
    learn_tau: bool = False
    learn_threshold: bool = False
    # stability conditions (paper B, spec §4) applied to every LIF/ALIF layer at build time: any of I, II, III, IV,
    # tail; III/IV/tail set the surrogate's dampening / sharpness / tail, I/II the recurrent weights
    conditions: tuple[str, ...] = ()
    # LRU
    r_min: float = 0.4
    r_max: float = 0.99
    max_phase: float = math.pi / 10
    state_size: int | None = None
    # ffn
    activation: str = "relu"
    init: str = "glorot"
    # low-rank + sparse recurrence (Tumma et al. 2023, arXiv:2310.03915): W_hh = (U V^T) ⊙ M per gate block, rank r,
    # mask density p, initial spectral radius (None: the dense init's); any kind in MATRIX_RECURRENT_KINDS
    recurrent_rank: int | None = None
    recurrent_density: float = 1.0
    recurrent_radius: float | None = None
    # LRU / ResLRU eigenvalue-modulus map (StableSSM, Wang & Li 2023, arXiv:2311.14495): exp = exp(-exp(ν))
    reparam: Literal["exp", "softplus", "best"] = "exp"

    def __post_init__(self) -> None:
        validate_model_config(self)


def validate_model_config(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the field and the allowed values."""
    if cfg.cell not in CELL_KINDS:
        raise ValueError(f"unknown cell {cfg.cell!r}; choose one of {', '.join(CELL_KINDS)}")
    for name in ("layers", "width"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.encoder not in ("auto", "identity", "linear", "embedding"):
        raise ValueError(f"unknown encoder {cfg.encoder!r}; choose auto, identity, linear or embedding")
    if cfg.readout not in ("linear", "tied"):
        raise ValueError(f"unknown readout {cfg.readout!r}; choose linear or tied")
    from .cells.spiking import RESETS
    from .surrogate import names

    if cfg.reset not in RESETS:
        raise ValueError(f"unknown reset {cfg.reset!r}; choose one of {', '.join(RESETS)}")
    if cfg.surrogate not in names():
        raise ValueError(f"unknown surrogate {cfg.surrogate!r}; choose one of {', '.join(names())}")
    if cfg.tau <= 0:
        raise ValueError(f"tau must be > 0 (steps), got {cfg.tau}")
    if cfg.tau_adapt is not None and cfg.tau_adapt <= 0:
        raise ValueError(f"tau_adapt must be > 0 (steps), got {cfg.tau_adapt}")
    allowed = ("I", "II", "III", "IV", "tail")
    if not set(cfg.conditions) <= set(allowed):
        raise ValueError(f"unknown condition(s) {sorted(set(cfg.conditions) - set(allowed))}; choose from "
                         f"{', '.join(allowed)}")
    if cfg.conditions and cfg.cell not in ("lif", "alif", "decolle"):
        raise ValueError(f"conditions apply to spiking cells (lif, alif, decolle), not to cell {cfg.cell!r}")
    low_rank = cfg.recurrent_rank is not None or cfg.recurrent_density != 1.0 or cfg.recurrent_radius is not None
    if low_rank and cfg.cell not in MATRIX_RECURRENT_KINDS:
        raise ValueError(f"recurrent_rank / recurrent_density / recurrent_radius apply to cells with a recurrent "
                         f"weight matrix ({', '.join(MATRIX_RECURRENT_KINDS)}), not to {cfg.cell!r}")
    if low_rank and cfg.conditions and {"I", "II"} & set(cfg.conditions):
        raise ValueError("conditions I/II draw dense recurrent weights; drop them or the low-rank + sparse options")
    if cfg.recurrent_rank is not None and (not isinstance(cfg.recurrent_rank, int) or cfg.recurrent_rank < 1
                                           or cfg.recurrent_rank > cfg.width):
        raise ValueError(f"recurrent_rank must be an integer in 1..width ({cfg.width}), got {cfg.recurrent_rank!r}")
    if not 0.0 < cfg.recurrent_density <= 1.0:
        raise ValueError(f"recurrent_density must be in (0, 1], got {cfg.recurrent_density}")
    if cfg.recurrent_radius is not None and not cfg.recurrent_radius >= 0.0:
        raise ValueError(f"recurrent_radius must be >= 0 (None: the dense init's radius), got {cfg.recurrent_radius}")
    from .cells.lru import REPARAMS

    if cfg.reparam not in REPARAMS:
        raise ValueError(f"unknown reparam {cfg.reparam!r}; choose one of {', '.join(REPARAMS)}")
    if cfg.init not in ("glorot", "he", "orthogonal"):
        raise ValueError(f"unknown init {cfg.init!r}; choose glorot, he or orthogonal")


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
        return LSTMCell(input_size, hidden_size)
    if kind == "gru":
        return GRUCell(input_size, hidden_size)
    if kind.endswith("_rnn"):
        return ElmanCell(input_size, hidden_size, activation=kind[: -len("_rnn")])  # type: ignore[arg-type]
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


def build_model(cfg: ModelConfig, *, input_size: int, output_size: int, seq_len: int = 100,
                tokens: bool = False) -> nn.Module:
    """The network ``cfg`` describes, for a task with ``input_size`` features (or vocabulary, if ``tokens``)."""
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


def config_fields(cls: type) -> list[str]:
    """Names of a config dataclass's fields (for CLIs and files)."""
    return [f.name for f in fields(cls)]


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
