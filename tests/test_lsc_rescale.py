"""LSC's closed-form weight rescaling (issue 13, item 3; ``LSCConfig.rescale_weights``, docs/lsc.md "Fewer steps"):
which weight feeds which transition, the exact move on a linear net, models without the capability, the config, the
Lookahead slow copy, and the activity guard."""
from __future__ import annotations

from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn

from stablernn.lsc.activity import spiking_rates
from stablernn.lsc.config import LSCConfig
from stablernn.lsc.pretrain import lsc_pretrain, make_lsc_optimizer, rescalable_weights, rescale_weights_
from stablernn.lsc.radii import radii_over_time
from stablernn.models import DeepRNN, ModelConfig, build_model
from user_cell import LeakyTanhCell

torch.set_num_threads(1)


class _H(NamedTuple):
    h: Tensor


class LinearElman(nn.Module):
    """``h' = W_ih x + W_hh h``: an Elman cell with the identity activation, written as a user's cell that offers
    the two capabilities by its attributes only (``weight_ih``, ``weight_hh``)."""

    def __init__(self, n_in: int, n: int):
        super().__init__()
        self.input_size, self.hidden_size = n_in, n
        self.weight_ih = nn.Parameter(torch.randn(n, n_in) / n_in**0.5)
        self.weight_hh = nn.Parameter(torch.randn(n, n) / n**0.5)

    def initial_state(self, batch_size: int, *, device: Any = None, dtype: Any = None) -> _H:
        return _H(torch.zeros(batch_size, self.hidden_size, device=device,
                              dtype=dtype or self.weight_hh.dtype))

    def forward(self, x: Tensor, state: _H) -> tuple[Tensor, _H]:
        h = x @ self.weight_ih.T + state.h @ self.weight_hh.T
        return h, _H(h)

    def output(self, state: _H) -> Tensor:
        return state.h

    def stability_state(self, state: _H) -> Tensor:
        return state.h

    def with_stability_state(self, state: _H, s: Tensor) -> _H:
        return _H(s)


def _batches(digits, n: int = 2) -> list[tuple[Tensor, Tensor]]:
    digits.train.set_epoch(0)
    return [b for _, b in zip(range(n), digits.train, strict=False)]


def _model(kind: str, layers: int = 2, width: int = 16, seed: int = 0, **extra: Any) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(cell=kind, layers=layers, width=width, **extra), input_size=8, output_size=10,
                       seq_len=8)


def _keyed(means: dict[str, list[float]], L: int) -> dict[tuple[str, int], float]:
    first = {"depth": 1, "decoder": L - 1}
    return {(f, first.get(f, 0) + i): r for f, v in means.items() for i, r in enumerate(v)}


def test_rescale_moves_linear_radii_exactly_as_predicted(digits):
    """On a linear net every Jacobian is a weight (time W_hh, depth / encoder W_ih, decoder W_out), so one round
    multiplies each measured radius by exactly target / radius: every family lands on its target."""
    torch.manual_seed(0)
    model = DeepRNN([LinearElman(8, 12), LinearElman(12, 12), LinearElman(12, 12)], input_size=8,
                    output_size=10).double()
    x = _batches(digits, 1)[0][0][:8].double()
    before = radii_over_time(model, x, engine="exact", steps=3).mean()
    targets = {"time": 0.5, "depth": 0.7, "encoder": 0.6, "decoder": 1.0}
    done = rescale_weights_(model, _keyed(before, 3), targets, low=0.01, high=100.0)
    assert set(done) == {("encoder", 0), ("depth", 1), ("depth", 2), ("time", 0), ("time", 1), ("time", 2),
                         ("decoder", 2)}
    after = radii_over_time(model, x, engine="exact", steps=3).mean()
    for fam, target in targets.items():
        for b, a in zip(before[fam], after[fam], strict=True):
            assert abs(b - target) > 0.05  # there was a gap to close
            assert a == pytest.approx(target, rel=1e-6), (fam, b, a)  # the trace keeps float32


def test_rescale_clip_bounds_the_move(digits):
    torch.manual_seed(0)
    model = DeepRNN([LinearElman(8, 12), LinearElman(12, 12)], input_size=8, output_size=10).double()
    w = model.cells[1].weight_hh.detach().clone()
    done = rescale_weights_(model, {("time", 1): 4.0}, {"time": 0.5}, low=0.85, high=1.15)
    assert done == {("time", 1): 0.85}
    assert torch.allclose(model.cells[1].weight_hh, 0.85 * w)


def test_which_weight_feeds_which_transition():
    gru, lstm, lif = _model("gru"), _model("lstm"), _model("lif")
    w = rescalable_weights(gru)
    assert w[("encoder", 0)] is gru.cells[0].weight_ih and w[("depth", 1)] is gru.cells[1].weight_ih
    assert w[("time", 1)] is gru.cells[1].weight_hh and w[("decoder", 1)] is gru.readout.weight
    # cells with a clock of their own (scale_time_constants: the LSTM's forget gate, a LIF's τ) keep it for time
    assert ("time", 0) not in rescalable_weights(lstm) and ("depth", 1) in rescalable_weights(lstm)
    assert not any(k[0] == "time" for k in rescalable_weights(lif))
    lru = _model("lru")  # no weight_ih / weight_hh: its complex B as one pair (HasInputWeightParts), a clock for time
    assert set(rescalable_weights(lru)) == {("encoder", 0), ("depth", 1), ("decoder", 1)}
    assert rescalable_weights(lru)[("depth", 1)] == (lru.cells[1].b_re, lru.cells[1].b_im)


