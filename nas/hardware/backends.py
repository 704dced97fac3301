"""Inference backends a latency table is measured for: how one kernel and one whole network
are timed on each, and what of the machine and software the figures depend on.

- `torch`: PyTorch eager, batch 1, in the measuring process (CPU or CUDA).
- `onnxruntime`: ONNX Runtime's CPU execution provider, as a model exported by `nas.export`
  runs when deployed. A kernel is timed as a small ONNX graph written here with the nodes
  the exporter writes for it (a convolution with its batch norm folded in, then the
  activation's nodes; ONNX Runtime fuses them into one node, as in the whole network),
  between two depthwise 1x1 anchors whose own time is taken off (`sandwich_graph`); a
  whole network is the exported ONNX model of the genotype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import kernels as K
from nas.arch.genotype import Genotype
from nas.errors import UserError
from nas.hardware.stopwatch import Timing, cpu_name, steady_allocator, time_onnx, time_torch

__all__ = ["BACKENDS", "Backend", "LatencyError", "OnnxRuntimeBackend", "TorchBackend",
           "anchor_pair_graph", "exported_graph", "kernel_graph", "kernel_module", "make_backend",
           "sandwich_graph"]

BACKENDS = ("torch", "onnxruntime")
KERNEL_OPSET = 17  # the export's default opset


class LatencyError(UserError):
    """A latency backend or table that is unknown, missing, corrupt, or for another space,
    backend or device."""


@dataclass
class Backend:
    """Timing settings shared by both backends (`warmup` untimed calls, the median of
    `repeats` timed ones, `threads` intra-op threads)."""

    threads: int = 1
    warmup: int = 5
    repeats: int = 25
    name = ""

    def fingerprint(self) -> dict[str, Any]:
        raise NotImplementedError

    def time_kernel(self, key: K.Kernel) -> Timing:
        raise NotImplementedError

    def network_job(self, g: Genotype, num_classes: int, in_channels: int) -> tuple[str, dict[str, Any]]:
        """What `stopwatch.time_fresh` needs to time the network of `g` in a fresh process."""
        raise NotImplementedError

    def network_jobs(self, genotypes: list[Genotype], num_classes: int,
                     in_channels: int) -> list[tuple[str, dict[str, Any]]]:
        return [self.network_job(g, num_classes, in_channels) for g in genotypes]

    def time_network(self, g: Genotype, num_classes: int, in_channels: int) -> Timing:
        """The network of `g` timed in this process."""
        from nas.hardware.stopwatch import _run_job

        return _run_job(self.network_job(g, num_classes, in_channels))


@dataclass
class TorchBackend(Backend):
    device: str = "cpu"
    channels_last: bool = False
    name = "torch"

    def fingerprint(self) -> dict[str, Any]:
        if self.device not in ("cpu", "cuda") or (self.device == "cuda" and not torch.cuda.is_available()):
            raise LatencyError(f"latency device {self.device!r} is not available here; valid: cpu"
                               + (", cuda" if torch.cuda.is_available() else ""))
        dev = torch.device(self.device)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
        # No "backend" key: tables built before there were backends are torch tables.
        return {"device": dev.type, "name": name, "torch": torch.__version__.split("+")[0],
                "threads": self.threads, "dtype": "float32", "channels_last": self.channels_last,
                "allocator": steady_allocator()}

    def _opts(self) -> dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "warmup": self.warmup,
                "repeats": self.repeats, "channels_last": self.channels_last}

    def time_kernel(self, key: K.Kernel) -> Timing:
        module, shape = kernel_module(key)
        return time_torch(module, shape, **self._opts())

    def network_job(self, g: Genotype, num_classes: int, in_channels: int) -> tuple[str, dict[str, Any]]:
        return "genotype", {"genotype": str(g), "num_classes": num_classes,
                            "in_channels": in_channels, **self._opts()}


@dataclass
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    # time of two anchors in a row, per (channels, size): shared by every kernel of a build
    _pairs: dict[tuple[int, int], float] = field(default_factory=dict, init=False, repr=False,
                                                 compare=False)

    def fingerprint(self) -> dict[str, Any]:
        try:
            from nas.hardware.stopwatch import ort_version

            version = ort_version()
        except ImportError:
            raise LatencyError("latency.backend=onnxruntime needs the onnx extra: "
                               "pip install -e '.[onnx]'") from None
        return {"device": "cpu", "name": cpu_name(), "backend": self.name, "onnxruntime": version,
                "graph_optimization": "all", "kernel_timing": "between-anchors",
                "threads": self.threads, "dtype": "float32",
                "allocator": steady_allocator()}

    def _opts(self) -> dict[str, Any]:
        return {"threads": self.threads, "warmup": self.warmup, "repeats": self.repeats}

    def time_kernel(self, key: K.Kernel) -> Timing:
        """A kernel's time as part of a network: timed between two anchors (`sandwich_graph`)
        less what the anchors cost on their own (half of two anchors in a row at the input's
        shape, half at the output's); flat kernels (pool, classifier) alone."""
        sandwich = sandwich_graph(key)
        if sandwich is None:
            return time_onnx(*kernel_graph(key), **self._opts())
        t = time_onnx(*sandwich, **self._opts())
        shape = _input_shape(key)
        h_out = K.out_size(key)
        anchors = 0.5 * (self._pair(shape[1], shape[2]) + self._pair(_channels_out(key), h_out))
        floor = 0.02 * t.median_ms  # a kernel never costs nothing; noise must not make it negative
        return Timing(max(t.median_ms - anchors, floor), max(t.mean_ms - anchors, floor), t.var, t.n)

    def _pair(self, c: int, h: int) -> float:
        if (c, h) not in self._pairs:
            self._pairs[(c, h)] = time_onnx(*anchor_pair_graph(c, h), **self._opts()).median_ms
        return self._pairs[(c, h)]

    def network_job(self, g: Genotype, num_classes: int, in_channels: int) -> tuple[str, dict[str, Any]]:
        graph, shape = exported_graph(str(g), num_classes, in_channels)
        return "onnx", {"model": graph, "shape": shape, **self._opts()}

    def network_jobs(self, genotypes: list[Genotype], num_classes: int,
                     in_channels: int) -> list[tuple[str, dict[str, Any]]]:
        """The networks exported to ONNX by a few fresh processes at once (an export takes
        about a second; the timing that follows runs one process at a time)."""
        import os

        from nas.hardware.stopwatch import run_fresh

        calls = [("call", ("nas.hardware.backends", "exported_graph", (str(g), num_classes, in_channels)))
                 for g in genotypes]
        graphs = run_fresh(calls, parallel=min(os.cpu_count() or 1, 8))
        return [("onnx", {"model": graph, "shape": shape, **self._opts()}) for graph, shape in graphs]


def exported_graph(genotype: str, num_classes: int, in_channels: int) -> tuple[bytes, tuple[int, ...]]:
    """The ONNX graph `nas.export` writes for `genotype` (seeded weights), and its input shape."""
    from nas.arch.genotype import parse
    from nas.model.builder import build_model
    from nas.model.files import onnx_bytes

    g = parse(genotype)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(g, num_classes, in_channels)
        shape = (1, in_channels, g.resolution, g.resolution)
        example = torch.randn(*shape)
    return onnx_bytes(model, example), shape


def make_backend(name: str, *, device: str = "cpu", threads: int = 1, warmup: int = 5,
                 repeats: int = 25, channels_last: bool = False) -> Backend:
    """The backend called `name`; a `LatencyError` for settings it cannot honour."""
    if name == "torch":
        return TorchBackend(threads, warmup, repeats, device=device, channels_last=channels_last)
    if name == "onnxruntime":
        if device != "cpu":
            raise LatencyError(f"latency.device={device!r} is not valid with latency.backend="
                               "onnxruntime: it times ONNX Runtime's CPU execution provider; valid: cpu")
        if channels_last:
            raise LatencyError("latency.channels_last=true is a PyTorch memory format; valid with "
                               "latency.backend=onnxruntime: false")
        return OnnxRuntimeBackend(threads, warmup, repeats)
    raise LatencyError(f"latency.backend={name!r} is not valid; valid: {', '.join(BACKENDS)}")


# ----- one kernel as a PyTorch module -----------------------------------------------------------
class _Add(nn.Module):
    """A residual addition: the input plus a second tensor of the same shape."""

    def __init__(self, c: int, h: int):
        super().__init__()
        self.register_buffer("other", torch.randn(1, c, h, h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.other


class _Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)


def kernel_module(key: K.Kernel) -> tuple[nn.Module, tuple[int, ...]]:
    """A module that runs exactly kernel `key`, and its input shape."""
    from nas.model.blocks import activation

    kind = key[0]
    if kind == "conv":
        _, cin, cout, k, s, p, groups, h, bn, act = key
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        if act:
            layers.append(activation(act))
        return nn.Sequential(*layers), (1, cin, h, h)
    if kind == "act":
        _, name, c, h = key
        return activation(name, inplace=False), (1, c, h, h)
    if kind == "add":
        return _Add(key[1], key[2]), (1, key[1], key[2], key[2])
    if kind == "maxpool":
        _, c, h, s = key
        return nn.MaxPool2d(3, s, 1), (1, c, h, h)
    if kind == "pool":
        return _Pool(), (1, key[1], key[2], key[2])
    if kind == "linear":
        return nn.Linear(key[1], key[2]), (1, key[1])
    raise ValueError(f"unknown kernel kind {kind!r}")


# ----- one kernel as an ONNX graph --------------------------------------------------------------
def _activation_nodes(name: str, src: str, dst: str) -> tuple[list[Any], list[Any]]:
    """The nodes (and constants) the exporter writes for activation `name`, `src` -> `dst`."""
    from onnx import helper, numpy_helper

    if name == "relu":
        return [helper.make_node("Relu", [src], [dst])], []
    if name == "relu6":
        lo, hi = f"{dst}_lo", f"{dst}_hi"
        return [helper.make_node("Clip", [src, lo, hi], [dst])], [
            numpy_helper.from_array(np.array(0.0, np.float32), lo),
            numpy_helper.from_array(np.array(6.0, np.float32), hi)]
    if name == "hswish":
        return [helper.make_node("HardSwish", [src], [dst])], []
    if name == "silu":
        return [helper.make_node("Sigmoid", [src], [src + "_sig"]),
                helper.make_node("Mul", [src, src + "_sig"], [dst])], []
    raise ValueError(f"no ONNX form for activation {name!r}")


class _Graph:
    """Nodes and weights of a small ONNX graph, written kernel by kernel."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.rng = np.random.default_rng(0)

    def const(self, name: str, *shape: int) -> str:
        from onnx import numpy_helper

        values = (self.rng.standard_normal(shape) * 0.1).astype(np.float32)
        self.inits.append(numpy_helper.from_array(values, name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    def kernel(self, key: K.Kernel, src: str, tag: str) -> str:
        """Add kernel `key` reading tensor `src`; returns its output's name."""
        kind, out = key[0], f"{tag}_out"
        if kind == "conv":
            _, cin, cout, k, s, p, groups, _h, bn, act = key
            inputs = [src, self.const(f"{tag}_w", cout, cin // groups, k, k)]
            if bn:  # the exporter folds an inference batch norm into the convolution's bias
                inputs.append(self.const(f"{tag}_b", cout))
            conv = self.node("Conv", inputs, f"{tag}_conv" if act else out, kernel_shape=[k, k],
                             strides=[s, s], pads=[p] * 4, group=groups, dilations=[1, 1])
            return self.activation(act, conv, out) if act else out
        if kind == "act":
            return self.activation(key[1], src, out)
        if kind == "add":
            _, c, h = key
            return self.node("Add", [src, self.const(f"{tag}_other", 1, c, h, h)], out)
        if kind == "maxpool":
            return self.node("MaxPool", [src], out, kernel_shape=[3, 3], strides=[key[3]] * 2,
                             pads=[1, 1, 1, 1], ceil_mode=0, dilations=[1, 1])
        if kind == "pool":
            return self.node("Flatten", [self.node("GlobalAveragePool", [src], f"{tag}_pooled")], out,
                             axis=1)
        if kind == "linear":
            _, fin, fout = key
            return self.node("Gemm", [src, self.const(f"{tag}_w", fout, fin), self.const(f"{tag}_b", fout)],
                             out, alpha=1.0, beta=1.0, transB=1)
        raise ValueError(f"unknown kernel kind {kind!r}")

    def activation(self, name: str, src: str, out: str) -> str:
        nodes, consts = _activation_nodes(name, src, out)
        self.nodes += nodes
        self.inits += consts
        return out

    def anchor(self, c: int, src: str, tag: str) -> str:
        """A depthwise 1x1 convolution: the cheapest neighbour that keeps a tensor in the
        layout ONNX Runtime gives the convolutions of a network (see `sandwich_graph`)."""
        return self.kernel(("conv", c, c, 1, 1, 0, c, 0, True, ""), src, tag)

    def serialize(self, shape: tuple[int, ...], output: str) -> bytes:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            self.nodes, "kernel", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", KERNEL_OPSET)],
                                  producer_name="nas")
        model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases
        return model.SerializeToString()


def _input_shape(key: K.Kernel) -> tuple[int, ...]:
    kind = key[0]
    if kind == "conv":
        return (1, key[1], key[7], key[7])
    if kind == "act":
        return (1, key[2], key[3], key[3])
    if kind in ("add", "pool", "maxpool"):
        return (1, key[1], key[2], key[2])
    if kind == "linear":
        return (1, key[1])
    raise ValueError(f"unknown kernel kind {kind!r}")


def _channels_out(key: K.Kernel) -> int:
    return key[2] if key[0] in ("conv", "act") else key[1]


def kernel_graph(key: K.Kernel) -> tuple[bytes, tuple[int, ...]]:
    """A serialized one-kernel ONNX graph for `key` (input "input"), and its input shape."""
    g = _Graph()
    shape = _input_shape(key)
    return g.serialize(shape, g.kernel(key, "input", "k")), shape


def sandwich_graph(key: K.Kernel) -> tuple[bytes, tuple[int, ...]] | None:
    """Kernel `key` between two depthwise 1x1 anchors (None for kernels with a flat output).

    Alone in a graph, a convolution pays ONNX Runtime's layout changes (NCHW to its blocked
    NCHWc and back) on its input and output; inside a network its neighbours keep the
    blocked layout and nobody pays them. Between two anchors the kernel sits where it sits in
    a network; `anchor_pair_graph` times what the anchors themselves cost."""
    if key[0] in ("pool", "linear"):
        return None
    g = _Graph()
    shape = _input_shape(key)
    mid = g.kernel(key, g.anchor(shape[1], "input", "a"), "k")
    return g.serialize(shape, g.anchor(_channels_out(key), mid, "b")), shape


def anchor_pair_graph(c: int, h: int) -> tuple[bytes, tuple[int, ...]]:
    """Two anchors in a row on a (1, c, h, h) tensor: half of its time is what one anchor,
    with its share of layout changes, adds to a sandwich."""
    g = _Graph()
    return g.serialize((1, c, h, h), g.anchor(c, g.anchor(c, "input", "a"), "b")), (1, c, h, h)
