"""Stopwatches: the batch-1 latency of a PyTorch module or of an ONNX graph in ONNX Runtime,
timed in this process or in a fresh one.

Every figure is the median of `repeats` calls after `warmup` untimed ones, at a fixed
thread count, with the process's allocator kept steady (`steady_allocator`).

`time_fresh` times each job in a process of its own, forked from a server that has only
imported the libraries (`python -m nas.hardware.stopwatch`): a network timed there runs as
it would in a user's process that did nothing else first. Timed in the process that had
just measured thousands of kernels, the same networks ran at another speed (the lookup
table's calibration and validation use fresh processes for that reason;
`scripts/bench_latency.py --drift` prints the difference).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Timing",
    "cpu_name",
    "ort_session",
    "ort_version",
    "run_fresh",
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


def time_fresh(jobs: Sequence[tuple[str, dict[str, Any]]],
               progress: Callable[[int, int], None] | None = None) -> list[Timing]:
    """Time each job in a process of its own, one after another (never two at once).

    A job is ("genotype", {genotype, num_classes, in_channels, **time_torch options}) or
    ("onnx", {model: bytes, shape, **time_onnx options})."""
    return run_fresh(jobs, progress=progress)


def run_fresh(jobs: Sequence[tuple[str, dict[str, Any]]], parallel: int = 1,
              progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """Run each job in a process of its own, forked from a server (`python -m
    nas.hardware.stopwatch`) that imported torch, onnxruntime and the model code and did
    nothing else; `parallel` servers at once (timing wants 1). Where there is no fork, each
    job gets a new interpreter."""
    import threading

    results: list[Any] = [None] * len(jobs)
    todo = list(enumerate(jobs))
    lock = threading.Lock()
    done = [0]

    def serve() -> None:
        with _Server() as server:
            while True:
                with lock:
                    if not todo:
                        return
                    i, job = todo.pop(0)
                try:
                    results[i] = server.run(job)
                except (OSError, ValueError, EOFError) as err:
                    results[i] = _Failed(f"{type(err).__name__}: {err}")
                with lock:
                    done[0] += 1
                    if progress:
                        progress(done[0], len(jobs))

    threads = [threading.Thread(target=serve) for _ in range(max(1, min(parallel, len(jobs))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [r for r in results if isinstance(r, _Failed)]
    if failed:
        raise RuntimeError(f"a fresh-process job failed: {failed[0].message}")
    return results


@dataclass(frozen=True)
class _Failed:
    message: str


class _Server:
    """The client side of one fork server."""

    def __enter__(self) -> _Server:
        import os
        import subprocess

        cmd = [sys.executable, "-m", "nas.hardware.stopwatch"]
        if not hasattr(os, "fork"):
            cmd.append("--one")  # a new interpreter per job
        self.cmd = cmd
        self.proc = None if "--one" in cmd else subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                                                 stdout=subprocess.PIPE)
        return self

    def run(self, job: tuple[str, dict[str, Any]]) -> Any:
        import pickle
        import subprocess

        proc = self.proc or subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        data = pickle.dumps(job)
        proc.stdin.write(len(data).to_bytes(8, "little") + data)
        proc.stdin.flush()
        size = proc.stdout.read(8)
        if len(size) < 8:
            return _Failed("the fork server stopped")
        status, value = pickle.loads(proc.stdout.read(int.from_bytes(size, "little")))
        if self.proc is None:
            proc.stdin.close()
            proc.wait()
        return value if status == "ok" else _Failed(value)

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def _run_any(job: tuple[str, Any]) -> Any:
    if job[0] == "call":  # ("call", (module, function, args)): e.g. an export
        import importlib

        module, function, args = job[1]
        return getattr(importlib.import_module(module), function)(*args)
    return _run_job(job)


def _serve(one: bool) -> None:
    """The fork server: reads length-prefixed pickled jobs on stdin, runs each in a forked
    child, and writes the child's pickled ("ok", result) or ("error", message) to stdout."""
    import contextlib
    import os
    import pickle

    import nas.model.builder  # noqa: F401 - imported once here, not in every child

    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the libraries print goes to stderr, not into the answers
    while True:
        size = sys.stdin.buffer.read(8)
        if len(size) < 8:
            return
        job = pickle.loads(sys.stdin.buffer.read(int.from_bytes(size, "little")))
        if one:
            answer = _answer(job)
        else:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                with os.fdopen(w, "wb") as fh:
                    fh.write(_answer(job))
                os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as fh:
                answer = fh.read()
            os.waitpid(pid, 0)
            if not answer:
                answer = pickle.dumps(("error", "the timing process died"))
        out.write(len(answer).to_bytes(8, "little") + answer)
        out.flush()
        if one:
            return


def _answer(job: tuple[str, Any]) -> bytes:
    import pickle

    try:
        return pickle.dumps(("ok", _run_any(job)))
    except BaseException as err:  # reported to the caller, who raises
        return pickle.dumps(("error", f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    from nas.hardware import stopwatch  # this file again, by its name: results pickle as its types

    stopwatch._serve("--one" in sys.argv)
