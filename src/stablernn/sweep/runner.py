"""The sweep runner: trains the runs of a spec (:mod:`stablernn.sweep.spec`) serially, in local worker processes,
or as Ray tasks, resumably.

Each run writes ``out_dir/<name>/`` through :func:`stablernn.train.fit` plus ``status.json`` (``status``: running,
done, failed, interrupted; ``error``) and, for a failure, ``traceback.txt``. ``out_dir/sweep.json`` indexes the
sweep (the spec, and every run's name, varied values, seed and status) and is rewritten after every finished run.
Rerunning a sweep skips finished runs, resumes interrupted ones from their checkpoint, and leaves failed ones alone
unless asked to retry them.

Concurrency: a run is trained only under its lock (:class:`stablernn.io.RunLock`, an OS file lock on
``<run>/.lock`` that the kernel frees when the holder dies). "running" means "a live process holds the lock", never
just a status string, so a run whose runner was killed reads as interrupted and is resumed. Two sweeps on one
``out_dir`` (one machine, or several on storage with working ``flock``, e.g. NFSv4) skip each other's locked runs
and so share the work. Local workers exit when the sweep process dies (parent-death signal and a watchdog thread);
Ray tasks belong to their driver, so a killed driver's runs are cancelled by Ray and resume on the next run of the
sweep.
"""
from __future__ import annotations

import json
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, RunBusyError
from ..io import RunLock, atomic_write_json, atomic_write_text, is_locked
from ..train.config import RunConfig, flatten_config
from .spec import Resources, SweepRun, SweepSpec, expand, format_value

STATUS_FILE, TRACEBACK_FILE, INDEX_FILE = "status.json", "traceback.txt", "sweep.json"
# options that change how a run is shown, not what it computes: a rerun may change them
_DISPLAY_FIELDS = {("train", "progress"), ("train", "threads"), ("lsc", "progress")}


# --- run state --------------------------------------------------------------------------------------------------
def run_status(run_dir: Path) -> str:
    """``done`` (final.json present); ``running`` only while a live process holds the run's lock (a status string
    alone is never trusted: a killed runner cannot update it); ``failed`` as recorded; ``interrupted`` for a run
    recorded as interrupted or as running by a process that is gone; else ``partial`` (a checkpoint exists) or
    ``pending``."""
    run_dir = Path(run_dir)
    if (run_dir / "final.json").exists():
        return "done"
    if is_locked(run_dir):
        return "running"
    st = read_json(run_dir / STATUS_FILE)
    if st and st.get("status") == "failed":
        return "failed"
    if st and st.get("status") in ("interrupted", "running"):
        return "interrupted"
    return "partial" if (run_dir / "checkpoint.pt").exists() else "pending"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys where two run configs differ (display options ignored), as ``key: old -> new``."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        parts = tuple(key.split(".")[:2])
        if parts in _DISPLAY_FIELDS or key in ("name", "out_dir"):
            continue
        va, vb = _norm(a.get(key)), _norm(b.get(key))
        if va != vb:
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v, default=list))


flatten = flatten_config  # the sweep's name for it (reports read flattened configs)


def check_out_dir(runs: Iterable[SweepRun]) -> None:
    """Refuse to start when a run directory holds a run with another config (fit would refuse it run by run)."""
    for r in runs:
        old = read_json(r.run_dir / "config.json")
        if old is None:
            continue
        diff = config_differences(old, r.config.to_dict())
        if diff:
            raise ValueError(f"run directory {r.run_dir} holds a run made with a different config ("
                             + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")
                             + "); use another --out-dir, or delete that run directory to train it again")


# --- one run ----------------------------------------------------------------------------------------------------
def execute_run(config: dict[str, Any], threads: int | None = None, retry_failed: bool = True) -> dict[str, Any]:
    """Train one run (a RunConfig dict) under its lock and record the outcome in its ``status.json``; never raises
    for a failed run (its error and ``traceback.txt`` are written instead). Returns ``{"name", "status", "error",
    "seconds", "trained", metrics...}``; ``trained`` is False when the run was skipped because another live
    process holds its lock (``status`` "running") or finished it meanwhile (``status`` "done", or "failed" when
    ``retry_failed`` is off). Top-level so worker processes and Ray tasks can import it."""
    run = RunConfig.from_dict(config)
    run_dir = run.run_dir
    try:
        lock = RunLock(run_dir).acquire()
    except RunBusyError:
        return {"name": run.name, "status": "running", "error": None, "trained": False}
    try:
        # another sweep may have finished (or failed) this run since it was planned; run_status would say
        # "running" now, as we hold the lock, so read the files themselves
        recorded = (read_json(run_dir / STATUS_FILE) or {}).get("status")
        now = "done" if (run_dir / "final.json").exists() else "failed" if recorded == "failed" else None
        if now == "done" or (now == "failed" and not retry_failed):
            return {"name": run.name, "status": now, "error": None, "trained": False}
        return {**_execute_locked(run, threads), "trained": True}
    finally:
        lock.release()


