"""Seeded long-memory synthetic tasks: copy memory, adding problem, delayed XOR, delayed recall, and the
memory-capacity input stream.

Every generator takes a ``numpy.random.Generator`` and returns numpy arrays; the builders draw the training pool and
the test set from two independent streams of ``cfg.seed`` (``default_rng([seed, 0])`` and ``[seed, 1]``) and carve
validation from the training pool.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import DataError, TaskData, TaskInfo
from .config import DataConfig
from .loader import TensorLoader, as_index, carve_validation, moments
from .registry import register

Arrays = tuple[np.ndarray, np.ndarray]
IGNORE = -100  # per-step label where there is no target (torch's cross_entropy ignore_index default)


# ---------------------------------------------------------------------------------------------------------- copy
def copy_memory(rng: np.random.Generator, n: int, seq_len: int, copy_length: int, n_symbols: int) -> Arrays:
    """Copy-memory sequences as token ids.

    Layout of each of the ``n`` sequences (``T = seq_len``, ``m = copy_length``, ``K = n_symbols``): steps
    ``0..m-1`` hold random symbols, then blanks, the recall marker at step ``T-m-1``, blanks during the last ``m``
    steps, where the model must output the ``m`` symbols in order. Input token ids: 0 = blank, ``1..K`` = symbols,
    ``K+1`` = marker. Returns ``tokens [n, T]`` int64 and per-step labels ``[n, T]`` int64 (the symbol index
    ``0..K-1`` over the last ``m`` steps, ``-100`` elsewhere).
    """
    if copy_length < 1 or n_symbols < 1:
        raise DataError(f"copy: copy_length and n_symbols must be >= 1, got {copy_length}, {n_symbols}")
    if seq_len < 2 * copy_length + 1:
        raise DataError(
            f"copy: seq_len={seq_len} is too short for copy_length={copy_length}; need seq_len >= 2*copy_length + 1"
        )
    sym = rng.integers(0, n_symbols, size=(n, copy_length))
    tokens = np.zeros((n, seq_len), dtype=np.int64)
    tokens[:, :copy_length] = sym + 1
    tokens[:, seq_len - copy_length - 1] = n_symbols + 1
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    labels[:, seq_len - copy_length :] = sym
    return tokens, labels


def _one_hot(n_classes: int):
    def f(tokens: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(tokens, n_classes).to(torch.float32)

    return f


@register("copy", "copy memory: remember copy_length symbols over a delay, recall after a marker (per step)")
def build_copy(cfg: DataConfig) -> TaskData:
    """Copy memory: ``x`` ``[B, T, K+2]`` one-hot (blank, K symbols, marker), ``y`` ``[B, T]`` per-step labels in
    ``0..K-1`` with -100 where there is no target; ``T = cfg.seq_len``. Reads ``seq_len, copy_length, n_symbols,
    n_train, n_test, seed, val_fraction, val_split`` and the batch sizes.
    """
    def gen(rng: np.random.Generator, n: int):
        return copy_memory(rng, n, cfg.seq_len, cfg.copy_length, cfg.n_symbols)

    n_in = cfg.n_symbols + 2
    p = 1.0 / n_in  # each step is one-hot, so the mean of the entries is exactly 1 / n_in
    return _build(cfg, "copy", gen, _one_hot(n_in), n_in, cfg.n_symbols, "per_step", (p, p * (1 - p)))


# -------------------------------------------------------------------------------------------------------- adding
def adding_problem(rng: np.random.Generator, n: int, seq_len: int) -> Arrays:
    """Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015 form).

    Channel 0: i.i.d. uniform values in [0, 1]; channel 1: marker, 1 at one step of the first half and one step of
    the second half, else 0. Target: the sum of the two marked values. Returns ``x [n, T, 2]`` float32 and
    ``y [n]`` float32.
    """
    if seq_len < 2:
        raise DataError(f"adding: seq_len must be >= 2, got {seq_len}")
    half = seq_len // 2
    values = rng.random((n, seq_len)).astype(np.float32)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, seq_len, size=n)
    marks = np.zeros((n, seq_len), dtype=np.float32)
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return np.stack([values, marks], axis=-1), y.astype(np.float32)


@register("adding", "adding problem: sum the two marked values of a uniform sequence (regression)")
def build_adding(cfg: DataConfig) -> TaskData:
    """Adding problem: ``x`` ``[B, T, 2]`` (values, markers), ``y`` ``[B]`` float; ``T = cfg.seq_len``.

    Predicting the constant 1 gives MSE ~ 1/6, the baseline a model must beat. Reads ``seq_len, n_train, n_test,
    seed, val_fraction, val_split`` and the batch sizes.
    """
    return _build(cfg, "adding", lambda rng, n: adding_problem(rng, n, cfg.seq_len), None, 2, 1, "regress", None)


# --------------------------------------------------------------------------------------------------- delayed XOR
def delayed_xor(rng: np.random.Generator, n: int, seq_len: int) -> Arrays:
    """Delayed XOR: two bits shown at random steps of the first half, the answer asked for at the last step.

    Channel 0 holds the bit value (+1 for 1, -1 for 0) at the two presentation steps and 0 elsewhere; channel 1 is
    the cue, 1 at step ``T-1``. Target: ``a XOR b`` in {0, 1}. Returns ``x [n, T, 2]`` float32, ``y [n]`` int64.
    """
    half = seq_len // 2
    if half < 2:
        raise DataError(f"delayed_xor: seq_len must be >= 4, got {seq_len}")
    bits = rng.integers(0, 2, size=(n, 2))
    # two distinct positions in [0, half): draw the first, then the second among the remaining half - 1 steps
    p1 = rng.integers(0, half, size=n)
    p2 = rng.integers(0, half - 1, size=n)
    p2 = p2 + (p2 >= p1)
    x = np.zeros((n, seq_len, 2), dtype=np.float32)
    rows = np.arange(n)
    x[rows, p1, 0] = 2.0 * bits[:, 0] - 1.0
    x[rows, p2, 0] = 2.0 * bits[:, 1] - 1.0
    x[:, -1, 1] = 1.0
    return x, (bits[:, 0] ^ bits[:, 1]).astype(np.int64)


@register("delayed_xor", "delayed XOR of two bits shown early; answer at the last step (2 classes)")
def build_delayed_xor(cfg: DataConfig) -> TaskData:
    """Delayed XOR: ``x`` ``[B, T, 2]`` (bit channel +-1, cue), ``y`` ``[B]`` in {0, 1}; ``T = cfg.seq_len``.

    Reads ``seq_len, n_train, n_test, seed, val_fraction, val_split`` and the batch sizes.
    """
    return _build(cfg, "delayed_xor", lambda rng, n: delayed_xor(rng, n, cfg.seq_len), None, 2, 2, "classify", None)


# ------------------------------------------------------------------------------------------------ delayed recall
def delayed_recall(rng: np.random.Generator, n: int, seq_len: int, n_symbols: int) -> Arrays:
    """Delayed recall: one of ``K`` symbols at step 0, a cue at step ``T-1``; the answer is the symbol.

    Token ids: 0 = nothing, ``1..K`` = symbols, ``K+1`` = cue. Returns ``tokens [n, T]`` int64 and ``y [n]`` int64 in
    ``0..K-1``.
    """
    if seq_len < 2:
        raise DataError(f"delayed_recall: seq_len must be >= 2, got {seq_len}")
    if n_symbols < 2:
        raise DataError(f"delayed_recall: n_symbols must be >= 2, got {n_symbols}")
    sym = rng.integers(0, n_symbols, size=n)
    tokens = np.zeros((n, seq_len), dtype=np.int64)
    tokens[:, 0] = sym + 1
    tokens[:, -1] = n_symbols + 1
    return tokens, sym.astype(np.int64)


@register("delayed_recall", "delayed recall: name the symbol shown at step 0 when cued at the last step")
def build_delayed_recall(cfg: DataConfig) -> TaskData:
    """Delayed recall: ``x`` ``[B, T, K+2]`` one-hot (nothing, K symbols, cue), ``y`` ``[B]`` in ``0..K-1``.

    Reads ``seq_len, n_symbols, n_train, n_test, seed, val_fraction, val_split`` and the batch sizes.
    """
    n_in = cfg.n_symbols + 2
    p = 1.0 / n_in

    def gen(rng: np.random.Generator, n: int):
        return delayed_recall(rng, n, cfg.seq_len, cfg.n_symbols)

    return _build(cfg, "delayed_recall", gen, _one_hot(n_in), n_in, cfg.n_symbols, "classify", (p, p * (1 - p)))


# --------------------------------------------------------------------------------------------- memory capacity
def memory_capacity_stream(n_steps: int, batch: int | None = None, seed: int = 0) -> Tensor:
    """I.i.d. uniform input ``u(t)`` in [-1, 1] for memory-capacity measurements (Jaeger 2001).

    Returns ``[n_steps, 1]`` float32 when ``batch`` is None, else ``[batch, n_steps, 1]`` (batch-first). The same
    ``seed`` gives the same stream.
    """
    if n_steps < 1:
        raise DataError(f"memory_capacity_stream: n_steps must be >= 1, got {n_steps}")
    if batch is not None and batch < 1:
        raise DataError(f"memory_capacity_stream: batch must be >= 1 or None, got {batch}")
    rng = np.random.default_rng(seed)
    shape = (n_steps, 1) if batch is None else (batch, n_steps, 1)
    return torch.from_numpy(rng.uniform(-1.0, 1.0, size=shape).astype(np.float32))


# ------------------------------------------------------------------------------------------------------- helpers
def _build(cfg: DataConfig, name, gen, transform, input_size, output_size, kind, stats) -> TaskData:
    """Draw the train pool and test set from independent seeded streams, carve validation, wrap in loaders.

    ``stats``: known (mean, var) of the model input, else computed from the training inputs.
    """
    if cfg.n_train < 1 or cfg.n_test < 1:
        raise DataError(f"{name}: n_train and n_test must be >= 1, got {cfg.n_train}, {cfg.n_test}")
    x_pool, y_pool = gen(np.random.default_rng([cfg.seed, 0]), cfg.n_train)
    x_test, y_test = gen(np.random.default_rng([cfg.seed, 1]), cfg.n_test)
    tr, va = carve_validation(None, cfg.n_train, cfg.val_fraction, cfg.val_split, cfg.seed)
    xp, yp = torch.from_numpy(x_pool), torch.from_numpy(y_pool)
    x_tr, y_tr = xp[as_index(tr)], yp[as_index(tr)]
    mean, var = stats if stats is not None else moments(x_tr)
    info = TaskInfo(
        name=name,
        input_size=input_size,
        output_size=output_size,
        seq_len=x_pool.shape[1],
        kind=kind,
        input_mean=mean,
        input_var=var,
        extra={"n_train": len(tr), "n_val": len(va), "n_test": cfg.n_test},
    )
    return TaskData(
        info,
        TensorLoader(x_tr, y_tr, cfg.batch_size, shuffle=True, seed=cfg.seed, transform=transform),
        TensorLoader(xp[as_index(va)], yp[as_index(va)], cfg.eval_batch_size, transform=transform),
        TensorLoader(torch.from_numpy(x_test), torch.from_numpy(y_test), cfg.eval_batch_size, transform=transform),
    )
