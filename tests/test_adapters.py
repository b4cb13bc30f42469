"""Bring your own model: views of torch.nn, snnTorch and Norse networks and the generic step protocol.

Each adapter: the view shares the user's Parameter objects, gives the same outputs as the user's own forward (before
and after LSC), LSC changes the user's module in place, and the diagnostics run on the view. The peer libraries are
installed with ``--no-deps`` (benchmarks/install_peers.sh, the ``peers`` extra); tests that need a missing one are
skipped with the reason. Full-width LSC runs (the issue's acceptance numbers) are marked slow.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from peer_models import DiagonalRecurrence, NorseNet, SnnTorchNet, TorchRNNNet, diagonal_scale, diagonal_step
from stablernn import (
    DataConfig,
    DeepRNN,
    GRUCell,
    firing_rates,
    gradient_grid,
    load_task,
    lsc_pretrain,
    lyapunov_spectrum,
    memory_capacity,
    radii_over_time,
)
from stablernn.adapters import ModelView, StepSpec, adapt, can_adapt, leak_constants
from stablernn.surrogate import check_vmappable, get

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _need(name: str):
    return pytest.importorskip(name, reason=f"{name} is not installed (bash benchmarks/install_peers.sh)")


@pytest.fixture(scope="module")
def digits_batches():
    data = load_task(DataConfig(task="digits", batch_size=16))
    data.train.set_epoch(0)
    return [b for _, b in zip(range(2), data.train, strict=False)]


def _same_objects(view: nn.Module, user: nn.Module) -> None:
    """Every parameter of the view is one of the user's (no copies) and every user parameter is in the view."""
    user_ids = {id(p) for p in user.parameters()}
    view_ids = {id(p) for p in view.parameters() if p.requires_grad}
    assert view_ids <= user_ids, "the view holds parameters that are not the user's"
    assert user_ids <= {id(p) for p in view.parameters()}, "a user parameter is missing from the view"


def _smoke_lsc(view: nn.Module, batches, **kw):
    cfg = {"target": 0.5, "max_steps": 12, "progress": False, "batch_size": 4, "measure_steps": 4}
    cfg.update(kw)
    return lsc_pretrain(view, batches, **cfg)


