"""Can input sparsity beat the dense matmul floor? The first layer's input projection of the SHD-shape benchmark.

Forward + backward (weight gradient only: the input is data) of ``x [B*T, 700] -> x W^T [B*T, 256]`` for binary
spike inputs at a given density, three ways, ratios against the dense ``F.linear`` measured in the same run:

- ``dense``: ``F.linear`` (BLAS), the matmul floor's own choice;
- ``sparse_csr``: ``torch.sparse.mm`` on a CSR copy of ``x`` (and of ``x^T`` for the weight gradient);
- ``embedding_bag``: sum of the weight columns of the active channels per row (``F.embedding_bag``, mode "sum").

    python benchmarks/sparse_input.py                      # density 0.05, threads 1 and 2
    python benchmarks/sparse_input.py --density 0.01 --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F


def make_cases(rows: int, inputs: int, width: int, density: float, seed: int = 0) -> dict[str, Callable[[], None]]:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(rows, inputs, generator=gen) < density).float()
    w = torch.randn(width, inputs, generator=gen, requires_grad=True)
    g = torch.randn(rows, width, generator=gen)

    def dense() -> None:
        F.linear(x, w).backward(g)

    def sparse_csr() -> None:
        y = torch.sparse.mm(x.to_sparse_csr(), w.detach().t())
        dw = torch.sparse.mm(x.t().to_sparse_csr(), g).t()
        del y, dw

    def embedding_bag() -> None:
        rows_idx, cols = x.nonzero(as_tuple=True)
        offsets = torch.searchsorted(rows_idx, torch.arange(rows))
        F.embedding_bag(cols, w.t(), offsets, mode="sum").backward(g)

    def fresh(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            step()
            w.grad = None  # every call accumulates into a fresh gradient

        return run

    return {"dense": fresh(dense), "sparse_csr": fresh(sparse_csr), "embedding_bag": fresh(embedding_bag)}


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--rows", type=int, default=32 * 250, help="batch x time (SHD shape: 32 x 250)")
    ap.add_argument("--inputs", type=int, default=700)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    print(f"input projection [{a.rows}, {a.inputs}] x [{a.inputs}, {a.width}], density {a.density}, forward + "
          f"weight gradient, median of {a.repeats}\n")
    print("| threads | implementation | ms | x dense |")
    print("|---:|---|---:|---:|")
    for threads in a.threads:
        torch.set_num_threads(threads)
        cases = make_cases(a.rows, a.inputs, a.width, a.density)
        base = median_ms(cases["dense"], a.repeats)
        for name, fn in cases.items():
            ms = base if name == "dense" else median_ms(fn, a.repeats)
            print(f"| {threads} | {name} | {ms:.1f} | {ms / base:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
