"""In-memory batch iterators and split helpers shared by every task.

The datasets here fit in memory, so a plain tensor slicer is both simpler and faster than ``torch.utils.data``
(no worker processes, no per-sample collation). Randomness comes from explicit seeds so a run is reproducible.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from .base import DataError

Batch = tuple[Tensor, Tensor]


class TensorLoader:
    """Batches of ``(x, y)`` rows from in-memory tensors.

    ``x``: ``[N, ...]`` stored rows (may be a compact form such as uint8 pixels or latencies); ``y``: ``[N, ...]``.
    ``transform`` maps a stored batch ``x[idx]`` to the model input ``[B, T, F]`` (float); it lets large encodings
    (spike-latency MNIST, SHD frames as uint8) stay compact in memory and be expanded one batch at a time.

    With ``shuffle=True`` every pass draws a fresh order from a ``torch.Generator`` seeded by ``seed + epoch``: the
    k-th pass over the loader is the same in every run with the same seed. ``drop_last`` is False: the last batch may
    be smaller.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise DataError(f"TensorLoader: x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.x = x
        self.y = y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.transform = transform
        self.epoch = 0  # advanced after each full pass; set_epoch() overrides it (e.g. when resuming)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass use the order of pass number ``epoch`` (for resuming a run)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.x)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order: Tensor | None = torch.randperm(n, generator=gen)
        else:
            order = None
        self.epoch += 1
        for start in range(0, n, self.batch_size):
            if order is None:
                xb, yb = self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            if self.transform is not None:
                xb = self.transform(xb)
            yield xb, yb


class StreamLoader:
    """Contiguous language-model batches: ``B`` parallel token streams cut into BPTT windows.

    ``streams``: ``[B, L]`` int64 token ids, stream ``b`` being the ``b``-th contiguous chunk of the corpus. Window
    ``i`` yields ``x = streams[:, i*w : i*w + w]`` and ``y`` the same window shifted by one token, both ``[B, w]``
    (the last window may be shorter). Window ``i + 1`` continues each stream where window ``i`` stopped, so a
    stateful model carries its state across batches. The order is fixed: shuffling would break the streams.
    """

    def __init__(self, streams: Tensor, window: int) -> None:
        if streams.dim() != 2:
            raise DataError(f"StreamLoader wants [B, L] streams, got shape {tuple(streams.shape)}")
        if window < 1:
            raise DataError(f"BPTT window (seq_len) must be >= 1, got {window}")
        if streams.shape[1] < 2:
            raise DataError(
                f"each of the {streams.shape[0]} streams holds {streams.shape[1]} tokens; need at least 2 "
                "(use a smaller batch size)"
            )
        self.streams = streams
        self.window = int(window)

    def __len__(self) -> int:
        return (self.streams.shape[1] - 1 + self.window - 1) // self.window

    def __iter__(self) -> Iterator[Batch]:
        n = self.streams.shape[1] - 1  # the last token has no successor to predict
        for start in range(0, n, self.window):
            stop = min(start + self.window, n)
            yield self.streams[:, start:stop], self.streams[:, start + 1 : stop + 1]


def make_streams(tokens: Tensor, n_streams: int) -> Tensor:
    """Cut a 1-D token stream ``[N]`` into ``[n_streams, N // n_streams]`` contiguous rows (the tail is dropped)."""
    length = len(tokens) // n_streams
    if length < 2:
        raise DataError(f"{len(tokens)} tokens cannot fill {n_streams} streams of >= 2 tokens; lower the batch size")
    return tokens[: n_streams * length].reshape(n_streams, length).contiguous()


def repeat_time(x: Tensor, y: Tensor, k: int) -> Batch:
    """The papers' code's ``timerepeat``: every frame (and every per-step target) is repeated ``k`` times along time.

    ``x``: ``[B, T, F]`` or ``[B, T]`` tokens -> ``[B, k*T, ...]`` with frame ``t`` at steps ``k*t .. k*t + k - 1``.
    ``y`` is repeated the same way when it is per step (``[B, T]``); class labels ``[B]`` and regression targets are
    left alone.
    """
    if k == 1:
        return x, y
    x = x.repeat_interleave(k, dim=1)
    if y.dim() >= 2 and y.dtype == torch.int64:
        y = y.repeat_interleave(k, dim=1)
    return x, y


class RepeatLoader:
    """Wraps a loader and applies :func:`repeat_time` to each batch (the one place ``time_repeat`` is applied)."""

    def __init__(self, inner: Iterable[Batch], k: int) -> None:
        self.inner = inner
        self.k = int(k)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        for x, y in self.inner:
            yield repeat_time(x, y, self.k)

    def __getattr__(self, name: str):  # expose the inner loader's attributes (x, y, set_epoch, ...)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices ``0..N-1`` into (rest, held_out) with ``round(fraction * n_c)`` of each class held out.

    Deterministic for a given ``seed``; both index arrays are sorted. Why stratified: on small sets (digits has
    ~180 images per class) a plain random cut can skew the class balance of the held-out part.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"split fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = rng.permutation(idx)
        held.append(idx[: round(fraction * len(idx))])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_out] = False
    return np.flatnonzero(mask), held_out


def random_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``0..n-1`` into (rest, held_out) with ``round(fraction * n)`` held out at random; both sorted."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"split fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = round(fraction * n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def tail_split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split ``0..n-1`` into (first part, last ``round(fraction * n)``): the original code's validation cut."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"split fraction must be in [0, 1), got {fraction}")
    k = round(fraction * n)
    return np.arange(n - k), np.arange(n - k, n)


def moments(x: Tensor | np.ndarray, max_chunk_elements: int = 1 << 22) -> tuple[float, float]:
    """Mean and variance of all entries of ``x``, accumulated in float64 over row chunks of at most
    ``max_chunk_elements`` entries, so a large uint8 array (SHD frames) is never copied whole to float."""
    a = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
    n = a.size
    if n == 0:
        return 0.0, 1.0
    rows = max(1, max_chunk_elements // max(1, n // max(1, len(a))))
    s = s2 = 0.0
    for start in range(0, len(a), rows):
        c = a[start : start + rows].astype(np.float64)
        s += float(c.sum())
        s2 += float(np.square(c).sum())
    mean = s / n
    return mean, max(s2 / n - mean * mean, 0.0)


def as_index(idx: Sequence[int] | np.ndarray) -> Tensor:
    """Index array -> int64 tensor (torch indexing wants a tensor, not a numpy array of another int type)."""
    return torch.as_tensor(np.asarray(idx, dtype=np.int64))


def carve_validation(
    labels: np.ndarray | None, n: int, fraction: float, how: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a training pool of ``n`` rows, validation being ``fraction`` of it.

    ``how``: "random" (stratified by ``labels`` when given, else uniform; seeded) or "tail" (the last rows, as the
    original code did). "speakers" is SHD-specific and handled there. Validation comes only from the training pool,
    so it can never overlap the test set.
    """
    if how == "random":
        if labels is not None:
            return stratified_split(labels, fraction, seed)
        return random_split(n, fraction, seed)
    if how == "tail":
        return tail_split(n, fraction)
    raise DataError(f"val_split={how!r} is not supported by this task; use 'random' or 'tail'")
