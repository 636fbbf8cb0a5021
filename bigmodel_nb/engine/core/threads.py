"""Worker threads that train as fast as the notebook's own thread.

Why: each thread that runs a parallel torch op owns an OpenMP team, and the notebook's thread keeps
its team all session. With a second team alive, libgomp manages more threads than there are CPUs
and cuts its spin-wait to ~100 turns, so every parallel region sleeps and wakes through the kernel
(one CPU busy instead of two). Measured 2026-12-01 (2 vCPU, torch 2.13.0+cpu, digits MLP 64-256-256-10,
batch 64, 600 steps, medians of 5-7 alternating runs): a fresh worker thread 2.2-2.9x the main
thread; one long-lived reused worker just as slow, and while it lived the main thread was 2.2x too;
torch.set_num_threads or threadpoolctl in the worker, OMP_WAIT_POLICY and GOMP_SPINCOUNT did not fix
it; one torch thread in the worker did (1.1x) but cost 1.56x on a 1024-wide MLP at batch 256.
Releasing the caller's team (OpenMP 5.0 `omp_pause_resource_all`; torch re-creates it on the next
parallel op) before starting the worker: 0.79-1.09x (small) and 0.98x (1024-wide). So every run
handed to a thread gets a fresh thread (its team dies with it), started after that release. While
both threads compute at once (a cell runs torch ops beside a background run) both are slow again.
"""
from __future__ import annotations

import contextvars
import ctypes
import functools
import re
import threading
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["release_openmp_team", "train_in_background"]


@functools.lru_cache(maxsize=1)
def _pause_all():
    """libgomp's `omp_pause_resource_all` as torch loaded it, or None (another OpenMP runtime)."""
    paths = sorted(str(p) for p in (Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))
    try:
        with open("/proc/self/maps") as maps:
            paths += sorted(set(re.findall(r"(/\S*/libgomp[^/\s]*\.so[^/\s]*)$", maps.read(), re.M)))
    except OSError:
        pass
    for path in paths:
        try:
            fn = ctypes.CDLL(path).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def release_openmp_team() -> bool:
    """Let the calling thread's idle OpenMP worker threads go; False where that is not possible.

    Example: ``release_openmp_team()  # before another thread starts heavy torch work``
    """
    fn = _pause_all()
    return fn is not None and fn(1) == 0  # 1: omp_pause_soft


def train_in_background(fn: Callable[[], object], name: str) -> threading.Thread:
    """Run `fn` in a new daemon thread, in a copy of the caller's context (prints land in the cell
    that started it), after releasing the caller's OpenMP team; returns the started thread.

    Example: ``thread = train_in_background(run._drive, "bigmodel_nb-run"); thread.join()``
    """
    release_openmp_team()
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn,), name=name, daemon=True)
    thread.start()
    return thread
