"""Running where users run: device and precision settings, training order per epoch, streamed
image folders, DDP full training, and no device written into the code."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from nas.cli.search import precheck
from nas.errors import UserError
from nas.search.run import run_search
from nas.training.data import make_datamodule
from nas.training.proxy import Classifier, LightningData
from tests.extras import need
from tests.tiny import GENOTYPE, TINY

ROOT = Path(__file__).resolve().parents[1]


def test_no_device_is_written_into_the_code():
    pattern = re.compile(r"""accelerator\s*=\s*["'](cpu|gpu|cuda)["']|\.cuda\(\)|device\s*=\s*["']cuda""")
    found = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "nas").rglob("*.py")
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found


class OrderSpy(pl.Callback):
    def __init__(self):
        self.orders: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.orders.setdefault(trainer.current_epoch, []).extend(batch[1].tolist())


def fit(dm, epochs, spy, ckpt_dir=None, resume=None):
    from nas.arch.genotype import parse
    from nas.model.builder import build_model

    dm.setup()
    torch.manual_seed(0)
    module = Classifier(build_model(parse(GENOTYPE), dm.num_classes, dm.in_channels))
    callbacks = [spy]
    if ckpt_dir:
        callbacks.append(pl.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False,
                         enable_checkpointing=bool(ckpt_dir), enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks,
                         limit_val_batches=1)
    trainer.fit(module, datamodule=LightningData(dm), ckpt_path=resume)


def test_training_order_changes_every_epoch_and_a_resume_replays_it(tmp_path):
    dm = make_datamodule("digits", resolution=8, batch_size=64, subset=0.2)
    dm.setup()
    full = OrderSpy()
    fit(dm, 2, full, ckpt_dir=tmp_path / "ck")
    assert full.orders[0] != full.orders[1]
    assert sorted(full.orders[0]) == sorted(full.orders[1])  # the same images, in another order
    first = OrderSpy()
    fit(make_datamodule("digits", resolution=8, batch_size=64, subset=0.2), 1, first, tmp_path / "a")
    resumed = OrderSpy()
    fit(make_datamodule("digits", resolution=8, batch_size=64, subset=0.2), 2, resumed,
        resume=str(tmp_path / "a" / "last.ckpt"))
    assert list(resumed.orders) == [1] and resumed.orders[1] == full.orders[1]


def write_jpegs(root: Path, classes: int, per_class: int, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i}.jpg", quality=70)
    return root


def test_a_search_streams_an_image_folder_with_workers(tmp_path):
    root = write_jpegs(tmp_path / "imgs", 3, 20, size=20)
    summary = run_search(precheck([*TINY, "n_trials=1", "data=imagefolder", f"data.root={root}",
                                   "data.in_memory=false", "data.num_workers=1", "proxy.subset=1.0"]),
                         tmp_path / "run")
    assert summary["trained"] == 1


def test_bf16_search_runs_on_cpu_and_refuses_a_float32_resume(tmp_path):
    run = tmp_path / "run"
    summary = run_search(precheck([*TINY, "n_trials=1", "study_name=p", "proxy.accelerator=auto",
                                   "proxy.precision=bf16-mixed"]), run)
    assert summary["trained"] == 1
    with pytest.raises(UserError, match="different proxy"):
        run_search(precheck([*TINY, "n_trials=2", "study_name=p", "proxy.precision=32-true"]), run)


@pytest.mark.parametrize(("args", "words"), [
    (["proxy.precision=8-bit"], "proxy.precision='8-bit' is not valid"),
    (["proxy.deterministic=sometimes"], "proxy.deterministic='sometimes' is not valid"),
    (["data.augment=wild"], "data.augment='wild' is not valid"),
    (["data=imagefolder", "data.in_memory=maybe"], "data.in_memory='maybe' is not valid"),
    (["data=imagefolder", "data.num_workers=-1"], "data.num_workers=-1 is not valid"),
    (["data=imagefolder", "data.mean=[2.0,0.5,0.5]"], "data.mean=[2.0, 0.5, 0.5] is not valid"),
    (["workers_per_gpu=0"], "workers_per_gpu=0 is not valid"),
])
def test_bad_device_and_data_settings_are_refused(tmp_path, args, words):
    root = write_jpegs(tmp_path / "imgs", 2, 6, size=12)
    with pytest.raises(UserError, match=re.escape(words)):
        precheck([*TINY, *args, *([f"data.root={root}"] if "data=imagefolder" in args else [])])


def test_workers_spread_over_gpus(monkeypatch):
    from nas.search.evaluate import worker_devices

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = precheck([*TINY, "+worker=5"])
    assert worker_devices(cfg) == [1]
    cfg = precheck([*TINY, "+worker=5", "workers_per_gpu=2"])
    assert worker_devices(cfg) == [2]
    assert worker_devices(precheck(TINY)) == 1  # not a worker: Lightning's own choice
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert worker_devices(precheck([*TINY, "+worker=5"])) == 1


def test_ddp_training_on_two_cpu_processes_exports_once_and_resumes(tmp_path):
    need("onnxruntime", "onnx")
    args = [sys.executable, "-m", "nas.train", f"+genotype={GENOTYPE}", "resolution=16",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.threads=1",
            "trainer.max_epochs=1", "trainer.progress=false", "wandb.mode=disabled",
            f"hydra.run.dir={tmp_path / 'run'}"]
    r = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # Half the data per rank: 1,257 training digits -> 629 per rank -> 10 batches of 64.
    assert result["steps"] == 10
    assert len(list((tmp_path / "run" / "exported").glob("model.onnx"))) == 1
    # An interrupted run (no result.json yet) resumes from its last checkpoint, under DDP too.
    (tmp_path / "run" / "result.json").unlink()
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    assert json.loads((tmp_path / "run" / "result.json").read_text())["steps"] == 10


def test_slurm_tasks_sharing_a_gpu_are_workers_of_their_own(monkeypatch, tmp_path):
    from nas.cli.search import task_slot

    cfg = precheck([*TINY, "+worker=3"])
    assert task_slot(cfg, tmp_path) == (cfg, tmp_path)  # one task per array job: as it was
    monkeypatch.setenv("SLURM_NTASKS", "2")
    seen = set()
    for task in ("0", "1"):
        monkeypatch.setenv("SLURM_LOCALID", task)
        slot, run_dir = task_slot(cfg, tmp_path)
        seen.add((slot.worker, slot.seed + slot.worker, run_dir))
    assert {w for w, _, _ in seen} == {6, 7} and len({d for _, _, d in seen}) == 2


def test_slurm_gpu_launcher_asks_for_one_gpu_per_worker():
    need("submitit", "cluster")
    from hydra import compose, initialize_config_dir

    from nas.cli.common import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=["+space=mnv2", "hydra/launcher=slurm_gpu"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1


def test_gpu_check_script_says_what_it_did_without_a_gpu():
    import os

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/check_gpu.sh itself")
    r = subprocess.run(["bash", "scripts/check_gpu.sh"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0 and "no CUDA device" in r.stdout
