"""Training a supernet in one command, resuming it, and searching with it (`proxy=supernet`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
# mnv1 at width 0.25 on digits at 16 px: seconds per epoch on one CPU thread.
SMALL = ["+space=mnv1", "space.width=[0.25]", "supernet.resolution=16", "supernet.threads=1",
         "supernet.progress=false", "supernet.random_subnets=1", "wandb.mode=disabled"]


def cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One epoch, then the same command with two: the second resumes the first's checkpoint."""
    cwd = tmp_path_factory.mktemp("supernet")
    first = cli("nas.supernet", "train", *SMALL, "supernet.epochs=1", cwd=cwd)
    assert first.returncode == 0, first.stderr
    run_dir = cwd / "outputs" / "supernet" / "mnv1-digits"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    second = cli("nas.supernet", "train", *SMALL, "supernet.epochs=2", cwd=cwd)
    assert second.returncode == 0, second.stderr
    assert "resuming from" in second.stdout
    assert "epoch 2/2" in second.stdout and "epoch 1/2" not in second.stdout
    warned = [x for x in second.stderr.splitlines() if "random subnets score" in x]  # 2 epochs: at chance
    assert warned == [] or (len(warned) == 1 and warned[0].startswith("warning: this supernet's"))
    # every epoch also scores supernet.val_random (4) fixed random subnets
    line = next(x for x in second.stdout.splitlines() if x.startswith("epoch 2/2"))
    mean, low, high = re.search(r", 4 random ([0-9.]+) \(([0-9.]+)-([0-9.]+)\)", line).groups()
    assert 0.0 <= float(low) <= float(mean) <= float(high) <= 1.0
    return run_dir / "supernet.pt"


def test_the_file_records_what_it_was_trained_on(trained):
    import torch

    payload = torch.load(trained, map_location="cpu", weights_only=False)
    meta = payload["meta"]
    assert meta["space"] == "mnv1" and meta["epochs"] == 2
    assert meta["data"]["name"] == "digits" and meta["num_classes"] == 10 and meta["in_channels"] == 1
    assert meta["recipe"]["resolution"] == 16
    # the last epoch's validation: the extremes and the watched random subnets, their mean
    v = meta["validation"]
    watched = [v[f"val_acc_random_{i}"] for i in range(4)]
    assert {"val_acc_largest", "val_acc_smallest"} <= set(v) and all(0 <= a <= 1 for a in v.values())
    assert abs(v["val_acc_random"] - sum(watched) / 4) < 1e-6


def test_watching_more_subnets_trains_the_same_weights(tmp_path):
    """supernet.val_random is monitoring only: two short Lightning trainings that watch 0 and 3
    random subnets end with the same tensors (mnv2: its dropout draws from the random state
    that extracting the watched networks would draw from too)."""
    import pytorch_lightning as pl
    import torch

    from nas.common.config import DataConfig
    from nas.model.supernet import SuperNet
    from nas.training.data import datamodule_for
    from nas.training.proxy import LightningData
    from nas.training.supernet import SupernetModule
    from search_spaces import get_space

    space = replace(get_space("mnv2"), width=(0.5,))
    states, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    for watched in (0, 3):
        pl.seed_everything(0, verbose=False)
        module = SupernetModule(SuperNet(space, 10, 1), lambda g: 8, random_subnets=1,
                                bn_batches=1, val_random=watched)
        trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, accelerator="cpu",
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0,
                             default_root_dir=str(tmp_path))
        trainer.fit(module, datamodule=LightningData(datamodule_for(DataConfig(name="digits"), 8, 16)))
        states.append({k: v.detach().clone() for k, v in module.supernet.state_dict().items()})
        assert ("val_acc_random" in trainer.callback_metrics) == (watched > 0)
    torch.set_num_threads(threads)
    a, b = states
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_supernet_whose_random_subnets_inherit_little_is_flagged():
    """The warning a training and a search print: the watched random subnets kept less than
    half of the largest one's accuracy above chance; not for files that did not watch any."""
    from nas.training.supernet import SupernetFile

    def meta(**validation):
        return SupernetFile("mnv2", "x", {}, {}, num_classes=10, in_channels=1, epochs=3,
                            validation=validation)

    low = meta(val_acc_largest=0.9, val_acc_smallest=0.6, val_acc_random=0.15).trust_warning()
    assert low.startswith("this supernet's random subnets") and "15.0%" in low and "90.0%" in low
    assert "chance 10.0%" in low
    assert meta(val_acc_largest=0.9, val_acc_random=0.5).trust_warning() is None
    assert meta(val_acc_largest=0.9).trust_warning() is None  # nothing watched
    assert SupernetFile("mnv2", "x", {}, {}, 10, 1, 3).validation == {}  # files before the key


