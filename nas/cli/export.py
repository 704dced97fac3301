"""`python -m nas.export`: export the best genotypes of a study as models that need nothing
but torch (or only onnxruntime) to run.

    python -m nas.export outputs/mnv2-mflops300-digits --top-k 3
    python -m nas.export sqlite:///path/study.db --study mnv2-mflops300-digits --pareto

Each selected trial becomes a folder holding: `genotype.yaml` and `genotype.txt` (the
canonical string), `info.json` (costs, proxy metrics, shapes, checks), `model.onnx`
(checked against PyTorch with onnxruntime), `model.torchscript.pt`, `state_dict.pt`,
and `retrain.yaml`, a `nas.train` config that trains it fully. Each model.onnx is then
timed in ONNX Runtime (batch 1, CPU, a fresh process each): `latency_ms_onnxruntime` in
info.json, printed beside the latency the search predicted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.arch.genotype import Genotype, parse
from nas.cli.common import OneLineParser
from nas.common.config import data_shape
from nas.model.files import OPSETS, ExportError, write_model_files

__all__ = ["main", "retrain_config", "select"]


def retrain_config(genotype: Genotype, data: dict[str, Any] | None,
                   resolution: int | None = None, init: str | None = None) -> str:
    """A `nas.train` config (Hydra) that trains this genotype fully on the search's data.

    `resolution` is the input size the search's proxy trained this genotype at; the
    genotype's declared resolution is used when it is None. With `init` (an export folder
    holding inherited weights, or `${nas_config_dir:}`: the folder nas.train is given as
    --config-dir) it fine-tunes them: a third of the epochs at a fifth of the learning rate.
    """
    import yaml

    data = dict(data or {"name": "digits"})
    body: dict[str, Any] = {"defaults": ["train", {"override data": data.get("name", "digits")},
                                         "_self_"],
                            "genotype": str(genotype), "resolution": resolution}
    if data.get("root"):
        body["data"] = {"root": data["root"]}
    if data.get("name") == "cluttered_digits":  # the generated task is its settings: train on the same
        body["data"] = {k: v for k, v in data.items() if k not in ("name", "root")}
    name = "retrain"
    if init is not None:
        from nas.common.config import TrainerConfig

        body["init"] = str(init)  # ${nas_config_dir:}: the folder given as --config-dir
        body["trainer"] = {"max_epochs": max(1, TrainerConfig.max_epochs // 3), "lr": TrainerConfig.lr / 5,
                           "warmup_epochs": 0.0}
        name = "finetune"
    header = (f"# {'Fine-tune the inherited weights of' if init else 'Train'} this genotype fully "
              "(resolution: the size the search's proxy used;\n"
              "# raise it for real high-resolution images):\n"
              f"#   python -m nas.train --config-dir <this folder> --config-name {name}\n"
              f"# or change the data: ... --config-name {name} data=cifar10 data.root=<path>\n")
    return header + yaml.safe_dump(body, sort_keys=False)


class Inheritance:
    """The weights a supernet study's candidates were scored with: extracted from its supernet,
    BN statistics re-estimated on the same training images as in the search."""

    def __init__(self, net, meta, space, data):
        self.net, self.meta, self.space, self.data = net, meta, space, data
        self.path = ""
        self._images: list[Any] | None = None

    @classmethod
    def of(cls, study, identity: dict[str, Any]) -> Inheritance:
        from types import SimpleNamespace

        from nas.common.config import DataConfig
        from nas.search.run import apply_space_overrides
        from nas.search.study import file_digest
        from nas.training.supernet import load_supernet

        path = (study.user_attrs.get("supernet") or {}).get("path")
        if not path or not Path(path).is_file():
            raise ExportError(f"study {study.study_name} was scored with a supernet that is no longer at "
                              f"{path!r}: put it back to export the inherited weights")
        if file_digest(path) != identity["supernet"]:
            raise ExportError(f"the supernet {path!r} changed since study {study.study_name} was scored "
                              "with it; export needs the same file")
        s = identity["space"]
        space = apply_space_overrides(SimpleNamespace(space=SimpleNamespace(
            name=s["name"], width=s.get("width"), resolution=s.get("resolution"))))
        net, meta = load_supernet(path, space)
        known = set(DataConfig.__dataclass_fields__)
        data = DataConfig(**{k: v for k, v in (identity.get("data") or {}).items() if k in known})
        out = cls(net.eval(), meta, space, data)
        out.path = str(path)
        return out

    def resolution(self, g: Genotype) -> int:
        return self.meta.resolution(g, self.space)

    def __call__(self, g: Genotype):
        from nas.training.data import datamodule_for
        from nas.training.supernet import recalibrate_bn, resize

        if self._images is None:  # the same images for every exported genotype, loaded once
            meta = self.meta
            dm = datamodule_for(self.data, meta.top_resolution(self.space), meta.recipe["batch_size"])
            dm.setup()
            self._images = self.meta.bn_images(dm)
        model = self.net.extract(g)
        recalibrate_bn(model, (resize(x, self.resolution(g)) for x in self._images))
        return model.eval()


def _open(source: str, study_name: str | None):
    import optuna

    from nas.search.study import open_read_only

    path = Path(source).expanduser()
    run_dir = path if path.is_dir() else None
    if "://" in source or source.startswith("journal:"):
        url = source
    elif path.is_dir():
        if not (path / "study.db").is_file():
            raise ExportError(f"{source!r} holds no study.db: give a search run directory or a "
                              "storage URL with --study")
        url = f"sqlite:///{(path / 'study.db').resolve()}"
    elif path.is_file() and path.suffix == ".db":
        url = f"sqlite:///{path.resolve()}"
        run_dir = path.parent  # a run directory's study.db: export next to it, as for the folder
    else:
        raise ExportError(f"{source!r} is neither a run directory nor a storage URL")
    storage = open_read_only(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise ExportError(f"{source!r} holds {len(names)} studies; choose one with --study "
                              f"({', '.join(names) or 'none'})")
        study_name = names[0]
    elif study_name not in names:
        raise ExportError(f"no study {study_name!r} in {source!r}; studies: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=storage), run_dir


def select(study, top_k: int | None, pareto: bool) -> list[dict[str, Any]]:
    from nas.search import report

    best = report.ranked(study)
    if not best:
        n = report.counts(study)
        summary = ", ".join(f"{v} {k}" for k, v in n.items() if v) or "no trials at all"
        raise ExportError(f"no trial finished: nothing to export ({summary})")
    if pareto:
        # A pareto study's own cost (e.g. "pareto:latency_ms"); MFLOPs for the others.
        objective = str((study.user_attrs.get("identity") or {}).get("objective", ""))
        cost = objective.split(":", 1)[1] if objective.startswith("pareto:") else "mflops"
        return report.pareto_front(best, cost)
    return best[:top_k]


def proxy_resolution(genotype: Genotype, identity: dict[str, Any]) -> int | None:
    """The resolution the search's proxy trained `genotype` at (None if unknown)."""
    from search_spaces import get_space

    proxy, space = identity.get("proxy") or {}, identity.get("space") or {}
    if "resolution" not in proxy or not space.get("name"):
        return None
    from nas.common.config import ProxyConfig

    ref = get_space(space["name"]).reference.resolution
    return ProxyConfig(resolution=proxy["resolution"]).resolution_for(genotype.resolution, ref)


