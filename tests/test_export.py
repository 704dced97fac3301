import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from nas.cli.export import main as export_main
from nas.cli.search import precheck
from nas.common.config import TrainConfig
from nas.errors import UserError
from nas.model.files import ExportError, load_exported
from nas.search.run import run_search
from nas.training.train import run_training
from tests.extras import need
from tests.tiny import GENOTYPE, TINY_RANDOM_START

need("onnxruntime", "onnx", whole_module=True)
need("onnx", "onnx", whole_module=True)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    run = tmp_path_factory.mktemp("search")
    run_search(precheck([*TINY_RANDOM_START, "n_trials=3"]), run)
    return run


def test_export_writes_every_file_and_onnx_matches(searched, capsys):
    assert export_main([str(searched), "--top-k", "2"]) == 0
    folders = sorted((searched / "exported").iterdir())
    assert len(folders) == 2
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert {"genotype.yaml", "genotype.txt", "info.json", "model.onnx", "model.torchscript.pt",
                "state_dict.pt", "retrain.yaml"} <= names
        info = json.loads((folder / "info.json").read_text())
        assert info["onnx_max_rel_diff"] <= 1e-4
        assert info["mflops"] <= 28 and info["num_classes"] == 10 and info["in_channels"] == 1
        assert 0 <= info["proxy_accuracy"] <= 1
        assert 0 < info["latency_ms_onnxruntime"] < 1000  # timed in ONNX Runtime, fresh process
    ranks = [json.loads((f / "info.json").read_text())["proxy_accuracy"] for f in folders]
    assert ranks == sorted(ranks, reverse=True)
    out = capsys.readouterr().out
    assert "ONNX max diff" in out and "onnxruntime ms" in out


