"""User models written the way researchers write them with torch.nn, snnTorch and Norse (no stablernn code), for
tests/test_adapters.py and docs/your-model.md. Children are assigned in the order ``forward`` uses them."""
from __future__ import annotations

import torch
from torch import nn


class TorchRNNNet(nn.Module):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` + a per-step ``nn.Linear`` readout; ``x [B, T, F] -> [B, T, C]``."""

    def __init__(self, kind: str = "LSTM", inputs: int = 8, width: int = 16, layers: int = 3, classes: int = 10,
                 **options):
        super().__init__()
        self.rnn = getattr(nn, kind)(inputs, width, num_layers=layers, batch_first=True, **options)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0])


class SnnTorchNet(nn.Module):
    """2 x (``nn.Linear`` + ``snntorch.RLeaky``) + readout, snnTorch's tutorial style; ``x [B, T, F] -> [B, T, C]``."""

    def __init__(self, inputs: int = 8, width: int = 16, classes: int = 10, beta: float = 0.9, **neuron):
        import snntorch as snn

        super().__init__()
        self.fc1 = nn.Linear(inputs, width)
        self.lif1 = snn.RLeaky(beta=beta, linear_features=width, **neuron)
        self.fc2 = nn.Linear(width, width)
        self.lif2 = snn.RLeaky(beta=beta, linear_features=width, **neuron)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spk1, mem1 = self.lif1.init_rleaky()
        spk2, mem2 = self.lif2.init_rleaky()
        outs = []
        for x_t in x.unbind(1):
            spk1, mem1 = self.lif1(self.fc1(x_t), spk1, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), spk2, mem2)
            outs.append(self.out(spk2))
        return torch.stack(outs, 1)


class NorseNet(nn.Module):
    """2 x a Norse recurrent cell (``LIFRecurrentCell`` by default, or ``LSNNRecurrentCell``) + readout;
    ``x [B, T, F] -> [B, T, C]``."""

    def __init__(self, inputs: int = 8, width: int = 16, classes: int = 10, cell: str = "LIFRecurrentCell"):
        import norse.torch as norse

        super().__init__()
        self.l1 = getattr(norse, cell)(inputs, width)
        self.l2 = getattr(norse, cell)(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = s2 = None
        outs = []
        for x_t in x.unbind(1):
            z1, s1 = self.l1(x_t, s1)
            z2, s2 = self.l2(z1, s2)
            outs.append(self.out(z2))
        return torch.stack(outs, 1)


class DiagonalRecurrence(nn.Module):
    """A hand-written diagonal linear recurrence ``h[t] = a ⊙ h[t-1] + B x[t]``, ``y[t] = C h[t]`` with only a
    sequence ``forward``; no stablernn base class."""

    def __init__(self, inputs: int = 8, width: int = 16, classes: int = 10):
        super().__init__()
        self.a = nn.Parameter(torch.empty(width).uniform_(0.8, 0.99))
        self.B = nn.Linear(inputs, width)
        self.C = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.a.shape[0])
        ys = []
        for x_t in x.unbind(1):
            h = self.a * h + self.B(x_t)
            ys.append(self.C(h))
        return torch.stack(ys, 1)


def diagonal_step(m: DiagonalRecurrence, x_t: torch.Tensor, state: tuple[torch.Tensor, ...]):
    """One step of :class:`DiagonalRecurrence` for the generic step protocol."""
    h = m.a * state[0] + m.B(x_t)
    return h, (h,)


def diagonal_scale(m: DiagonalRecurrence, k: float) -> None:
    """τ → k·τ for the decays ``a = ±e^{-1/τ}``: ``|a| → |a|^(1/k)`` (LSC's time-constant hook, in place)."""
    m.a.copy_(m.a.sign() * m.a.abs().pow(1.0 / k))
