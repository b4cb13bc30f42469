"""Matrix-free vs exact Jacobian engine: accuracy, iteration counts and speed of the radius and the norm.

For each (cell, width): a 2-layer net is run a few steps on random inputs; for its time and depth transitions the
exact engine (vmap+jacrev, then eigvals / svdvals) and the matrix-free engine (Arnoldi on jvp/vjp products) compute
the per-sample radius and norm, forward and backward (what one LSC step does). Prints a markdown table.

    python benchmarks/jacobian_engines.py                 # GRU/LSTM at width 256, GRU at 512
    python benchmarks/jacobian_engines.py --widths 256 --cells gru --batch 8 --repeats 3
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from stablernn.lsc.measures import matrix_free_norm, matrix_free_radius, spectral_norm, spectral_radius
from stablernn.lsc.transitions import rnn_transitions
from stablernn.models import ModelConfig, build_model, detach_states


def _timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench(cell: str, width: int, batch: int, repeats: int, max_iter: int, tol: float) -> list[dict]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=cell, layers=2, width=width), input_size=8, output_size=10).eval()
    x = torch.rand(batch, 6, 8)
    states = model.initial_states(batch)
    for t in range(5):
        _, states, _ = model.step(x[:, t], states)
    res = rnn_transitions(model, x[:, 5], detach_states(states), ["time", "depth"])
    rows = []
    for tr0 in res.transitions:
        # detached operating point: each timing repeat backpropagates into the weights only
        tr = replace(tr0, source=tr0.source.detach(), context=tuple(c.detach() for c in tr0.context))

        def exact_radius(tr=tr):
            r = spectral_radius(tr.jacobian())
            r.sum().backward()
            return r.detach()

        def exact_norm(tr=tr):
            r = spectral_norm(tr.jacobian())
            r.sum().backward()
            return r.detach()

        def mf_radius(tr=tr):
            r, it = matrix_free_radius(tr, max_iter=max_iter, tol=tol)
            r.sum().backward()
            return r.detach(), it

        def mf_norm(tr=tr):
            r, it = matrix_free_norm(tr, max_iter=max_iter, tol=tol)
            r.sum().backward()
            return r.detach(), it

        t_er, r_ex = _timed(exact_radius, repeats)
        t_en, n_ex = _timed(exact_norm, repeats)
        t_mr, (r_mf, it_r) = _timed(mf_radius, repeats)
        t_mn, (n_mf, it_n) = _timed(mf_norm, repeats)
        model.zero_grad(set_to_none=True)
        rows.append({
            "cell": cell, "width": width, "family": f"{tr.family} {tr.layer}", "dim": tr.source.shape[-1],
            "radius_err": float(((r_mf - r_ex).abs() / r_ex).max()), "radius_iters": it_r,
            "t_exact_radius": t_er, "t_mf_radius": t_mr,
            "norm_err": float(((n_mf - n_ex).abs() / n_ex).max()), "norm_iters": it_n,
            "t_exact_norm": t_en, "t_mf_norm": t_mn,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="gru,lstm")
    ap.add_argument("--widths", default="256")
    ap.add_argument("--extra", default="gru:512", help="extra cell:width pairs, comma separated ('' for none)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-iter", type=int, default=160, help="Arnoldi iterations at most, per direction")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pairs = [(c, int(w)) for c in a.cells.split(",") for w in a.widths.split(",")]
    pairs += [(p.split(":")[0], int(p.split(":")[1])) for p in a.extra.split(",") if p]
    print(f"batch {a.batch}, {a.threads} thread(s), best of {a.repeats}; times are forward + backward of the "
          f"measure; matrix-free: max {a.max_iter} iterations per direction, tol {a.tol:g}\n")
    print("| cell | width | transition | J size | radius: max rel err | iters (J + Jᵀ) | exact s | matrix-free s "
          "| speed-up | norm: max rel err | iters | exact s | matrix-free s | speed-up |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell, width in pairs:
        for r in bench(cell, width, a.batch, a.repeats, a.max_iter, a.tol):
            print(f"| {r['cell']} | {r['width']} | {r['family']} | {r['dim']} | {100 * r['radius_err']:.2f}% | "
                  f"{r['radius_iters']} | {r['t_exact_radius']:.3f} | {r['t_mf_radius']:.3f} | "
                  f"{r['t_exact_radius'] / r['t_mf_radius']:.2f}x | {100 * r['norm_err']:.3f}% | {r['norm_iters']} | "
                  f"{r['t_exact_norm']:.3f} | {r['t_mf_norm']:.3f} | {r['t_exact_norm'] / r['t_mf_norm']:.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