def _diagnostics_run(view: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    grid = gradient_grid(view, x, y)
    assert grid.norms.shape == (x.shape[1], len(view.cells)) and torch.isfinite(grid.norms).all()
    trace = radii_over_time(view, x, steps=3)
    assert set(trace.mean()) >= {"time", "encoder"}
    rates = firing_rates(view, x)
    assert len(rates) == len(view.cells)
    lyap = lyapunov_spectrum(view, x[:2], k=3)
    assert lyap.exponents.shape == (3,) and torch.isfinite(lyap.exponents).all()
    mc = memory_capacity(view, k_max=5, n_steps=60, streams=2)
    assert math.isfinite(mc.total)


# --- torch.nn -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_rnn_view_matches_and_shares(kind, batch_first):
    torch.manual_seed(0)
    rnn = getattr(nn, kind)(5, 12, num_layers=3, batch_first=batch_first, bias=kind != "GRU").double()
    view = adapt(rnn)
    assert isinstance(view, ModelView) and len(view.cells) == 3 and can_adapt(rnn)
    _same_objects(view, rnn)
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    y = rnn(x if batch_first else x.transpose(0, 1))[0]
    torch.testing.assert_close(view(x), y if batch_first else y.transpose(0, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_torch_cell_view_matches(cls):
    torch.manual_seed(1)
    cell = cls(4, 6).double()
    view = adapt(cell)
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    state = None
    outs = []
    for x_t in x.unbind(1):
        state = cell(x_t, state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    torch.testing.assert_close(view(x), torch.stack(outs, 1), rtol=0, atol=1e-12)


def test_torch_net_with_readout_lsc_in_place(digits_batches):
    torch.manual_seed(0)
    net = TorchRNNNet("GRU", width=10, layers=2)
    view = adapt(net)
    assert view.readout is net.fc and view.source is net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rep = _smoke_lsc(view, digits_batches)
    assert rep.steps > 0
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("rnn.weight_hh") for k in changed)
    x = digits_batches[0][0][:3]
    torch.testing.assert_close(net(x), view(x), rtol=0, atol=1e-6)  # float32: fused kernel vs step loop
    _diagnostics_run(view, x, digits_batches[0][1][:3])


def test_entry_points_take_the_users_module_directly(digits_batches):
    """No adapt() call: LSC and every diagnostic adapt the user's module themselves and train it in place."""
    torch.manual_seed(0)
    net = TorchRNNNet("GRU", width=10, layers=2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rep = _smoke_lsc(net, digits_batches)
    assert rep.steps > 0 and len(rep.after["time"]) == 2
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())
    x, y = digits_batches[0][0][:3], digits_batches[0][1][:3]
    assert gradient_grid(net, x, y).norms.shape == (x.shape[1], 2)
    assert radii_over_time(net, x, steps=2).radii["time"].shape == (2, 2)
    assert firing_rates(net, x) == [None, None]
    assert lyapunov_spectrum(net, x[:2], k=3).exponents.shape == (3,)
    assert math.isfinite(memory_capacity(net, k_max=5, n_steps=60, streams=2).total)
    assert net(x).shape == (3, x.shape[1], 10)  # the user's own forward still runs


def test_torch_dropout_between_layers_only():
    rnn = nn.LSTM(4, 6, num_layers=3, dropout=0.3)
    assert adapt(rnn).layer_dropout == [0.0, 0.3, 0.3]
    seq = nn.Sequential(nn.Dropout(0.2), nn.GRU(4, 6, batch_first=True), nn.Linear(6, 2))
    assert adapt(seq).layer_dropout == [0.2]


@pytest.mark.parametrize("options,match", [({"proj_size": 3}, "proj_size"), ({"bidirectional": True},
                                                                              "bidirectional")])
def test_torch_refusals_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        adapt(nn.LSTM(4, 6, **options))


def test_unknown_layers_point_to_the_step_protocol():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

    assert not can_adapt(Odd())
    with pytest.raises(ValueError, match="StepSpec"):
        adapt(Odd())
    with pytest.raises(ValueError, match="order"):
        adapt(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4), nn.GRU(4, 4)))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        adapt("lstm")


def test_stablernn_models_are_returned_as_is():
    model = DeepRNN([GRUCell(3, 4)], input_size=3, output_size=2)
    assert adapt(model) is model and not can_adapt(model)


# --- generic step protocol ----------------------------------------------------------------------------------------
def test_step_protocol_diagonal_recurrence_reaches_targets(digits_batches):
    torch.manual_seed(0)
    net = DiagonalRecurrence(width=12)
    spec = StepSpec(diagonal_step, state_sizes=(12,), input_size=8, readout="C", scale_time_constants=diagonal_scale)
    view = adapt(net, spec)
    x = digits_batches[0][0][:4]
    torch.testing.assert_close(view(x), net(x), rtol=0, atol=0)
    a_before = net.a.detach().clone()
    # lr 0.03: the encoder B's singular values come down one at a time, slowly at the default lr
    rep = lsc_pretrain(view, digits_batches, target=0.5, max_steps=300, lr=0.03, progress=False, batch_size=4,
                       measure_steps=4)
    assert rep.stop_reason.startswith("converged"), rep.table()
    assert abs(rep.mean_after("time") - 0.5) < 0.05 and abs(rep.mean_after("encoder") - 0.5) < 0.05
    assert not torch.equal(net.a.detach(), a_before)
    torch.testing.assert_close(view(x), net(x), rtol=0, atol=0)
    # the same spec as an attribute of the module: adapt finds it, so lsc_pretrain(adapt(module)) needs no argument
    net.stablernn_step = spec
    assert can_adapt(net) and isinstance(adapt(net), ModelView)


def test_step_protocol_diagnostics_run(digits_batches):
    torch.manual_seed(0)
    net = DiagonalRecurrence(width=6)
    view = adapt(net, StepSpec(diagonal_step, state_sizes=(6,), input_size=8, readout="C"))
    _diagnostics_run(view, digits_batches[0][0][:3], digits_batches[0][1][:3])


def test_step_spec_checks_its_fields():
    with pytest.raises(ValueError, match="state_sizes"):
        StepSpec(diagonal_step, state_sizes=(0,), input_size=3)
    with pytest.raises(TypeError, match="function"):
        StepSpec("step", state_sizes=(3,), input_size=3)
    with pytest.raises(ValueError, match="stability"):
        StepSpec(diagonal_step, state_sizes=(3,), input_size=3, stability=(2,))


# --- snnTorch -----------------------------------------------------------------------------------------------------
def _snn_net(kind: str, width: int = 12):
    snn = _need("snntorch")
    from snntorch import surrogate as ssg

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, width)
            if kind == "Leaky":
                self.lif1 = snn.Leaky(beta=0.9)
            elif kind == "Synaptic":
                self.lif1 = snn.Synaptic(alpha=0.7, beta=0.9)
            elif kind == "RSynaptic":
                self.lif1 = snn.RSynaptic(alpha=0.7, beta=0.9, linear_features=width)
            else:
                self.lif1 = snn.RLeaky(beta=0.9, linear_features=width, spike_grad=ssg.fast_sigmoid(slope=10))
            self.out = nn.Linear(width, 3)

        def forward(self, x):
            lif, outs = self.lif1, []
            spk = syn = mem = torch.zeros(x.shape[0], width)
            for x_t in x.unbind(1):
                cur = self.fc1(x_t)
                if kind == "Leaky":
                    spk, mem = lif(cur, mem)
                elif kind == "Synaptic":
                    spk, syn, mem = lif(cur, syn, mem)
                elif kind == "RSynaptic":
                    spk, syn, mem = lif(cur, spk, syn, mem)
                else:
                    spk, mem = lif(cur, spk, mem)
                outs.append(self.out(spk))
            return torch.stack(outs, 1)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.fc1.weight.mul_(4.0)
    return net


