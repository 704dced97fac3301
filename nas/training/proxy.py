"""Proxy training: a short Lightning run that scores a built model.

`Classifier` wraps any model (optimization lives here, the maths in the model, data in
a DataModule); `train_proxy` runs a quiet Trainer and returns the validation accuracy
and per-epoch history. Pruning is a Callback that asks a `report(epoch, value)` function
whether to stop, so this module does not depend on Optuna. `quiet_lightning` is how every
training of the project keeps Lightning's banner and advice off the terminal.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.nn import functional as F

from nas.model.optim import param_groups

__all__ = ["Classifier", "EpochReporter", "LightningData", "NonFiniteLoss", "ProxyResult", "make_optimizer",
           "make_trainer", "quiet_lightning", "train_proxy"]

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")
# Advice of Lightning's that does not fit these runs: the data modules choose their own number
# of loader processes (tensors in memory need none), a short proxy epoch has fewer steps than
# the logging interval, and torch's LeafSpec deprecation comes from Lightning's own code.
LIGHTNING_ADVICE = (r".*does not have many workers.*", r".*smaller than the logging interval.*",
                    r".*LeafSpec.*")
# Lightning's SLURM probe warns on any machine with `srun` installed, inside an allocation or
# not. Its advice (start each process with srun) is for jobs over several machines; a run on
# one machine starts its own processes, so it is ignored unless the run is multi-node.
SRUN_ADVICE = r".*The `srun` command is available.*"


@contextmanager
def quiet_lightning(multi_node: bool = False) -> Iterator[None]:
    """Inside, Lightning logs errors only (no device banner, no "max_epochs reached") and its
    `LIGHTNING_ADVICE` warnings are ignored, as is `SRUN_ADVICE` unless `multi_node`; the
    levels and warning filters from before come back on exit. Around a Trainer's construction
    and its fit and test."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in (*LIGHTNING_ADVICE, *([] if multi_node else [SRUN_ADVICE])):
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class Classifier(pl.LightningModule):
    """Cross-entropy classification of any model, with the project's optimizer recipe."""

    def __init__(self, model: nn.Module, optimizer: str = "sgd", lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 4e-5, schedule: str = "cosine",
                 warmup_epochs: float = 0.0, label_smoothing: float = 0.1,
                 bn_recalibration: int = 0, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.bn_recalibration = bn_recalibration
        self.opt_name, self.lr, self.momentum = optimizer, lr, momentum
        self.weight_decay, self.schedule = weight_decay, schedule
        self.warmup_epochs, self.label_smoothing = warmup_epochs, label_smoothing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"training loss became {loss.item()} at epoch {self.current_epoch}, "
                                f"step {self.global_step}")
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        # sync_dist: under DDP every rank logs the mean over all ranks' batches.
        self.log(f"{prefix}_loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)
        self.log(f"{prefix}_acc", acc, on_epoch=True, batch_size=len(y), sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        if self.bn_recalibration > 0 and not self.trainer.sanity_checking:
            self.recalibrate_bn(self.bn_recalibration)

    @torch.no_grad()
    def recalibrate_bn(self, batches: int) -> None:
        """Re-estimate BN running statistics on a few training batches.

        After a short, high-learning-rate run the running averages lag far behind the
        weights, so evaluation-mode accuracy sits near chance until the last epoch and
        says nothing about the architecture; exact statistics of the current weights fix
        that, and make per-epoch pruning meaningful.
        """
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        saved = [(m.momentum, m.training) for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        loader = self.trainer.datamodule.train_dataloader()
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            self(x.to(self.device))
        for m, (momentum, training) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.train(training)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        return make_optimizer(param_groups(self.model, self.weight_decay), self.trainer,
                              optimizer=self.opt_name, lr=self.lr, momentum=self.momentum,
                              schedule=self.schedule, warmup_epochs=self.warmup_epochs)


def make_optimizer(groups: list[dict], trainer: pl.Trainer, optimizer: str = "sgd", lr: float = 0.1,
                   momentum: float = 0.9, schedule: str = "cosine", warmup_epochs: float = 0.0) -> dict:
    """The recipe's optimizer over parameter `groups` (each with its weight decay) and its
    per-step schedule, as Lightning's `configure_optimizers` returns them."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    elif optimizer == "rmsprop":
        opt = torch.optim.RMSprop(groups, lr=lr, momentum=momentum, alpha=0.9, eps=0.0316)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: sgd, rmsprop, adamw")
    total = max(1, int(trainer.estimated_stepping_batches))
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    else:
        steps_per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
        warmup = int(warmup_epochs * steps_per_epoch)
        cosine = schedule == "cosine"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if not cosine:
                return 1.0
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochReporter(pl.Callback):
    """Collects per-epoch metrics and asks `report(epoch, val_acc)` whether to prune;
    `stop()`, called before every batch, may raise to end the training at once."""

    def __init__(self, report: Callable[[int, float], bool] | None = None,
                 on_epoch: Callable[[dict], None] | None = None, stop: Callable[[], None] | None = None):
        self.report = report
        self.on_epoch = on_epoch
        self.stop = stop
        self.history: list[dict] = []
        self.pruned_at: int | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stop is not None:
            self.stop()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.stop is not None:
            self.stop()

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self._start,
               "lr": trainer.optimizers[0].param_groups[0]["lr"], **metrics}
        self.history.append(row)
        if self.on_epoch is not None:
            self.on_epoch(row)
        if self.report is not None and self.report(trainer.current_epoch, metrics["val_acc"]):
            self.pruned_at = trainer.current_epoch
            trainer.should_stop = True


@dataclass
class ProxyResult:
    accuracy: float
    history: list[dict] = field(default_factory=list)
    pruned_at: int | None = None
    seconds: float = 0.0
    steps: int = 0


def make_trainer(max_epochs: int, callbacks: list, deterministic: bool | str = True,
                 accelerator: str = "auto", devices: int | str | list[int] = 1,
                 precision: str = "32-true", **kwargs) -> pl.Trainer:
    """A quiet trainer: loggers, checkpoints, progress bar and summaries off (unless asked).

    The device settings are Lightning's (`accelerator="auto"` takes a GPU when there is one).
    """
    # A proxy trial is one process of its own, never a SLURM step of a multi-node job: with
    # Lightning's plain environment it does not detect SLURM (no "srun ... not used" warning
    # on every trial, no requeue handler of its own), and the worker's signal handlers stay
    # the only ones that act on SIGTERM and the time-limit signal.
    options = dict(max_epochs=max_epochs, accelerator=accelerator, devices=devices, precision=precision,
                   logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0,
                   deterministic=deterministic, callbacks=callbacks, plugins=[LightningEnvironment()])
    options.update(kwargs)
    return pl.Trainer(**options)


class LightningData(pl.LightningDataModule):
    """An `ImageDataModule` (which does not import Lightning) as `Trainer.fit`/`test` take it:
    each process (a DDP rank too) sets it up."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def setup(self, stage: str | None = None) -> None:
        self.data.setup()

    def train_dataloader(self):
        return self.data.train_dataloader()

    def val_dataloader(self):
        return self.data.val_dataloader()

    def test_dataloader(self):
        return self.data.test_dataloader()


def train_proxy(model: nn.Module, datamodule, epochs: int,
                report: Callable[[int, float], bool] | None = None,
                on_epoch: Callable[[dict], None] | None = None, seed: int = 0,
                deterministic: bool | str = True, accelerator: str = "auto",
                devices: int | list[int] = 1, precision: str = "32-true", channels_last: bool = False,
                stop: Callable[[], None] | None = None, **recipe) -> ProxyResult:
    """Train `model` for `epochs`, validating each epoch; returns the last validation accuracy.

    `stop`, when given, is called before every batch and may raise to end the training.
    """
    pl.seed_everything(seed, workers=False, verbose=False)
    reporter = EpochReporter(report, on_epoch, stop)
    module = Classifier(model, channels_last=channels_last, **recipe)
    with quiet_lightning():
        trainer = make_trainer(epochs, [reporter], deterministic, accelerator, devices, precision)
        start = time.perf_counter()
        try:
            trainer.fit(module, datamodule=LightningData(datamodule))
        except SIGTERMException:
            # Lightning's own answer to SIGTERM is exit(0) from inside fit; the caller's stop
            # check (its handler saw the same signal) says how the trial ends instead.
            if stop is not None:
                stop()
            raise
    seconds = time.perf_counter() - start
    if not reporter.history:
        raise RuntimeError("training finished without a validation epoch")
    return ProxyResult(accuracy=reporter.history[-1]["val_acc"], history=reporter.history,
                       pruned_at=reporter.pruned_at, seconds=seconds, steps=trainer.global_step)
