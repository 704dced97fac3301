"""What a new user hits first: README commands from a fresh folder with relative paths, and
bad input refused in one line with exit status 2, leaving nothing stored behind."""

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from nas.cli.search import precheck
from nas.errors import UserError
from nas.search.run import claim_run_dir, run_search
from nas.search.study import trained_count
from tests.extras import need
from tests.tiny import GENOTYPE, TINY, stored_study

ROOT = Path(__file__).resolve().parents[1]


def nas(command: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"nas.{command}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["seed=-1"], ["seed=-1", "in [0, 4294967295]"]),
    (["proxy.resolution=100000"], ["proxy.resolution=100000", "[8, 1024]"]),
    (["pruner.n_startup_trials=-1"], ["pruner.n_startup_trials=-1", "in [0, 1000000000]"]),
    (["study_name="], ["study_name=''", "non-empty"]),
    (["space.width=[]"], ["space.width=[]", "at least one"]),
    (["n_trial=5"], ["n_trial", "did you mean n_trials?", "leading +"]),
    (["proxy.epoch=3"], ["proxy.epoch", "did you mean proxy.epochs?"]),
    (["+proxy.epochs=3"], ["proxy.epochs is already in the config", "without the leading +"]),
    (["space.width=[100]"], ["space.width=[100.0]", "(0, 4]"]),
    (["space.resolution=[100000]"], ["space.resolution=[100000]", "[8, 1024]"]),
    (["storage.url=study.db"], ["'study.db' is not a storage URL", "sqlite:///FILE"]),
    (["data.root=~/data"], ["cannot parse 'data.root=~/data'", "quoted value", "$HOME"]),
    (["latency.backend=tensorrt", "+budget.latency_ms=5"],
     ["latency.backend='tensorrt' is not valid", "torch, onnxruntime"]),
])
def test_bad_search_settings_are_refused_before_anything_is_stored(tmp_path, args, words):
    r = nas("search", *TINY, *args, cwd=tmp_path)
    refused(r, *words)
    assert not list(tmp_path.rglob("study.db"))


@pytest.mark.parametrize(("args", "words"), [
    (["space=mnv2", "+budget.mflops=300"], ["+space=<name>"]),
    (["+space=mnv2", "budget.mflops=300"], ["+budget.mflops=<value>"]),
])
def test_a_missing_plus_is_explained(tmp_path, args, words):
    refused(nas("search", *args, cwd=tmp_path), *words)