def test_a_model_without_the_capability_is_untouched(digits):
    """A user's cell that keeps its weights under other names (no ``weight_ih`` / ``weight_hh``) gives nothing to
    rescale: LSC with the rescaling on changes exactly what it changes with it off."""
    runs = []
    for mode in ("off", "start+step"):
        torch.manual_seed(0)
        cell = LeakyTanhCell(8, 12)
        assert rescalable_weights(cell) == {}
        assert rescale_weights_(cell, {("time", 0): 2.0, ("encoder", 0): 2.0}, {"time": 0.5, "encoder": 0.5}) == {}
        lsc_pretrain(cell, _batches(digits), max_steps=5, progress=False, rescale_weights=mode, engine="exact")
        runs.append({k: v.detach().clone() for k, v in cell.state_dict().items()})
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_lookahead_slow_copy_is_scaled_too():
    model = _model("gru")
    opt = make_lsc_optimizer([p for p in model.parameters() if p.requires_grad], LSCConfig())
    w = model.cells[0].weight_hh
    rescale_weights_(model, {("time", 0): 1.0}, {"time": 0.5}, optimizer=opt)
    assert torch.allclose(opt.state[w]["slow_params"], w.detach())


@pytest.mark.parametrize("bad", [{"rescale_weights": "always"}, {"rescale_weights": True}, {"rescale_rounds": 0},
                                 {"rescale_rounds": 1.5}])
def test_config_refuses_bad_rescale_options(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        LSCConfig(**bad)


@pytest.mark.parametrize("mode", ["start", "step", "start+step"])
def test_rescaling_reaches_the_gru_targets(digits, mode):
    """The rescaling moves a small GRU toward every target (20 steps: the start rounds alone close most of the
    encoder / depth / decoder gaps)."""
    kw = {"max_steps": 20, "progress": False, "engine": "exact"}
    off = lsc_pretrain(_model("gru"), _batches(digits), rescale_weights="off", **kw)
    on = lsc_pretrain(_model("gru"), _batches(digits), rescale_weights=mode, **kw)
    gap = lambda rep: max(abs(rep.mean_after(f) - t) for f, t in rep.target.items())  # noqa: E731
    assert gap(on) < gap(off), (on.after, off.after)


def test_rescale_never_silences_a_spiking_layer_with_the_guard_on(digits):
    """A LIF net asked for small radii (0.1): the start rounds shrink its input weights, which silences layers when
    nothing checks the rates; with the activity guard on, a round that takes a layer out of range is undone for
    that layer (the guard's refit after LSC is not needed: no layer is reported silenced after LSC)."""
    xs = [b[0][:8] for b in _batches(digits)]
    kw = {"max_steps": 1, "progress": False, "rescale_weights": "start", "target": 0.1, "engine": "exact"}
    unguarded = _model("lif", threshold=0.5)
    lsc_pretrain(unguarded, _batches(digits), activity=None, **kw)
    assert min(r for r in spiking_rates(unguarded, xs) if r is not None) < 0.01
    guarded = _model("lif", threshold=0.5)
    rep = lsc_pretrain(guarded, _batches(digits), **kw)
    assert rep.activity is not None and rep.activity["silenced"] == [], rep.activity
    assert all(0.01 <= r <= 0.9 for r in rep.activity["after_lsc"] if r is not None)


@pytest.mark.parametrize("refit", [True, False])
def test_start_round_refits_a_silenced_layer_instead_of_freezing_its_input(digits, monkeypatch, refit):
    """An ALIF net asked for small radii (0.1): the start round's input-weight scale silences a layer. With
    START_REFIT its bias is refitted into range and the scale kept (the input weight stays free for the next
    rounds); without, the scale is undone and the weight frozen. Either way no layer leaves the start silent."""
    import stablernn.lsc.pretrain as lsc_mod

    monkeypatch.setattr(lsc_mod, "START_REFIT", refit)
    runs = []
    real = lsc_mod._undo_silencing

    def spy(run, done, weights):
        runs.append(run)
        return real(run, done, weights)

    monkeypatch.setattr(lsc_mod, "_undo_silencing", spy)
    model = _model("alif", threshold=0.5)
    rep = lsc_pretrain(model, _batches(digits), max_steps=1, progress=False, rescale_weights="start", target=0.1,
                       engine="exact")
    run = runs[0]
    if refit:
        assert run.refit_start and not run.rescale_frozen, (run.refit_start, run.rescale_frozen)
    else:
        assert run.rescale_frozen and not run.refit_start
    assert all(0.01 <= r <= 0.9 for r in rep.activity["after_lsc"] if r is not None), rep.activity


def test_round_after_the_guard_refit_keeps_rates_in_range(digits):
    """LSC silences a small ALIF's layers and the guard refits their biases; the rescaling round after the refit
    (which moves the radii back) must leave every spiking layer firing in range."""
    rep = lsc_pretrain(_model("alif", threshold=0.5), _batches(digits), max_steps=20, progress=False,
                       engine="exact")
    act = rep.activity
    assert act is not None and act["refit"], act  # the refit (and so the round after it) happened
    assert all(0.01 <= r <= 0.9 for r in act["final"] if r is not None), act
    assert act["final"] != act["after_lsc"]