@pytest.mark.parametrize("kind", ["Leaky", "RLeaky", "Synaptic", "RSynaptic"])
def test_snntorch_view_gives_identical_spikes(kind):
    net = _snn_net(kind)
    view = adapt(net)
    _same_objects(view, net)
    x = torch.rand(3, 25, 8)
    out = view.run(x)
    assert 0.02 < float(out.layer_outputs[0].detach().mean()) < 0.98  # some spikes, not saturated
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)


def test_snntorch_lsc_in_place_state_untouched_and_beta_rescaled(digits_batches):
    _need("snntorch")
    torch.manual_seed(0)
    net = SnnTorchNet(width=10)
    view = adapt(net)
    assert "cells.0.neuron.beta" in view.state_dict()  # LSC's snapshot includes β
    mem_before = net.lif1.mem  # the state snnTorch keeps on the module
    w_before = net.lif1.recurrent.weight.detach().clone()
    beta_before = net.lif1.beta.clone()
    _smoke_lsc(view, digits_batches)
    assert net.lif1.mem is mem_before
    assert not torch.equal(net.lif1.recurrent.weight.detach(), w_before)
    assert not torch.equal(net.lif1.beta, beta_before)  # the time-constant hook reached β
    x = digits_batches[0][0][:3]
    torch.testing.assert_close(net(x), view(x), rtol=0, atol=0)  # a plain user(x) works and agrees
    _diagnostics_run(view, x, digits_batches[0][1][:3])


@pytest.mark.parametrize("options,match", [({"reset_delay": False}, "reset_delay"),
                                           ({"init_hidden": True}, "init_hidden"),
                                           ({"surrogate_disable": True}, "surrogate")])
def test_snntorch_refusals_name_the_option(options, match):
    snn = _need("snntorch")
    with pytest.raises(ValueError, match=match):
        adapt(nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=0.9, **options)))


def test_snntorch_shared_beta_is_made_private():
    snn = _need("snntorch")
    beta = torch.tensor(0.9)
    net = nn.Sequential(nn.Linear(3, 4), snn.Leaky(beta=beta), nn.Linear(4, 4), snn.Leaky(beta=beta))
    view = adapt(net)
    view.cells[0].scale_time_constants(0.5)
    assert float(net[1].beta) == pytest.approx(0.81) and float(net[3].beta) == pytest.approx(0.9)


@pytest.mark.parametrize("maker,alias,param", [("atan", "snntorch_atan", 2.0), ("fast_sigmoid",
                                                                                 "snntorch_fast_sigmoid", 25.0),
                                                ("sigmoid", "snntorch_sigmoid", 25.0)])
def test_snntorch_surrogates_match_their_aliases(maker, alias, param):
    _need("snntorch")
    from snntorch import surrogate as ssg

    from stablernn.adapters.snntorch import spike_alias

    fn = getattr(ssg, maker)()  # the library's defaults
    ours = spike_alias(fn).double()
    assert ours.alias == alias
    x = torch.linspace(-1.5, 1.5, 41, dtype=torch.float64, requires_grad=True)
    (g_theirs,) = torch.autograd.grad(fn(x).sum(), x)
    x2 = x.detach().clone().requires_grad_()
    (g_ours,) = torch.autograd.grad(ours(x2).sum(), x2)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours(x2), fn(x).to(x2.dtype), rtol=0, atol=0)
    with pytest.raises(TypeError, match="snntorch_atan"):
        check_vmappable(fn, "snnTorch spike_grad")
    assert get(alias, alpha=param).describe()["alias"] == alias


