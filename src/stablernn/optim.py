"""Optimizer and learning-rate schedule factories for :func:`stablernn.train.fit`, and the papers' optimizer:
AdaBelief (rectified, decoupled weight decay) wrapped in Lookahead, written here from the formulas (AdaBelief,
arXiv:2010.07468 Alg. 2; RAdam's rectification, arXiv:1908.03265 Alg. 2; Lookahead, arXiv:1907.08610 Alg. 1).

Why our own: the package we used (pytorch-optimizer) imports ``torch._dynamo`` with itself, measured 2.6-4.5 s paid
by the first LSC of every process (experiments/lsc_phases.py, docs/lsc.md); these ~100 lines follow the same
trajectory to float rounding (tests/test_optim.py compares them step by step when that package is installed)."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn


class AdaBelief(torch.optim.Optimizer):
    """AdaBelief: Adam whose second moment is the variance of the gradient around its running mean ("belief").

    Per parameter, step ``t`` (``g`` the gradient):

    - decoupled decay (``weight_decouple``): ``p <- p (1 - lr wd)``; else ``g <- g + wd p`` (L2);
    - ``m <- β1 m + (1 - β1) g``; ``s <- β2 s + (1 - β2) (g - m)² + ε`` (Alg. 2 adds ε inside the moment too);
    - without ``rectify``: ``p <- p - lr / (1 - β1^t) · m / (sqrt(s) / sqrt(1 - β2^t) + ε)``;
    - with ``rectify`` (RAdam): ``ρ_∞ = 2 / (1 - β2) - 1``, ``ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t)``; while ``ρ_t >=
      5`` the step is ``lr r_t / (1 - β1^t) · m / (sqrt(s) + ε)`` with ``r_t = sqrt((1 - β2^t) (ρ_t - 4)(ρ_t - 2)
      ρ_∞ / ((ρ_∞ - 4)(ρ_∞ - 2) ρ_t))`` (the ``sqrt(1 - β2^t)`` is ŝ's bias correction); before that, SGD with
      momentum: ``p <- p - lr / (1 - β1^t) · m``.

    The step count lives in each param group (``group["step"]``), the moments in ``state[p]`` as ``exp_avg`` and
    ``exp_avg_var``: the layout of pytorch-optimizer's AdaBelief, so its checkpoints load."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, weight_decouple: bool = True, rectify: bool = False, eps: float = 1e-16):
        if not lr >= 0.0:
            raise ValueError(f"AdaBelief: lr must be >= 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdaBelief: betas must be in [0, 1), got {betas}")
        if not weight_decay >= 0.0 or not eps >= 0.0:
            raise ValueError(f"AdaBelief: weight_decay and eps must be >= 0, got {weight_decay}, {eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay,
                                  "weight_decouple": weight_decouple, "rectify": rectify, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            group["step"] = t = group.get("step", 0) + 1
            lr, (b1, b2), wd, eps = group["lr"], group["betas"], group["weight_decay"], group["eps"]
            bc1, b2t = 1.0 - b1 ** t, b2 ** t
            sgd = False
            if group["rectify"]:
                rho_inf = 2.0 / (1.0 - b2) - 1.0
                rho = rho_inf - 2.0 * t * b2t / (1.0 - b2t)
                sgd = rho < 5.0  # the variance of the adaptive rate is not yet tractable: momentum SGD
                r = 1.0 if sgd else math.sqrt((1.0 - b2t) * (rho - 4.0) * (rho - 2.0) * rho_inf
                                              / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
                step_size = lr * r / bc1
            else:
                step_size = lr / bc1
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0.0:
                    if group["weight_decouple"]:
                        p.mul_(1.0 - lr * wd)
                    else:
                        g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["exp_avg"], state["exp_avg_var"] = torch.zeros_like(p), torch.zeros_like(p)
                m, s = state["exp_avg"], state["exp_avg_var"]
                m.lerp_(g, 1.0 - b1)
                d = g - m
                s.mul_(b2).addcmul_(d, d, value=1.0 - b2).add_(eps)
                if sgd:
                    p.add_(m, alpha=-step_size)
                elif group["rectify"]:
                    p.addcdiv_(m, s.sqrt().add_(eps), value=-step_size)
                else:
                    p.addcdiv_(m, s.sqrt().div_(math.sqrt(1.0 - b2t)).add_(eps), value=-step_size)
        return loss


class Lookahead(torch.optim.Optimizer):
    """Lookahead(k, α) around an inner optimizer (``.optimizer``): every ``k`` inner steps the fast weights move to
    ``slow + α (fast - slow)`` and the slow weights take that value. The slow copies live in
    ``state[p]["slow_params"]`` (LSC's weight rescaling scales them with the weights: lsc/pretrain.py); the step
    counter in each param group (``group["counter"]``). ``state_dict`` has pytorch-optimizer's layout
    (``lookahead_state`` keyed ``(group, index)``, ``base_optimizer``), so its checkpoints load."""

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        # no super().__init__: the param groups are the inner optimizer's (same objects), not copies
        if not (isinstance(k, int) and k >= 1) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Lookahead needs an integer k >= 1 and alpha in [0, 1], got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        self.defaults = {"lookahead_k": k, "lookahead_alpha": alpha, **optimizer.defaults}
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        for group in self.param_groups:
            group.setdefault("counter", 0)
            for p in group["params"]:
                self.state[p]["slow_params"] = p.detach().clone()

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = self.optimizer.step(closure)
        with torch.no_grad():
            for group in self.param_groups:
                group["counter"] += 1
                if group["counter"] < self.k:
                    continue
                group["counter"] = 0
                for p in group["params"]:
                    slow = self.state[p]["slow_params"]
                    p.lerp_(slow, 1.0 - self.alpha)  # slow + α (fast - slow)
                    slow.copy_(p)
        return loss

    def state_dict(self) -> dict[str, Any]:
        own = {(gi, pi): dict(self.state[p]) for gi, g in enumerate(self.param_groups)
               for pi, p in enumerate(g["params"]) if p in self.state}
        return {"lookahead_state": own, "base_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("lookahead_state")
        if saved is None or "base_optimizer" not in state_dict:
            raise ValueError("not a Lookahead state dict (keys lookahead_state, base_optimizer); was the checkpoint "
                             "written with another optimizer? Pass the run's own --optimizer")
        params = [p for g in self.param_groups for p in g["params"]]
        keys = [(gi, pi) for gi, g in enumerate(self.param_groups) for pi in range(len(g["params"]))]
        if set(saved) != set(keys):
            raise ValueError(f"Lookahead state holds {len(saved)} parameters, the optimizer {len(params)}; the "
                             "checkpoint belongs to another model")
        self.optimizer.load_state_dict(state_dict["base_optimizer"])
        self.state = defaultdict(dict)
        for key, p in zip(keys, params, strict=True):
            self.state[p] = {k: v.to(device=p.device, dtype=p.dtype).clone() if isinstance(v, Tensor) else v
                             for k, v in saved[key].items()}


def make_optimizer(params: Iterable[nn.Parameter], name: str, lr: float, weight_decay: float = 0.0
                   ) -> torch.optim.Optimizer:
    """``adamw``, ``adam``, ``sgd``, ``adabelief`` or ``adabelief_lookahead`` (:class:`AdaBelief` with decoupled
    weight decay, RAdam-style rectification and ε = 1e-14 as in the papers' TF code, wrapped in
    :class:`Lookahead` (6, 0.5))."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if name in ("adabelief", "adabelief_lookahead"):
        opt = AdaBelief(params, lr=lr, weight_decay=weight_decay, weight_decouple=True, rectify=True, eps=1e-14)
        return Lookahead(opt, k=6, alpha=0.5) if name == "adabelief_lookahead" else opt
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, adam, sgd, adabelief or adabelief_lookahead")


def lr_factor(step: int, total: int, schedule: str, warmup: int = 0) -> float:
    """Multiplier of the base learning rate at optimisation step ``step`` of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown schedule {schedule!r}; choose constant, cosine or linear")


def base_optimizer(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer whose ``param_groups`` carry the learning rate (unwraps Lookahead)."""
    inner = getattr(opt, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else opt


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in base_optimizer(opt).param_groups:
        group["lr"] = lr
