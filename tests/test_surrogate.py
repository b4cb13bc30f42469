"""Surrogate-gradient family: normalisation, derivatives, torch.func transforms, aliases, learnable γ/s."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from stablernn import surrogate
from stablernn.surrogate import ALIASES, SHAPES, SpikeFunction, get, names, resolve, shape_of

SHAPE_NAMES = list(SHAPES)
Q = 1.56


def get64(*args, **kwargs) -> SpikeFunction:
    """A spike function with float64 γ/s (numbers are stored in the default dtype, float32)."""
    args = tuple(torch.tensor(a, dtype=torch.float64) if isinstance(a, float) else a for a in args)
    return get(*args, **kwargs).double()


def _g(shape, u: float, q: float = Q) -> float:
    return float(shape.g(torch.tensor(u, dtype=torch.float64), q))


@pytest.mark.parametrize("name", SHAPE_NAMES)
@pytest.mark.parametrize(("gamma", "s"), [(1.0, 1.0), (0.3, 2.5), (1.7, 0.4)])
def test_peak_and_area(name, gamma, s):
    spike = get64(name, gamma, s)
    f = lambda v: float(spike.derivative(torch.tensor(v, dtype=torch.float64)))  # noqa: E731
    assert f(0.0) == pytest.approx(gamma, rel=1e-12)
    # numerical integration over a wide range plus the analytic tails beyond it (from the CDF) = γ/s
    L = 1e4 / s
    kinks = [-0.5 / s, 0.0, 0.5 / s, -1.0 / s, 1.0 / s]
    inner = sum(quad(f, a, b, points=kinks if a < 0 < b else None, limit=800, epsabs=1e-13)[0]
                for a, b in [(-L, -5 / s), (-5 / s, 5 / s), (5 / s, L)])
    cdf = SHAPES[name].cdf
    tails = gamma / s * float(1.0 - cdf(torch.tensor(s * L, dtype=torch.float64), Q)
                              + cdf(torch.tensor(-s * L, dtype=torch.float64), Q))
    assert inner + tails == pytest.approx(gamma / s, rel=1e-6)
    assert tails < 0.005 * gamma / s  # the numerical part carries the area


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_cdf_and_square_integral_match_quadrature(name):
    shape = SHAPES[name]
    for a, b in [(-0.3, 2.0), (-3.0, -0.1), (0.2, 0.9)]:
        num = quad(lambda u: _g(shape, u), a, b, points=[0, 0.5, 1, -0.5, -1], limit=400)[0]
        ana = float(shape.cdf(torch.tensor(b, dtype=torch.float64), Q)
                    - shape.cdf(torch.tensor(a, dtype=torch.float64), Q))
        assert ana == pytest.approx(num, rel=1e-8, abs=1e-12)
        num2 = quad(lambda u: _g(shape, u) ** 2, a, b, points=[0, 0.5, 1, -0.5, -1], limit=400)[0]
        ana2 = float(shape.sq_integral(torch.tensor(b, dtype=torch.float64), Q)
                     - shape.sq_integral(torch.tensor(a, dtype=torch.float64), Q))
        assert ana2 == pytest.approx(num2, rel=1e-8, abs=1e-12)
    assert float(shape.cdf(torch.tensor(-1e9, dtype=torch.float64), Q)) == pytest.approx(0.0, abs=1e-5)
    assert float(shape.cdf(torch.tensor(1e9, dtype=torch.float64), Q)) == pytest.approx(1.0, abs=1e-5)


def _backward(spike, v: torch.Tensor) -> torch.Tensor:
    v = v.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(spike(v).sum(), v)
    return g


@pytest.mark.parametrize("name", [n for n in SHAPE_NAMES if SHAPES[n].primitive is not None])
def test_backward_is_derivative_of_smooth_primitive(name):
    gamma, s = 0.7, 1.9
    spike = get64(name, gamma, s)
    v = torch.linspace(-3, 3, 61, dtype=torch.float64) + 0.013  # avoid v = 0 exactly (|v| kink)
    h = 1e-6
    prim = SHAPES[name].primitive

    def F(x):
        return gamma / s * prim(s * x, Q)

    fd = (F(v + h) - F(v - h)) / (2 * h)
    torch.testing.assert_close(_backward(spike, v), fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["rectangular", "triangular"])
def test_backward_matches_cdf_derivative_away_from_kinks(name):
    spike = get64(name, 1.3, 0.8)
    v = torch.tensor([-2.0, -0.9, -0.3, 0.2, 0.55, 0.95, 3.0], dtype=torch.float64)
    h = 1e-7
    F = lambda x: 1.3 / 0.8 * SHAPES[name].cdf(0.8 * x, 0.0)  # noqa: E731
    torch.testing.assert_close(_backward(spike, v), (F(v + h) - F(v - h)) / (2 * h), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", names())
def test_finite_on_wide_range_and_at_zero(name):
    spike = get64(name)
    v = torch.cat([torch.linspace(-1e4, 1e4, 20001, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    v.requires_grad_(True)
    z = spike(v)
    assert torch.all((z == 0) | (z == 1))
    (g,) = torch.autograd.grad(z.sum(), v, create_graph=True)
    assert torch.all(torch.isfinite(g)) and torch.all(g >= 0)
    if g.requires_grad:
        (gg,) = torch.autograd.grad(g.sum(), v)
        assert torch.all(torch.isfinite(gg))
    assert float(spike.derivative(torch.zeros((), dtype=torch.float64))) > 0


def test_forward_is_heaviside():
    v = torch.tensor([-1.0, -1e-9, 0.0, 1e-9, 2.0])
    for name in names():
        assert get(name)(v).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_double_backward_is_derivative_of_surrogate(name):
    spike = get64(name, 0.9, 1.4)
    v = torch.tensor([-2.3, -0.61, -0.2, 0.15, 0.33, 0.87, 1.7], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(spike(v).sum(), v, create_graph=True)
    if g.requires_grad:
        (gg,) = torch.autograd.grad(g.sum(), v)
    else:  # rectangular: piecewise constant, no path back to v
        gg = torch.zeros_like(v)
    h = 1e-6
    vd = v.detach()
    fd = (spike.derivative(vd + h) - spike.derivative(vd - h)) / (2 * h)
    torch.testing.assert_close(gg, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_torch_func_transforms(name):
    damp = torch.linspace(0.5, 1.5, 5, dtype=torch.float64)  # per-neuron dampening
    spike = get64(name, damp, 1.2)
    v = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expect = spike.derivative(v)
    # vmap over the batch
    torch.testing.assert_close(torch.func.vmap(spike)(v), spike(v))
    # per-sample jacobians: diagonal of f(v)
    jac = torch.func.vmap(torch.func.jacrev(spike))(v)
    torch.testing.assert_close(jac, torch.diag_embed(expect))
    jf = torch.func.vmap(torch.func.jacfwd(spike))(v)
    torch.testing.assert_close(jf, torch.diag_embed(expect))
    # jvp
    t = torch.randn_like(v)
    out, tangent = torch.func.jvp(spike, (v,), (t,))
    torch.testing.assert_close(out, spike(v))
    torch.testing.assert_close(tangent, t * expect)
    # vjp
    _, vjp_fn = torch.func.vjp(spike, v)
    torch.testing.assert_close(vjp_fn(t)[0], t * expect)
    # second order through torch.func (jacobian of the derivative), away from kinks
    if SHAPES[name].primitive is not None:
        x = torch.tensor([0.37, -0.81, 1.3, 0.05, -2.2], dtype=torch.float64)
        hess = torch.func.jacfwd(torch.func.grad(lambda a: spike(a).sum()))(x)
        h = 1e-6
        fd = (spike.derivative(x + h) - spike.derivative(x - h)) / (2 * h)
        torch.testing.assert_close(torch.diagonal(hess), fd, rtol=1e-5, atol=1e-7)


# --- aliases ------------------------------------------------------------------------------------------------------
def _published(name: str, x: torch.Tensor, a: float) -> torch.Tensor:
    """The other libraries' surrogate derivatives, written from their published formulas."""
    if name in ("snntorch_atan", "spikingjelly_atan"):
        return (a / 2) / (1 + (math.pi / 2 * a * x) ** 2)
    if name in ("snntorch_fast_sigmoid", "superspike"):
        return 1.0 / (a * x.abs() + 1.0) ** 2
    if name == "norse_super":  # Norse 1.1's SuperSpike.backward ignores α
        return 1.0 / (x.abs() + 1.0) ** 2
    if name in ("spikingjelly_sigmoid", "snntorch_sigmoid"):
        sg = torch.sigmoid(a * x)
        return a * sg * (1 - sg)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(ALIASES))