def test_snntorch_design_writes_back(digits_batches):
    _need("snntorch")
    from stablernn import DesignConfig, TaskStats, apply_design_, design_model

    torch.manual_seed(0)
    net = SnnTorchNet(width=10)
    view = adapt(net)
    x = digits_batches[0][0]
    designs = design_model(view, TaskStats.from_batches(digits_batches), DesignConfig(conditions=("I", "II", "III",
                                                                                                      "IV")))
    w_before = net.lif1.recurrent.weight.detach().clone()
    apply_design_(view, designs)
    assert not torch.equal(net.lif1.recurrent.weight.detach(), w_before)
    assert net.lif1.spike_grad.spike is view.cells[0].spike  # the designed SG runs in the user's own forward
    torch.testing.assert_close(net(x[:2]), view(x[:2]), rtol=0, atol=0)
    assert set(net.state_dict()) == set(SnnTorchNet(width=10).state_dict())  # loadable by make_net()


# --- Norse --------------------------------------------------------------------------------------------------------
def test_norse_view_identical_spikes_float64():
    _need("norse")
    torch.manual_seed(0)
    net = NorseNet(width=12).double()
    view = adapt(net)
    _same_objects(view, net)
    x = torch.rand(3, 30, 8, dtype=torch.float64) * 40
    out = view.run(x)
    assert float(out.layer_outputs[0].detach().mean()) > 0.02
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)


def test_norse_leak_in_snapshot_rescaled_and_defaults_untouched(digits_batches):
    _need("norse")
    from norse.torch.functional.lif import LIFParameters

    default = float(LIFParameters().tau_mem_inv)
    torch.manual_seed(0)
    net = NorseNet(width=10)
    view = adapt(net)
    assert net.l1.p.tau_mem_inv is view.cells[0].tau_mem_inv  # shared, not copied
    assert "cells.0.tau_mem_inv" in view.state_dict() and "cells.0.tau_mem_inv" in leak_constants(view)
    snap = {k: v.clone() for k, v in view.state_dict().items()}
    view.cells[0].scale_time_constants(0.5)
    assert float(net.l1.p.tau_mem_inv) == pytest.approx(2 * default)  # the user's p sees the rescaling
    view.load_state_dict(snap)  # what LSC's restore of the best weights does
    assert float(net.l1.p.tau_mem_inv) == pytest.approx(default)
    _smoke_lsc(view, digits_batches)
    assert float(LIFParameters().tau_mem_inv) == default  # Norse's shared default tensor never changed
    assert float(net.l1.p.tau_mem_inv) != default
    assert adapt(net).cells[0].tau_mem_inv is net.l1.p.tau_mem_inv  # adapting again keeps the module's copy
    x = digits_batches[0][0][:3] * 20
    torch.testing.assert_close(net(x), view(x), rtol=0, atol=0)
    _diagnostics_run(view, x, digits_batches[0][1][:3])


def test_norse_feed_forward_lif_cells_identical_spikes():
    norse = _need("norse.torch")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.l1 = nn.Linear(8, 12), norse.LIFCell()
            self.fc2, self.l2 = nn.Linear(12, 12), norse.LIFCell()
            self.out = nn.Linear(12, 3)

        def forward(self, x):
            s1 = s2 = None
            outs = []
            for x_t in x.unbind(1):
                z1, s1 = self.l1(self.fc1(x_t), s1)
                z2, s2 = self.l2(self.fc2(z1), s2)
                outs.append(self.out(z2))
            return torch.stack(outs, 1)

    torch.manual_seed(0)
    net = Net()
    view = adapt(net)
    assert view.cells[0].fc is net.fc1
    x = torch.rand(3, 30, 8) * 40
    out = view.run(x)
    assert float(out.layer_outputs[0].detach().mean()) > 0.02
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)


def test_norse_super_alias_matches_installed_norse():
    _need("norse")
    from norse.torch.functional.threshold import threshold

    x = torch.linspace(-3, 3, 61, dtype=torch.float64, requires_grad=True)
    (g_norse,) = torch.autograd.grad(threshold(x, "super", torch.as_tensor(100.0)).sum(), x)
    x2 = x.detach().clone().requires_grad_()
    spike = get("norse_super").double()
    (g_ours,) = torch.autograd.grad(spike(x2).sum(), x2)
    torch.testing.assert_close(g_ours, g_norse)
    with pytest.raises(TypeError, match="norse_super"):
        check_vmappable(lambda v: threshold(v, "super", torch.as_tensor(100.0)), "Norse threshold")