def test_exported_models_run_where_nas_cannot_be_imported(searched, tmp_path):
    export_main([str(searched), "--top-k", "1", "--out", str(tmp_path / "exp"), "--no-latency"])
    folder = next((tmp_path / "exp").iterdir())
    script = textwrap.dedent(f"""
        import sys
        sys.modules["nas"] = None  # any import of nas now fails
        sys.path = [p for p in sys.path if p not in ("", {str(ROOT)!r})]
        try:
            import nas
            raise SystemExit("nas is importable")
        except ImportError:
            pass
        import numpy as np, onnxruntime as ort, torch
        x = torch.randn(3, 1, 16, 16)
        ts = torch.jit.load({str(folder / "model.torchscript.pt")!r})
        a = ts(x)
        s = ort.InferenceSession({str(folder / "model.onnx")!r}, providers=["CPUExecutionProvider"])
        b = s.run(None, {{"input": x.numpy()}})[0]
        assert a.shape == (3, 10) and np.abs(a.detach().numpy() - b).max() < 1e-4
        assert not any(m == "nas" or m.startswith("nas.") for m in sys.modules if sys.modules[m])
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_load_exported_restores_the_weights(searched, tmp_path):
    export_main([str(searched), "--top-k", "1", "--out", str(tmp_path / "exp"), "--no-latency"])
    folder = next((tmp_path / "exp").iterdir())
    model = load_exported(folder).eval()
    ts = torch.jit.load(str(folder / "model.torchscript.pt"))
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(model(x), ts(x))


def test_pareto_export(searched, tmp_path):
    export_main([str(searched), "--pareto", "--out", str(tmp_path / "front"), "--no-onnx"])
    infos = [json.loads((f / "info.json").read_text()) for f in sorted((tmp_path / "front").iterdir())]
    assert infos
    mflops = [i["mflops"] for i in infos]
    accs = [i["proxy_accuracy"] for i in infos]
    assert mflops == sorted(mflops) and accs == sorted(accs)  # cheaper is never better on a front


def test_export_reads_the_study_only_and_a_re_export_writes_the_same_weights(searched, tmp_path):
    import hashlib

    def digest(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    listing = sorted(p.name for p in searched.iterdir())
    db = digest(searched / "study.db")
    weights = []
    for out in ("a", "b"):
        assert export_main([str(searched), "--out", str(tmp_path / out), "--no-onnx", "--no-latency"]) == 0
        (folder,) = (tmp_path / out).iterdir()
        weights.append(digest(folder / "state_dict.pt"))
    assert weights[0] == weights[1]  # fresh weights are seeded by the trial
    assert digest(searched / "study.db") == db and sorted(p.name for p in searched.iterdir()) == listing


@pytest.mark.parametrize(
    ("args", "words"),
    [(["/nonexistent/run"], "neither a run directory nor a storage URL"),
     (["{run}", "--top-k", "0"], "--top-k 0 is not valid"),
     (["{run}", "--study", "nope"], "no study 'nope'"),
     (["{run}", "--latency-threads", "0"], "--latency-threads 0 is not valid")],
)
def test_export_bad_input(searched, args, words):
    with pytest.raises(UserError, match=words):
        export_main([a.format(run=searched) for a in args])


def test_export_of_a_study_with_no_finished_trial(tmp_path):
    cfg = precheck([*TINY_RANDOM_START, "n_trials=1", "+budget.params_m=0.0001"])
    cfg.budget.pop("params_m")  # make the study, then ask the impossible through its identity
    import optuna

    from nas.search.study import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="empty", storage=storage, direction="maximize")
    t = study.ask()
    t.set_user_attr("status", "rejected")
    study.tell(t, state=optuna.trial.TrialState.PRUNED)
    with pytest.raises(ExportError, match=r"no trial finished: nothing to export \(1 rejected\)"):
        export_main([str(tmp_path)])


# ----- full training -------------------------------------------------------------------
def train_cfg(genotype: str, epochs: int, **extra) -> TrainConfig:
    return TrainConfig.from_container({
        "genotype": genotype, "resolution": 16, "export": extra.pop("export", False),
        "data": {"name": "digits"}, "wandb": {"mode": "disabled"},
        "trainer": {"max_epochs": epochs, "batch_size": 64, "lr": 0.1, "progress": False,
                    "warmup_epochs": 0.0, **extra}})


def test_training_improves_over_chance_and_exports_trained_weights(tmp_path):
    result = run_training(train_cfg(GENOTYPE, 2, export=True), tmp_path)
    assert result["test_acc"] > 0.5  # chance is 0.1 on ten digits
    info = json.loads((tmp_path / "exported" / "info.json").read_text())
    assert info["weights"] == "trained" and info["onnx_max_abs_diff"] <= 1e-4
    assert 0.5 < info["val_acc"] <= 1 and info["test_acc"] == result["test_acc"]
    model = load_exported(tmp_path / "exported")
    assert model.classifier.out_features == 10


class Crash(pl.Callback):
    """Kills training at the start of the second epoch, after the first checkpoint."""

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_resume_from_checkpoint_reaches_the_same_step_and_weights(tmp_path):
    straight = run_training(train_cfg(GENOTYPE, 2), tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(train_cfg(GENOTYPE, 2), tmp_path / "b", callbacks=[Crash()])
    assert (tmp_path / "b" / "checkpoints" / "last.ckpt").is_file()
    resumed = run_training(train_cfg(GENOTYPE, 2), tmp_path / "b")
    assert resumed["steps"] == straight["steps"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_acc"] == straight["test_acc"]


def test_checkpoint_from_another_genotype_is_refused(tmp_path):
    run_training(train_cfg(GENOTYPE, 1), tmp_path / "a")
    other = GENOTYPE.replace("c128", "c96")
    with pytest.raises(UserError, match="holds a training with another genotype"):
        run_training(train_cfg(other, 2), tmp_path / "a")  # the folder is the first one's
    cfg = train_cfg(other, 2)
    cfg.ckpt_path = str(tmp_path / "a" / "checkpoints" / "last.ckpt")
    with pytest.raises(UserError, match="is for another genotype"):
        run_training(cfg, tmp_path / "b")


def test_ema_weights_are_evaluated(tmp_path):
    result = run_training(train_cfg(GENOTYPE, 1, ema=True, ema_decay=0.9), tmp_path)
    assert 0 <= result["test_acc"] <= 1 and result["ema"]


def test_train_cli_bad_genotype_file(tmp_path):
    bad = tmp_path / "genotype.yaml"
    bad.write_text("stages: [{block: ir, c: 16, k: 4}]")
    r = subprocess.run([sys.executable, "-m", "nas.train", f"+genotype={bad}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "stages[0].k: 4 is not valid" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "nas.train"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "no genotype given" in r.stderr


def test_retrain_config_trains_the_exported_genotype(searched, tmp_path):
    export_main([str(searched), "--top-k", "1", "--out", str(tmp_path / "exp"), "--no-onnx"])
    folder = next((tmp_path / "exp").iterdir())
    r = subprocess.run([sys.executable, "-m", "nas.train", "--config-dir", str(folder),
                        "--config-name", "retrain", "trainer.max_epochs=1", "trainer.progress=false",
                        "wandb.mode=disabled", "export=false", f"hydra.run.dir={tmp_path / 'train'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "train" / "result.json").read_text())
    info = json.loads((folder / "info.json").read_text())
    assert result["genotype"] == info["genotype"]
    # The search's proxy trained at 16 px for a 224 px mnv1 genotype, scaled with its resolution.
    assert result["resolution"] == max(8, round(16 * info["resolution"] / 224))
    assert result["epochs"] == 1 and 0 <= result["test_acc"] <= 1
    # A mistyped key of the exported config: one line, as on the package's own config, no run.
    for flags in (["--config-dir", str(folder), "--config-name", "retrain"],
                  [f"--config-dir={folder}", "--config-name=retrain"]):
        bad = subprocess.run([sys.executable, "-m", "nas.train", *flags, "trainer.epochs=1",
                              f"hydra.run.dir={tmp_path / 'bad'}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            "error: unknown config key 'trainer.epochs': did you mean trainer.max_epochs? (--help lists the "
            "keys; keys with no default, +genotype=, take a leading +)"], bad.stderr
    assert not (tmp_path / "bad").exists()


def test_the_torchscript_onnx_exporter_is_still_there():
    """Exports use PyTorch's TorchScript-based ONNX exporter (deprecated since 2.9, fast, no
    extra dependency): this fails the day a PyTorch release drops it, so that the move to
    the torch.export-based exporter is made then, knowingly."""
    import inspect

    from nas.model.files import onnx_bytes

    assert "dynamo" in inspect.signature(torch.onnx.export).parameters
    graph = onnx_bytes(torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).eval(),
                       torch.randn(1, 1, 8, 8))
    import onnx

    model = onnx.load_from_string(graph)
    assert [n.op_type for n in model.graph.node] == ["Conv"]  # batch norm folded in
    assert model.producer_name == "pytorch"
