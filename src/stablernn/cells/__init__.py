"""Recurrent cells on one explicit-state step interface (see ``base.py``)."""
from .base import MIN_TIME_CONSTANT, Cell, CellProtocol, check_cell, output_size, run_steps
from .decolle import DecolleCell, is_local
from .fast_gated import gru_sequence, lstm_sequence
from .fast_spiking import spiking_sequence
from .gated import GRUCell, LSTMCell, LSTMState
from .ligru import LiGRUCell, ligru_step
from .lowrank import LowRankSparse, is_low_rank_sparse, low_rank_sparse_, spectral_radius
from .lru import REPARAMS, LRUCell, LRUState, ResLRUCell, lru_modulus, lru_nu
from .rnn import ElmanCell, HState
from .scan import diagonal_recurrence, diagonal_scan, lru_sequence
from .spiking import ALIFCell, ALIFState, LIFCell, LIFState, decay_from_tau, spiking_step, tau_from_decay
from .spiking_lstm import SpikingLSTMCell, SpikingLSTMState, spiking_lstm_step

__all__ = [
    "MIN_TIME_CONSTANT",
    "REPARAMS",
    "ALIFCell",
    "ALIFState",
    "Cell",
    "CellProtocol",
    "DecolleCell",
    "ElmanCell",
    "GRUCell",
    "HState",
    "LIFCell",
    "LIFState",
    "LRUCell",
    "LRUState",
    "LSTMCell",
    "LSTMState",
    "LiGRUCell",
    "LowRankSparse",
    "ResLRUCell",
    "SpikingLSTMCell",
    "SpikingLSTMState",
    "check_cell",
    "decay_from_tau",
    "diagonal_recurrence",
    "diagonal_scan",
    "gru_sequence",
    "is_local",
    "is_low_rank_sparse",
    "ligru_step",
    "low_rank_sparse_",
    "lru_modulus",
    "lru_nu",
    "lru_sequence",
    "lstm_sequence",
    "output_size",
    "run_steps",
    "spectral_radius",
    "spiking_lstm_step",
    "spiking_sequence",
    "spiking_step",
    "tau_from_decay",
]