def test_norse_lsnn_view_identical_spikes_and_lsc(digits_batches):
    _need("norse.torch")
    torch.manual_seed(0)
    net = NorseNet(8, 12, 3, cell="LSNNRecurrentCell").double()
    view = adapt(net)
    x = torch.rand(3, 40, 8, dtype=torch.float64) * 30
    out = view.run(x)
    assert float(out.layer_outputs[0].detach().mean()) > 0.02
    torch.testing.assert_close(out.logits, net(x), rtol=0, atol=0)
    rep = _smoke_lsc(view, [(b[0].double() * 20, b[1]) for b in digits_batches])
    assert rep.steps > 0
    torch.testing.assert_close(view(x), net(x), rtol=0, atol=0)


def test_norse_unsupported_cells_are_refused_with_the_way_out():
    norse = _need("norse.torch")
    net = nn.Sequential(nn.Linear(3, 4), norse.LSNNCell())
    assert not can_adapt(net)
    with pytest.raises(ValueError, match="generic step protocol"):
        adapt(net)


def test_spikingjelly_is_refused_with_the_way_out():
    neuron = _need("spikingjelly.activation_based.neuron")
    with pytest.raises(ValueError, match="StepSpec"):
        adapt(nn.Sequential(nn.Linear(3, 4), neuron.LIFNode()))


# --- acceptance runs (slow): the widths, LSC to 0.5 on digits -----------------------------------------------
def _acceptance(net: nn.Module, batches, exact: bool):
    view = adapt(net)
    x = batches[0][0][:4]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rep = lsc_pretrain(view, batches, target=0.5, progress=False)
    print(f"\n{type(net).__name__}: {rep.table()}")
    for fam in ("time", "depth"):
        assert abs(rep.mean_after(fam) - 0.5) < 0.05, rep.table()
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())
    tol = 0 if exact else 1e-5
    torch.testing.assert_close(net(x), view(x), rtol=tol, atol=tol)
    return rep


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_acceptance_torch_rnn(kind):
    data = load_task(DataConfig(task="digits", batch_size=32))
    data.train.set_epoch(0)
    batches = [b for _, b in zip(range(2), data.train, strict=False)]
    torch.manual_seed(0)
    _acceptance(TorchRNNNet(kind, width=48, layers=3), batches, exact=False)


@pytest.mark.slow
@pytest.mark.parametrize("lib", ["snntorch", "norse"])
def test_acceptance_spiking(lib):
    _need(lib)
    data = load_task(DataConfig(task="digits", batch_size=32))
    data.train.set_epoch(0)
    batches = [b for _, b in zip(range(2), data.train, strict=False)]
    torch.manual_seed(0)
    net = SnnTorchNet(width=48) if lib == "snntorch" else NorseNet(width=48)
    _acceptance(net, batches, exact=True)


# --- CLI: --model module.path:factory -------------------------------------------------------------------------------
def _write_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.rnn = nn.GRU(8, 6, num_layers=2, batch_first=True)\n"
        "        self.fc = nn.Linear(6, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.rnn(x)[0])\n\n\n"
        "def make_net():\n"
        "    return Net()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))


def _cli(argv, capsys):
    from stablernn.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr()


def test_cli_pretrain_user_model(tmp_path, monkeypatch, capsys):
    _write_pkg(tmp_path, monkeypatch)
    out = tmp_path / "run"
    run = lambda argv: _cli(argv, capsys)  # noqa: E731

    code, _ = run(["pretrain", "--model", "mypkg.models:make_net", "--task", "digits", "--target", "0.5",
                   "--max-steps", "5", "--measure-steps", "2", "--batch-size", "8", "--out", str(out)])
    assert code == 0
    from mypkg.models import make_net

    state = torch.load(out / "pretrained.pt", weights_only=True)
    fresh = make_net()
    fresh.load_state_dict(state)  # strict: exactly the user's keys
    torch.manual_seed(0)  # the CLI seeds the factory with --seed (0)
    assert not torch.equal(fresh.rnn.weight_hh_l0, make_net().rnn.weight_hh_l0)
    assert (out / "lsc_report.json").is_file() and not (out / "leak_constants.pt").exists()
    code, res = run(["pretrain", "--model", "mypkg.models", "--task", "digits", "--out", str(tmp_path / "bad")])
    assert code != 0 and "module.path:factory" in res.out + res.err
    assert not (tmp_path / "bad").exists()  # nothing half-written


@pytest.mark.slow
def test_cli_diagnose_user_model(tmp_path, monkeypatch, capsys):
    _write_pkg(tmp_path, monkeypatch)
    code, _ = _cli(["diagnose", "--model", "mypkg.models:make_net", "--task", "digits", "--samples", "4", "--steps",
                    "3", "--out", str(tmp_path / "diag")], capsys)
    assert code == 0 and (tmp_path / "diag" / "diagnostics.json").is_file()