@pytest.mark.parametrize("alpha", [None, 0.7, 5.0])
def test_aliases_match_published_formulas(name, alpha):
    spike = get64(name, alpha=alpha)
    a = ALIASES[name].default if alpha is None else alpha
    x = torch.tensor([-1.3, -0.2, 0.0, 0.01, 0.4, 2.5], dtype=torch.float64)
    torch.testing.assert_close(_backward(spike, x), _published(name, x, a), rtol=1e-6, atol=1e-12)  # γ/s in float32
    assert spike.alias == name


def test_alias_defaults_are_the_libraries_defaults():
    assert ALIASES["snntorch_atan"].default == 2.0
    assert ALIASES["snntorch_fast_sigmoid"].default == 25.0
    assert ALIASES["norse_super"].default == 100.0
    assert ALIASES["superspike"].default == 100.0
    assert ALIASES["snntorch_sigmoid"].default == 25.0
    assert ALIASES["spikingjelly_sigmoid"].default == 4.0


def test_alias_rejects_our_scale_and_shape_rejects_alpha():
    with pytest.raises(ValueError, match="alpha"):
        get("snntorch_atan", dampening=0.5)
    with pytest.raises(ValueError, match="alias"):
        get("fast_sigmoid", alpha=3.0)
    with pytest.raises(ValueError, match="> 0"):
        get("norse_super", alpha=-1.0)


