"""Full training of one genotype (the library behind `python -m nas.train`).

Lightning with the project's recipe (SGD/RMSprop/AdamW, cosine with warm-up, label
smoothing, no weight decay on depthwise/BN/bias, optional EMA of the weights), a
checkpoint every epoch, resumption from the last checkpoint, a progress bar, W&B
logging, test accuracy at the end, and the same export as `nas.export` for the trained
weights.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from nas.arch.genotype import Genotype, load_genotype
from nas.common.config import TrainConfig
from nas.errors import UserError

__all__ = [
    "RUN_IDENTITY_EXCLUDES",
    "CheckpointError",
    "EpochLog",
    "GenotypeGuard",
    "check_checkpoint",
    "claim_run_dir",
    "run_identity",
    "run_training",
    "write_json",
]

log = logging.getLogger(__name__)


class CheckpointError(UserError):
    """A checkpoint that cannot be resumed."""


# Settings that change what a training run produces; a run directory holds one of each.
# The device a run trains on may change between resumes (a checkpoint moves from GPU to CPU);
# devices, strategy and precision change the batch or the arithmetic, so they stay in.
RUN_IDENTITY_EXCLUDES = ("progress", "threads", "accelerator", "compile", "channels_last")


def _normal(value: Any) -> Any:
    """Numbers as floats and mappings sorted, so 1 and 1.0 hash alike."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return str(value)


def run_identity(genotype: Genotype, data: dict[str, Any], trainer: dict[str, Any],
                 resolution: int | None, init: str | None = None) -> dict[str, Any]:
    """What a training run is: the genotype, the data, the resolution, the recipe and the
    weights it starts from (absent when they are fresh, as before there was `init`)."""
    root = data.get("root")
    data = {**data, "root": str(Path(root).expanduser().absolute()) if root else None}
    return _normal({"genotype": genotype.content_hash, "data": data,
                    "resolution": resolution or genotype.resolution,
                    "trainer": {k: v for k, v in trainer.items() if k not in RUN_IDENTITY_EXCLUDES},
                    **({"init": str(Path(init).expanduser().absolute())} if init else {})})


class GenotypeGuard(pl.Callback):
    """Stores the genotype in every checkpoint and refuses to resume from another one."""

    def __init__(self, genotype: Genotype):
        self.text = str(genotype)

    def on_save_checkpoint(self, trainer, module, checkpoint):
        checkpoint["nas_genotype"] = self.text

    def on_load_checkpoint(self, trainer, module, checkpoint):
        stored = checkpoint.get("nas_genotype")
        if stored != self.text:
            raise CheckpointError(f"checkpoint is for another genotype ({stored!r}); "
                                  "train it with its own genotype or start a new run directory")


class EpochLog(pl.Callback):
    """Each epoch's metrics to the tracker, and a line of them when the progress bar is off."""

    def __init__(self, tracker, progress: bool = True):
        self.tracker, self.progress = tracker, progress

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **m}
        self.tracker.log_epoch(row)
        if not self.progress:
            log.info(f"epoch {trainer.current_epoch}: val_acc {m.get('val_acc', float('nan')):.4f} "
                     f"val_loss {m.get('val_loss', float('nan')):.4f}")


def check_checkpoint(path: Path, genotype: Genotype) -> None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {type(err).__name__}") from None
    stored = ckpt.get("nas_genotype") if isinstance(ckpt, dict) else None
    if stored != str(genotype):
        raise CheckpointError(f"checkpoint {str(path)!r} is for another genotype; train it with "
                              "its own genotype or choose another run directory")


