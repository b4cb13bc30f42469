"""MNIST family from IDX files: reading, validation, file discovery and the four encodings."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from stablernn.data import DataConfig, DataError, load_task
from stablernn.data.mnist import (
    encode_latencies,
    find_mnist,
    load_mnist_arrays,
    pixel_permutation,
    read_idx,
    spike_latencies,
    write_idx,
)

N_TR, N_TE = 60, 20


@pytest.fixture(autouse=True)
def _no_user_data(monkeypatch):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)


def _write_set(folder, gz=True, spelling="-idx", seed=0):
    """Small MNIST-like IDX files: each image's pixels encode its index so content identifies a row."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for stem, n, offset in (("train", N_TR, 0), ("t10k", N_TE, N_TR)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n) + offset  # unique id per image, shared by no other split
        y = (np.arange(n) % 10).astype(np.uint8)
        sep = "-" if spelling == "-idx" else "."
        write_idx(folder / f"{stem}-images{sep}idx3-ubyte{suffix}", x)
        write_idx(folder / f"{stem}-labels{sep}idx1-ubyte{suffix}", y)
    return folder


def _cfg(folder, task="smnist", **kw):
    return DataConfig(task=task, data_dir=str(folder), check_counts=False, batch_size=16, eval_batch_size=16, **kw)


# --------------------------------------------------------------------------------------------------- IDX reading
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    p = tmp_path / ("a.gz" if compress else "a")
    write_idx(p, a, compress)
    if compress:
        assert p.read_bytes()[:2] == b"\x1f\x8b"
    else:
        assert p.read_bytes()[:4] == b"\x00\x00\x08\x03"
    out = read_idx(p, 3)
    assert np.array_equal(out, a) and out.flags.writeable


def test_idx_gzip_detected_by_content(tmp_path):
    p = tmp_path / "labels-no-gz-suffix"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9])))
    assert read_idx(p, 1).tolist() == [7, 9]


@pytest.mark.parametrize(
    "payload, problem",
    [
        (bytes([0, 1, 8, 1, 0, 0, 0, 1, 5]), "bad magic number"),
        (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1, 5]), "data type 0x0d"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 1, 5]), "3 dimensions, expected 1"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 4, 5]), "truncated: shape [4]"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 5, 6]), "trailing data"),
        (bytes([0, 0, 8]), "too short"),
        (bytes([0, 0, 8, 1, 0, 0]), "truncated IDX header"),
    ],
)
def test_idx_errors_name_file_and_problem(tmp_path, payload, problem):
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(payload)
    with pytest.raises(DataError) as e:
        read_idx(p, 1)
    assert str(p) in str(e.value) and problem in str(e.value)


def test_idx_truncated_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3]))[:-12])
    with pytest.raises(DataError, match=r"x\.gz"):
        read_idx(p, 1)
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "missing", 1)


# ------------------------------------------------------------------------------------------------ file discovery
@pytest.mark.parametrize(
    "sub, gz, spelling",
    [("", True, "-idx"), ("", False, "-idx"), ("MNIST/raw", False, "-idx"), ("mnist", True, ".idx")],
)
def test_find_mnist_layouts(tmp_path, sub, gz, spelling):
    _write_set(tmp_path / sub if sub else tmp_path, gz, spelling)
    found = find_mnist(_cfg(tmp_path))
    assert set(found) == {"train_images", "train_labels", "test_images", "test_labels"}
    assert found["train_images"].name.startswith("train-images")
    x, y, xt, _yt = load_mnist_arrays(_cfg(tmp_path))
    assert x.shape == (N_TR, 784) and xt.shape == (N_TE, 784) and y.dtype == np.int64


def test_find_via_env_and_fashion_subfolder(tmp_path, monkeypatch):
    _write_set(tmp_path / "FashionMNIST" / "raw", seed=1)
    _write_set(tmp_path / "MNIST" / "raw", seed=2)
    monkeypatch.setenv("STABLERNN_DATA", str(tmp_path))
    cfg = DataConfig(check_counts=False)
    assert "FashionMNIST" in str(find_mnist(cfg, "fashion")["train_images"])
    assert "MNIST/raw" in str(find_mnist(cfg, "mnist")["train_images"])
    a = load_mnist_arrays(cfg, "fashion")[0]
    b = load_mnist_arrays(cfg, "mnist")[0]
    assert not np.array_equal(a, b)


