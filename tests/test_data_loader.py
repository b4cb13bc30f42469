"""Loaders and split helpers of stablernn.data.loader."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from stablernn.data import DataError
from stablernn.data.loader import (
    RepeatLoader,
    StreamLoader,
    TensorLoader,
    as_index,
    carve_validation,
    make_streams,
    moments,
    random_split,
    repeat_time,
    stratified_split,
    tail_split,
)


def _rows(loader):
    return torch.cat([x for x, _ in loader])


def test_tensor_loader_covers_all_rows_and_len():
    x = torch.arange(10).float().reshape(10, 1, 1)
    y = torch.arange(10)
    loader = TensorLoader(x, y, 4)
    assert len(loader) == 3
    sizes = [len(yb) for _, yb in loader]
    assert sizes == [4, 4, 2]  # drop_last is False
    assert torch.equal(_rows(loader).flatten(), x.flatten())


def test_tensor_loader_shuffle_is_seeded_per_epoch():
    x, y = torch.arange(50).float().reshape(50, 1, 1), torch.arange(50)
    a, b = TensorLoader(x, y, 8, shuffle=True, seed=3), TensorLoader(x, y, 8, shuffle=True, seed=3)
    first_a, first_b = _rows(a), _rows(b)
    assert torch.equal(first_a, first_b)  # same seed, same order
    assert not torch.equal(first_a, _rows(a))  # a new epoch reshuffles
    assert sorted(first_a.flatten().tolist()) == list(range(50))
    b.set_epoch(0)
    assert torch.equal(_rows(b), first_a)  # resuming at epoch 0 replays it
    c = TensorLoader(x, y, 8, shuffle=True, seed=4)
    assert not torch.equal(_rows(c), first_a)


def test_tensor_loader_transform_and_pairs():
    x = torch.arange(6, dtype=torch.uint8).reshape(6, 1)
    y = torch.arange(6)
    loader = TensorLoader(x, y, 4, shuffle=True, seed=0, transform=lambda b: b.float().unsqueeze(-1) * 2)
    for xb, yb in loader:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 1)
        assert torch.equal(xb.flatten(), yb.float() * 2)  # x and y stay paired after shuffling


def test_tensor_loader_rejects_bad_input():
    with pytest.raises(DataError):
        TensorLoader(torch.zeros(3, 1), torch.zeros(2), 1)
    with pytest.raises(DataError):
        TensorLoader(torch.zeros(3, 1), torch.zeros(3), 0)


def test_make_streams_and_stream_loader_are_contiguous():
    tokens = torch.arange(103)
    streams = make_streams(tokens, 4)
    assert streams.shape == (4, 25)
    assert torch.equal(streams[1], torch.arange(25, 50))
    loader = StreamLoader(streams, 7)
    batches = list(loader)
    assert len(batches) == len(loader) == 4  # 24 predictable positions in windows of 7 -> 7, 7, 7, 3
    for x, y in batches:
        assert torch.equal(y, x + 1)  # y is x shifted by one token
    for (x0, _), (x1, _) in itertools.pairwise(batches):
        assert torch.equal(x0[:, -1] + 1, x1[:, 0])  # window i+1 continues each stream
    assert batches[-1][0].shape == (4, 3)
    with pytest.raises(DataError):
        make_streams(torch.arange(5), 4)
    with pytest.raises(DataError):
        StreamLoader(torch.arange(5), 2)
    with pytest.raises(DataError):
        StreamLoader(streams, 0)


def test_repeat_time_and_repeat_loader():
    x = torch.tensor([[[1.0], [2.0]]])
    y_step = torch.tensor([[5, -100]])
    xr, yr = repeat_time(x, y_step, 3)
    assert xr.flatten().tolist() == [1, 1, 1, 2, 2, 2]
    assert yr.flatten().tolist() == [5, 5, 5, -100, -100, -100]
    _, yc = repeat_time(x, torch.tensor([4]), 3)
    assert yc.tolist() == [4]  # class labels are not per step
    _, yf = repeat_time(x, torch.tensor([[0.5, 1.5]]), 2)
    assert yf.shape == (1, 2)  # float regression targets are not per step either
    assert repeat_time(x, y_step, 1)[0] is x
    inner = TensorLoader(x.repeat(3, 1, 1), torch.arange(3), 2)
    rep = RepeatLoader(inner, 2)
    assert len(rep) == 2
    assert next(iter(rep))[0].shape == (2, 4, 1)
    assert rep.y is inner.y  # attributes pass through


def test_stratified_split_keeps_class_balance_and_is_deterministic():
    labels = np.repeat(np.arange(4), 25)
    rest, held = stratified_split(labels, 0.2, seed=1)
    assert len(np.intersect1d(rest, held)) == 0 and len(rest) + len(held) == 100
    assert np.bincount(labels[held]).tolist() == [5, 5, 5, 5]
    _rest2, held2 = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(held, held2)
    assert not np.array_equal(held, stratified_split(labels, 0.2, seed=2)[1])
    with pytest.raises(DataError):
        stratified_split(labels, 1.0, 0)


def test_random_and_tail_split():
    rest, held = random_split(20, 0.25, seed=0)
    assert len(held) == 5 and len(np.union1d(rest, held)) == 20
    rest, held = tail_split(20, 0.25)
    assert held.tolist() == [15, 16, 17, 18, 19] and rest.tolist() == list(range(15))
    with pytest.raises(DataError):
        random_split(10, -0.1, 0)
    with pytest.raises(DataError):
        tail_split(10, 1.5)


def test_carve_validation_modes():
    labels = np.repeat(np.arange(2), 10)
    _, va = carve_validation(labels, 20, 0.2, "random", 0)
    assert np.bincount(labels[va]).tolist() == [2, 2]
    _, va = carve_validation(None, 20, 0.2, "random", 0)
    assert len(va) == 4
    _tr, va = carve_validation(None, 20, 0.2, "tail", 0)
    assert va.tolist() == [16, 17, 18, 19]
    with pytest.raises(DataError, match="speakers"):
        carve_validation(labels, 20, 0.2, "speakers", 0)


def test_moments_matches_numpy_in_chunks():
    a = np.random.default_rng(0).integers(0, 5, size=(37, 11, 3)).astype(np.uint8)
    m, v = moments(a, max_chunk_elements=50)
    assert m == pytest.approx(a.mean()) and v == pytest.approx(a.var())
    m, v = moments(torch.from_numpy(a))
    assert m == pytest.approx(a.mean())
    assert moments(np.zeros((0, 3))) == (0.0, 1.0)


def test_as_index():
    idx = as_index(np.array([2, 0], dtype=np.int32))
    assert idx.dtype == torch.int64 and idx.tolist() == [2, 0]