def _parser() -> OneLineParser:
    ap = OneLineParser(prog="python -m nas.export", description=__doc__.splitlines()[0])
    ap.add_argument("source", help="search run directory, study.db file, or storage URL")
    ap.add_argument("--study", help="study name (needed when the storage holds several)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--top-k", type=int, default=None, help="export the K best trials (default 1)")
    group.add_argument("--pareto", action="store_true", help="export the accuracy/MFLOPs Pareto front")
    ap.add_argument("--out", help="output folder (default <run dir>/exported or ./exported)")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--latency-threads", type=int, default=1, metavar="N",
                    help="ONNX Runtime threads when timing each exported model (default 1)")
    ap.add_argument("--no-latency", action="store_true",
                    help="do not time the exported ONNX models in ONNX Runtime")
    return ap


def _check(args: Any) -> None:
    """Every option's value, before the study is opened."""
    if args.top_k is not None and args.top_k <= 0:
        raise ExportError(f"--top-k {args.top_k} is not valid: must be >= 1")
    if not OPSETS[0] <= args.opset <= OPSETS[1]:
        raise ExportError(f"--opset {args.opset} is not valid: must be in [{OPSETS[0]}, {OPSETS[1]}]")
    if args.latency_threads < 1:
        raise ExportError(f"--latency-threads {args.latency_threads} is not valid: must be >= 1")
    if args.out and Path(args.out).expanduser().exists() and not Path(args.out).expanduser().is_dir():
        raise ExportError(f"--out {args.out!r} is an existing file: give a folder")


def _model(g: Genotype, number: int, shape: dict[str, int], inherit: Inheritance | None):
    """The network to write: the supernet's inherited weights, or fresh ones seeded by the trial."""
    if inherit is not None:
        return inherit(g), (f"inherited from the supernet {inherit.path} (BN statistics re-estimated as "
                            "the search scored it): fine-tune with finetune.yaml, or train from scratch "
                            "with retrain.yaml")
    import torch

    from nas.model.builder import build_model

    # Fresh weights seeded by the trial: exporting again writes the same files.
    torch.manual_seed(int(g.content_hash[:8], 16) + int(number))
    model = build_model(g, shape["num_classes"], shape["in_channels"])
    return model, "initialized, not trained: train with retrain.yaml"


