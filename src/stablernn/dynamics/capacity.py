"""Information-processing capacity (Dambre et al. 2012) and the closed-form ridge readouts it shares with the
memory capacity (``memory.py``).

For an i.i.d. input ``u(t)`` uniform in [-1, 1], the target functions are products of normalised Legendre
polynomials of past inputs,

    z(t) = prod_i  P~_{d_i}(u(t - i)),     P~_n = sqrt(2n + 1) P_n   (orthonormal under the uniform law),

over delays ``i = 0 .. window-1`` and degrees ``d_i >= 0`` with total degree ``sum d_i = D``. Its capacity is the
fraction of its variance a linear readout of the features ``x(t)`` explains,

    C[z] = 1 - min_W <(z - W x - b)^2> / <(z - <z>)^2>,

measured in-sample as Dambre et al. do, and set to 0 below the finite-sample threshold: for features independent of
``z``, ``T * C`` follows a chi-square law with ``N`` degrees of freedom (``N`` features, ``T`` samples), so a
capacity below ``factor * chi2.ppf(1 - p, N) / T`` is indistinguishable from chance (``p = 1e-3``, ``factor = 2``,
the values of the authors' released code). Capacities of distinct targets add up; their total over all degrees is at
most ``N``, and equals ``N`` for a fading-memory system with linearly independent features.

All fits go through :class:`Gram`, the centred second moments of features and targets: once it is built, the ridge
readout of any subset of features (``readout size`` scaling in ``memory.py``) costs a small ``n x n`` solve and never
revisits the samples.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Term = tuple[tuple[int, int], ...]  # ((delay, degree), ...) with delays ascending, degrees >= 1


# --- Legendre targets --------------------------------------------------------------------------------------------
def legendre(u: Tensor, n: int) -> Tensor:
    """Normalised Legendre polynomial ``sqrt(2n+1) P_n(u)``, elementwise; unit mean square for ``u ~ U[-1, 1]``."""
    if n < 0:
        raise ValueError(f"Legendre degree must be >= 0, got {n}")
    prev, cur = torch.ones_like(u), u
    if n == 0:
        return prev
    for m in range(1, n):  # Bonnet: (m+1) P_{m+1} = (2m+1) u P_m - m P_{m-1}
        prev, cur = cur, ((2 * m + 1) * u * cur - m * prev) / (m + 1)
    return math.sqrt(2 * n + 1) * cur


def capacity_terms(degree: int, window: int) -> list[Term]:
    """Every target of total degree exactly ``degree`` over delays ``0 .. window-1``: tuples of ``(delay, degree)``.

    Their number is ``C(window + degree - 1, degree)`` (multisets of delays), e.g. 220 for degree 3, window 10.
    """
    if degree < 1 or window < 1:
        raise ValueError(f"degree and window must be >= 1, got degree={degree}, window={window}")
    terms = []
    for delays in itertools.combinations_with_replacement(range(window), degree):
        counts: dict[int, int] = {}
        for i in delays:
            counts[i] = counts.get(i, 0) + 1
        terms.append(tuple(sorted(counts.items())))
    return terms


def term_name(term: Term) -> str:
    """Readable name of a target, e.g. ``P2(u[t-1])*P1(u[t-3])``."""
    return "*".join(f"P{deg}(u[t-{i}])" if i else f"P{deg}(u[t])" for i, deg in term)


def term_targets(u: Tensor, terms: Sequence[Term], start: int) -> Tensor:
    """Target values ``[S * (T - start), len(terms)]`` for input streams ``u [S, T]``, samples ``t >= start`` of
    every stream stacked stream-major (the layout of ``memory.sample_rows``). ``start`` must cover the largest
    delay."""
    if u.dim() != 2:
        raise ValueError(f"u must be [streams, time], got {list(u.shape)}")
    max_delay = max((i for term in terms for i, _ in term), default=0)
    if start < max_delay:
        raise ValueError(f"start ({start}) must be >= the largest delay ({max_delay})")
    T = u.shape[1]
    degrees = sorted({deg for term in terms for _, deg in term})
    basis = {deg: legendre(u, deg) for deg in degrees}
    cols = []
    for term in terms:
        z = torch.ones(u.shape[0], T - start, dtype=u.dtype, device=u.device)
        for i, deg in term:
            z = z * basis[deg][:, start - i: T - i]
        cols.append(z.reshape(-1))
    return torch.stack(cols, dim=1) if cols else u.new_zeros(u.shape[0] * (T - start), 0)


# --- centred second moments and ridge readouts -------------------------------------------------------------------
@dataclass
class Gram:
    """Centred second moments of features ``X [n, N]`` and targets ``Y [n, m]`` over ``n`` samples (float64):
    ``xx = Xc^T Xc [N, N]``, ``xy = Xc^T Yc [N, m]``, ``yy = diag(Yc^T Yc) [m]``."""

    xx: Tensor
    xy: Tensor
    yy: Tensor
    n: int

    @property
    def n_features(self) -> int:
        return int(self.xx.shape[0])


def gram(X: Tensor, Y: Tensor, *, chunk: int = 256) -> Gram:
    """:class:`Gram` of ``X [n, N]`` and ``Y [n, m]`` (targets processed ``chunk`` columns at a time, so ``Y`` may be
    a large lazily built matrix only once)."""
    if X.dim() != 2 or Y.dim() != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X must be [n, N] and Y [n, m] with the same n, got {list(X.shape)} and {list(Y.shape)}")
    if X.shape[0] < 2:
        raise ValueError("need at least 2 samples")
    Xc = X.double() - X.double().mean(0)
    xy, yy = [], []
    for j in range(0, max(Y.shape[1], 1), chunk):
        Yc = Y[:, j: j + chunk].double()
        Yc = Yc - Yc.mean(0)
        xy.append(Xc.T @ Yc)
        yy.append(Yc.pow(2).sum(0))
    return Gram(Xc.T @ Xc, torch.cat(xy, 1), torch.cat(yy), int(X.shape[0]))


def ridge_readout(train: Gram, idx: Tensor | None = None, ridge: float = 1e-6) -> Tensor:
    """Ridge weights ``W [n_idx, m]`` of the readout from features ``idx`` (all if None) to every target.

    ``ridge`` is relative: the penalty is ``ridge * mean(diag(xx[idx, idx]))``, so it means the same for spiking
    voltages and gated-RNN activations. An intercept is implied by the centring. Features with zero variance get
    zero weight.
    """
    xx, xy = _sub(train, idx)
    scale = torch.diagonal(xx).mean().clamp_min(torch.finfo(torch.float64).tiny)
    A = xx + (ridge * scale + torch.finfo(torch.float64).tiny) * torch.eye(xx.shape[0], dtype=xx.dtype)
    return torch.linalg.solve(A, xy)


def explained_variance(g: Gram, W: Tensor, idx: Tensor | None = None) -> Tensor:
    """``1 - MSE / var`` per target of the readout ``W`` on the samples of ``g`` (in-sample when ``g`` is the
    training Gram), in [0, 1] for the least-squares fit; targets with zero variance get 0."""
    xx, xy = _sub(g, idx)
    resid = g.yy - 2 * (W * xy).sum(0) + (W * (xx @ W)).sum(0)
    return _safe_ratio(g.yy - resid, g.yy).clamp(0.0, 1.0)


def squared_correlation(g: Gram, W: Tensor, idx: Tensor | None = None) -> Tensor:
    """Squared Pearson correlation per target between the readout ``W``'s prediction and the target on the
    samples of ``g`` (held-out when ``g`` is the test Gram): ``cov^2 / (var_pred var_target)``, in [0, 1]."""
    xx, xy = _sub(g, idx)
    cov = (W * xy).sum(0)
    var_pred = (W * (xx @ W)).sum(0)
    return _safe_ratio(cov.pow(2), var_pred * g.yy).clamp(0.0, 1.0)


def mean_abs_correlation(g: Gram, idx: Tensor | None = None) -> float:
    """Mean pairwise ``|corr|`` of the features ``idx`` (constant features left out); nan for fewer than 2."""
    xx, _ = _sub(g, idx)
    var = torch.diagonal(xx)
    live = var > 1e-12 * var.max().clamp_min(1e-300)
    c = xx[live][:, live] / torch.sqrt(var[live][:, None] * var[live][None, :])
    n = c.shape[0]
    if n < 2:
        return float("nan")
    off = c.abs().sum() - torch.diagonal(c).abs().sum()
    return float(off / (n * (n - 1)))


def capacity_threshold(n_features: int, n_samples: int, *, p: float = 1e-3, factor: float = 2.0) -> float:
    """Finite-sample threshold ``factor * chi2.ppf(1 - p, N) / T`` below which a capacity is set to 0."""
    from scipy.stats import chi2

    if n_samples < 1 or n_features < 1:
        raise ValueError(f"need n_features >= 1 and n_samples >= 1, got {n_features}, {n_samples}")
    return float(factor * chi2.ppf(1.0 - p, n_features) / n_samples)


def _sub(g: Gram, idx: Tensor | None) -> tuple[Tensor, Tensor]:
    if idx is None:
        return g.xx, g.xy
    return g.xx[idx][:, idx], g.xy[idx]


def _safe_ratio(a: Tensor, b: Tensor) -> Tensor:
    ok = b > 0
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), torch.zeros_like(a))


# --- the capacity profile ----------------------------------------------------------------------------------------
@dataclass
class CapacityResult:
    """Information-processing capacity of a set of features.

    ``terms``: the targets (see :func:`capacity_terms`); ``capacities [len(terms)]``: after thresholding;
    ``raw [len(terms)]``: before; ``degrees``: the total degree of each term; ``threshold``; ``n_features``,
    ``n_samples``.
    """

    terms: list[Term]
    capacities: np.ndarray
    raw: np.ndarray
    degrees: np.ndarray
    threshold: float
    n_features: int
    n_samples: int

    def by_degree(self) -> dict[int, float]:
        """Total capacity of each degree."""
        return {int(d): float(self.capacities[self.degrees == d].sum()) for d in np.unique(self.degrees)}

    @property
    def total(self) -> float:
        return float(self.capacities.sum())

    def capacity_of(self, term: Term) -> float:
        """Capacity of one target, e.g. ``((1, 2),)`` for ``P2(u[t-1])``."""
        key = tuple(sorted(term))
        for t, c in zip(self.terms, self.capacities, strict=True):
            if t == key:
                return float(c)
        raise KeyError(f"{term_name(key)} is not among the measured targets (raise the degree or window)")


@dataclass
class CapacityTargets:
    """All Legendre targets up to a degree for a driven network, with the full-sample :class:`Gram` (built once,
    reused for any subset of readout features)."""

    terms: list[Term]
    degrees: np.ndarray
    gram: Gram


def capacity_targets(features: Tensor, u: Tensor, *, max_degree: int = 3, window: int | dict[int, int] = 10,
                     start: int | None = None) -> CapacityTargets:
    """Build the Legendre targets of degrees ``1 .. max_degree`` and their Gram with ``features``.

    Args:
        features: ``[S, T, N]`` network features driven by ``u``.
        u: ``[S, T]`` the driving input, i.i.d. uniform in [-1, 1].
        max_degree: highest total degree.
        window: delays ``0 .. window-1`` (an int for every degree, or ``{degree: window}``; the number of targets
            grows as ``window^degree / degree!``).
        start: first sample used in each stream (default: the largest window), so every delay is defined and the
            initial transient is dropped.
    """
    check_drive(features, u)
    if max_degree < 1:
        raise ValueError(f"max_degree must be >= 1, got {max_degree}")
    windows = {d: (window[d] if isinstance(window, dict) else window) for d in range(1, max_degree + 1)}
    terms: list[Term] = []
    degrees: list[int] = []
    for d, w in windows.items():
        ts = capacity_terms(d, w)
        terms += ts
        degrees += [d] * len(ts)
    start = max(windows.values()) if start is None else int(start)
    if start >= u.shape[1]:
        raise ValueError(f"start ({start}) must be smaller than the stream length ({u.shape[1]})")
    X = features[:, start:].reshape(-1, features.shape[-1])
    g = _gram_lazy(X, u, terms, start)
    return CapacityTargets(terms, np.array(degrees), g)


def capacity_from_targets(targets: CapacityTargets, idx: Tensor | None = None, *, ridge: float = 1e-8,
                          p: float = 1e-3, factor: float = 2.0) -> CapacityResult:
    """Capacities of the features ``idx`` (all if None) for every target in ``targets``."""
    g = targets.gram
    W = ridge_readout(g, idx, ridge)
    raw = explained_variance(g, W, idx)
    n_feat = g.n_features if idx is None else len(idx)
    thr = capacity_threshold(n_feat, g.n, p=p, factor=factor)
    caps = torch.where(raw >= thr, raw, torch.zeros_like(raw))
    return CapacityResult(list(targets.terms), caps.numpy(), raw.numpy(), targets.degrees, thr, n_feat, g.n)


def information_processing_capacity(features: Tensor, u: Tensor, *, max_degree: int = 3,
                                    window: int | dict[int, int] = 10, start: int | None = None,
                                    ridge: float = 1e-8, p: float = 1e-3, factor: float = 2.0) -> CapacityResult:
    """Information-processing capacity (Dambre et al. 2012) of ``features [S, T, N]`` driven by ``u [S, T]``
    (i.i.d. uniform in [-1, 1]): every product of normalised Legendre polynomials of ``u(t - i)``, ``i < window``,
    of total degree ``1 .. max_degree``, thresholded at ``factor * chi2.ppf(1 - p, N) / T``. See
    :func:`capacity_targets` for the arguments and ``memory.network_capacity`` to drive a network."""
    return capacity_from_targets(capacity_targets(features, u, max_degree=max_degree, window=window, start=start),
                                 ridge=ridge, p=p, factor=factor)


def _gram_lazy(X: Tensor, u: Tensor, terms: list[Term], start: int, chunk: int = 256) -> Gram:
    """:class:`Gram` with the targets built ``chunk`` terms at a time (the full target matrix can be large)."""
    Xc = X.double() - X.double().mean(0)
    xy, yy = [], []
    for j in range(0, len(terms), chunk):
        Yc = term_targets(u.double(), terms[j: j + chunk], start)
        Yc = Yc - Yc.mean(0)
        xy.append(Xc.T @ Yc)
        yy.append(Yc.pow(2).sum(0))
    return Gram(Xc.T @ Xc, torch.cat(xy, 1), torch.cat(yy), int(X.shape[0]))


def check_drive(features: Tensor, u: Tensor) -> None:
    """Raise unless ``features [streams, time, N]`` and the drive ``u [streams, time]`` match."""
    if features.dim() != 3 or u.dim() != 2 or features.shape[:2] != u.shape:
        raise ValueError(f"features must be [streams, time, N] and u [streams, time] with matching streams and "
                         f"time, got {list(features.shape)} and {list(u.shape)}")


__all__ = [
    "CapacityResult",
    "CapacityTargets",
    "Gram",
    "Term",
    "capacity_from_targets",
    "capacity_targets",
    "capacity_terms",
    "capacity_threshold",
    "explained_variance",
    "gram",
    "information_processing_capacity",
    "legendre",
    "mean_abs_correlation",
    "ridge_readout",
    "squared_correlation",
    "term_name",
    "term_targets",
]
