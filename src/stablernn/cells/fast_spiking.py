"""Whole-sequence fast path for recurrent LIF/ALIF layers: one autograd node for all T steps.

The step cell (``spiking.py``) stays the reference; this computes the same dynamics

    c[t] = I[t] + z[t-1] R^T                     I = x W_ih^T + b for all steps at once (outside, by autograd)
    a[t] = δ_a a[t-1] + (1 - δ_a) z[t-1],  ϑ[t] = ϑ + β a[t]        (ALIF; LIF: ϑ[t] = ϑ)
    v[t] = δ v[t-1] + c[t] - ϑ[t] z[t-1]         | (δ v[t-1] + c[t]) (1 - z[t-1]) | δ v[t-1] (1 - z[t-1]) + c[t]
    z[t] = H(v[t] - ϑ[t])                        surrogate f(v[t] - ϑ[t]) backward

with a forward loop that records no autograd graph (it stores only v, a and z, ``[B, T, n]`` each) and a
hand-written backward through time. Why it is fast: the plain autograd loop pays Python and graph bookkeeping for
~10 small ops per step in both directions and saves every intermediate; here each step is one matmul plus a few
fused elementwise ops (LIF with subtractive reset: the reset rides in the matmul as ``R - diag ϑ``), the surrogate
slope is computed in cache-sized blocks of steps, and the weight gradients are batched over time into single
matmuls after the loop. Learnable surrogate γ/s get their gradient from the stored dL/dz[t] by re-running the spike
function on the detached potentials (the same surrogate-model gradient the step loop gives).

Backward recursion (adjoints G; ``zr`` is the z[t-1] of the reset term, cut when ``detach_reset``)::

    Gz[t] = dL/dz[t] (from the output) + carry_z
    gu    = Gz[t] f(u[t]);  Gv[t] = carry_v + gu;  gϑ[t] = -gu (- z[t-1] Gv[t] for subtract)
    subtract:       gc = Gv;              carry_v = δ Gv;            gzr = -ϑ[t] Gv
    multiplicative: gc = Gv (1 - z[t-1]); carry_v = δ gc;            gzr = -(δ v[t-1] + c[t]) Gv
    mult_leak:      gc = Gv;              carry_v = δ (1 - z[t-1]) Gv; gzr = -δ v[t-1] Gv
    ALIF: Ga = carry_a + β gϑ[t];  carry_a = δ_a Ga
    carry_z = gc R (+ gzr) (+ (1 - δ_a) Ga)

Double backward through this node is not supported: ``create_graph=True`` raises a RuntimeError naming the fix
(``cell.fast = False``); LSC and the Jacobian tools use the step cell.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .resets import RESETS

Derivative = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SpikingOptions:
    """Static options of a spiking sequence: the reset kind, whether the reset path carries gradient, the
    surrogate derivative ``f(u)`` used in the backward (e.g. ``SpikeFunction.derivative``), and, when its γ/s are
    learnable, the spike function itself (its gradients to γ and s are recomputed from it)."""

    reset: str
    detach_reset: bool
    derivative: Derivative
    learnable_spike: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"unknown reset {self.reset!r}; choose one of {', '.join(RESETS)}")
        if not callable(self.derivative):
            raise TypeError("SpikingOptions.derivative must be callable: f(u) -> surrogate slope, same shape as u")


_CHUNK = 32  # steps per block of the backward's batched elementwise work: big enough to amortise op overhead,
# small enough ([B, 32, n]) to stay in cache; whole-sequence temporaries would stream from memory instead.


def _sum_to(g: Tensor, like: Tensor) -> Tensor:
    """Reduce a broadcast gradient ``g`` to the shape of the parameter ``like`` (e.g. ``[B, T, n] -> [n]``)."""
    return g.sum_to_size(like.shape) if g.shape != like.shape else g


def _previous(first: Tensor, seq: Tensor, start: int, stop: int) -> Tensor:
    """The previous-step values ``seq[:, t-1]`` for ``t`` in ``[start, stop)`` (``first`` before step 0),
    ``[B, stop - start, n]``."""
    if start > 0:
        return seq[:, start - 1:stop - 1]
    return torch.cat([first.unsqueeze(1), seq[:, :stop - 1]], dim=1)


class _SpikingSequence(torch.autograd.Function):
    """All T steps of an LIF (``decay_a is None``) or ALIF layer given its input currents."""

    @staticmethod
    def forward(ctx: Any, currents: Tensor, rec: Tensor | None, decay: Tensor, decay_a: Tensor | None,
                threshold: Tensor, beta: Tensor | None, v0: Tensor, a0: Tensor | None, z0: Tensor,
                opts: SpikingOptions, *spike_params: Tensor) -> tuple[Tensor, ...]:
        B, T, n = currents.shape
        adaptive = decay_a is not None
        reset = opts.reset
        V = currents.new_empty(B, T, n)
        Z = currents.new_empty(B, T, n)
        A = currents.new_empty(B, T, n) if adaptive else None
        # The multiplicative reset's gradient through z[t-1] needs δ v[t-1] + c[t], which v[t] = 0 has lost.
        P = currents.new_empty(B, T, n) if reset == "multiplicative" and not opts.detach_reset else None
        # LIF subtract: the reset -ϑ z[t-1] is linear in z[t-1], so it rides in the recurrent matmul for free.
        fold = reset == "subtract" and not adaptive and rec is not None
        rec_used = rec - torch.diag(threshold.expand(n)) if fold else rec
        rec_t = rec_used.t() if rec_used is not None else None
        one_minus_da = 1.0 - decay_a if adaptive else None
        Is, Vs, Zs = currents.unbind(1), V.unbind(1), Z.unbind(1)
        As = A.unbind(1) if adaptive else None
        v, a, z = v0, a0, z0
        thr = threshold
        for t in range(T):
            c = torch.addmm(Is[t], z, rec_t) if rec_t is not None else Is[t]
            if adaptive:
                a = torch.lerp(a, z, one_minus_da, out=As[t])  # δ_a a + (1 - δ_a) z in one op
                thr = torch.addcmul(threshold, beta, a)
            if reset == "subtract":
                if fold:
                    v = torch.addcmul(c, decay, v, out=Vs[t])
                else:
                    v = torch.addcmul(torch.addcmul(c, decay, v), thr, z, value=-1.0, out=Vs[t])
            elif reset == "multiplicative":
                p = torch.addcmul(c, decay, v, out=P[:, t]) if P is not None else torch.addcmul(c, decay, v)
                v = torch.mul(p, 1.0 - z, out=Vs[t])
            else:  # mult_leak
                v = torch.addcmul(c, decay * v, 1.0 - z, out=Vs[t])
            z = torch.gt(v, thr, out=Zs[t])
        ctx.opts, ctx.adaptive, ctx.fold = opts, adaptive, fold
        # Intermediates (V, A, P, rec_used) go through save_for_backward too, so they are freed right after the
        # backward and saved-tensor hooks (offloading, checkpointing) see them.
        ctx.save_for_backward(Z, rec, decay, decay_a, threshold, beta, v0, a0, z0, V, A, P, rec_used)
        ctx.spike_params = spike_params
        v_final = V[:, -1].clone()  # a copy: V is saved for backward and must not be aliased by the caller
        if adaptive:
            return Z, v_final, A[:, -1].clone()
        return Z, v_final

    @staticmethod
    def backward(ctx: Any, gZ: Tensor, gv_final: Tensor, *ga_final: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: a silent first-order-only result would be wrong
            raise RuntimeError(
                "the fused LIF/ALIF sequence path does not support double backward (create_graph=True); set "
                "cell.fast = False on the spiking cells to run the differentiable step loop instead")
        with torch.no_grad():
            return _SpikingSequence._backward(ctx, gZ, gv_final, ga_final[0] if ga_final else None)

    @staticmethod
    def _backward(ctx: Any, gZ: Tensor, gv_final: Tensor, ga_final: Tensor | None):
        Z, rec, decay, decay_a, threshold, beta, v0, a0, z0, V, A, P, rec_used = ctx.saved_tensors
        opts, adaptive = ctx.opts, ctx.adaptive
        reset, detach = opts.reset, opts.detach_reset
        need = dict(zip(("currents", "rec", "decay", "decay_a", "threshold", "beta", "v0", "a0", "z0"),
                        ctx.needs_input_grad[:9], strict=True))
        B, T, n = V.shape
        # Matrix for dL/dz[t-1] = gc R: with the folded reset it carries -ϑ Gv, which detach_reset must drop.
        rec_b = rec_used if (ctx.fold and not detach) else rec
        # gu = dL/du[t] is only materialised when per-step threshold gradients need it (ALIF, learnable ϑ);
        # otherwise dL/dv[t] = carry + gZ f(u) + gz f(u) is one fused op per step.
        # Learnable γ/s: their gradient reads dL/dz[t] itself, kept per step in GZ.
        spike_params = [p for p, want in zip(ctx.spike_params, ctx.needs_input_grad[10:], strict=True) if want]
        GZ = torch.empty_like(V) if spike_params else None
        GZs = GZ.unbind(1) if GZ is not None else None
        need_gu = adaptive or need["threshold"] or GZ is not None
        acc_thr = torch.zeros_like(v0) if need["threshold"] else None
        acc_beta = torch.zeros_like(v0) if adaptive and need["beta"] else None
        acc_da = torch.zeros_like(v0) if adaptive and need["decay_a"] else None
        one_minus_da = 1.0 - decay_a if adaptive else None
        neg_thr = -threshold

        gC = torch.empty_like(V)  # dL/dc[t] = dL/dI[t]
        gCs, Zs, Vs = gC.unbind(1), Z.unbind(1), V.unbind(1)
        As = A.unbind(1) if adaptive else None
        carry = gv_final  # dL/dv[t] from step t+1 (without the step's own surrogate term)
        fused = False  # whether carry already includes gZ[t] f(u[t])
        ga = ga_final
        gz = torch.zeros_like(v0)  # dL/dz[t] from step t+1
        for stop in range(T, 0, -_CHUNK):
            start = max(0, stop - _CHUNK)
            thr_c = torch.addcmul(threshold, beta, A[:, start:stop]) if adaptive else threshold
            S_c = opts.derivative(V[:, start:stop] - thr_c)
            gZS_c = gZ[:, start:stop] * S_c
            S_c = S_c.expand(B, stop - start, n)  # a derivative may return a broadcast shape
            if reset == "multiplicative":
                K_c = 1.0 - _previous(z0, Z, start, stop)  # the reset mask, applied to Gv
            elif reset == "mult_leak":
                K_c = (1.0 - _previous(z0, Z, start, stop)).mul_(decay)  # carry factor δ (1 - z[t-1])
            else:
                K_c = None
            Ss, gZSs = S_c.unbind(1), gZS_c.unbind(1)
            Ks = K_c.unbind(1) if K_c is not None else None
            for t in range(stop - 1, start - 1, -1):
                k = t - start
                z_prev = Zs[t - 1] if t > 0 else z0
                out = gCs[t] if reset != "multiplicative" else None
                if need_gu:
                    if GZs is not None:
                        gu = torch.mul(torch.add(gZ[:, t], gz, out=GZs[t]), Ss[k])
                    else:
                        gu = torch.addcmul(gZSs[k], gz, Ss[k])
                    Gv = torch.add(carry, gu, out=out)
                else:
                    h = carry if fused else carry + gZSs[k]
                    Gv = torch.addcmul(h, gz, Ss[k], out=out)
                if reset == "multiplicative":
                    gc = torch.mul(Gv, Ks[k], out=gCs[t])
                    src, factor = gc, decay
                elif reset == "subtract":
                    gc = src = Gv
                    factor = decay
                else:
                    gc = src = Gv
                    factor = Ks[k]
                if need_gu:
                    h_thr = torch.addcmul(gu, z_prev, Gv) if reset == "subtract" else gu  # = -dL/dϑ[t]
                    if acc_thr is not None:
                        acc_thr.add_(h_thr)
                gz = torch.mm(gc, rec_b) if rec_b is not None else torch.zeros_like(gc)
                if not detach:
                    if reset == "subtract" and adaptive:
                        gz.addcmul_(thr_c[:, k], Gv, value=-1.0)
                    elif reset == "subtract" and not ctx.fold:
                        gz.addcmul_(neg_thr, Gv)
                    elif reset == "multiplicative":
                        gz.addcmul_(P[:, t], Gv, value=-1.0)
                    elif reset == "mult_leak":
                        v_prev = Vs[t - 1] if t > 0 else v0
                        gz.addcmul_(decay * v_prev, Gv, value=-1.0)
                if adaptive:
                    Ga = torch.addcmul(ga, beta, h_thr, value=-1.0)
                    if acc_beta is not None:
                        acc_beta.addcmul_(h_thr, As[t])
                    if acc_da is not None:
                        a_prev = As[t - 1] if t > 0 else a0
                        acc_da.addcmul_(Ga, a_prev - z_prev)
                    gz.addcmul_(one_minus_da, Ga)
                    ga = decay_a * Ga
                if not need_gu and k > 0:
                    carry = torch.addcmul(gZSs[k - 1], factor, src)
                    fused = True
                else:
                    carry = factor * src
                    fused = False

        g_rec = g_decay = None
        if need["rec"]:
            g_rec = gC.reshape(-1, n).t().mm(_previous(z0, Z, 0, T).reshape(-1, n))
        if need["decay"]:
            dv = gC * _previous(v0, V, 0, T)
            if reset == "mult_leak":
                dv.mul_(1.0 - _previous(z0, Z, 0, T))
            g_decay = _sum_to(dv, decay)
        g_spike = {}
        if spike_params:  # the spike's own γ/s gradient: dL/dz[t] through its residual at the detached u[t]
            with torch.enable_grad():
                u = (V - (torch.addcmul(threshold, beta, A) if adaptive else threshold)).detach()
                grads = torch.autograd.grad(opts.learnable_spike(u), spike_params, GZ, allow_unused=True)
            g_spike = {id(p): g for p, g in zip(spike_params, grads, strict=True)}
        return (
            gC if need["currents"] else None,
            g_rec,
            g_decay,
            _sum_to(acc_da, decay_a) if acc_da is not None else None,
            _sum_to(-acc_thr, threshold) if acc_thr is not None else None,
            _sum_to(-acc_beta, beta) if acc_beta is not None else None,
            carry if need["v0"] else None,
            ga if adaptive and need["a0"] else None,
            gz if need["z0"] else None,
            None,
            *(g_spike.get(id(p)) for p in ctx.spike_params),
        )


def spiking_sequence(
    currents: Tensor, v0: Tensor, a0: Tensor | None, z0: Tensor, *,
    weight_hh: Tensor | None, decay: Tensor, decay_a: Tensor | None, threshold: Tensor, beta: Tensor | None,
    reset: str, detach_reset: bool, derivative: Derivative, learnable_spike: Any = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """All steps of an LIF (``a0 is None``) or ALIF layer from its input currents.

    Args:
        currents: ``I = x W_ih^T + b`` for every step, ``[batch, time, n]``.
        v0, a0, z0: initial membrane potential, adaptation (ALIF) and previous spikes, ``[batch, n]``.
        weight_hh: recurrent weight with self-connections already masked, ``[n, n]`` (post, pre); ``None`` for a
            non-recurrent layer.
        decay, decay_a, threshold, beta: per-neuron ``[n]`` (or broadcastable) tensors; may require grad.
        reset, detach_reset: as in :func:`stablernn.cells.spiking.spiking_step`.
        derivative: the surrogate slope ``f(u)`` of the spike function (``SpikeFunction.derivative``).
        learnable_spike: the spike function when its dampening/sharpness are learnable (a ``SpikeFunction`` with
            ``learnable``): they then get the same gradient as through the step loop.

    Returns:
        ``(z [batch, time, n], v_T [batch, n], a_T [batch, n] or None)``.
    """
    if currents.dim() != 3:
        raise ValueError(f"currents must be [batch, time, n], got {list(currents.shape)}")
    if currents.shape[1] == 0:
        raise ValueError("spiking_sequence needs at least one time step, got T = 0")
    adaptive = a0 is not None
    if adaptive and (decay_a is None or beta is None):
        raise ValueError("an ALIF sequence (a0 given) needs decay_a and beta")
    opts = SpikingOptions(reset, bool(detach_reset), derivative, learnable_spike)
    spike_params = []
    if learnable_spike is not None:
        spike_params = [p for p in (learnable_spike.dampening, learnable_spike.sharpness) if p.requires_grad]
    out = _SpikingSequence.apply(currents, weight_hh, decay, decay_a if adaptive else None, threshold,
                                 beta if adaptive else None, v0, a0, z0, opts, *spike_params)
    if adaptive:
        return out[0], out[1], out[2]
    return out[0], out[1], None


__all__ = ["SpikingOptions", "spiking_sequence"]
