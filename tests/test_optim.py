"""The papers' optimizer written here (stablernn.optim.AdaBelief / Lookahead): the same parameter trajectory as
pytorch-optimizer's (the package it replaces) where that is installed, state-dict round trips, and the helpers LSC
and the training loop use (base_optimizer, set_lr, Lookahead's slow copies)."""
from __future__ import annotations

import copy

import pytest
import torch

from stablernn.optim import AdaBelief, Lookahead, base_optimizer, make_optimizer, set_lr


def _problem(seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A small least-squares net with a non-linearity (so the gradients change direction along the way)."""
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randn(32, 3, generator=g, dtype=torch.float64)
    return net, x, y


def _trajectory(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                steps: int) -> list[torch.Tensor]:
    out = []
    for _ in range(steps):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
        out.append(torch.cat([p.detach().flatten() for p in net.parameters()]).clone())
    return out


@pytest.mark.parametrize("lookahead", [False, True])
@pytest.mark.parametrize(("rectify", "decouple"), [(True, True), (False, True), (True, False)])
def test_same_trajectory_as_pytorch_optimizer(lookahead: bool, rectify: bool, decouple: bool):
    po = pytest.importorskip("pytorch_optimizer", reason="pytorch-optimizer (the reference) is not installed")
    kw = {"lr": 2e-2, "weight_decay": 1e-2, "weight_decouple": decouple, "rectify": rectify, "eps": 1e-14}
    ours_net, x, y = _problem()
    ref_net = copy.deepcopy(ours_net)
    ours: torch.optim.Optimizer = AdaBelief(ours_net.parameters(), **kw)
    ref: torch.optim.Optimizer = po.AdaBelief(ref_net.parameters(), **kw)
    if lookahead:
        ours, ref = Lookahead(ours, k=6, alpha=0.5), po.Lookahead(ref, k=6, alpha=0.5)
    a, b = _trajectory(ours_net, ours, x, y, 50), _trajectory(ref_net, ref, x, y, 50)
    moved = (a[-1] - a[0]).abs().max()
    assert moved > 1e-2  # the test is not vacuous: the weights travelled
    for t, (pa, pb) in enumerate(zip(a, b, strict=True)):
        assert torch.allclose(pa, pb, rtol=0, atol=1e-6), f"step {t + 1}: {(pa - pb).abs().max():.2e}"


def test_make_optimizer_gives_ours_and_the_helpers_work():
    net, _, _ = _problem()
    opt = make_optimizer(net.parameters(), "adabelief_lookahead", 1e-2, 1e-4)
    assert isinstance(opt, Lookahead) and isinstance(opt.optimizer, AdaBelief)
    assert base_optimizer(opt) is opt.optimizer
    g = opt.optimizer.param_groups[0]
    assert g["rectify"] and g["weight_decouple"] and g["eps"] == 1e-14 and opt.k == 6 and opt.alpha == 0.5
    set_lr(opt, 3e-3)
    assert all(group["lr"] == 3e-3 for group in opt.optimizer.param_groups)
    w = next(net.parameters())
    assert torch.equal(opt.state[w]["slow_params"], w.detach())
    plain = make_optimizer(net.parameters(), "adabelief", 1e-2)
    assert isinstance(plain, AdaBelief) and base_optimizer(plain) is plain


def test_lookahead_syncs_every_k_steps_to_the_midpoint():
    w = torch.nn.Parameter(torch.zeros(3))
    inner = torch.optim.SGD([w], lr=1.0)
    opt = Lookahead(inner, k=2, alpha=0.5)
    for step in range(1, 5):
        w.grad = -torch.ones(3)  # each inner step adds 1
        opt.step()
        # after 2 steps: fast 2, slow 0 -> both 1; after 4: fast 3, slow 1 -> both 2
        expect = {1: 1.0, 2: 1.0, 3: 2.0, 4: 2.0}[step]
        assert torch.allclose(w.detach(), torch.full((3,), expect))
    assert torch.allclose(opt.state[w]["slow_params"], torch.full((3,), 2.0))


@pytest.mark.parametrize("name", ["adabelief", "adabelief_lookahead"])
def test_state_dict_round_trip_continues_the_same_trajectory(name: str):
    net, x, y = _problem(1)
    opt = make_optimizer(net.parameters(), name, 2e-2, 1e-3)
    _trajectory(net, opt, x, y, 9)  # mid-way through a Lookahead period (9 = 6 + 3)
    saved_net, saved_opt = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())
    straight = _trajectory(net, opt, x, y, 10)
    net2, _, _ = _problem(1)
    net2.load_state_dict(saved_net)
    opt2 = make_optimizer(net2.parameters(), name, 2e-2, 1e-3)
    opt2.load_state_dict(saved_opt)
    resumed = _trajectory(net2, opt2, x, y, 10)
    for pa, pb in zip(straight, resumed, strict=True):
        assert torch.equal(pa, pb)


def test_lookahead_refuses_a_foreign_state_dict():
    net, _, _ = _problem()
    opt = make_optimizer(net.parameters(), "adabelief_lookahead", 1e-2)
    with pytest.raises(ValueError, match="not a Lookahead state dict"):
        opt.load_state_dict(torch.optim.AdamW(net.parameters()).state_dict())


def test_adabelief_refuses_bad_settings():
    p = [torch.nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="betas"):
        AdaBelief(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr"):
        AdaBelief(p, lr=-1.0)
    with pytest.raises(ValueError, match="Lookahead needs"):
        Lookahead(AdaBelief(p), k=0)


def test_loads_a_pytorch_optimizer_checkpoint():
    """Runs written before the switch resume: a pytorch-optimizer Lookahead(AdaBelief) state dict loads into ours and
    continues its trajectory."""
    po = pytest.importorskip("pytorch_optimizer", reason="pytorch-optimizer (the reference) is not installed")
    kw = {"lr": 2e-2, "weight_decay": 1e-3, "weight_decouple": True, "rectify": True, "eps": 1e-14}
    net, x, y = _problem(2)
    ref = po.Lookahead(po.AdaBelief(net.parameters(), **kw), k=6, alpha=0.5)
    _trajectory(net, ref, x, y, 8)
    net2 = copy.deepcopy(net)
    ours = make_optimizer(net2.parameters(), "adabelief_lookahead", 2e-2, 1e-3)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    for pa, pb in zip(_trajectory(net, ref, x, y, 10), _trajectory(net2, ours, x, y, 10), strict=True):
        assert torch.allclose(pa, pb, rtol=0, atol=1e-6)


def test_public_api_exports_the_papers_optimizer():
    import stablernn

    assert stablernn.AdaBelief is AdaBelief and stablernn.Lookahead is Lookahead
    net, x, y = _problem(1)
    opt = stablernn.Lookahead(stablernn.AdaBelief(net.parameters(), lr=1e-2, rectify=True), k=2, alpha=0.5)
    before = torch.nn.functional.mse_loss(net(x), y).item()
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    assert torch.nn.functional.mse_loss(net(x), y).item() < before