# --- construction, errors, misc -----------------------------------------------------------------------------------
def test_names_and_resolve():
    assert names()[:8] == SHAPE_NAMES and set(ALIASES) <= set(names())
    assert isinstance(resolve(None), SpikeFunction) and resolve("gaussian").shape.name == "gaussian"
    fn = lambda v: v  # noqa: E731
    assert resolve(fn) is fn
    with pytest.raises(TypeError):
        resolve(3)
    assert shape_of("norse_super").name == "fast_sigmoid"
    with pytest.raises(ValueError, match="unknown surrogate"):
        shape_of("nope")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "nope"}, "unknown surrogate shape"),
    ({"name": "fast_sigmoid", "sharpness": 0.0}, "sharpness"),
    ({"name": "fast_sigmoid", "dampening": -1.0}, "dampening"),
    ({"name": "fast_sigmoid", "dampening": float("nan")}, "finite"),
    ({"name": "q_pseudospike", "tail": 1.0}, "tail"),
    ({"name": "fast_sigmoid", "learnable": "both"}, "learnable"),
])
def test_invalid_arguments(kwargs, match):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        get(name, **kwargs)


def test_tail_changes_shape():
    v = torch.tensor([3.0], dtype=torch.float64)
    fat, thin = get("q_pseudospike", tail=1.05), get("q_pseudospike", tail=10.0)
    assert float(fat.derivative(v)) > float(thin.derivative(v))
    # q -> infinity tends to the exponential SG
    torch.testing.assert_close(get("q_pseudospike", tail=1e6).derivative(v), get("exponential").derivative(v),
                               rtol=1e-4, atol=0)


def test_describe_and_repr():
    d = get("fast_sigmoid", torch.tensor([0.5, 1.5]), 2.0).describe()
    assert d["shape"] == "fast_sigmoid" and d["dampening"] == pytest.approx(1.0) and d["per_neuron"]
    assert d["area"] == pytest.approx(0.5)
    assert "mean" in repr(get("fast_sigmoid", torch.ones(4)))
    assert "alias snntorch_atan" in repr(get("snntorch_atan"))


