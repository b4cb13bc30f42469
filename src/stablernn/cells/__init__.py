"""Recurrent cells on one explicit-state step interface (see ``base.py``)."""
from .base import MIN_TIME_CONSTANT, Cell, CellProtocol, check_cell, output_size, run_steps
from .fast_gated import gru_sequence, lstm_sequence
from .fast_spiking import spiking_sequence
from .gated import GRUCell, LSTMCell, LSTMState
from .lru import LRUCell, LRUState, ResLRUCell
from .rnn import ElmanCell, HState
from .scan import diagonal_recurrence, diagonal_scan, lru_sequence
from .spiking import ALIFCell, ALIFState, LIFCell, LIFState, decay_from_tau, spiking_step, tau_from_decay

__all__ = [
    "MIN_TIME_CONSTANT",
    "ALIFCell",
    "ALIFState",
    "Cell",
    "CellProtocol",
    "ElmanCell",
    "GRUCell",
    "HState",
    "LIFCell",
    "LIFState",
    "LRUCell",
    "LRUState",
    "LSTMCell",
    "LSTMState",
    "ResLRUCell",
    "check_cell",
    "decay_from_tau",
    "diagonal_recurrence",
    "diagonal_scan",
    "gru_sequence",
    "lru_sequence",
    "lstm_sequence",
    "output_size",
    "run_steps",
    "spiking_sequence",
    "spiking_step",
    "tau_from_decay",
]
