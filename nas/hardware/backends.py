"""Inference backends a latency table is measured for: how one kernel and one whole network
are timed on each, and what of the machine and software the figures depend on.

- `torch`: PyTorch eager, batch 1, in the measuring process (CPU or CUDA).
- `onnxruntime`: ONNX Runtime's CPU execution provider, as a model exported by `nas.export`
  runs when deployed. A kernel is timed as a one-kernel ONNX graph written here with the
  nodes the exporter writes for it (a convolution with its batch norm folded in, then the
  activation's nodes; ONNX Runtime fuses them into one node, as in the whole network); a
  whole network is the exported ONNX model of the genotype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nas.arch import kernels as K
from nas.arch.genotype import Genotype
from nas.errors import UserError
from nas.hardware.stopwatch import Timing, cpu_name, steady_allocator, time_onnx, time_torch

__all__ = ["BACKENDS", "Backend", "LatencyError", "OnnxRuntimeBackend", "TorchBackend", "kernel_graph",
           "kernel_module", "make_backend"]

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

    def fingerprint(self) -> dict[str, Any]:
        try:
            from nas.hardware.stopwatch import ort_version

            version = ort_version()
        except ImportError:
            raise LatencyError("latency.backend=onnxruntime needs the onnx extra: "
                               "pip install -e '.[onnx]'") from None
        return {"device": "cpu", "name": cpu_name(), "backend": self.name, "onnxruntime": version,
                "graph_optimization": "all", "threads": self.threads, "dtype": "float32",
                "allocator": steady_allocator()}

    def _opts(self) -> dict[str, Any]:
        return {"threads": self.threads, "warmup": self.warmup, "repeats": self.repeats}

    def time_kernel(self, key: K.Kernel) -> Timing:
        graph, shape = kernel_graph(key)
        return time_onnx(graph, shape, **self._opts())

    def network_job(self, g: Genotype, num_classes: int, in_channels: int) -> tuple[str, dict[str, Any]]:
        graph, shape = exported_graph(str(g), num_classes, in_channels)
        return "onnx", {"model": graph, "shape": shape, **self._opts()}

    def network_jobs(self, genotypes: list[Genotype], num_classes: int,
                     in_channels: int) -> list[tuple[str, dict[str, Any]]]:
        """The networks exported to ONNX by a few fresh processes at once (an export takes
        about a second; the timing that follows runs one process at a time)."""
        import os
        from concurrent.futures import ProcessPoolExecutor

        from nas.hardware.stopwatch import fresh_context

        workers = max(1, min(len(genotypes), os.cpu_count() or 1, 8))
        with ProcessPoolExecutor(workers, mp_context=fresh_context()) as pool:
            graphs = list(pool.map(exported_graph, [str(g) for g in genotypes],
                                   [num_classes] * len(genotypes), [in_channels] * len(genotypes)))
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
        consts = [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
        return [helper.make_node("Clip", [src, "lo", "hi"], [dst])], consts
    if name == "hswish":
        return [helper.make_node("HardSwish", [src], [dst])], []
    if name == "silu":
        return [helper.make_node("Sigmoid", [src], [src + "_sig"]),
                helper.make_node("Mul", [src, src + "_sig"], [dst])], []
    raise ValueError(f"no ONNX form for activation {name!r}")


def kernel_graph(key: K.Kernel) -> tuple[bytes, tuple[int, ...]]:
    """A serialized one-kernel ONNX graph for `key` (input "input"), and its input shape."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes: list[Any] = []
    inits: list[Any] = []
    kind = key[0]
    if kind == "conv":
        _, cin, cout, k, s, p, groups, h, bn, act = key
        shape: tuple[int, ...] = (1, cin, h, h)
        inits.append(const("w", cout, cin // groups, k, k))
        inputs = ["input", "w"]
        if bn:  # the exporter folds an inference batch norm into the convolution's bias
            inits.append(const("b", cout))
            inputs.append("b")
        nodes.append(helper.make_node("Conv", inputs, ["conv" if act else "output"], kernel_shape=[k, k],
                                      strides=[s, s], pads=[p] * 4, group=groups, dilations=[1, 1]))
        if act:
            more, consts = _activation_nodes(act, "conv", "output")
            nodes += more
            inits += consts
    elif kind == "act":
        _, name, c, h = key
        shape = (1, c, h, h)
        nodes, inits = _activation_nodes(name, "input", "output")
    elif kind == "add":
        _, c, h = key
        shape = (1, c, h, h)
        inits.append(const("other", 1, c, h, h))
        nodes.append(helper.make_node("Add", ["input", "other"], ["output"]))
    elif kind == "maxpool":
        _, c, h, s = key
        shape = (1, c, h, h)
        nodes.append(helper.make_node("MaxPool", ["input"], ["output"], kernel_shape=[3, 3],
                                      strides=[s, s], pads=[1, 1, 1, 1], ceil_mode=0, dilations=[1, 1]))
    elif kind == "pool":
        _, c, h = key
        shape = (1, c, h, h)
        nodes += [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["output"], axis=1)]
    elif kind == "linear":
        _, fin, fout = key
        shape = (1, fin)
        inits += [const("w", fout, fin), const("b", fout)]
        nodes.append(helper.make_node("Gemm", ["input", "w", "b"], ["output"], alpha=1.0, beta=1.0,
                                      transB=1))
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    graph = helper.make_graph(
        nodes, "kernel", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", KERNEL_OPSET)],
                              producer_name="nas")
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases
    return model.SerializeToString(), shape