def test_rerunning_a_finished_training_trains_nothing(trained):
    """Also with another supernet.val_random: what is watched is not part of the recipe."""
    before = trained.stat().st_mtime_ns
    again = cli("nas.supernet", "train", *SMALL, "supernet.epochs=2", "supernet.val_random=0",
                cwd=trained.parents[3])
    assert again.returncode == 0, again.stderr
    assert "already holds this supernet" in again.stdout
    assert trained.stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def searched(trained, tmp_path_factory) -> tuple[Path, optuna.Study]:
    cwd = tmp_path_factory.mktemp("search")
    run = cli("nas.search", "+space=mnv1", "space.width=[0.25]", "+budget.mflops=28", "proxy=supernet",
              f"proxy.supernet={trained}", "n_trials=4", "reference=false", "wandb.mode=disabled",
              "proxy.threads=1", cwd=cwd)
    assert run.returncode == 0, run.stderr
    db = next(cwd.glob("outputs/*/study.db"))
    url = f"sqlite:///{db}"
    return db.parent, optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)


def test_a_search_scores_candidates_with_it_without_training(searched):
    _, study = searched
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 4
    assert all(0.0 <= t.value <= 1.0 and t.user_attrs["accuracy"] == t.value for t in done)
    assert all("epochs" not in t.user_attrs for t in done)  # nothing was trained per trial
    assert study.user_attrs["identity"]["supernet"]  # the file's hash: another file, another study


