"""The README's one-machine path, end to end, as a user runs it from an empty folder: a tiny
search with W&B in its default (offline) mode, its export, one epoch of `nas.train` from the
exported retrain config. CI runs this file also at the declared dependency floors."""

import json
import os
import subprocess
import sys

from tests.extras import need
from tests.tiny import tiny

need("onnxruntime", "onnx", whole_module=True)

# W&B and the sampler as a user gets them
SEARCH = tiny("n_trials=2", drop=["wandb.mode", "sampler.n_startup_trials"])


def nas(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}  # the default a user gets
    return subprocess.run([sys.executable, "-m", f"nas.{module}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_search_export_and_train_from_an_empty_folder(tmp_path):
    r = nas("search", *SEARCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "outputs" / "mnv1-mflops28-digits"
    rows = json.loads((run / "trials.json").read_text())["trials"]
    trained = [row for row in rows if row.get("status") == "trained"]
    assert len(trained) == 2 and all(0 <= row["accuracy"] <= 1 and row["mflops"] <= 28 for row in trained)
    assert list(run.glob("wandb/offline-run-*")), "no offline W&B run was written"
    assert "Traceback" not in r.stderr

    r = nas("export", str(run), "--top-k", "1", "--no-latency", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (exported,) = (run / "exported").iterdir()
    info = json.loads((exported / "info.json").read_text())
    assert info["mflops"] <= 28 and info["num_classes"] == 10
    assert (exported / "model.onnx").stat().st_size > 0

    r = nas("train", "--config-dir", str(exported), "--config-name", "retrain", "trainer.max_epochs=1",
            "wandb.mode=disabled", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    (result,) = (tmp_path / "outputs" / "train").glob("*/result.json")
    figures = json.loads(result.read_text())
    assert 0 <= figures["test_acc"] <= 1 and figures["epochs"] == 1
