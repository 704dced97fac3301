"""Latency on the user's own device and inference backend: a per-kernel lookup table, and
the predictor a latency budget asks.

- A backend (`nas.hardware.backends`: PyTorch eager or ONNX Runtime) times one kernel or
  one whole network; `nas.hardware.stopwatch` holds the stopwatches.
- A lookup table (LUT) holds the measured latency of every kernel (`nas.arch.kernels`) a
  search space can produce, with the fingerprint of the backend and device it was measured
  on. A genotype's predicted latency is the sum of its kernels' medians, scaled per kernel
  group, plus one constant: both fitted on whole networks timed in fresh processes
  (`calibrate`).
- `python -m nas.latency build|validate|predict` builds a table (resumable, with
  progress), checks its predictions against measured networks, or predicts one genotype.

The file is JSON lines: a header line (format, space, fingerprint, classes, channels),
then one line per measured kernel, then any `calibration` lines (the last one counts).
Appending keeps what an interrupted build measured.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from nas.arch import kernels as K
from nas.arch.genotype import Genotype, head_channels, stage_blocks, stem_channels
from nas.hardware.backends import BACKENDS, Backend, LatencyError, kernel_module, make_backend
from nas.hardware.stopwatch import Timing, cpu_name, steady_allocator, time_fresh, time_torch
from nas.model.builder import build_model

__all__ = [
    "BACKENDS",
    "FORMAT",
    "GROUPS",
    "LatencyError",
    "LatencyPredictor",
    "LookupTable",
    "Timing",
    "backend_of",
    "calibrate",
    "cheapest",
    "cpu_name",
    "default_table_path",
    "fingerprint",
    "group",
    "kernel_module",
    "make_backend",
    "measure",
    "measure_fresh",
    "measure_genotype",
    "min_latency",
    "open_table",
    "scatter",
    "space_kernels",
    "steady_allocator",
    "validate",
]

log = logging.getLogger(__name__)

FORMAT = "nas-lut/1"
# Kernels timed alone are scaled per group when predicting a network (see `calibrate`).
GROUPS = ("depthwise", "other")


def group(key: K.Kernel) -> str:
    return "depthwise" if key[0] == "conv" and key[6] > 1 else "other"


# ----- measuring ----------------------------------------------------------------------------
def fingerprint(device: str = "cpu", threads: int = 1, channels_last: bool = False,
                backend: str = "torch") -> dict[str, Any]:
    """What a latency figure depends on besides the network: backend, hardware, software, settings."""
    return make_backend(backend, device=device, threads=threads, channels_last=channels_last).fingerprint()


def backend_of(fp: dict[str, Any]) -> str:
    """The backend a table's fingerprint was measured on (tables from before backends: torch)."""
    return str(fp.get("backend", "torch"))


def measure(module: nn.Module, shape: tuple[int, ...], **opts: Any) -> Timing:
    """Median batch-1 wall time (ms) of a PyTorch module, in this process."""
    return time_torch(module, shape, **opts)


def measure_genotype(g: Genotype, num_classes: int = 1000, in_channels: int = 3, **opts: Any) -> Timing:
    """Measured batch-1 latency in PyTorch eager of the network `g` describes, at its own
    resolution, in this process (other backends: `Backend.time_network`)."""
    model = build_model(g, num_classes, in_channels)
    return measure(model, (1, in_channels, g.resolution, g.resolution), **opts)


def measure_fresh(genotypes: list[Genotype], backend: Backend, num_classes: int, in_channels: int,
                  progress: Callable[[int, int], None] | None = None, times: int = 1) -> list[Timing]:
    """Each network timed whole in a fresh process (`stopwatch.time_fresh`), the whole list
    `times` times over."""
    return time_fresh(backend.network_jobs(genotypes, num_classes, in_channels) * times, progress)


# ----- which kernels a space can run ----------------------------------------------------------
def space_kernels(space: Any, num_classes: int, in_channels: int) -> list[K.Kernel]:
    """Every distinct kernel of every genotype of `space`."""
    found: set[K.Kernel] = set()

    def collect(kernels: list[K.Kernel]) -> float:
        found.update(kernels)
        return 0.0

    cheapest(space, num_classes, in_channels, collect)
    return sorted(found, key=K.to_text)