def _execute_locked(run: RunConfig, threads: int | None) -> dict[str, Any]:
    import torch

    from ..train import fit

    run.train.progress = False
    if run.lsc is not None:
        run.lsc.progress = False
    if threads:
        torch.set_num_threads(int(threads))
        run.train.threads = int(threads)
    run_dir = run.run_dir
    t0 = time.time()
    started = {"status": "running", "host": socket.gethostname(), "pid": os.getpid(), "started": _now()}
    atomic_write_json(run_dir / STATUS_FILE, started)
    try:
        final = fit(run)
    except KeyboardInterrupt:
        atomic_write_json(run_dir / STATUS_FILE, {**started, "status": "interrupted", "ended": _now()})
        raise
    except Exception as e:  # a failed run must not stop the sweep: record it and go on
        err = f"{type(e).__name__}: {e}"
        atomic_write_text(run_dir / TRACEBACK_FILE, traceback.format_exc())
        out = {**started, "status": "failed", "error": err, "error_type": type(e).__name__, "ended": _now(),
               "seconds": round(time.time() - t0, 3)}
        atomic_write_json(run_dir / STATUS_FILE, out)
        return {"name": run.name, **out}
    (run_dir / TRACEBACK_FILE).unlink(missing_ok=True)
    out = {**started, "status": "done", "error": None, "ended": _now(), "seconds": round(time.time() - t0, 3)}
    atomic_write_json(run_dir / STATUS_FILE, out)
    metrics = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"name": run.name, **out, **metrics}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# --- the runner -------------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """What a sweep call did: per-run status and the counts."""

    out_dir: Path
    statuses: dict[str, str]
    ran: list[str]
    skipped: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for s in self.statuses.values() if s == status)

    def summary(self) -> str:
        n = len(self.statuses)
        parts = [f"{self.count(s)} {s}" for s in ("done", "running", "failed", "interrupted", "partial", "pending")
                 if self.count(s)]
        return (f"{n} runs in {self.out_dir}: " + ", ".join(parts)
                + f" (trained now: {len(self.ran)}, skipped: {len(self.skipped)})")


def plan(spec: SweepSpec, *, retry_failed: bool = False, only: str | None = None
         ) -> tuple[list[SweepRun], list[SweepRun], list[SweepRun]]:
    """``(all runs, runs to train, runs skipped)``; ``only``: a regex runs' names must match to be trained."""
    runs = expand(spec)
    todo, skip = [], []
    pattern = re.compile(only) if only else None
    for r in runs:
        st = run_status(r.run_dir)
        wanted = pattern is None or pattern.search(r.name) is not None
        if not wanted or st in ("done", "running") or (st == "failed" and not retry_failed):
            skip.append(r)
        else:
            todo.append(r)
    return runs, todo, skip