def test_readme_multirun_with_the_default_relative_sweep_folder_fills_one_study(tmp_path):
    r = nas("search", "-m", *TINY, "n_trials=2", "+worker=range(2)", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    db = tmp_path / "multirun" / "mnv1-mflops28-digits" / "study.db"
    study = optuna.load_study(study_name=db.parent.name, storage=f"sqlite:///{db}")
    assert trained_count(study) >= 2


def test_relative_sqlite_url_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "storage.url=sqlite:///study.db"
    run_search(precheck([*TINY, url, "n_trials=1"]), Path("run"))
    summary = run_search(precheck([*TINY, url, "n_trials=2"]), Path("run"))
    assert summary["trained"] + summary["pruned"] == 2
    assert (tmp_path / "study.db").is_file()


def readme_search_examples() -> list[list[str]]:
    """The distinct single-process `python -m nas.search` lines of the code blocks of the README
    and then of the docs pages, as arguments (comments cut, $HOME expanded); multirun, worker
    and cluster lines left out."""
    import os
    import shlex

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks = [b for page in pages for b in page.read_text().split("```")[1::2]]
    out = []
    for line in (ln.strip() for b in blocks for ln in b.splitlines()):
        if not line.startswith("python -m nas.search ") or line.endswith("\\"):
            continue
        args = shlex.split(os.path.expandvars(line.split("  #")[0]))[3:]
        if "-m" in args or any(a.startswith(("+worker", "storage=")) for a in args) or args in out:
            continue
        out.append(args)
    return out


def test_readme_examples_are_separate_studies(monkeypatch):
    from nas.training.data import Cifar10DataModule

    monkeypatch.setattr(Cifar10DataModule, "check", lambda self: None)  # its data.root is the user's
    examples = readme_search_examples()
    assert len(examples) >= 8, examples  # the README's, and the searching, latency and supernet pages'
    assert ["+space=mnv2", "+budget.mflops=300"] in examples
    names = {}
    for args in examples:
        names.setdefault(precheck(args).study_name, set()).add(tuple(sorted(args)))
    assert "mnv2-mflops300-digits" in names  # the README's default name
    clashes = {name: argsets for name, argsets in names.items() if len(argsets) > 1}
    assert not clashes, clashes
    # A rerun is another process: it must find the same names to resume the same studies.
    code = ("import json, sys\n"
            "from nas.training.data import Cifar10DataModule\n"
            "from nas.cli.search import precheck\n"
            "Cifar10DataModule.check = lambda self: None\n"
            "print(json.dumps([precheck(a).study_name for a in json.loads(sys.argv[1])]))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(examples)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == [precheck(args).study_name for args in examples]


def test_a_refused_resume_says_how_to_start_a_new_study(tmp_path):
    run_search(precheck([*TINY, "n_trials=1", "study_name=mine"]), tmp_path)
    with pytest.raises(UserError, match=r"study_name=<new name>"):
        run_search(precheck([*TINY, "n_trials=1", "study_name=mine", "proxy.epochs=2"]), tmp_path)


def test_a_run_directory_in_use_is_refused(tmp_path):
    lock = claim_run_dir(tmp_path)
    try:
        with pytest.raises(UserError, match="in use by another search"):
            run_search(precheck([*TINY, "n_trials=1"]), tmp_path)
    finally:
        lock.close()
    assert not (tmp_path / "study.db").exists()


def test_plots_share_one_plotly_script_beside_the_run_folders(tmp_path):
    run = tmp_path / "outputs" / "one"
    run_search(precheck([*TINY, "n_trials=2"]), run)
    assert (tmp_path / "outputs" / "plotly.min.js").stat().st_size > 1_000_000
    assert not (run / "plotly.min.js").exists()
    html = (run / "pareto_front.html").read_text()
    assert 'src="../plotly.min.js"' in html and len(html) < 200_000


def test_zero_cost_progress_names_the_score_not_an_accuracy(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nas")
    run_search(precheck([*TINY, "n_trials=2", "proxy=zero_cost", "proxy.kind=naswot"]), tmp_path)
    text = "\n".join(caplog.messages)
    assert "naswot score (zero-cost, no training)" in text and "epochs at" not in text
    assert " naswot " in text and " acc " not in text


def test_failing_trials_stop_the_search_with_exit_2_naming_the_error(tmp_path, monkeypatch):
    from nas.search.loop import Searcher

    def broken(self, g, *args, **kw):
        raise RuntimeError("the data do not fit")

    monkeypatch.setattr(Searcher, "train", broken)
    with pytest.raises(UserError, match=r"5 trials in a row failed.*the data do not fit"):
        run_search(precheck([*TINY, "n_trials=3"]), tmp_path)


def test_an_image_folder_too_small_to_split_is_refused(tmp_path):
    from PIL import Image

    for c in "abc":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.new("RGB", (12, 12), (10, 20, 30)).save(tmp_path / "imgs" / c / "x.png")
    r = nas("search", *TINY, "n_trials=1", "data=imagefolder", "data.root=imgs", cwd=tmp_path)
    refused(r, "remain for training", "need at least")


def test_binary_genotype_file_is_refused_by_train_and_cost(tmp_path):
    (tmp_path / "g.yaml").write_bytes(bytes(range(256)) * 4)
    refused(nas("train", "+genotype=g.yaml", cwd=tmp_path), "g.yaml", "cannot be read as text")
    refused(nas("cost", "+genotype=g.yaml", cwd=tmp_path), "g.yaml")


def test_cost_refuses_a_space_and_a_genotype_together(tmp_path):
    refused(nas("cost", "+space=mnv2", f"+genotype={GENOTYPE}", cwd=tmp_path), "not both")


def test_latency_device_cuda_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = nas("search", *TINY, "+budget.latency_ms=50", "latency.device=cuda", "n_trials=1", cwd=tmp_path)
    refused(r, "'cuda'", "valid: cpu")
    assert not list(tmp_path.rglob("study.db"))


def test_train_help_lists_only_its_own_groups(tmp_path):
    r = nas("train", "--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "data: cifar10, cluttered_digits, digits, imagefolder" in r.stdout
    assert "sampler" not in r.stdout and "pruner" not in r.stdout


# ----- export --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    run = tmp_path_factory.mktemp("search") / "run"
    run_search(precheck([*TINY, "n_trials=2"]), run)
    return run


def test_export_of_a_study_db_writes_beside_it(searched, tmp_path):
    r = nas("export", str(searched / "study.db"), "--no-onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((searched / "exported").iterdir())
    assert not (tmp_path / "exported").exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--opset", "3"], ["--opset 3", "[14, 20]"]),
    (["--top-k", "0"], ["--top-k 0"]),
])
def test_bad_export_arguments_are_refused(searched, tmp_path, args, words):
    refused(nas("export", str(searched), *args, cwd=tmp_path), *words)


def test_export_to_an_existing_file_is_refused(searched, tmp_path):
    (tmp_path / "taken").write_text("keep me")
    refused(nas("export", str(searched), "--out", "taken", cwd=tmp_path), "existing file")
    assert (tmp_path / "taken").read_text() == "keep me"


def test_onnx_check_is_relative_to_the_output_scale(tmp_path):
    need("onnxruntime", "onnx")
    from nas.arch.genotype import parse
    from nas.model.builder import build_model
    from nas.model.files import write_model_files

    g = parse(GENOTYPE)
    model = build_model(g, 10, 1).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(1e15)  # logits ~1e15: an absolute 1e-4 would fail them
    info = write_model_files(model, g, tmp_path / "big", 1, {})
    assert info["onnx_max_abs_diff"] > 1e-4
    assert info["onnx_max_rel_diff"] <= 1e-4


# ----- full training -------------------------------------------------------------------------
def _train(run_dir: Path, *args: str):
    from nas.cli.train import precheck as train_precheck
    from nas.training.train import run_training

    cfg = train_precheck([f"+genotype={GENOTYPE}", "trainer.max_epochs=1", "wandb.mode=disabled",
                          "trainer.progress=false", "export=false", *args])
    return run_training(cfg, run_dir)


def test_train_run_folder_has_an_identity(tmp_path):
    first = _train(tmp_path, "resolution=16")
    again = _train(tmp_path, "resolution=16")  # finished: reported, not retrained
    assert again == first
    with pytest.raises(UserError, match="holds a training with another resolution"):
        _train(tmp_path, "resolution=24")
    text = (tmp_path / "result.json").read_text()
    assert "NaN" not in text and json.loads(text)["test_acc"] == first["test_acc"]


def test_train_folder_name_follows_the_settings():
    from omegaconf import OmegaConf

    from nas.cli.train import _train_name

    def name(**over):
        cfg = OmegaConf.create({"genotype": GENOTYPE, "data": {"name": "digits", "root": None},
                                "resolution": over.pop("resolution", None),
                                "trainer": {"lr": 0.05, "progress": True, **over}})
        return _train_name(_root_=cfg)

    assert name() == name(progress=False)  # display settings do not make another run
    assert name() != name(resolution=32) != name(lr=0.1)


def test_a_failed_export_check_keeps_the_finished_training(tmp_path, monkeypatch):
    import nas.model.files
    from nas.model.files import ExportError

    def failing(*args, **kw):
        raise ExportError("ONNX output differs")

    monkeypatch.setattr(nas.model.files, "write_model_files", failing)
    result = _train(tmp_path, "resolution=16", "export=true")
    stored = json.loads((tmp_path / "result.json").read_text())
    assert stored["test_acc"] == result["test_acc"] and "ONNX output differs" in stored["export_error"]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_data_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from nas.common.config import DataConfig

    d = DataConfig(name="cifar10", root="data/cifar")
    d.validate()
    assert d.root == str(tmp_path / "data" / "cifar")


# ----- what the README walk of this stop found ---------------------------------------------
def test_a_setting_of_another_data_option_names_that_option(tmp_path):
    refused(nas("search", *TINY, "data.num_workers=4", cwd=tmp_path),
            "data.num_workers is a setting of data=imagefolder only")


def test_export_without_a_recorded_data_shape_uses_the_study_data(searched, tmp_path):
    """A study made by racing workers once lacked `data_shape`: the export must still build
    the network for the study's data (digits: 10 classes, 1 channel), not for ImageNet."""
    import sqlite3

    db = tmp_path / "study.db"
    with sqlite3.connect(searched / "study.db") as src, sqlite3.connect(db) as dst:
        src.backup(dst)  # the search's file is in WAL mode: a byte copy may miss recent pages
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}")
    study_id = storage.get_study_id_from_name(optuna.get_all_study_summaries(storage)[0].study_name)
    storage.set_study_user_attr(study_id, "data_shape", None)
    del storage
    r = nas("export", str(db), "--no-onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info = json.loads(next((tmp_path / "exported").glob("*/info.json")).read_text())
    assert (info["num_classes"], info["in_channels"]) == (10, 1)


def test_a_journal_study_is_exported_from_its_url(tmp_path):
    journal = tmp_path / "shared" / "study.journal"
    journal.parent.mkdir()
    run_search(precheck([*TINY, "n_trials=1", "storage=journal", f"storage.url=journal:{journal}"]),
               tmp_path / "run")
    r = nas("export", f"journal:{journal}", "--no-onnx", "--out", "exp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "exp").glob("*/genotype.yaml"))


def test_the_reference_is_scaled_to_a_latency_budget_too():
    from nas.arch.cost import cost
    from nas.search.loop import scaled_reference
    from search_spaces import get_space

    space = get_space("mnv2")
    calls = []

    def latency(g):  # a stand-in predictor: 1 ms per MFLOP
        calls.append(g.width)
        return cost(g, 10, 1).mflops

    by_flops = scaled_reference(space, {"mflops": 300}, 10, 1)
    both = scaled_reference(space, {"mflops": 300, "latency_ms": 100}, 10, 1, latency)
    assert latency(both) <= 100 < latency(replace(both, width=round(both.width + 0.01, 2)))
    assert both.width < by_flops.width
    assert len(calls) < 15  # bisection, not one measurement per width
    assert scaled_reference(space, {"latency_ms": 0.001}, 10, 1, latency) is None


def test_only_worker_0_trains_the_reference(tmp_path):
    summary = run_search(precheck([*TINY, "n_trials=1", "reference=true", "+worker=1",
                                   "study_name=shared"]), tmp_path / "w1", shared_dir=tmp_path)
    assert summary["reference_accuracy"] is None
    assert "reference" not in stored_study(tmp_path, summary["study"]).user_attrs
    first = run_search(precheck([*TINY, "n_trials=1", "reference=true", "+worker=0", "study_name=shared"]),
                       tmp_path / "w0", shared_dir=tmp_path)
    reference = stored_study(tmp_path, summary["study"]).user_attrs["reference"]
    assert reference["accuracy"] == first["reference_accuracy"] and reference["mflops"] <= 28


def test_a_journal_in_a_folder_that_does_not_exist_is_refused_naming_the_folder(tmp_path):
    r = nas("search", *TINY, f"storage.url=journal:{tmp_path}/shared/study.journal", "+worker=3",
            cwd=tmp_path)
    refused(r, f"folder '{tmp_path / 'shared'}' does not exist")
    assert not (tmp_path / "shared").exists()