def cheapest(space: Any, num_classes: int, in_channels: int,
             price: Callable[[list[K.Kernel]], float]) -> float:
    """Smallest total `price` of a genotype's kernels over the whole space (`SearchSpace.fold`
    with min). Every kernel any genotype of the space runs is priced at least once on the way."""

    def stem(layers: Any, width: float, resolution: int) -> float:
        return price(K.stem_kernels(layers, stem_channels(layers, width), resolution, in_channels))

    def stage(i: int, option: Any, cin: int, h: int, width: float) -> float:
        return price(K.blocks_kernels(stage_blocks(i, option, cin, h, width)))

    def head(layers: Any, width: float, cin: int, h: int) -> float:
        return price(K.head_kernels(layers, head_channels(layers, width), cin, h, num_classes))

    return space.fold(stem, stage, head, operator.add, min)


# ----- the lookup table -------------------------------------------------------------------
@dataclass
class LookupTable:
    path: Path
    header: dict[str, Any]
    entries: dict[K.Kernel, Timing] = field(default_factory=dict)
    # predicted = overhead_ms + sum over kernels of scales[group] * median, fitted by `calibrate`
    scales: dict[str, float] = field(default_factory=lambda: dict.fromkeys(GROUPS, 1.0))
    overhead_ms: float = 0.0
    partial_at: int | None = None  # byte offset of a half-written last line

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.header["fingerprint"]

    @classmethod
    def create(cls, path: Path, space: str, fp: dict[str, Any], num_classes: int,
               in_channels: int) -> LookupTable:
        header = {"format": FORMAT, "space": space, "fingerprint": fp, "num_classes": num_classes,
                  "in_channels": in_channels}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(header) + "\n")
        return cls(path, header)

    @classmethod
    def load(cls, path: str | Path) -> LookupTable:
        path = Path(path)
        if not path.is_file():
            raise LatencyError(f"latency table {str(path)!r} does not exist (build one with "
                               "python -m nas.latency build +space=NAME)")
        lines = path.read_text().splitlines()
        at = 1  # the line being read, for the message
        try:
            header = json.loads(lines[0]) if lines else None
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError("no header")
            table = cls(path, header)
            for n, line in enumerate(lines[1:], start=2):
                at = n
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines):  # a build killed mid-write: drop the partial line
                        raw = path.read_bytes()
                        table.partial_at = raw.rstrip(b"\n").rfind(b"\n") + 1
                        continue
                    raise
                if "calibration" in row:
                    cal = row["calibration"]
                    table.scales = {g: float(cal["scales"][g]) for g in GROUPS}
                    table.overhead_ms = float(cal["overhead_ms"])
                else:
                    table.entries[K.from_text(row["kernel"])] = Timing(
                        float(row["median_ms"]), float(row["mean_ms"]), float(row["var"]), int(row["n"]))
        except (ValueError, KeyError, TypeError) as err:
            what = type(err).__name__ + (f": {str(err).splitlines()[0][:80]}" if str(err) else "")
            if isinstance(err, json.JSONDecodeError):  # its own position is within the one line
                what = f"not JSON: {err.msg}"
            raise LatencyError(f"latency table {str(path)!r} is not a valid {FORMAT} file at line {at} "
                               f"({what})") from None
        return table

    def check(self, space: str, fp: dict[str, Any], num_classes: int | None = None,
              in_channels: int | None = None) -> None:
        """Refuse a table measured for another space or on another device/setting."""
        if self.header["space"] != space:
            raise LatencyError(f"latency table {str(self.path)!r} is for space "
                               f"{self.header['space']!r}, not {space!r}")
        mine, theirs = backend_of(self.fingerprint), backend_of(fp)
        if mine != theirs:
            raise LatencyError(f"latency table {str(self.path)!r} was measured on backend {mine!r}, "
                               f"not {theirs!r}; build one for it: python -m nas.latency build "
                               f"+space={space} backend={theirs}")
        diff = {k: (self.fingerprint.get(k), v) for k, v in fp.items() if self.fingerprint.get(k) != v}
        if diff:
            what = ", ".join(f"{k} {a!r} (table) vs {b!r} (here)" for k, (a, b) in diff.items())
            raise LatencyError(f"latency table {str(self.path)!r} was measured on another device or "
                               f"setting: {what}; rebuild it here (python -m nas.latency build)")

    def append(self, rows: Iterable[tuple[K.Kernel, Timing]]) -> None:
        if self.partial_at is not None:  # cut the half-written line an interrupted build left
            os.truncate(self.path, self.partial_at)
            self.partial_at = None
        with open(self.path, "a") as fh:
            for key, t in rows:
                self.entries[key] = t
                fh.write(json.dumps({"kernel": K.to_text(key), "median_ms": t.median_ms,
                                     "mean_ms": t.mean_ms, "var": t.var, "n": t.n}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def set_calibration(self, scales: dict[str, float], overhead_ms: float, samples: int) -> None:
        self.scales, self.overhead_ms = dict(scales), overhead_ms
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"calibration": {"scales": scales, "overhead_ms": overhead_ms,
                                                 "n": samples}}) + "\n")

    def missing(self, kernels: Iterable[K.Kernel]) -> list[K.Kernel]:
        return [k for k in dict.fromkeys(kernels) if k not in self.entries]

    def group_sums(self, kernels: Iterable[K.Kernel]) -> dict[str, float]:
        """Sum of the kernels' medians per calibration group."""
        sums = dict.fromkeys(GROUPS, 0.0)
        for k in kernels:
            sums[group(k)] += self.entries[k].median_ms
        return sums

    def weighted(self, kernels: Iterable[K.Kernel]) -> float:
        return sum(self.scales[group(k)] * self.entries[k].median_ms for k in kernels)

    def predict_kernels(self, kernels: Iterable[K.Kernel]) -> float:
        return self.overhead_ms + self.weighted(kernels)

    def predict(self, g: Genotype, num_classes: int, in_channels: int) -> float:
        """Predicted latency (ms) of `g`; every kernel must be in the table (see `fill`)."""
        return self.predict_kernels(K.genotype_kernels(g, num_classes, in_channels))

    def fill(self, kernels: Iterable[K.Kernel], backend: Backend,
             progress: Callable[[int, int], None] | None = None, chunk: int = 20) -> int:
        """Time the kernels the table lacks on `backend`, appending as it goes; returns how many."""
        todo = self.missing(kernels)
        batch: list[tuple[K.Kernel, Timing]] = []
        for i, key in enumerate(todo, 1):
            batch.append((key, backend.time_kernel(key)))
            if len(batch) >= chunk or i == len(todo):
                self.append(batch)
                batch = []
                if progress:
                    progress(i, len(todo))
        return len(todo)


