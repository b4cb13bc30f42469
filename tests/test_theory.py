"""Path counting, the gradient bound, and the PascalRNN toy (lsc/theory.py)."""
import math

import numpy as np
import pytest

from stablernn.lsc import theory


def test_path_count_is_binomial_and_symmetric():
    assert theory.path_count(0, 5) == 1
    assert theory.path_count(2, 2) == 6
    assert theory.path_count(3, 7) == theory.path_count(7, 3) == math.comb(10, 3)
    with pytest.raises(ValueError, match="dt and dl"):
        theory.path_count(-1, 2)


def test_path_count_recursion_matches_lattice_walks():
    # paths to (dt, dl) = paths to (dt-1, dl) + paths to (dt, dl-1): counted by dynamic programming
    n = np.ones((8, 6), dtype=object)
    for i in range(1, 8):
        for j in range(1, 6):
            n[i, j] = n[i - 1, j] + n[i, j - 1]
    for i in range(8):
        for j in range(6):
            assert theory.path_count(i, j) == n[i, j]


def test_log10_path_count_large():
    assert float(theory.log10_path_count(200, 200)) == pytest.approx(math.log10(math.comb(400, 200)), rel=1e-9)


def test_gradient_bound_and_total_weight():
    assert theory.gradient_bound(3, 2, 0.5, 0.5) == pytest.approx(10 * 0.5**5)
    assert theory.gradient_bound(3, 0, 0.0, 1.0) == 0.0
    assert theory.gradient_bound(2000, 2000, 1.0, 1.0) == math.inf
    # the bound summed over all paths of one length is (rho_t + rho_l)^n: bounded iff rho_t + rho_l <= 1
    n = 30
    total = sum(theory.gradient_bound(k, n - k, 0.3, 0.7) for k in range(n + 1))
    assert total == pytest.approx(theory.total_path_weight(n, 0.3, 0.7)) == pytest.approx(1.0)
    assert theory.total_path_weight(n, 1.0, 1.0) == 2.0**n


def test_bound_grid_shape_and_corner():
    g = theory.bound_grid(6, 4, 0.5, 0.5)
    assert g.shape == (6, 4)
    assert g[-1, -1] == 0.0  # the output node itself
    assert g[0, 0] == pytest.approx(theory.log10_gradient_bound(5, 3, 0.5, 0.5))
    assert np.all(theory.bound_grid(6, 4, 1.0, 1.0) >= 0)


def test_unbalanced_targets_sum_to_one():
    t = theory.unbalanced_targets(3, 300)
    assert t["depth"] == pytest.approx(3 / 303) and t["depth"] + t["time"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        theory.unbalanced_targets(0, 5)


def test_pascal_rnn_autograd_matches_path_count():
    for rho in (1.0, 0.5, 0.8):
        a = theory.pascal_rnn_gradients(rho, T=40, L=6)
        b = theory.pascal_rnn_closed_form(rho, T=40, L=6)
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_pascal_rnn_explodes_at_one_and_is_bounded_at_half():
    g1 = theory.pascal_rnn_gradients(1.0, T=100, L=10)
    g05 = theory.pascal_rnn_gradients(0.5, T=100, L=10)
    assert g1.max() > 1e12  # C(108, 9) paths of gain 1
    assert g05.max() <= 1.0


def test_plot_pascal_rnn(tmp_path):
    p = theory.plot_pascal_rnn(tmp_path / "pascal.png", T=30, L=4)
    assert p.is_file() and p.stat().st_size > 1000
