"""How long does SHD preprocessing take? Acceptance (issue 3): binning 8156 samples < 30 s on 2 cores.

Writes a synthetic file shaped like ``shd_train.h5`` (8156 samples; spike counts drawn around the real set's few
thousand per sample, times over ~1.4 s with a tail past the window) to a temporary directory, then times with the
default ``DataConfig`` binning (dt 10 ms, window 1.4 s, 700 binary channels):

- ``read``: reading and validating the HDF5 file (``read_shd``);
- ``bin``: ``bin_spikes`` alone (the number the acceptance criterion is about);
- ``cold load``: ``load_shd_split`` with an empty cache (read + bin + write the cache);
- ``warm load``: ``load_shd_split`` again, from the cache.

Usage: ``PYTHONPATH=src python benchmarks/shd_binning.py [--samples 8156] [--mean-spikes 6000]``
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stablernn.data import DataConfig
from stablernn.data.shd import bin_spikes, load_shd_split, read_shd, write_shd


def synthetic_shd(path: Path, n: int, mean_spikes: float, seed: int = 0) -> int:
    """Write an SHD-like file; returns the total number of spikes."""
    rng = np.random.default_rng(seed)
    counts = np.clip(rng.lognormal(np.log(mean_spikes), 0.5, size=n), 200, 40000).astype(np.int64)
    times, units = [], []
    for k in counts:
        t = np.sort(rng.gamma(4.0, 0.12, size=k)).astype(np.float32)  # most spikes in 0.1..1 s, a tail past 1.4 s
        u = np.clip(rng.normal(350, 150, size=k), 0, 699).astype(np.uint16)
        times.append(t)
        units.append(u)
    write_shd(path, times, units, rng.integers(0, 20, size=n), rng.integers(0, 12, size=n))
    return int(counts.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=8156)
    ap.add_argument("--mean-spikes", type=float, default=6000.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = DataConfig(task="shd")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shd_train.h5"
        t0 = time.perf_counter()
        total = synthetic_shd(path, args.samples, args.mean_spikes)
        print(f"wrote {args.samples} samples, {total / 1e6:.1f} M spikes "
              f"({total / args.samples:.0f} per sample, {path.stat().st_size / 2**20:.0f} MiB) "
              f"in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        times, units, _, _ = read_shd(path)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        frames = bin_spikes(times, units, cfg.shd_dt, cfg.shd_window, cfg.shd_channels, cfg.shd_frames)
        t_bin = time.perf_counter() - t0
        del times, units

        run_cfg = DataConfig(task="shd", cache_dir=str(Path(tmp) / "cache"), check_counts=False)
        t0 = time.perf_counter()
        load_shd_split(run_cfg, "train", path)
        t_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_shd_split(run_cfg, "train", path)
        t_warm = time.perf_counter() - t0

    print(f"frames {list(frames.shape)} uint8 ({frames.nbytes / 2**20:.0f} MiB), spike rate "
          f"{np.count_nonzero(frames) / frames.size:.4f}")
    print(f"read  (read_shd)            {t_read:6.2f} s")
    print(f"bin   (bin_spikes)          {t_bin:6.2f} s")
    print(f"read + bin                  {t_read + t_bin:6.2f} s   (acceptance: < 30 s)")
    print(f"cold load (+ cache write)   {t_cold:6.2f} s")
    print(f"warm load (from cache)      {t_warm:6.2f} s")


if __name__ == "__main__":
    main()