def test_env_root_files_not_mistaken_for_fashion(tmp_path, monkeypatch):
    _write_set(tmp_path)  # MNIST files directly in $STABLERNN_DATA
    monkeypatch.setenv("STABLERNN_DATA", str(tmp_path))
    find_mnist(DataConfig(), "mnist")
    with pytest.raises(DataError, match="Fashion-MNIST"):
        find_mnist(DataConfig(), "fashion")


def test_missing_files_message(tmp_path):
    with pytest.raises(DataError) as e:
        load_task(_cfg(tmp_path))
    msg = str(e.value)
    assert "no MNIST IDX files" in msg and str(tmp_path) in msg and "--data-dir" in msg


def test_counts_labels_and_shape_validated(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(DataError, match="60 images, expected 60000"):
        load_task(DataConfig(task="smnist", data_dir=str(tmp_path)))  # check_counts on by default
    bad = tmp_path / "bad"
    _write_set(bad)
    write_idx(bad / "t10k-labels-idx1-ubyte.gz", np.full(N_TE, 10, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        load_task(_cfg(bad))
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and "label out of range" in str(e.value)
    odd = tmp_path / "odd"
    _write_set(odd)
    write_idx(odd / "train-images-idx3-ubyte.gz", np.zeros((N_TR, 27, 28), np.uint8))
    with pytest.raises(DataError, match="27x28, expected 28x28"):
        load_task(_cfg(odd))
    short = tmp_path / "short"
    _write_set(short)
    write_idx(short / "train-labels-idx1-ubyte.gz", np.zeros(N_TR - 1, np.uint8))
    with pytest.raises(DataError, match="59 labels for 60 images"):
        load_task(_cfg(short))


# ----------------------------------------------------------------------------------------------------- encodings
def _ids(x):
    """Recover the image id written into pixel (0, 0) from smnist inputs [B, 784, 1]."""
    return set(torch.round(x[:, 0, 0] * 255).long().tolist())


def test_smnist_rowmnist_and_splits(tmp_path):
    _write_set(tmp_path)
    d = load_task(_cfg(tmp_path, "smnist"))
    x, _y = next(iter(d.train))
    assert x.shape == (16, 784, 1) and x.dtype == torch.float32 and float(x.max()) <= 1
    assert (d.info.input_size, d.info.seq_len, d.info.output_size) == (1, 784, 10)
    tr = set().union(*(_ids(xb) for xb, _ in d.train))
    va = set().union(*(_ids(xb) for xb, _ in d.val))
    te = set().union(*(_ids(xb) for xb, _ in d.test))
    assert not (va & te) and not (tr & te) and not (tr & va)  # validation never overlaps test (by content)
    assert len(tr) + len(va) == N_TR and te == set(range(N_TR, N_TR + N_TE))
    r = load_task(_cfg(tmp_path, "rowmnist"))
    xr, _ = next(iter(r.test))
    xs, _ = next(iter(d.test))
    assert xr.shape == (16, 28, 28) and torch.equal(xr.reshape(16, 784), xs.squeeze(-1))
    f = load_task(_cfg(tmp_path, "fsmnist"))  # explicit --data-dir: files directly in it count for Fashion too
    assert f.info.name == "fsmnist"


def test_psmnist_permutation_seeded(tmp_path):
    p0, p0b, p1 = pixel_permutation(0), pixel_permutation(0), pixel_permutation(1)
    assert torch.equal(p0, p0b) and not torch.equal(p0, p1)
    assert sorted(p0.tolist()) == list(range(784))
    _write_set(tmp_path)
    s = next(iter(load_task(_cfg(tmp_path, "smnist")).test))[0]
    a = next(iter(load_task(_cfg(tmp_path, "psmnist", seed=3)).test))[0]
    b = next(iter(load_task(_cfg(tmp_path, "psmnist", seed=3)).test))[0]
    c = next(iter(load_task(_cfg(tmp_path, "psmnist", seed=4)).test))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, s[:, pixel_permutation(3)])
    pinned = load_task(_cfg(tmp_path, "psmnist", seed=9, permutation_seed=3))
    assert torch.equal(next(iter(pinned.test))[0], a) and pinned.info.extra["permutation_seed"] == 3


def test_spike_latencies_follow_spec():
    px = np.array([[255, 6, 5, 0, 128]], dtype=np.uint8)
    lat = spike_latencies(px)
    assert lat[0, 0] == 2 and lat[0, 1] == 93  # spec §5.1: 255 -> step 2, 6 -> step 93
    assert lat[0, 2] == -1 and lat[0, 3] == -1  # dim pixels never spike
    assert 2 < lat[0, 4] < 93
    full = spike_latencies(np.arange(256, dtype=np.uint8)[None])
    on = full[full >= 0]
    assert full[0, :6].tolist() == [-1] * 6 and on.min() == 2 and on.max() < 100


def test_encode_latencies_layouts():
    lat = torch.full((1, 784), -1, dtype=torch.int8)
    lat[0, 5] = 3
    lat[0, 700] = 90
    x = encode_latencies(lat, "intended")
    assert x.shape == (1, 100, 784) and x.sum() == 2 and x[0, 3, 5] == 1 and x[0, 90, 700] == 1
    o = encode_latencies(lat, "original")
    # the original code's (784, 100) one-hot reshaped to (100, 784): flat index pixel * 100 + t
    assert o.sum() == 2 and o.reshape(-1)[5 * 100 + 3] == 1 and o.reshape(-1)[700 * 100 + 90] == 1
    with pytest.raises(DataError):
        encode_latencies(lat, "sideways")


def test_slmnist_task(tmp_path):
    _write_set(tmp_path)
    d = load_task(_cfg(tmp_path, "slmnist", time_repeat=2))
    x, _y = next(iter(d.train))
    assert x.shape == (16, 200, 784) and d.info.seq_len == 200 and d.info.input_size == 784
    # every pixel spikes at most once, in both copies of the repeated frame
    assert float(x.sum(1).max()) <= 2
    m = d.info.input_mean
    assert 0 < m < 0.01 and d.info.input_var == pytest.approx(m * (1 - m))
    o = load_task(_cfg(tmp_path, "slmnist", slmnist_layout="original"))
    xo, _ = next(iter(o.test))
    xi, _ = next(iter(load_task(_cfg(tmp_path, "slmnist")).test))
    assert xo.shape == xi.shape and torch.equal(xo.sum((1, 2)), xi.sum((1, 2))) and not torch.equal(xo, xi)
    with pytest.raises(DataError, match="slmnist_layout"):
        load_task(_cfg(tmp_path, "slmnist", slmnist_layout="bad"))


def test_tail_validation(tmp_path):
    _write_set(tmp_path)
    d = load_task(_cfg(tmp_path, "smnist", val_split="tail", val_fraction=0.2))
    assert _ids(torch.cat([x for x, _ in d.val])) == set(range(48, 60))


@pytest.mark.parametrize("task,cell", [("slmnist", "alif"), ("smnist", "lstm")])
def test_train_command_runs_on_idx_files(tmp_path, task, cell):
    """`stablernn train --task slmnist|smnist --data-dir DIR` end to end on files in the real IDX format."""
    from stablernn.cli import main

    folder = _write_set(tmp_path / "mnist")
    argv = ["train", "--task", task, "--data-dir", str(folder), "--no-check-counts", "--cell", cell, "--layers", "1",
            "--width", "8", "--epochs", "1", "--batch-size", "16", "--max-batches", "2", "--out-dir",
            str(tmp_path / "runs"), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code in (0, None)
    final = json.loads(next((tmp_path / "runs").glob("*/final.json")).read_text())
    assert final["task"] == task and 0.0 <= final["test_acc"] <= 1.0