def run_training(cfg: TrainConfig, run_dir: Path, callbacks: list[pl.Callback] | None = None,
                 on_accept: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train (or resume) `cfg.genotype`; returns the test metrics and file locations."""
    from nas.arch.cost import cost
    from nas.training.data import datamodule_for

    t, d = cfg.trainer, cfg.data
    genotype = load_genotype(cfg.genotype)
    resolution = cfg.resolution or genotype.resolution
    claim_run_dir(run_dir, run_identity(genotype, dataclasses.asdict(d), dataclasses.asdict(t), resolution,
                                        cfg.init))
    if on_accept is not None:
        on_accept()
    finished = run_dir / "result.json"
    if finished.is_file() and not cfg.ckpt_path:
        return _finished_before(run_dir, finished)
    dm = datamodule_for(d, resolution, t.batch_size)
    dm.check()
    resume = _checkpoint_to_resume(cfg, run_dir, genotype)
    dm.setup()
    model = _seeded_model(cfg, genotype, dm, resume)
    c = cost(genotype, dm.num_classes, dm.in_channels)
    _announce(cfg, genotype, c, resolution, run_dir, resume)
    tracker = _start_tracker(cfg, genotype, c, run_dir)
    trainer, val_acc, test = _fit_and_test(cfg, model, dm, resume, run_dir,
                                           _callbacks(cfg, genotype, run_dir, tracker, callbacks))
    result = {"genotype": str(genotype), "hash": genotype.content_hash, "mflops": c.mflops,
              "params_m": c.params_m, "epochs": trainer.current_epoch, "steps": trainer.global_step,
              "test_acc": test.get("test_acc"), "test_loss": test.get("test_loss"), "val_acc": val_acc,
              "resolution": resolution, "data": d.name, "ema": t.ema}
    tracker.finish_trial({"test_acc": result["test_acc"], "state": "COMPLETE"})
    if not trainer.is_global_zero:  # under DDP every rank gets here; one writes the files
        return result
    write_json(finished, result)  # before the export: a failed export check loses no training
    if cfg.export:
        _export_trained(model, genotype, resolution, dm, result, run_dir)
        write_json(finished, result)
    log.info(f"test accuracy {_fmt(result['test_acc'])} after {result['epochs']} epochs "
             f"({result['steps']} steps); results in {run_dir}")
    return result


def _finished_before(run_dir: Path, finished: Path) -> dict[str, Any]:
    """The result of the training `run_dir` already holds, said in one line."""
    result = json.loads(finished.read_text())
    log.info(f"{run_dir} already holds this training, finished: test accuracy "
             f"{_fmt(result.get('test_acc'))} after {result.get('epochs')} epochs; delete "
             f"{finished.name} to train again")
    return result


def _announce(cfg: TrainConfig, genotype: Genotype, c: Any, resolution: int, run_dir: Path,
              resume: Path | None) -> None:
    """The line that opens a training: the network, the recipe's length, the data, the folder
    and where the weights come from."""
    log.info(f"training {genotype.content_hash}: {c.mflops:.1f} MFLOPs, {c.params_m:.3f} M params, "
             f"{cfg.trainer.max_epochs} epochs on {cfg.data.name} at {resolution}px; run directory {run_dir}"
             + (f"; resuming from {resume}" if resume else "")
             + (f"; starting from the weights in {cfg.init}" if cfg.init and not resume else ""))


def _checkpoint_to_resume(cfg: TrainConfig, run_dir: Path, genotype: Genotype) -> Path | None:
    """`ckpt_path`, else the run directory's last checkpoint when there is one (None: a fresh
    start); refused when it is missing or holds another genotype."""
    resume = Path(cfg.ckpt_path).expanduser() if cfg.ckpt_path else run_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path and not resume.is_file():
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path!r} does not exist")
    if not resume.is_file():
        return None
    check_checkpoint(resume, genotype)
    return resume


def _seeded_model(cfg: TrainConfig, genotype: Genotype, dm: Any, resume: Path | None) -> torch.nn.Module:
    """The network, its initial weights drawn from `trainer.seed` (or those of `init`, unless the
    run resumes: a checkpoint holds weights of its own)."""
    from nas.model.builder import build_model

    t = cfg.trainer
    if t.threads > 0 and t.on_cpu():
        torch.set_num_threads(t.threads)
    pl.seed_everything(t.seed, verbose=False)
    model = build_model(genotype, dm.num_classes, dm.in_channels)
    if cfg.init and resume is None:
        _load_init(model, genotype, Path(cfg.init))
    return model


def _start_tracker(cfg: TrainConfig, genotype: Genotype, c: Any, run_dir: Path):
    """One W&B run per training: under DDP only rank 0 logs (the others' metrics are synced)."""
    from pytorch_lightning.utilities import rank_zero_only

    from nas.common.tracking import Tracker

    mode = cfg.wandb.mode if rank_zero_only.rank == 0 else "disabled"
    tracker = Tracker(mode, cfg.wandb.project, cfg.wandb.entity, f"train-{genotype.content_hash}", run_dir)
    tracker.start_run(f"train-{genotype.content_hash}-{cfg.data.name}", "train",
                      {"genotype": str(genotype), "mflops": c.mflops, "params_m": c.params_m,
                       **genotype.to_dict(), "trainer": vars(cfg.trainer), "data": vars(cfg.data)})
    return tracker


def _callbacks(cfg: TrainConfig, genotype: Genotype, run_dir: Path, tracker,
               extra: list[pl.Callback] | None) -> list[pl.Callback]:
    """The caller's callbacks, then a checkpoint every epoch (of this genotype only), the epoch
    lines, and Lightning's EMA of the weights when asked for."""
    callbacks = [
        *(extra or []),
        pl.callbacks.ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}",
                                     auto_insert_metric_name=False, save_last=True,
                                     every_n_epochs=1, save_top_k=1, monitor="val_acc", mode="max"),
        GenotypeGuard(genotype), EpochLog(tracker, cfg.trainer.progress)]
    if cfg.trainer.ema:
        # Lightning's EMA: evaluated at every validation, kept in checkpoints (so a resume goes on
        # averaging), on the model's device, and copied into the model when training ends.
        callbacks.append(pl.callbacks.EMAWeightAveraging(decay=cfg.trainer.ema_decay))
    return callbacks


