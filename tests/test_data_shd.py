"""SHD from HDF5: reading, validation, binning, caching and validation splits."""
from __future__ import annotations

import gzip
import shutil

import h5py
import numpy as np
import pytest
import torch

from stablernn.data import DataConfig, DataError, load_task
from stablernn.data.shd import bin_spikes, find_shd, load_shd_split, n_bins, read_shd, speaker_split, write_shd

N_TR, N_TE = 80, 30


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("STABLERNN_DATA", raising=False)
    monkeypatch.setenv("STABLERNN_CACHE", str(tmp_path / "env-cache"))


def _samples(n, offset, seed):
    """Random spike trains; sample i also has an id spike (unit 100 + i + offset at 0.7 s) so content is unique."""
    rng = np.random.default_rng(seed)
    times, units = [], []
    for i in range(n):
        k = int(rng.integers(5, 40))
        t = np.append(rng.random(k) * 1.6, 0.7)  # some spikes fall after the 1.4 s window
        u = np.append(rng.integers(0, 100, k), 100 + i + offset)  # random spikes stay below the id units
        times.append(t.astype(np.float32))
        units.append(u.astype(np.uint16))
    labels = np.arange(n) % 20
    speakers = np.arange(n) % 8
    return times, units, labels, speakers


def _write_pair(folder, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, off, seed in (("train", N_TR, 0, 0), ("test", N_TE, N_TR, 1)):
        p = folder / f"shd_{split}.h5"
        write_shd(p, *_samples(n, off, seed))
        if gz:
            with open(p, "rb") as src, gzip.open(str(p) + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            p.unlink()
    return folder


def _cfg(folder, **kw):
    kw.setdefault("cache_dir", str(folder / "cache"))
    return DataConfig(task="shd", data_dir=str(folder), check_counts=False, batch_size=16, eval_batch_size=16, **kw)


def test_binning_edges():
    dt, window = 0.01, 1.4
    times = [np.array([0.0, 1.4, 1.4001, 0.5, 0.5]), np.array([])]
    units = [np.array([0, 699, 3, 7, 7]), np.array([], dtype=np.int64)]
    t = n_bins(dt, window)
    f = bin_spikes(times, units, dt, window)
    assert f.shape == (2, t, 700) and f.dtype == np.uint8 and t == 140
    assert f[0, 0, 0] == 1  # spike at t = 0 -> bin 0
    assert f[0, t - 1, 699] == 1  # spike at the window end -> last bin
    assert f[0, :, 3].sum() == 0  # spike after the window dropped
    assert f[0, 50, 7] == 1 and f.sum() == 3  # two spikes in one bin: binary frame holds 1
    c = bin_spikes(times, units, dt, window, n_channels=140, frames="count")
    assert c.shape == (2, t, 140) and c[0, 50, 1] == 2 and c[0, t - 1, 139] == 1 and c[0, 0, 0] == 1
    chunked = bin_spikes(times * 5, units * 5, dt, window, max_chunk_cells=1)
    assert np.array_equal(chunked[:2], f)
    edge = bin_spikes([np.array([0.3])], [np.array([0])], 0.1, 1.0)
    assert edge[0, 3, 0] == 1  # a spike on a bin edge k*dt lands in bin k despite 0.3 / 0.1 < 3 in floats
    f32 = bin_spikes([np.array([0.3, 0.2], np.float32)], [np.array([1, 2])], 0.1, 0.3)
    assert f32[0, 2, 1] == 1 and f32[0, 2, 2] == 1  # float32(0.3) > 0.3 still counts as the window end


def test_binning_option_errors():
    with pytest.raises(DataError, match="divide 700"):
        bin_spikes([], [], 0.01, 1.0, n_channels=300)
    with pytest.raises(DataError, match="shd_frames"):
        bin_spikes([], [], 0.01, 1.0, frames="rate")
    with pytest.raises(DataError, match="> 0"):
        n_bins(0.0, 1.0)
    with pytest.raises(DataError, match="rows"):
        bin_spikes([np.zeros(1)], [], 0.01, 1.0)


def test_read_shd_and_validation_errors(tmp_path):
    p = tmp_path / "shd_train.h5"
    write_shd(p, *_samples(10, 0, 0))
    times, _units, labels, speakers = read_shd(p, need_speakers=True)
    assert len(times) == 10 and labels.dtype == np.int64 and speakers.tolist() == list(np.arange(10) % 8)
    with pytest.raises(DataError) as e:
        read_shd(p, count=8156)
    assert str(p) in str(e.value) and "expected 8156" in str(e.value)

    missing = tmp_path / "missing_key.h5"
    with h5py.File(missing, "w") as f:
        f.create_dataset("labels", data=np.zeros(2, np.uint8))
    with pytest.raises(DataError) as e:
        read_shd(missing)
    assert str(missing) in str(e.value) and "missing HDF5 key 'spikes/times'" in str(e.value)

    bad_label = tmp_path / "bad_label.h5"
    t, u, lab, spk = _samples(4, 0, 0)
    lab = lab.copy()
    lab[2] = 20
    write_shd(bad_label, t, u, lab, spk)
    with pytest.raises(DataError) as e:
        read_shd(bad_label)
    assert str(bad_label) in str(e.value) and "label out of range 0..19: 20 at sample 2" in str(e.value)

    bad_unit = tmp_path / "bad_unit.h5"
    t, u, lab, spk = _samples(3, 0, 0)
    u[1] = u[1].copy()
    u[1][0] = 700
    write_shd(bad_unit, t, u, lab, spk)
    with pytest.raises(DataError, match="sample 1 has a unit out of range"):
        read_shd(bad_unit)

    neg = tmp_path / "neg_time.h5"
    t, u, lab, spk = _samples(3, 0, 0)
    t[0] = t[0].copy()
    t[0][0] = -0.1
    write_shd(neg, t, u, lab, spk)
    with pytest.raises(DataError, match="negative or non-finite"):
        read_shd(neg)

    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        read_shd(junk)

    no_spk = tmp_path / "no_speaker.h5"
    with h5py.File(p, "r") as src, h5py.File(no_spk, "w") as dst:
        src.copy("spikes", dst)
        src.copy("labels", dst)
    with pytest.raises(DataError, match="extra/speaker"):
        read_shd(no_spk, need_speakers=True)


def test_find_shd_layouts_and_message(tmp_path, monkeypatch):
    with pytest.raises(DataError) as e:
        find_shd(DataConfig(data_dir=str(tmp_path)))
    assert "shd_train.h5" in str(e.value) and str(tmp_path) in str(e.value)
    _write_pair(tmp_path / "data" / "SHD")
    monkeypatch.setenv("STABLERNN_DATA", str(tmp_path / "data"))
    assert find_shd(DataConfig())["test"].name == "shd_test.h5"


def _content_ids(loader):
    """Recover each sample's id from its id spike (channel 100 + id, at 0.7 s = bin 70)."""
    ids = set()
    for x, _ in loader:
        _rows, ch = torch.nonzero(x[:, 70, 100:], as_tuple=True)
        ids |= set((ch + 0).tolist())
    return ids


def test_shd_task_end_to_end_and_splits(tmp_path):
    _write_pair(tmp_path)
    d = load_task(_cfg(tmp_path))
    x, y = next(iter(d.train))
    assert x.shape == (16, 140, 700) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert (d.info.input_size, d.info.output_size, d.info.seq_len) == (700, 20, 140)
    assert d.info.extra["n_train"] + d.info.extra["n_val"] == N_TR and d.info.extra["n_test"] == N_TE
    assert 0 < d.info.input_mean < 0.01
    tr, va, te = _content_ids(d.train), _content_ids(d.val), _content_ids(d.test)
    assert te == set(range(N_TR, N_TR + N_TE))
    assert not (va & te) and not (tr & va) and len(tr | va) == N_TR  # validation never overlaps test


def test_shd_speaker_split(tmp_path):
    _write_pair(tmp_path)
    cfg = _cfg(tmp_path, val_split="speakers", val_fraction=0.2)
    d = load_task(cfg)
    # speakers are id % 8: recover them from the content ids
    tr_spk = {i % 8 for i in _content_ids(d.train)}
    va_spk = {i % 8 for i in _content_ids(d.val)}
    assert va_spk and not (tr_spk & va_spk)
    assert d.info.extra["n_val"] >= 0.2 * N_TR
    spk = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    tr, va = speaker_split(spk, 0.25, seed=0)
    assert len(va) >= 2 and not set(spk[tr]) & set(spk[va])
    tr, va = speaker_split(np.zeros(5, int), 0.5, seed=0)
    assert len(tr) == 5 and len(va) == 0  # never holds out the only speaker


def test_shd_tail_split_and_downsampled_counts(tmp_path):
    _write_pair(tmp_path)
    d = load_task(_cfg(tmp_path, val_split="tail", val_fraction=0.25, shd_channels=140, shd_frames="count",
                       shd_dt=0.02, shd_window=1.0))
    assert d.info.seq_len == 50 and d.info.input_size == 140
    assert next(iter(d.val))[1].tolist()[:4] == [(60 + i) % 20 for i in range(4)]  # last 25 % of train


def test_shd_cache_reused_and_keyed_by_params(tmp_path, monkeypatch):
    _write_pair(tmp_path)
    cfg = _cfg(tmp_path)
    first = load_shd_split(cfg, "train")
    cache_files = sorted((tmp_path / "cache").glob("shd_train_*.npz"))
    assert len(cache_files) == 1
    assert not list((tmp_path / "cache").glob(".*.tmp"))  # atomic write leaves no temp file

    def boom(*a, **k):
        raise AssertionError("should have used the cache")

    monkeypatch.setattr("stablernn.data.shd.read_shd", boom)
    again = load_shd_split(cfg, "train")
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    monkeypatch.undo()
    monkeypatch.delenv("STABLERNN_DATA", raising=False)
    load_shd_split(_cfg(tmp_path, shd_channels=350), "train")
    assert len(list((tmp_path / "cache").glob("shd_train_*.npz"))) == 2  # new params, new cache file
    cache_files[0].write_bytes(b"corrupt")
    rebuilt = load_shd_split(cfg, "train")  # an unreadable cache is rebuilt
    assert np.array_equal(rebuilt[0], first[0])
    nocache = tmp_path / "nocache"
    _write_pair(nocache)
    load_shd_split(_cfg(nocache, cache_dir=""), "train")
    assert not (nocache / "cache").exists()


def test_shd_from_gzip(tmp_path):
    _write_pair(tmp_path, gz=True)
    d = load_task(_cfg(tmp_path))
    assert d.info.extra["n_test"] == N_TE
    with pytest.raises(DataError, match="gunzip"):
        load_task(_cfg(tmp_path, cache_dir=""))


def test_shd_counts_checked(tmp_path):
    _write_pair(tmp_path)
    with pytest.raises(DataError, match="expected 8156"):
        load_task(DataConfig(task="shd", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c")))