def test_state_dict_accepts_per_neuron_scales():
    design = get("fast_sigmoid", torch.tensor([0.2, 0.4, 0.6]), torch.tensor(0.8))
    plain = get("fast_sigmoid")
    plain.load_state_dict(design.state_dict())
    torch.testing.assert_close(plain.dampening, torch.tensor([0.2, 0.4, 0.6]))
    v = torch.tensor([[0.1, -0.2, 0.3]])
    torch.testing.assert_close(plain.derivative(v), design.derivative(v))


# --- learnable γ and s --------------------------------------------------------------------------------------------
def test_learnable_parameters_and_size():
    spike = get("fast_sigmoid", 0.5, 2.0, learnable=True, size=4)
    params = dict(spike.named_parameters())
    assert set(params) == {"dampening", "sharpness"} and params["dampening"].shape == (4,)
    only = get("gaussian", learnable="sharpness")
    assert [n for n, _ in only.named_parameters()] == ["sharpness"]
    with pytest.raises(ValueError, match="size"):
        get("fast_sigmoid", torch.ones(3), size=4)


@pytest.mark.parametrize("name", SHAPE_NAMES)
def test_learnable_gradient_is_surrogate_model_gradient(name):
    """γ and s get the gradient of ẑ = H(v) + (γ/s)(G(s v) − H(v)); v gets exactly the surrogate."""
    gamma0, s0 = 0.8, 1.3
    spike = get(name, gamma0, s0, learnable=True, size=3).double()
    v = torch.tensor([[-0.7, 0.2, 1.9], [0.4, -0.05, -2.5]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 1.5, -1.0]], dtype=torch.float64)
    z = spike(v)
    assert torch.equal(z, (v > 0).double())  # forward unchanged
    (z * w).sum().backward()
    torch.testing.assert_close(v.grad, w * spike.derivative(v.detach()))
    cdf = SHAPES[name].cdf

    def zhat(g, s):
        vd = v.detach()
        return (vd > 0).double() + g / s * (cdf(s * vd, Q) - (vd > 0).double())

    h = 1e-6
    g = torch.full((3,), gamma0, dtype=torch.float64)
    s = torch.full((3,), s0, dtype=torch.float64)
    for k in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[k] = h
        dg = ((zhat(g + e, s) - zhat(g - e, s)) * w).sum() / (2 * h)
        ds = ((zhat(g, s + e) - zhat(g, s - e)) * w).sum() / (2 * h)
        assert float(spike.dampening.grad[k]) == pytest.approx(float(dg), rel=1e-5, abs=1e-9)
        assert float(spike.sharpness.grad[k]) == pytest.approx(float(ds), rel=1e-5, abs=1e-9)


def test_learnable_gradient_vanishes_far_from_threshold():
    spike = get("exponential", 1.0, 1.0, learnable=True)
    v = torch.tensor([-60.0, 60.0])
    spike(v).sum().backward()
    assert abs(float(spike.dampening.grad)) < 1e-12 and abs(float(spike.sharpness.grad)) < 1e-12


def test_learnable_works_under_torch_func():
    spike = get("fast_sigmoid", 0.7, 1.1, learnable=True, size=4).double()
    v = torch.randn(2, 4, dtype=torch.float64)
    jac = torch.func.vmap(torch.func.jacrev(spike))(v)
    torch.testing.assert_close(jac, torch.diag_embed(spike.derivative(v).detach()))
    params = {k: p.detach() for k, p in spike.named_parameters()}
    grads = torch.func.grad(lambda p: torch.func.functional_call(spike, p, (v,)).sum())(params)
    assert set(grads) == {"dampening", "sharpness"} and all(torch.all(torch.isfinite(g)) for g in grads.values())


def test_module_exports():
    for n in surrogate.__all__:
        assert hasattr(surrogate, n)
