"""The files of an exported model, and reading them back: a model that needs nothing but
torch (TorchScript, state dict) or only onnxruntime (ONNX, checked against PyTorch) to run.
`python -m nas.export` (nas.cli.export) and `nas.train` write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.arch.genotype import Genotype, load_genotype
from nas.errors import UserError

__all__ = ["ONNX_RTOL", "OPSETS", "ExportError", "load_exported", "onnx_bytes", "write_model_files"]


class ExportError(UserError):
    """Nothing to export, or an export that cannot be made."""


ONNX_RTOL = 1e-4  # largest |onnxruntime - torch| allowed, as a fraction of the largest |output|
OPSETS = (14, 20)  # HardSwish needs opset 14; 20 is the highest the TorchScript-based exporter writes


def write_model_files(model: nn.Module, genotype: Genotype, folder: Path, in_channels: int,
                      info: dict[str, Any], onnx: bool = True, opset: int = 17) -> dict[str, Any]:
    """Write genotype, weights, TorchScript and ONNX files of `model` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    (folder / "genotype.yaml").write_text(genotype.to_yaml())
    (folder / "genotype.txt").write_text(str(genotype) + "\n")
    torch.save(model.state_dict(), folder / "state_dict.pt")
    res = genotype.resolution
    example = torch.randn(2, in_channels, res, res, generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.script(model)
    scripted.save(str(folder / "model.torchscript.pt"))
    with torch.no_grad():
        expected = model(example)
        ts_diff = (torch.jit.load(str(folder / "model.torchscript.pt"))(example) - expected).abs().max()
    info = {**info, "torchscript_max_abs_diff": float(ts_diff)}
    if onnx:
        info.update(_export_onnx(model, example, expected, folder / "model.onnx", opset))
    info["files"] = sorted(p.name for p in folder.iterdir())
    (folder / "info.json").write_text(json.dumps(info, indent=2))
    return info


def onnx_bytes(model: nn.Module, example: torch.Tensor, opset: int = 17) -> bytes:
    """`model` (in eval mode) as a serialized ONNX graph, as every export writes it: input
    "input" (batch, height and width dynamic), output "logits", batch norms folded into the
    convolutions.

    Written by PyTorch's TorchScript-based exporter (`dynamo=False`): deprecated since
    PyTorch 2.9 but still shipped, it writes in a fraction of a second what the
    torch.export-based one takes seconds for, with no extra dependency; the day it is gone,
    `tests/test_export.py::test_the_torchscript_onnx_exporter_is_still_there` fails.
    """
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, on every call
        torch.onnx.export(model.eval(), (example,), buf, dynamo=False, input_names=["input"],
                          output_names=["logits"], opset_version=opset,
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch"}})
    return buf.getvalue()


def _export_onnx(model: nn.Module, example: torch.Tensor, expected: torch.Tensor, path: Path,
                 opset: int) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("ONNX export needs the onnx extra: pip install -e '.[onnx]' "
                          "(or pass --no-onnx)") from None
    path.write_bytes(onnx_bytes(model, example, opset))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": example.numpy()})[0]
    diff = float(abs(torch.from_numpy(got) - expected).max())
    # Relative to the outputs' scale: an absolute bound says nothing about logits of 1e-12
    # (fresh weights) and fails a correct export whose logits are 1e18.
    scale = float(expected.abs().max())
    relative = diff / scale if scale > 0 else diff
    if not relative <= ONNX_RTOL:
        raise ExportError(f"ONNX output differs from PyTorch by {diff:.2e}, {relative:.2e} of the "
                          f"largest output (> {ONNX_RTOL:g}) in {path}")
    return {"onnx_opset": opset, "onnx_max_abs_diff": diff, "onnx_max_rel_diff": relative}


def load_exported(folder: str | Path, num_classes: int | None = None) -> nn.Module:
    """The model in an export folder, as a `torch.nn.Module` built by `nas` with its weights."""
    from nas.model.builder import build_model

    folder = Path(folder)
    if not (folder / "genotype.yaml").is_file():
        raise ExportError(f"{str(folder)!r} is not an export folder (no genotype.yaml)")
    genotype = load_genotype(str(folder / "genotype.yaml"))
    info = json.loads((folder / "info.json").read_text()) if (folder / "info.json").is_file() else {}
    model = build_model(genotype, num_classes or info.get("num_classes", 1000),
                        info.get("in_channels", 3))
    if (folder / "state_dict.pt").is_file():
        state = torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ExportError(f"weights in {str(folder)!r} do not fit its genotype: "
                              f"{str(err).splitlines()[0]}") from None
    return model


# ----- selecting trials -----------------------------------------------------------------