def default_table_path(directory: str | Path, space: str, fp: dict[str, Any]) -> Path:
    """`<directory>/<space>-<device or backend>-<threads>t-<fingerprint digest>.lut.jsonl`: one
    table per space, backend and device setting."""
    import hashlib

    digest = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:8]
    where = fp["device"] if backend_of(fp) == "torch" else backend_of(fp)
    return Path(directory) / f"{space}-{where}-{fp['threads']}t-{digest}.lut.jsonl"


def _sample(table: LookupTable, space: Any, num_classes: int, in_channels: int, backend: Backend,
            n: int, seed: int) -> tuple[list[Genotype], list[list[K.Kernel]]]:
    """`n` random genotypes of `space` and their kernels, every one of them in `table`."""
    rng = random.Random(seed)
    genotypes = [space.sample(rng) for _ in range(n)]
    kernels = [K.genotype_kernels(g, num_classes, in_channels) for g in genotypes]
    table.fill([k for ks in kernels for k in ks], backend)
    return genotypes, kernels


def calibrate(table: LookupTable, space: Any, num_classes: int, in_channels: int, backend: Backend,
              samples: int = 100, seed: int = 1234,
              progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, float], float]:
    """Fit predicted = overhead + sum of per-group scale x kernel median, by least squares on
    `samples` random networks, each timed whole in a fresh process.

    A kernel timed alone runs from a warm cache and without the module calls around it; in a
    network its weights come from further away, and depthwise kernels (little compute per
    byte) suffer that more than the others. Measured on mnv2, one core: a single scale left
    82% of networks within 10%, a scale per group 90%. The networks are timed in fresh
    processes because that is where users run them: the process that measured the kernels
    runs networks at another speed (see `stopwatch`).
    """
    import numpy as np

    genotypes, kernels = _sample(table, space, num_classes, in_channels, backend, samples, seed)
    rows = [[sums[name] for name in GROUPS] + [1.0] for sums in map(table.group_sums, kernels)]
    # Timed exactly as `validate` and a user's stopwatch time them: one fresh process each,
    # the same warm-up and repeats (splitting the repeats over three processes, tried, moved
    # the fit by +15% against single-process timings).
    measured = [t.median_ms for t in measure_fresh(genotypes, backend, num_classes, in_channels, progress)]
    a, y = np.asarray(rows), np.asarray(measured)
    # Least squares on relative errors (each row divided by its network's time), as
    # predictions are judged: otherwise the largest networks decide the fit alone.
    coef, *_ = np.linalg.lstsq(a / y[:, None], np.ones_like(y), rcond=None)
    if (coef[:-1] <= 0).any():  # degenerate (e.g. a space without depthwise kernels): one scale
        one = np.stack([a[:, :-1].sum(axis=1), a[:, -1]], axis=1)
        (scale, overhead), *_ = np.linalg.lstsq(one / y[:, None], np.ones_like(y), rcond=None)
        coef = np.asarray([scale] * len(GROUPS) + [overhead])
    scales = {name: float(v) for name, v in zip(GROUPS, coef[:-1], strict=True)}
    table.set_calibration(scales, float(coef[-1]), samples)
    return scales, float(coef[-1])