def test_its_export_carries_the_inherited_weights_it_was_scored_with(searched, tmp_path):
    import torch

    from nas.common.config import DataConfig
    from nas.model.files import load_exported
    from nas.training.data import datamodule_for
    from nas.training.supernet import resize

    run_dir, _ = searched
    out = cli("nas.export", str(run_dir), "--top-k", "1", "--no-latency", "--out", str(tmp_path / "x"),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    folder = next((tmp_path / "x").iterdir())
    info = json.loads((folder / "info.json").read_text())
    assert info["weights"].startswith("inherited from the supernet")
    # The exported network scores on the validation split exactly what its trial scored.
    model = load_exported(folder).eval()
    resolution = yaml.safe_load((folder / "finetune.yaml").read_text())["resolution"]
    dm = datamodule_for(DataConfig(), 16, 64)
    dm.setup()
    correct = total = 0
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            correct += int((model(resize(x, resolution)).argmax(1) == y).sum())
            total += len(y)
    assert correct / total == pytest.approx(info["proxy_accuracy"], abs=1e-9)
    # finetune.yaml starts nas.train from those weights, wherever the folder is copied (the
    # original is moved away); retrain.yaml trains from scratch.
    import shutil

    moved = tmp_path / "elsewhere" / folder.name
    shutil.copytree(folder, moved)
    folder.rename(tmp_path / "gone")
    tune = cli("nas.train", "--config-dir", "elsewhere/" + folder.name, "--config-name", "finetune",
               "trainer.max_epochs=1", "trainer.threads=1", "trainer.progress=false", "wandb.mode=disabled",
               cwd=tmp_path)
    assert tune.returncode == 0, tune.stderr
    assert f"starting from the weights in {moved}" in tune.stdout
    folder = moved
    assert "init" not in yaml.safe_load((folder / "retrain.yaml").read_text())


def test_a_supernet_of_another_space_or_data_is_refused_in_one_line(trained, tmp_path):
    for args, words in ((["+space=mnv2"], "trained for space mnv1"),
                        (["+space=mnv1", "space.width=[0.25]", "data.seed=3"], "trained on other data")):
        run = cli("nas.search", *args, "+budget.mflops=300", "proxy=supernet", f"proxy.supernet={trained}",
                  "n_trials=2", "reference=false", "wandb.mode=disabled", cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in run.stderr
    assert not list(tmp_path.glob("outputs/*/study.db"))  # refused before any study was made


def test_bad_supernet_settings_are_refused_in_one_line(tmp_path):
    for args, words in ((["supernet.largest_epochs=5", "supernet.epochs=5"], "supernet.largest_epochs=5"),
                        (["supernet.lr=-1"], "supernet.lr=-1"),
                        (["supernet.random_subnets=-1"], "supernet.random_subnets"),
                        (["supernet.unshared=[shortcut]"], "supernet.unshared=['shortcut']"),
                        (["supernet.progressive=[k,kernel]"], "'kernel' is no gene"),
                        (["supernet.progressive=[k,n+k]"], "'k' is named twice"),
                        (["supernet.progressive=[k,n,t]", "supernet.epochs=3"], "need at least 4 epochs")):
        run = cli("nas.supernet", "train", "+space=mnv1", *args, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert words in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = cli("nas.supernet", "fit", "+space=mnv1", cwd=tmp_path)
    assert run.returncode == 2 and "unknown command 'fit'" in run.stderr
    run = cli("nas.search", "+space=mnv1", "+budget.mflops=28", "proxy.supernet=x.pt", cwd=tmp_path)
    assert run.returncode == 2 and "proxy=supernet only" in run.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args,words", [
    (["+space=mnv2"], "was trained for space mnv1"),
    ([*SMALL, "data=cluttered_digits"], "was trained on other data"),
    ([*SMALL, "supernet.lr=0.01"], "supernet.lr=0.05, not supernet.lr=0.01"),
])
def test_training_into_a_file_that_holds_another_supernet_is_refused(trained, tmp_path, args, words):
    """out= naming another space's, data's or recipe's supernet: training would overwrite it at
    its end. Refused before anything is written, the file untouched, no run folder left."""
    import shutil

    shutil.copy(trained, tmp_path / "kept.pt")
    before = (tmp_path / "kept.pt").read_bytes()
    run = cli("nas.supernet", "train", *args, "out=kept.pt", "wandb.mode=disabled", cwd=tmp_path)
    assert run.returncode == 2, run.stderr[-2000:]
    assert words in run.stderr and "would overwrite it" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert (tmp_path / "kept.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt"]


def test_validating_without_a_supernet_names_its_key_and_leaves_no_folder(tmp_path):
    run = cli("nas.supernet", "validate", "+space=mnv1", "wandb.mode=disabled", cwd=tmp_path)
    assert run.returncode == 2 and "out='" in run.stderr and "does not exist" in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_supernet_search_scores_the_reference_at_a_width_of_its_space(trained, tmp_path):
    """The reference row scales MobileNet to the budget; a supernet can score it only at one of
    the space's widths (at the budget's own width, 0.27 here, it is no subnet: that was a crash)."""
    run = cli("nas.search", "+space=mnv1", "space.width=[0.25]", "+budget.mflops=45", "proxy=supernet",
              f"proxy.supernet={trained}", "n_trials=2", "wandb.mode=disabled", "proxy.threads=1",
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    db = next(tmp_path.glob("outputs/*/study.db"))
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    ref = study.user_attrs["reference"]
    assert ref["width"] == 0.25 and ref["mflops"] <= 45 and 0.0 <= ref["accuracy"] <= 1.0
    assert "ref " in run.stdout  # the table's reference row


def test_a_multirun_needs_an_existing_supernet(tmp_path):
    run = cli("nas.search", "-m", "+space=mnv1", "+budget.mflops=28", "proxy=supernet", "+worker=range(2)",
              "wandb.mode=disabled", cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "needs an existing supernet" in run.stderr
    assert not list(tmp_path.glob("multirun/*/study.db"))


def test_subnets_of_a_step_are_reproducible():
    from nas.model.supernet import SuperNet
    from nas.training.supernet import SupernetModule
    from search_spaces import get_space

    space = get_space("mnv1")
    module = SupernetModule(SuperNet(space, 10, 1), lambda g: 16, random_subnets=2, seed=5)
    first = [str(g) for g in module.subnets()]
    again = [str(g) for g in module.subnets()]
    assert first == again and len(first) == 4
    assert first[0] == str(space.extreme(True)) and first[1] == str(space.extreme(False))


def test_watched_subnets_are_fixed_within_the_budget_and_change_no_training_draw():
    """supernet.val_random: the same subnets every epoch (and for the same seed), each within
    the budget; the subnets the steps train are those drawn without any watched."""
    from nas.arch.cost import cost
    from nas.model.supernet import SuperNet
    from nas.training.supernet import SupernetModule, watched_line
    from search_spaces import get_space

    space = get_space("mnv2")
    net = SuperNet(space, 10, 1)
    watching = SupernetModule(net, lambda g: 16, max_mflops=150, seed=3, val_random=5)
    again = SupernetModule(net, lambda g: 16, max_mflops=150, seed=3, val_random=5)
    plain = SupernetModule(net, lambda g: 16, max_mflops=150, seed=3)
    assert len(watching.watched) == 5 and plain.watched == []
    assert [str(g) for g in watching.watched] == [str(g) for g in again.watched]
    assert len({str(g) for g in watching.watched}) == 5
    assert all(cost(g, 10, 1).mflops <= 150 for g in watching.watched)
    for step in (0, 7):
        assert _subnets_at(watching, step) == _subnets_at(plain, step)
    metrics = {"val_acc_random_0": 0.25, "val_acc_random_1": 0.5, "val_acc_random_2": 0.75}
    assert watched_line(metrics, 3) == ", 3 random 0.5000 (0.2500-0.7500)"
    assert watched_line(metrics, 0) == ""


def test_a_budget_trains_only_subnets_within_it_under_a_teacher_of_its_size():
    """supernet.mflops: every subnet of every step is within the budget, the largest (the
    teacher) too, and it has more MACs than any subnet drawn; no budget, or one the space's
    largest fits, keeps the space's largest."""
    from nas.arch.cost import cost
    from nas.model.supernet import SuperNet
    from nas.training.supernet import SupernetModule, teacher_within
    from search_spaces import get_space

    space = get_space("mnv2")
    largest = space.extreme(True)
    assert cost(largest, 10, 1).mflops > 1000
    module = SupernetModule(SuperNet(space, 10, 1), lambda g: 16, max_mflops=150, random_subnets=3, seed=1)
    teacher = module.largest
    assert 140 < cost(teacher, 10, 1).mflops <= 150 and space.contains(teacher)
    drawn = []
    for step in range(40):
        module.trainer = None
        subnets = _subnets_at(module, step)
        assert subnets[0] == teacher and subnets[1] == space.extreme(False)
        drawn += subnets[2:]
    assert all(cost(g, 10, 1).mflops <= 150 for g in drawn)
    assert max(cost(g, 10, 1).macs for g in drawn) <= cost(teacher, 10, 1).macs
    assert len({str(g) for g in drawn}) == len(drawn)  # random draws, not one subnet again
    # the teacher keeps the largest one's activations where the budget and the shapes allow
    assert {st.act for st in teacher.stages} == {largest.stages[0].act}
    assert teacher_within(space, None, 10, 1) == largest
    assert teacher_within(space, 1e6, 10, 1) == largest


def _subnets_at(module, step: int, epoch: int = 0):
    """`module.subnets()` as at global step `step` of epoch `epoch`."""
    from unittest.mock import PropertyMock, patch

    from nas.training.supernet import SupernetModule

    with patch.object(SupernetModule, "global_step", new_callable=PropertyMock, return_value=step), \
            patch.object(SupernetModule, "current_epoch", new_callable=PropertyMock, return_value=epoch):
        return module.subnets()


def test_progressive_shrinking_releases_the_held_genes_one_phase_at_a_time():
    """supernet.progressive=[k,n+t] over 7 epochs after one largest-only epoch: 3 phases of 2
    epochs; the subnets of phase 1 have the teacher's k, n and t in every stage, those of phase
    2 its n and t (their k varies), those of phase 3 vary in all; every one within the budget.
    Without it the draws are those of before the key existed."""
    from nas.arch.cost import cost
    from nas.model.supernet import SuperNet
    from nas.training.supernet import SupernetModule
    from search_spaces import get_space

    space = get_space("mnv2")
    net = SuperNet(space, 10, 1)
    module = SupernetModule(net, lambda g: 16, max_mflops=200, seed=1, largest_epochs=1, epochs=7,
                            progressive=(("k",), ("n", "t")))
    teacher = module.largest
    assert [module.phase(e) for e in range(1, 7)] == [0, 0, 1, 1, 2, 2]
    assert module.phase_label(0) == " (largest only)"
    assert module.phase_label(1) == " (phase 1/3, held at the teacher's: k, n, t)"
    assert module.phase_label(6) == " (phase 3/3, every gene elastic)"

    def drawn(epoch: int) -> list:
        return [g for step in range(12) for g in _subnets_at(module, step, epoch)[1:]]

    def same(g, gene: str) -> bool:
        return all(getattr(a, gene) == getattr(b, gene)
                   for a, b in zip(g.stages, teacher.stages, strict=True))

    assert _subnets_at(module, 0, 0) == [teacher]
    phases = ((1, ("k", "n", "t"), ("c",)), (3, ("n", "t"), ("k", "c")), (5, (), ("k", "n", "t")))
    for epoch, held, free in phases:
        subnets = drawn(epoch)
        assert all(cost(g, 10, 1).mflops <= 200 for g in subnets)
        assert all(same(g, gene) for g in subnets for gene in held), (epoch, held)
        assert all(not all(same(g, gene) for g in subnets) for gene in free), (epoch, free)
        assert len({g.width for g in subnets}) > 1  # an unlisted gene: elastic in every phase
    plain = SupernetModule(net, lambda g: 16, max_mflops=200, seed=1, largest_epochs=1, epochs=7)
    last = SupernetModule(net, lambda g: 16, max_mflops=200, seed=1, largest_epochs=1, epochs=7,
                          progressive=(("k",), ("n", "t")))
    for step in (0, 5):  # the last phase draws from the whole space, as a run without phases
        assert _subnets_at(last, step, 6) == _subnets_at(plain, step, 6)


def test_fixing_genes_at_a_genotype_narrows_only_those():
    from search_spaces import get_space

    for name in ("mnv2", "xception", "mnv1"):
        space = get_space(name)
        g = space.sample(3)
        every = space.fixed_at(g, ["width", "resolution", "stem", "head", "dropout", "block", "c", "n", "k",
                                   "t", "act", "place", "residual", "m", "order", "grow", "lead_act"])
        assert every.size() == 1 and every.sample(0) == g, name
        narrowed = space.fixed_at(g, ["k"])
        assert 1 < narrowed.size() < space.size()
        assert all(a.k == b.k for i in range(20) for a, b in zip(narrowed.sample(i).stages, g.stages,
                                                                   strict=True))
    with pytest.raises(ValueError, match="no gene 'kernel'"):
        get_space("mnv2").fixed_at(g, ["kernel"])


def test_a_search_training_its_supernet_trains_it_for_its_budget(tmp_path):
    """proxy=supernet with no file yet: the supernet is trained for the search's budget (its
    file says so); a search with a larger budget is warned that it reaches untrained subnets;
    proxy.val_images scores every candidate on that many fixed validation images."""
    import torch

    run = cli("nas.search", *SMALL[:2], "+budget.mflops=20", "proxy=supernet", "supernet.epochs=1",
              *[a for a in SMALL[2:] if a.startswith("supernet.")], "n_trials=3", "reference=false",
              "proxy.val_images=40", "wandb.mode=disabled", "proxy.threads=1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "training one first (subnets within 20 MFLOPs)" in run.stdout
    path = next(tmp_path.glob("outputs/*/supernet.pt"))
    meta = torch.load(path, map_location="cpu", weights_only=False)["meta"]
    assert meta["recipe"]["mflops"] == 20
    db = next(tmp_path.glob("outputs/*/study.db"))
    url = f"sqlite:///{db}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(abs(t.value * 40 - round(t.value * 40)) < 1e-9 for t in done)
    wider = cli("nas.search", *SMALL[:2], "+budget.mflops=28", "proxy=supernet", f"proxy.supernet={path}",
                "n_trials=1", "reference=false", "wandb.mode=disabled", "proxy.threads=1", cwd=tmp_path)
    assert wider.returncode == 0, wider.stderr
    assert "trained only subnets within 20 MFLOPs" in wider.stdout + wider.stderr
    refused = cli("nas.search", *SMALL[:2], "+budget.mflops=28", "proxy.val_images=40", cwd=tmp_path)
    assert refused.returncode == 2 and "proxy.val_images=40" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_validate_reports_each_evaluators_agreement_with_stand_alone_training(trained):
    """With the proxy as long as the stand-alone training, both train the same networks from
    the same seeds: the proxy's accuracies equal the stand-alone ones, so its tau is exactly 1."""
    from nas.common.stats import kendall

    run_dir = trained.parent
    run = cli("nas.supernet", "validate", *SMALL, "validate.n=3", "validate.epochs=1",
              "validate.proxy_epochs=1", cwd=run_dir.parents[2])
    assert run.returncode == 0, run.stderr
    assert "supernet (inherited weights)" in run.stdout and "Kendall tau" in run.stdout
    report = json.loads((run_dir / "validate.json").read_text())
    rows = report["rows"]
    assert len(rows) == 3 and len({r["genotype"] for r in rows}) == 3
    assert [r["proxy"] for r in rows] == [r["standalone"] for r in rows]
    assert report["proxy"]["kendall_tau"] == pytest.approx(1.0)
    truth = [r["standalone"] for r in rows]
    expected = kendall([r["supernet"] for r in rows], truth)
    got = report["supernet"]["kendall_tau"]
    assert (got != got and expected != expected) or got == pytest.approx(expected)


def test_it_trains_under_ddp_on_two_cpu_processes(tmp_path):
    """Lightning's DDP with the weights a step's subnets do not use allowed for: both ranks
    train, one writes the file and prints the epoch lines."""
    run = cli("nas.supernet", "train", *SMALL, "supernet.epochs=1", "supernet.accelerator=cpu",
              "supernet.devices=2", "supernet.strategy=ddp", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("epoch 1/1") == 1
    assert (tmp_path / "outputs" / "supernet" / "mnv1-digits" / "supernet.pt").is_file()


def test_new_keys_at_their_defaults_keep_earlier_identities():
    """proxy.val_images=0 and supernet.mflops=null leave a study's identity and a supernet's
    recorded recipe as they were before the keys existed (earlier studies and files resume)."""
    from nas.cli.search import precheck
    from nas.search.study import study_identity

    plain = study_identity(precheck(["+space=mnv1", "+budget.mflops=28"]), ["maximize"])
    assert "val_images" not in plain["proxy"]
    subset = study_identity(precheck(["+space=mnv1", "+budget.mflops=28", "proxy=supernet",
                                      "proxy.val_images=40"]), ["maximize"])
    assert subset["proxy"]["val_images"] == 40


def test_an_earlier_supernet_file_records_no_budget(trained):
    import torch

    recipe = torch.load(trained, map_location="cpu", weights_only=False)["meta"]["recipe"]
    # its keys at their defaults: as before they existed
    assert "mflops" not in recipe and "unshared" not in recipe and "progressive" not in recipe


def test_a_supernet_with_unshared_genes_is_trained_loaded_and_searched(tmp_path):
    """supernet.unshared=[residual,place]: the file records it, loads with a copy of each stage's
    tensors per choice, and a search scores candidates with it."""
    import torch

    from nas.training.supernet import load_supernet
    from search_spaces import get_space

    run = cli("nas.supernet", "train", *SMALL, "supernet.epochs=1", "supernet.unshared=[residual,place]",
              cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    path = tmp_path / "outputs" / "supernet" / "mnv1-digits" / "supernet.pt"
    assert torch.load(path, map_location="cpu", weights_only=False)["meta"]["recipe"]["unshared"] == [
        "residual", "place"]
    from dataclasses import replace

    net, _ = load_supernet(path, replace(get_space("mnv1"), width=(0.25,)))
    assert any("@residual=" in k and ",place=" in k for k in net.layout)
    search = cli("nas.search", *SMALL[:2], "+budget.mflops=28", "proxy=supernet", f"proxy.supernet={path}",
                 "n_trials=2", "reference=false", "wandb.mode=disabled", "proxy.threads=1", cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    db = next(tmp_path.glob("outputs/*/study.db"))
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{db}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 2
