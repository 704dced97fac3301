"""Stopwatches: the batch-1 latency of a PyTorch module or of an ONNX graph in ONNX Runtime,
timed in this process or in a fresh one.

Every figure is the median of `repeats` calls after `warmup` untimed ones, at a fixed
thread count, with the process's allocator kept steady (`steady_allocator`).

`time_fresh` times each job in a process of its own, forked from a server that has only
imported the libraries: a network timed there runs as it would in a user's process that did
nothing else first. Timed in the process that had just measured thousands of kernels, the
same networks ran measurably slower (the lookup table's calibration and validation use
fresh processes for that reason; `scripts/bench_latency.py --drift` prints the difference).
"""

from __future__ import annotations

import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Timing",
    "cpu_name",
    "fresh_context",
    "ort_session",
    "ort_version",
    "steady_allocator",
    "time_fresh",
    "time_onnx",
    "time_torch",
]


@dataclass(frozen=True)
class Timing:
    median_ms: float
    mean_ms: float
    var: float
    n: int


def _timing(times_ms: Sequence[float]) -> Timing:
    return Timing(statistics.median(times_ms), statistics.fmean(times_ms),
                  statistics.pvariance(times_ms), len(times_ms))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_ALLOCATOR: list[str] = []


def steady_allocator() -> str:
    """Keep freed memory in the process (glibc: no trimming, mmap only above 32 MB).

    By default glibc hands large activations back to the system after each layer and
    page-faults them in again on the next call: measured here that added up to 80% to a
    network's latency, varying with the process's allocation history, which no per-kernel
    table can predict. Servers use a caching allocator (jemalloc, tcmalloc) for the same
    reason. Applied once per process before any measurement; recorded in the fingerprint.
    """
    if not _ALLOCATOR:
        name = "default"
        if sys.platform.startswith("linux"):
            import ctypes
            import ctypes.util

            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                m_trim_threshold, m_mmap_threshold = -1, -3
                if libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30):
                    name = "glibc-keep"
            except (OSError, AttributeError):
                pass
        _ALLOCATOR.append(name)
    return _ALLOCATOR[0]


# ----- PyTorch eager ----------------------------------------------------------------------------
def time_torch(module: nn.Module, shape: tuple[int, ...], *, device: str = "cpu", threads: int = 1,
               warmup: int = 5, repeats: int = 20, channels_last: bool = False) -> Timing:
    """Median wall time of `module` on one input of `shape`, in milliseconds."""
    steady_allocator()
    before = torch.get_num_threads()
    dev = torch.device(device)
    if threads > 0 and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        module = module.to(dev).eval()
        x = torch.randn(*shape, device=dev)
        if channels_last and x.dim() == 4:
            module = module.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        times = []
        with torch.inference_mode():
            for i in range(warmup + repeats):
                sync()
                start = time.perf_counter()
                module(x)
                sync()
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
        return _timing(times)
    finally:
        torch.set_num_threads(before)


# ----- ONNX Runtime -----------------------------------------------------------------------------
def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def ort_session(model: bytes | str, threads: int = 1):
    """An ONNX Runtime CPU session as a deployment would open it: every graph optimization
    (Conv+BN+activation fused, the default level, also the one the export's check uses),
    `threads` intra-op threads, one inter-op thread, sequential execution."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def time_onnx(model: bytes | str, shape: tuple[int, ...], *, threads: int = 1, warmup: int = 5,
              repeats: int = 20) -> Timing:
    """Median wall time of one ONNX Runtime call of the graph `model` on one input of `shape`.

    Input and output stay bound to preallocated CPU buffers (I/O binding), so a call times
    the graph, not the allocation and copy of its output."""
    import onnxruntime as ort

    steady_allocator()
    session = ort_session(model, threads)
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    name = session.get_inputs()[0].name
    outputs = session.run(None, {name: x})
    binding = session.io_binding()
    binding.bind_cpu_input(name, x)
    for meta, value in zip(session.get_outputs(), outputs, strict=True):
        binding.bind_ortvalue_output(meta.name, ort.OrtValue.ortvalue_from_numpy(np.empty_like(value)))
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    return _timing(times)


# ----- a fresh process per job ------------------------------------------------------------------
def _run_job(job: tuple[str, dict[str, Any]]) -> Timing:
    kind, args = job[0], dict(job[1])
    if kind == "onnx":
        return time_onnx(args.pop("model"), **args)
    if kind == "genotype":
        from nas.arch.genotype import parse
        from nas.model.builder import build_model

        g = parse(args.pop("genotype"))
        c, classes = args.pop("in_channels"), args.pop("num_classes")
        with torch.random.fork_rng():  # seeded weights, the caller's random stream untouched
            torch.manual_seed(0)
            model = build_model(g, classes, c)
        return time_torch(model, (1, c, g.resolution, g.resolution), **args)
    raise ValueError(f"unknown stopwatch job {kind!r}")


def fresh_context() -> multiprocessing.context.BaseContext:
    """Processes forked from a server that imported torch, onnxruntime and the model code
    and did nothing else (spawned afresh where fork is not available)."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        preload = ["nas.hardware.stopwatch", "nas.hardware.backends", "nas.model.builder"]
        try:
            import onnxruntime  # noqa: F401

            preload.append("onnxruntime")
        except ImportError:
            pass
        ctx.set_forkserver_preload(preload)
    return ctx


def time_fresh(jobs: Sequence[tuple[str, dict[str, Any]]],
               progress: Callable[[int, int], None] | None = None) -> list[Timing]:
    """Time each job in a process of its own, one after another (never two at once).

    A job is ("genotype", {genotype, num_classes, in_channels, **time_torch options}) or
    ("onnx", {model: bytes, shape, **time_onnx options}). The processes are forked from a
    server that imported torch and onnxruntime and did nothing else (spawned where fork is
    not available)."""
    out: list[Timing] = []
    with ProcessPoolExecutor(max_workers=1, mp_context=fresh_context(), max_tasks_per_child=1) as pool:
        for i, job in enumerate(jobs, 1):
            out.append(pool.submit(_run_job, job).result())
            if progress:
                progress(i, len(jobs))
    return out