def _fit_and_test(cfg: TrainConfig, model: torch.nn.Module, dm: Any, resume: Path | None, run_dir: Path,
                  callbacks: list[pl.Callback]):
    """Fit `model` with the recipe (from `resume` when given), then test it: the trainer, the
    last validation accuracy and the test metrics."""
    from nas.training.proxy import Classifier, LightningData, quiet_lightning

    t = cfg.trainer
    module = Classifier(model, optimizer=t.optimizer, lr=t.lr, momentum=t.momentum,
                        weight_decay=t.weight_decay, schedule=t.schedule,
                        warmup_epochs=t.warmup_epochs, label_smoothing=t.label_smoothing,
                        channels_last=t.channels_last)
    if t.compile:
        module.model = torch.compile(module.model)  # training only: the export is `model` itself
    with quiet_lightning(multi_node=t.num_nodes > 1):
        trainer = pl.Trainer(max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
                             num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
                             sync_batchnorm=t.sync_batchnorm, logger=False, callbacks=callbacks,
                             enable_progress_bar=t.progress, enable_model_summary=False,
                             deterministic=t.deterministic, num_sanity_val_steps=0,
                             default_root_dir=str(run_dir))
        data = LightningData(dm)
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None)
        val_acc = float(trainer.callback_metrics.get("val_acc", float("nan")))  # test() replaces them
        test = trainer.test(module, datamodule=data, verbose=False)[0]
    return trainer, val_acc, test


def _export_trained(model: torch.nn.Module, genotype: Genotype, resolution: int, dm: Any,
                    result: dict[str, Any], run_dir: Path) -> None:
    """The trained model written as `nas.export` writes it, into `run_dir/exported` (CPU float32
    files, whatever device and precision trained it); a failed export check is recorded in
    `result` and warned about, and the training is kept."""
    from nas.model.files import write_model_files

    info = {**result, "num_classes": dm.num_classes, "in_channels": dm.in_channels, "weights": "trained"}
    export_g = genotype if resolution == genotype.resolution else _at_resolution(genotype, resolution)
    try:
        plain = copy.deepcopy(model).to("cpu", torch.float32).eval()
        write_model_files(plain, export_g, run_dir / "exported", dm.in_channels, info,
                          onnx=_has_onnxruntime())
        result["exported"] = str(run_dir / "exported")
    except UserError as err:
        result["export_error"] = str(err)
        log.warning(f"the trained model was not exported: {err} (the training, result.json and "
                    "checkpoints/ are kept)")


def _load_init(model: torch.nn.Module, genotype: Genotype, folder: Path) -> None:
    """The weights of export folder `folder` (its genotype must be this one)."""
    from nas.model.files import load_exported

    exported = load_exported(folder, num_classes=model.classifier.out_features)
    if getattr(exported, "genotype", None) != str(genotype):
        held = getattr(exported, "genotype", "?")
        raise CheckpointError(f"init={str(folder)!r} holds genotype {held}, not {genotype}; give the "
                              "export folder of this genotype")
    try:
        model.load_state_dict(exported.state_dict())
    except RuntimeError as err:
        raise CheckpointError(f"init={str(folder)!r}: its weights do not fit this data's classes or "
                              f"channels ({str(err).splitlines()[0]})") from None


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON: a NaN or infinite metric is written as null."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    path.write_text(json.dumps(clean(data), indent=2, allow_nan=False))


def claim_run_dir(run_dir: Path, identity: dict[str, Any]) -> None:
    """Record what `run_dir` trains; refuse a folder that holds a training of other settings."""
    path = run_dir / "run.json"
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
        except ValueError:
            raise CheckpointError(f"{str(path)!r} is not valid JSON: this folder cannot be resumed; "
                                  "choose another hydra.run.dir=") from None
        if stored != identity:
            differ = [k for k in identity if stored.get(k) != identity[k]] or ["settings"]
            was = json.dumps({k: stored.get(k) for k in differ})
            raise CheckpointError(
                f"run directory {str(run_dir)!r} holds a training with another {', '.join(differ)} "
                f"(stored {was}); leave hydra.run.dir out to get a folder of its own, or choose "
                "another one")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(identity, indent=2, sort_keys=True))


def _at_resolution(genotype: Genotype, resolution: int) -> Genotype:
    from dataclasses import replace

    return replace(genotype, resolution=resolution)


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
