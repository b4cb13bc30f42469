"""LSC pre-training (paper A, arXiv:2308.12075): transitions of a model, their radii (dense and matrix-free), the
pre-training loop and its report, and the depth x time path theory. See docs/lsc.md."""
from .config import FAMILIES, LSCConfig
from .measures import Transition, WarmState, transition_measure, warm_norm, warm_radius
from .pretrain import LSCReport, lsc_loss, lsc_pretrain
from .radii import RadiiTrace, radii_over_time
from .transitions import rnn_transitions

__all__ = [
           "FAMILIES",
           "LSCConfig",
           "LSCReport",
           "RadiiTrace",
           "Transition",
           "WarmState",
           "lsc_loss",
           "lsc_pretrain",
           "radii_over_time",
           "rnn_transitions",
           "transition_measure",
           "warm_norm",
           "warm_radius",
]
