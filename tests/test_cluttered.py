"""data=cluttered_digits: deterministic, made from disjoint base digits per split, refused in
one line when its settings are bad, and usable wherever a dataset is."""

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.cli.search import precheck
from nas.errors import UserError
from nas.training.cluttered import ClutterSettings, _cached, base_digit_split
from nas.training.data import datamodule_for
from tests.tiny import tiny

ROOT = Path(__file__).resolve().parents[1]
SMALL = ClutterSettings(n_train=300, n_val=60, n_test=60)


def fresh(settings: ClutterSettings):
    return _cached.__wrapped__(settings)  # past the per-process cache: a real second construction


def test_two_constructions_with_one_seed_are_bit_identical_and_another_seed_differs():
    a, b = fresh(SMALL), fresh(SMALL)
    for name in ("train", "val", "test"):
        assert torch.equal(a[name][0], b[name][0]) and torch.equal(a[name][1], b[name][1])
    other = fresh(replace(SMALL, seed=1))
    assert not torch.equal(a["train"][0], other["train"][0])


def test_images_hold_one_labelled_digit_in_clutter_at_the_canvas_size():
    busy = replace(SMALL, canvas=40, clutter=4, fragment=6, min_size=14.0, max_size=22.0, noise=0.1)
    images, labels = fresh(busy)["train"]
    assert images.shape == (300, 1, 40, 40) and images.dtype == torch.uint8
    assert set(labels.tolist()) == set(range(10))
    # Clutter and noise fill the field: far more lit pixels than one digit drawn alone.
    clean = fresh(replace(busy, clutter=0, noise=0.0))["train"]
    assert (images > 64).float().mean() > 1.5 * (clean[0] > 64).float().mean()
    assert torch.equal(clean[1], labels)


def test_splits_are_made_from_disjoint_base_digits():
    from sklearn.datasets import load_digits

    digits = load_digits().images
    parts = base_digit_split(len(digits), 0.15, 0.15, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(digits)))
    hashes = {name: {hashlib.sha1(digits[i].tobytes()).hexdigest() for i in idx}
              for name, idx in parts.items()}
    assert not hashes["train"] & hashes["val"] and not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]
    assert abs(len(parts["val"]) - 0.15 * len(digits)) < 1 and len(parts["train"]) > 0.69 * len(digits)


def test_a_split_draws_only_from_its_own_base_digits():
    # With no clutter, noise, rotation or scaling, every image is one base digit, upsampled;
    # match each against every base digit drawn the same way: it comes from its split.
    s = replace(SMALL, clutter=0, noise=0.0, rotation=0.0, min_size=16.0, max_size=16.0, canvas=16)
    made = fresh(s)
    from sklearn.datasets import load_digits

    from nas.training.cluttered import _draw

    base = torch.from_numpy(load_digits().images / 16.0).float()[:, None]
    drawn = (_draw(base, s, np.random.default_rng(0)).clamp(0, 1) * 255).round().to(torch.uint8)
    table = {drawn[i].numpy().tobytes(): i for i in range(len(base))}
    parts = base_digit_split(len(base), s.val_fraction, s.test_fraction, s.seed)
    for name in ("train", "val", "test"):
        found = {table.get(img.numpy().tobytes()) for img in made[name][0]}
        assert None not in found and found <= set(parts[name].tolist())


def test_the_generator_and_the_config_schema_have_the_same_defaults():
    # The schema (nas/common, no torch) and the generator each hold the defaults; they must agree,
    # or `data=cluttered_digits` and a ClutterSettings() would make different images.
    from nas.common.config import CLUTTERED_ONLY, DataConfig

    assert {k: getattr(DataConfig, k) for k in CLUTTERED_ONLY} == \
        {k: getattr(ClutterSettings, k) for k in CLUTTERED_ONLY}


def test_the_data_module_resizes_and_reports_its_shape():
    from nas.common.config import DataConfig

    cfg = DataConfig(name="cluttered_digits", n_train=200, n_val=50, n_test=50)
    cfg.validate()
    dm = datamodule_for(cfg, resolution=24, batch_size=32, subset=0.5)
    dm.setup()
    assert (dm.num_classes, dm.in_channels) == (10, 1)
    assert dm.split("train").images.shape == (100, 1, 24, 24)
    assert len(dm.split("val").labels) == 50 and len(dm.split("test").labels) == 50
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 24, 24) and x.dtype == torch.float32


@pytest.mark.parametrize("arg, message", [
    ("data.canvas=8", "data.canvas=8 is not valid"),
    ("data.min_size=30", "data.min_size=30.0 is not valid: must be <= data.max_size"),
    ("data.noise=nan", "data.noise=nan is not valid"),
    ("data.n_train=0", "data.n_train=0 is not valid"),
    ("data.rotation=-5", "data.rotation=-5.0 is not valid"),
])
def test_bad_generator_settings_are_refused(arg, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        precheck(["+space=mnv1", "+budget.mflops=28", "data=cluttered_digits", arg])


def test_a_generator_setting_with_other_data_names_its_dataset():
    with pytest.raises(UserError, match=r"data\.clutter is a setting of data=cluttered_digits only"):
        precheck(["+space=mnv1", "+budget.mflops=28", "data.clutter=3"])


def test_a_tiny_search_runs_on_it_and_its_export_retrains_on_the_same_task(tmp_path):
    args = tiny("data=cluttered_digits", "data.n_train=200", "data.n_val=50", "data.n_test=50",
                "data.clutter=3", "n_trials=1",
                drop=["proxy.resolution", "proxy.subset", "sampler.n_startup_trials"])
    r = subprocess.run([sys.executable, "-m", "nas.search", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "data cluttered_digits (10 classes)" in r.stdout
    run = tmp_path / "outputs" / "mnv1-mflops28-cluttered_digits"
    r = subprocess.run([sys.executable, "-m", "nas.export", str(run), "--top-k", "1", "--no-onnx",
                        "--no-latency"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    retrain = next((run / "exported").glob("*/retrain.yaml")).read_text()
    assert "override data: cluttered_digits" in retrain
    assert "n_train: 200" in retrain and "clutter: 3" in retrain