def min_latency(table: LookupTable, space: Any, num_classes: int, in_channels: int) -> float:
    """Smallest predicted latency over the whole space."""
    return cheapest(space, num_classes, in_channels, table.weighted) + table.overhead_ms


class LatencyPredictor:
    """Latency of candidates for a latency budget, on one backend (PyTorch eager or ONNX
    Runtime): from this device's lookup table when there is one for the space, else
    measured on the spot."""

    def __init__(self, space: Any, num_classes: int, in_channels: int, lut: str | None = None,
                 directory: str = "luts", backend: str = "torch", **opts: Any):
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        self.backend = make_backend(backend, **opts)
        fp = self.backend.fingerprint()
        path = Path(lut).expanduser() if lut else default_table_path(directory, space.name, fp)
        self.table: LookupTable | None = None
        if path.exists():
            self.table = LookupTable.load(path)
            self.table.check(space.name, fp)
        elif lut:
            raise LatencyError(f"latency table {str(path)!r} does not exist; build it with "
                               f"python -m nas.latency build +space={space.name} lut={lut}"
                               + (f" backend={backend}" if backend != "torch" else ""))
        self.path = path

    @property
    def source(self) -> str:
        where = f"table {self.path}" if self.table else "measured per candidate"
        return f"{where} ({self.backend.name})"

    def __call__(self, g: Genotype) -> float:
        if self.table is None:
            return self.backend.time_network(g, self.num_classes, self.in_channels).median_ms
        ks = K.genotype_kernels(g, self.num_classes, self.in_channels)
        self.table.fill(ks, self.backend)
        return self.table.predict_kernels(ks)

    def minimum(self) -> float | None:
        """The space's smallest predicted latency (None without a table)."""
        if self.table is None:
            return None
        kernels = space_kernels(self.space, self.num_classes, self.in_channels)
        missing = len(self.table.missing(kernels))
        if missing:
            log.info(f"latency table {self.path} lacks {missing} of the space's {len(kernels)} kernels "
                     "(another number of classes or channels, or an interrupted build): measuring them "
                     "once")
        self.table.fill(kernels, self.backend, progress=_progress("kernels") if missing else None)
        return min_latency(self.table, self.space, self.num_classes, self.in_channels)


