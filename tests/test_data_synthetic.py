"""Synthetic long-memory tasks and the memory-capacity stream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stablernn.data import DataConfig, DataError, load_task, memory_capacity_stream
from stablernn.data.synthetic import (
    IGNORE,
    adding_problem,
    build_adding,
    build_copy,
    build_delayed_recall,
    build_delayed_xor,
    copy_memory,
    delayed_recall,
    delayed_xor,
)


def test_copy_memory_hand_checked():
    tokens, labels = copy_memory(np.random.default_rng(0), 1, seq_len=7, copy_length=2, n_symbols=3)
    s0, s1 = labels[0, -2:]
    # steps: sym sym blank blank marker blank blank
    assert tokens[0].tolist() == [s0 + 1, s1 + 1, 0, 0, 4, 0, 0]
    assert labels[0, :5].tolist() == [IGNORE] * 5
    with pytest.raises(DataError, match="seq_len"):
        copy_memory(np.random.default_rng(0), 1, seq_len=4, copy_length=2, n_symbols=3)
    with pytest.raises(DataError):
        copy_memory(np.random.default_rng(0), 1, seq_len=9, copy_length=0, n_symbols=3)


def test_copy_task_loader():
    d = build_copy(DataConfig(task="copy", seq_len=12, copy_length=3, n_symbols=4, n_train=20, n_test=5,
                              batch_size=8))
    x, y = next(iter(d.train))
    assert x.shape == (8, 12, 6) and y.shape == (8, 12)
    assert torch.all(x.sum(-1) == 1)  # one-hot
    assert torch.equal(x[:, :3, 1:5].argmax(-1), y[:, -3:])  # targets are the symbols shown first
    assert torch.all(x[:, 12 - 3 - 1, 5] == 1)  # recall marker
    assert d.info.kind == "per_step" and d.info.output_size == 4 and d.info.input_mean == pytest.approx(1 / 6)
    assert d.info.extra["n_val"] == 2


def test_adding_hand_checked():
    x, y = adding_problem(np.random.default_rng(1), 3, seq_len=6)
    assert x.shape == (3, 6, 2) and y.shape == (3,)
    for i in range(3):
        marks = np.flatnonzero(x[i, :, 1])
        assert len(marks) == 2 and marks[0] < 3 <= marks[1]
        assert y[i] == pytest.approx(x[i, marks, 0].sum())
    d = build_adding(DataConfig(task="adding", seq_len=10, n_train=30, n_test=7))
    xb, yb = next(iter(d.test))
    assert xb.shape == (7, 10, 2) and yb.dtype == torch.float32
    assert d.info.kind == "regress" and d.info.output_size == 1
    with pytest.raises(DataError):
        adding_problem(np.random.default_rng(0), 1, 1)


def test_delayed_xor_and_recall():
    x, y = delayed_xor(np.random.default_rng(2), 50, seq_len=10)
    bits = x[:, :5, 0]
    assert np.all((bits != 0).sum(1) == 2) and np.all(x[:, 5:-1, 0] == 0) and np.all(x[:, -1, 1] == 1)
    vals = [(b[b != 0] > 0).astype(int) for b in bits]
    assert [v[0] ^ v[1] for v in vals] == y.tolist()
    with pytest.raises(DataError):
        delayed_xor(np.random.default_rng(0), 1, 3)
    tok, lab = delayed_recall(np.random.default_rng(3), 5, seq_len=4, n_symbols=3)
    assert (tok[:, 0] - 1).tolist() == lab.tolist() and np.all(tok[:, -1] == 4) and np.all(tok[:, 1:-1] == 0)
    with pytest.raises(DataError):
        delayed_recall(np.random.default_rng(0), 1, 1, 3)
    dx = build_delayed_xor(DataConfig(task="delayed_xor", seq_len=8, n_train=20, n_test=4))
    assert next(iter(dx.train))[0].shape[1:] == (8, 2) and dx.info.output_size == 2
    dr = build_delayed_recall(DataConfig(task="delayed_recall", seq_len=8, n_train=20, n_test=4, n_symbols=5))
    xb, yb = next(iter(dr.test))
    assert xb.shape == (4, 8, 7) and torch.equal(xb[:, 0, 1:6].argmax(-1), yb)


def test_synthetic_seeding_and_disjoint_streams():
    a = load_task(DataConfig(task="adding", n_train=40, n_test=10, seed=5))
    b = load_task(DataConfig(task="adding", n_train=40, n_test=10, seed=5))
    c = load_task(DataConfig(task="adding", n_train=40, n_test=10, seed=6))
    ta, tb, tc = (next(iter(d.test))[0] for d in (a, b, c))
    assert torch.equal(ta, tb) and not torch.equal(ta, tc)
    val = torch.cat([x for x, _ in a.val])
    test = torch.cat([x for x, _ in a.test])
    assert not any(torch.equal(v, t) for v in val for t in test)
    with pytest.raises(DataError):
        load_task(DataConfig(task="adding", n_train=0))


def test_time_repeat_on_copy():
    d = load_task(DataConfig(task="copy", seq_len=5, copy_length=2, n_symbols=3, n_train=10, n_test=3,
                             time_repeat=2))
    x, y = next(iter(d.test))
    assert x.shape == (3, 10, 5) and y.shape == (3, 10) and d.info.seq_len == 10
    assert torch.equal(x[:, 0::2], x[:, 1::2]) and torch.equal(y[:, 0::2], y[:, 1::2])


def test_memory_capacity_stream():
    u = memory_capacity_stream(1000, seed=1)
    assert u.shape == (1000, 1) and u.dtype == torch.float32
    assert float(u.min()) >= -1 and float(u.max()) <= 1 and abs(float(u.mean())) < 0.1
    assert torch.equal(u, memory_capacity_stream(1000, seed=1))
    assert not torch.equal(u, memory_capacity_stream(1000, seed=2))
    assert memory_capacity_stream(20, 3, seed=0).shape == (3, 20, 1)
    with pytest.raises(DataError):
        memory_capacity_stream(0)
    with pytest.raises(DataError):
        memory_capacity_stream(5, 0)