def write_index(spec: SweepSpec, runs: Sequence[SweepRun]) -> Path:
    """``out_dir/sweep.json``: the spec and every run's name, varied values, seed and current status."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = {"name": spec.name, "updated": _now(), "spec": spec.to_dict(), "axes": spec.axes,
             "seed_keys": list(spec.seed_keys),
             "runs": [{"name": r.name, "varied": r.varied, "seed": r.seed, "status": run_status(r.run_dir)}
                      for r in runs]}
    path = out / INDEX_FILE
    atomic_write_json(path, index)
    return path


def run_sweep(spec: SweepSpec, *, workers: int = 1, use_ray: bool = False, ray_address: str | None = None,
              ray_init: dict[str, Any] | None = None, threads: int | None = None, retry_failed: bool = False,
              only: str | None = None, progress: bool = True,
              on_result: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Train every run of ``spec`` not yet done and return what happened.

    ``workers > 1``: that many local processes (spawn), one torch thread each unless ``threads``. ``use_ray``: each
    run is a Ray task asking ``spec.resources``; ``ray_address`` (or ``$RAY_ADDRESS``) joins a cluster, otherwise a
    local Ray starts (``ray_init``: extra ``ray.init`` arguments, e.g. ``{"num_cpus": 2}``). On a cluster,
    ``out_dir`` must be on storage every node sees. A KeyboardInterrupt stops the sweep; finished runs are kept and a
    rerun resumes the rest.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    ray = _import_ray() if use_ray else None  # a missing ray is reported before anything is written
    runs, todo, skipped = plan(spec, retry_failed=retry_failed, only=only)
    check_out_dir(todo)
    write_index(spec, runs)
    results: dict[str, dict[str, Any]] = {}
    bar = _SweepBar(len(todo), spec.name, progress)

    def done(res: dict[str, Any]) -> None:
        results[res["name"]] = res
        bar.update(res)
        write_index(spec, runs)  # sweep.json tells the truth after every run, also if this process dies next
        if on_result is not None:
            on_result(res)

    try:
        if todo:
            configs = [r.config.to_dict() for r in todo]
            if ray is not None:
                _run_ray(ray, configs, spec.resources, ray_address, ray_init or {}, threads, retry_failed, done)
            elif workers > 1:
                _run_processes(configs, workers, threads or 1, retry_failed, done)
            else:
                for cfg in configs:
                    done(execute_run(cfg, threads, retry_failed))
    finally:
        bar.close()
        write_index(spec, runs)
    statuses = {r.name: run_status(r.run_dir) for r in runs}
    ran = [n for n, res in results.items() if res.get("trained", True)]
    skipped_names = [r.name for r in skipped] + [n for n, res in results.items() if not res.get("trained", True)]
    return SweepResult(Path(spec.out_dir), statuses, ran, skipped_names, results)


class _SweepBar:
    """One tqdm bar over the sweep's runs, with done/failed counts; a line per failure."""

    def __init__(self, total: int, name: str, enabled: bool):
        self.bar, self.counts = None, {"done": 0, "failed": 0}
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"sweep {name}", unit="run", dynamic_ncols=True)

    def update(self, res: dict[str, Any]) -> None:
        key = res["status"] if res.get("trained", True) else "skipped"
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.bar is not None:
            if res["status"] == "failed":
                self.bar.write(f"failed: {res['name']}: {res.get('error')}")
            self.bar.set_postfix(self.counts, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _init_worker(threads: int, parent: int) -> None:
    """Worker set-up: torch threads, and dying with the sweep process however it dies (no orphans)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _die_with_parent(parent: int, poll: float = 0.5) -> None:
    """Exit when ``parent`` is gone: the kernel's parent-death signal on Linux (``prctl(PR_SET_PDEATHSIG)``), and a
    daemon thread that polls ``os.getppid()`` everywhere (it also covers a parent that died before the prctl).
    A run cut short this way keeps its checkpoint; its lock dies with the worker, so a rerun resumes it."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # no prctl here: the thread below still works
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os._exit(70)  # the sweep that started us is gone: stop now rather than train runs no one collects

    if os.getppid() != parent:
        os._exit(70)
    threading.Thread(target=watch, name="stablernn-parent-watch", daemon=True).start()


def _run_processes(configs: list[dict[str, Any]], workers: int, threads: int, retry_failed: bool,
                   done: Callable[[dict[str, Any]], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and any CUDA state
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads, os.getpid())) as pool:
        futures = {pool.submit(execute_run, cfg, threads, retry_failed): cfg["name"] for cfg in configs}
        try:
            for fut in as_completed(futures):
                done(fut.result())
        except BrokenProcessPool:
            raise RuntimeError("a worker process died (out of memory or killed); finished runs are kept, rerun "
                               "the same command to resume the rest") from None
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            raise


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs the ray package: pip install 'stablernn[ray]' (or pip install "
                                     "ray), or run without --ray (--workers N for local processes)") from None
    return ray


def _run_ray(ray: Any, configs: list[dict[str, Any]], res: Resources, address: str | None, init: dict[str, Any],
             threads: int | None, retry_failed: bool, done: Callable[[dict[str, Any]], None]) -> None:
    """Each run a Ray task. The tasks belong to this driver: if it is killed, Ray cancels them, their run locks die
    with them, and rerunning the sweep resumes every unfinished run from its checkpoint (the Ray way: no detached
    actors, no state outside ``out_dir``)."""
    started_here = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        kwargs = dict(init)
        if address:
            kwargs["address"] = address
        kwargs.setdefault("log_to_driver", False)
        ray.init(**kwargs)
        started_here = True
    pending: dict[Any, dict[str, Any]] = {}
    try:
        task = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(execute_run)
        n_threads = threads or max(1, int(res.cpus))
        pending = {task.remote(cfg, n_threads, retry_failed): cfg for cfg in configs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cfg = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as e:  # the task died outside fit (worker lost, out of memory)
                    out = _record_lost(cfg, e)
                done(out)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _record_lost(cfg: dict[str, Any], err: BaseException) -> dict[str, Any]:
    run_dir = Path(cfg["out_dir"]) / cfg["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {"status": "failed", "error": f"{type(err).__name__}: {err}", "error_type": type(err).__name__,
           "ended": _now()}
    atomic_write_text(run_dir / TRACEBACK_FILE, "".join(traceback.format_exception(err)))
    atomic_write_json(run_dir / STATUS_FILE, out)
    return {"name": cfg["name"], **out}


def describe_runs(runs: Sequence[SweepRun]) -> str:
    """One line per run: status, name and the varied values (for ``--dry-run``)."""
    lines = []
    for r in runs:
        vals = ", ".join(f"{k}={format_value(v)}" for k, v in r.varied.items())
        lines.append(f"{run_status(r.run_dir):11s} {r.name}  ({vals}{', ' if vals else ''}seed={r.seed})")
    return "\n".join(lines)
