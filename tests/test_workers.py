"""Several workers on one study: shared storages, multirun, SIGTERM, corrupt files."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import open_search_study, precheck
from nas.study import open_storage, trained_count

ROOT = Path(__file__).resolve().parents[1]
TINY = ["+space=mnv1", "+budget.mflops=28", "proxy.epochs=1", "proxy.resolution=16",
        "proxy.subset=0.3", "space.width=[0.25]", "reference=false", "wandb.mode=disabled",
        "pruner=none", "study_name=shared"]


def search(*args, cwd=ROOT):
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def urls(tmp_path):
    return {"sqlite": f"sqlite:///{tmp_path / 'study.db'}",
            "journal": f"journal:{tmp_path / 'study.journal'}"}


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_concurrent_workers_reach_n_trials_together(tmp_path, kind):
    url = urls(tmp_path)[kind]
    # As `-m` does: the study is created once, before the workers start.
    open_search_study(precheck([*TINY, f"storage={kind}", f"storage.url={url}"]), tmp_path, 0)
    procs = [search(*TINY, "n_trials=4", f"storage={kind}", f"storage.url={url}", f"+worker={i}",
                    f"hydra.run.dir={tmp_path / f'w{i}'}") for i in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    trials = study.get_trials()
    assert len({t.number for t in trials}) == len(trials)
    # Each worker stops once the study holds n_trials; at most the other's trial in flight more.
    assert 4 <= trained_count(study) <= 5
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for t in trials:
        if t.state == TrialState.COMPLETE and t.user_attrs["status"] == "trained":
            assert t.user_attrs["mflops"] <= 28 and 0 <= t.value <= 1
            assert t.user_attrs["genotype"] and t.user_attrs["hash"]


def test_multirun_workers_share_the_sweep_directory_storage(tmp_path):
    p = search("-m", *TINY, "n_trials=3", "+worker=range(2)", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "launching workers" in out
    db = tmp_path / "sweep" / "study.db"
    assert db.is_file()
    assert not (tmp_path / "sweep" / "worker-0" / "study.db").exists()
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    assert trained_count(study) == 3


def test_sigterm_fails_the_running_trial_and_exits(tmp_path):
    url = urls(tmp_path)["sqlite"]
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - a file, not a pipe nobody reads while we poll
    p = subprocess.Popen([sys.executable, "-m", "nas.search", *TINY[:2], "proxy.epochs=200",
                          *TINY[3:], "n_trials=2", f"storage.url={url}",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    running = []
    while time.time() < deadline and not running:
        time.sleep(0.5)
        if (tmp_path / "study.db").exists():
            try:
                study = optuna.load_study(study_name="shared", storage=url)
                running = [t for t in study.get_trials() if t.state == TrialState.RUNNING
                           and "hash" in t.user_attrs and t.user_attrs.get("status") is None]
            except Exception:
                continue
    assert running, f"no trial started training: {(tmp_path / 'worker.log').read_text()[-2000:]}"
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    log.close()
    err = (tmp_path / "worker.log").read_text()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    study = optuna.load_study(study_name="shared", storage=url)
    states = {t.number: t.state for t in study.get_trials()}
    assert TrialState.RUNNING not in states.values()
    assert states[running[0].number] == TrialState.FAIL


def test_corrupt_journal_is_refused_and_left_untouched(tmp_path):
    journal = tmp_path / "study.journal"
    journal.write_bytes(b"{not json\n" * 3)
    before = journal.read_bytes()
    p = search(*TINY, "n_trials=1", "storage=journal", f"storage.url=journal:{journal}",
               f"hydra.run.dir={tmp_path / 'run'}")
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert "cannot be opened" in err and len(err.strip().splitlines()) == 1
    assert journal.read_bytes() == before


def test_postgres_storage_needs_a_url():
    from nas.errors import UserError
    from nas.search import storage_url

    cfg = precheck([*TINY, "storage=postgres"])
    with pytest.raises(UserError, match=r"storage=postgres needs storage\.url"):
        storage_url(cfg, Path("."))