def _export_one(rank: int, row: dict[str, Any], study, identity: dict[str, Any], shape: dict[str, int],
                out: Path, args: Any, inherit: Inheritance | None) -> tuple[Path, Genotype]:
    """One trial's folder: the model files, info.json, retrain.yaml (and finetune.yaml)."""
    from nas.arch.cost import cost

    g = parse(row["genotype"])
    folder = out / f"{rank:02d}-trial{row['number']}-{g.content_hash}"
    c = cost(g, shape["num_classes"], shape["in_channels"])
    backend = str((identity.get("latency") or {}).get("backend", "torch"))
    model, weights = _model(g, row["number"], shape, inherit)
    info = {"rank": rank, "study": study.study_name, "trial": row["number"],
            "genotype": str(g), "hash": g.content_hash, "proxy_accuracy": row["accuracy"],
            "params": c.params, "macs": c.macs, "mflops": c.mflops, "params_m": c.params_m,
            "latency_ms": row.get("latency_ms"),
            "latency_backend": backend if row.get("latency_ms") is not None else None,
            "resolution": g.resolution,
            "num_classes": shape["num_classes"], "in_channels": shape["in_channels"], "weights": weights}
    info = write_model_files(model, g, folder, shape["in_channels"], info, onnx=not args.no_onnx,
                             opset=args.opset)
    data = identity.get("data")
    (folder / "retrain.yaml").write_text(retrain_config(g, data, proxy_resolution(g, identity)))
    if inherit is not None:
        (folder / "finetune.yaml").write_text(
            retrain_config(g, data, inherit.resolution(g), init="${nas_config_dir:}"))
    onnx = (f", ONNX max diff {info['onnx_max_rel_diff']:.1e} of the output scale"
            if "onnx_max_rel_diff" in info else "")
    print(f"  {rank}. trial {row['number']} acc {row['accuracy']:.4f} {c.mflops:.1f} MFLOPs "
          f"{c.params_m:.3f} M params -> {folder}{onnx}")
    return folder, g


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    _check(args)
    study, run_dir = _open(args.source, args.study)
    chosen = select(study, 1 if args.top_k is None else args.top_k, args.pareto)
    out = Path(args.out).expanduser() if args.out else (run_dir / "exported" if run_dir else Path("exported"))
    identity = study.user_attrs.get("identity") or {}
    shape = study.user_attrs.get("data_shape") or data_shape(identity.get("data") or {})
    if shape is None:
        raise ExportError(f"study {study.study_name} does not record its data's classes and channels, "
                          "and its data folder is gone: resume it once, then export")
    inherit = Inheritance.of(study, identity) if identity.get("supernet") else None
    print(f"exporting {len(chosen)} genotype(s) of study {study.study_name} to {out}")
    folders = []
    for rank, row in enumerate(chosen, start=1):
        folder, g = _export_one(rank, row, study, identity, shape, out, args, inherit)
        folders.append((folder, g, row, shape["in_channels"]))
    if not args.no_onnx and not args.no_latency:
        backend = str((identity.get("latency") or {}).get("backend", "torch"))
        print(latency_table(folders, args.latency_threads, backend))
    return 0


def latency_table(folders: list[tuple[Path, Genotype, dict[str, Any], int]], threads: int,
                  backend: str) -> str:
    """Time each exported model.onnx in ONNX Runtime, each in a fresh process; record the
    figure in its info.json and return a table of it beside the search's predicted latency."""
    import json

    from nas.hardware.stopwatch import time_fresh

    jobs = [("onnx", {"model": (folder / "model.onnx").read_bytes(),
                      "shape": (1, c, g.resolution, g.resolution), "threads": threads,
                      "warmup": 10, "repeats": 50})
            for folder, g, _row, c in folders]
    timings = time_fresh(jobs)
    lines = [f"batch-1 latency of the exported models in ONNX Runtime (CPU, {threads} thread(s), "
             "each timed in a fresh process):",
             f"  {'rank':>4}  {'trial':>5}  {'predicted ms (' + backend + ')':>26}  {'onnxruntime ms':>14}"]
    for rank, ((folder, _g, row, _c), t) in enumerate(zip(folders, timings, strict=True), start=1):
        info = json.loads((folder / "info.json").read_text())
        info["latency_ms_onnxruntime"] = t.median_ms
        (folder / "info.json").write_text(json.dumps(info, indent=2))
        predicted = row.get("latency_ms")
        shown = "-" if predicted is None else f"{predicted:.3f}"
        lines.append(f"  {rank:>4}  {row['number']:>5}  {shown:>26}  {t.median_ms:>14.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    from nas.cli.common import run

    run(main)