def _agreement(a: list[float], b: list[float]) -> dict[str, float]:
    from scipy.stats import kendalltau

    errors = [(x - y) / y for x, y in zip(a, b, strict=True)]
    return {"within_10pct": sum(abs(e) <= 0.10 for e in errors) / len(errors),
            "mape": statistics.fmean(abs(e) for e in errors), "bias": statistics.fmean(errors),
            "kendall_tau": float(kendalltau(a, b).statistic)}


def validate(table: LookupTable, space: Any, num_classes: int, in_channels: int, backend: Backend,
             n: int = 100, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Predicted vs measured latency of `n` random genotypes of `space`, each network timed
    in a fresh process, and then once more in another: how often those two timings agree
    within 10% is the stopwatch's own noise floor, the finest a predictor can be judged."""
    genotypes, kernels = _sample(table, space, num_classes, in_channels, backend, n, seed)
    predicted = [table.predict_kernels(ks) for ks in kernels]
    timed = measure_fresh(genotypes, backend, num_classes, in_channels, progress, times=2)
    first, second = [t.median_ms for t in timed[:n]], [t.median_ms for t in timed[n:]]
    rows = [{"genotype": str(g), "predicted_ms": p, "measured_ms": m, "again_ms": m2}
            for g, p, m, m2 in zip(genotypes, predicted, first, second, strict=True)]
    noise = _agreement(second, first)
    return {"n": n, **_agreement(predicted, first), "noise_within_10pct": noise["within_10pct"],
            "noise_mape": noise["mape"], "noise_bias": noise["bias"],
            "noise_kendall_tau": noise["kendall_tau"], "rows": rows}


def scatter(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    import plotly.graph_objects as go

    hi = max(max(r["predicted_ms"], r["measured_ms"]) for r in rows) * 1.05
    fig = go.Figure([
        go.Scatter(x=[r["measured_ms"] for r in rows], y=[r["predicted_ms"] for r in rows],
                   mode="markers", name="genotypes", text=[r["genotype"] for r in rows]),
        go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="predicted = measured"),
        go.Scatter(x=[0, hi], y=[0, hi * 1.1], mode="lines", name="+10%", line={"dash": "dot"}),
        go.Scatter(x=[0, hi], y=[0, hi * 0.9], mode="lines", name="-10%", line={"dash": "dot"}),
    ])
    fig.update_layout(title=title, xaxis_title="measured latency (ms)",
                      yaxis_title="predicted latency (ms)")
    fig.write_html(path, include_plotlyjs="cdn")
    return path


# ----- command line ---------------------------------------------------------------------------


def _progress(what: str) -> Callable[[int, int], None]:
    """A progress meter for `fill`, `validate` and `measure_fresh`: a log line every 2 s, each
    marked to overwrite the one before on a terminal (`nas.cli.logs.Lines`)."""
    start, last = time.perf_counter(), float("-inf")  # the first reading shows at once

    def show(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if done == total or now - last >= 2.0:
            last = now
            rate = done / max(now - start, 1e-9)
            eta = (total - done) / rate if rate else 0
            log.info(f"{what}: {done}/{total} ({100 * done / total:.0f}%, {now - start:.0f}s, "
                     f"eta {eta:.0f}s)   ", extra={"end": "\n" if done == total else ""})

    return show


def open_table(path: Path, space: str, fp: dict[str, Any], num_classes: int, in_channels: int,
               rebuild: bool = False) -> LookupTable:
    """Load the table at `path` if it fits this space and device, else start one (when
    `rebuild` or there is none); refuses a mismatched table otherwise."""
    if not path.exists():
        return LookupTable.create(path, space, fp, num_classes, in_channels)
    table = LookupTable.load(path)
    try:
        table.check(space, fp)
    except LatencyError:
        # Another device or setting: rebuild on request. Another space or backend is
        # another table altogether, never moved aside.
        if not rebuild or table.header["space"] != space or backend_of(table.fingerprint) != backend_of(fp):
            raise
        path.replace(path.with_suffix(path.suffix + ".old"))
        log.info(f"table {path} did not match this device: kept as {path.name}.old, measuring anew")
        return LookupTable.create(path, space, fp, num_classes, in_channels)
    return table
