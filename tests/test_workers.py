"""Several workers on one study: shared storages, multirun, SIGTERM, corrupt files."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli.search import precheck
from nas.search.run import open_search_study
from nas.search.study import open_storage, trained_count
from tests.extras import need
from tests.tiny import tiny

ROOT = Path(__file__).resolve().parents[1]


def workers(*changes: str) -> list[str]:
    """TINY for workers that all join the study "shared", with the sampler's own random start."""
    return tiny("study_name=shared", *changes, drop=["sampler.n_startup_trials"])


WORKERS = workers()


def search(*args, cwd=ROOT):
    return subprocess.Popen([sys.executable, "-m", "nas.search", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def urls(tmp_path):
    return {"sqlite": f"sqlite:///{tmp_path / 'study.db'}",
            "journal": f"journal:{tmp_path / 'study.journal'}"}


# Journal storage is covered by the SIGKILL test below and the multirun tests; four workers run
# on the README's default (SQLite) and on the cluster's (PostgreSQL).
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_four_concurrent_workers_reach_n_trials_together(tmp_path, kind, request):
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else urls(tmp_path)[kind]
    workers, n_trials = 4, 5
    # As `-m` does: the study is created once, before the workers start.
    open_search_study(precheck([*WORKERS, f"storage={kind}", f"storage.url={url}"]), tmp_path, 0)
    procs = [search(*WORKERS, f"n_trials={n_trials}", f"storage={kind}", f"storage.url={url}",
                    f"+worker={i}", f"hydra.run.dir={tmp_path / f'w{i}'}") for i in range(workers)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # Each worker stops once the study holds n_trials: at most the others' trials in flight more.
    assert n_trials <= trained_count(study) <= n_trials + workers - 1
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    trained = [t for t in trials if t.user_attrs.get("status") in ("trained", "pruned")]
    assert len({t.user_attrs["worker"] for t in trained}) >= 2  # the work was shared
    for t in trained:
        assert t.user_attrs["mflops"] <= 28 and t.user_attrs["params_m"] > 0
        assert 0 <= t.user_attrs["accuracy"] <= 1
        assert t.user_attrs["genotype"] and t.user_attrs["hash"]


def test_multirun_workers_share_the_sweep_directory_storage(tmp_path):
    # Hydra's default, relative sweep folder (multirun/<study>), from a fresh folder.
    p = search("-m", *WORKERS, "n_trials=3", "+worker=range(2)", cwd=tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "launching workers" in out
    db = tmp_path / "multirun" / "shared" / "study.db"
    assert db.is_file()
    assert not (tmp_path / "multirun" / "shared" / "worker-0" / "study.db").exists()
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    assert trained_count(study) == 3


def test_slurm_launcher_config_composes_and_local_submitit_runs_workers_in_parallel(tmp_path):
    need("submitit", "cluster")
    from hydra import compose, initialize_config_dir

    from nas.cli.common import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("search", overrides=["+space=mnv2", "hydra/launcher=slurm",
                                           "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.array_parallelism == 64
    assert launcher.cpus_per_task == 4 and launcher.timeout_min == 240

    # The README's command: the default (relative) sweep folder, from a fresh folder.
    p = search("-m", "hydra/launcher=local", *WORKERS, "n_trials=4", "+worker=range(2)", cwd=tmp_path)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "Submitit 'local' sweep" in out + err
    db = tmp_path / "multirun" / "shared" / "study.db"
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
    trained = [t for t in study.get_trials() if t.user_attrs.get("status") in ("trained", "pruned")]
    assert 4 <= len(trained) <= 5
    assert len({t.user_attrs["worker"] for t in trained}) == 2
    # Both workers were training at the same time (a parallel launcher, not one after another).
    spans = {}
    for t in trained:
        w = t.user_attrs["worker"]
        lo, hi = spans.get(w, (t.datetime_start, t.datetime_complete))
        spans[w] = (min(lo, t.datetime_start), max(hi, t.datetime_complete))
    (a0, a1), (b0, b1) = spans.values()
    assert a0 < b1 and b0 < a1


def test_sigterm_fails_the_running_trial_and_exits(tmp_path):
    url = urls(tmp_path)["sqlite"]
    args = workers("proxy.epochs=200", "n_trials=2", f"storage.url={url}")
    # Created here first, so that our polling never races the worker's schema creation.
    open_search_study(precheck(args), tmp_path, 0)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - a file, not a pipe nobody reads while we poll
    p = subprocess.Popen([sys.executable, "-m", "nas.search", *args,
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, stdout=log,
                         stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    running = []
    while time.time() < deadline and not running and p.poll() is None:
        time.sleep(0.5)
        study = optuna.load_study(study_name="shared", storage=open_storage(url))
        running = [t for t in study.get_trials() if t.state == TrialState.RUNNING
                   and "hash" in t.user_attrs and t.user_attrs.get("status") is None]
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
    p = search(*WORKERS, "n_trials=1", "storage=journal", f"storage.url=journal:{journal}",
               f"hydra.run.dir={tmp_path / 'run'}")
    _out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert "cannot be opened" in err and len(err.strip().splitlines()) == 1
    assert journal.read_bytes() == before


def test_postgres_storage_needs_a_url():
    from nas.errors import UserError
    from nas.search.run import storage_url

    cfg = precheck([*WORKERS, "storage=postgres"])
    with pytest.raises(UserError, match=r"storage=postgres needs storage\.url"):
        storage_url(cfg, Path("."))


# SQLite and PostgreSQL share Optuna's RDB heartbeat code: PostgreSQL (the cluster's) and the
# journal (its own heartbeat) are the two implementations.
@pytest.mark.parametrize("kind", ["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkilled_worker_trial_is_failed_and_retried_by_the_other(tmp_path, kind, request):
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else urls(tmp_path)[kind]
    # Long trials (8 epochs) of few images: the victim is surely killed mid-training, cheaply.
    args = workers("proxy.epochs=8", "proxy.subset=0.1", "n_trials=3", f"storage={kind}",
                   f"storage.url={url}", "storage.heartbeat=1", "storage.max_retry=1")
    open_search_study(precheck(args), tmp_path, 0)
    log = open(tmp_path / "victim.log", "w")  # noqa: SIM115 - read after the process dies
    victim = subprocess.Popen([sys.executable, "-m", "nas.search", *args, "+worker=0",
                               f"hydra.run.dir={tmp_path / 'victim'}"], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    survivor = search(*args, "+worker=1", f"hydra.run.dir={tmp_path / 'survivor'}")
    deadline, killed = time.time() + 240, None
    while time.time() < deadline and killed is None and victim.poll() is None:
        time.sleep(0.2)
        study = optuna.load_study(study_name="shared", storage=open_storage(url))
        running = [t for t in study.get_trials() if t.state == TrialState.RUNNING
                   and str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}")
                   and "hash" in t.user_attrs and t.user_attrs.get("status") is None]
        if running:
            victim.kill()  # SIGKILL: no handler runs, its trial stays RUNNING
            victim.wait()
            killed = running[0]
    log.close()
    assert killed is not None, (tmp_path / "victim.log").read_text()[-2000:]
    _out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    trials = study.get_trials()
    # Read again after the victim died: the snapshot that chose it may hold its params only in
    # part (the storage read params and attributes at two moments while it was writing them).
    killed = trials[killed.number]
    assert killed.state == TrialState.FAIL and "hash" in killed.user_attrs
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert trained_count(study) >= 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_journal_trial_of_a_worker_that_stopped_beating_is_failed(tmp_path):
    from nas.search.study import fail_dead_workers

    storage = open_storage(urls(tmp_path)["journal"])
    study = optuna.create_study(storage=storage, study_name="s")
    gone = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    gone.set_user_attr("worker", "some-other-host:123")
    gone.set_user_attr("beat", time.time() - 100)
    alive = study.ask()
    alive.set_user_attr("worker", "some-other-host:124")
    alive.set_user_attr("beat", time.time())
    assert fail_dead_workers(study, heartbeat=10, max_retry=0) == [gone.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {gone.number: TrialState.FAIL, alive.number: TrialState.RUNNING}
    assert study.trials[gone.number].user_attrs["reason"] == "worker some-other-host:123 stopped beating"


@pytest.mark.postgres
def test_second_search_with_another_space_on_the_same_postgres_study_is_refused(tmp_path, postgres_url):
    common = ["reference=false", "wandb.mode=disabled", "study_name=shared", "storage=postgres",
              f"storage.url={postgres_url}", "n_trials=1"]
    first = search(*tiny(*common, drop=["pruner", "sampler.n_startup_trials"]),
                   f"hydra.run.dir={tmp_path / 'a'}")
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    before = [(t.number, t.state, t.params) for t in
              optuna.load_study(study_name="shared", storage=postgres_url).get_trials()]
    second = search("+space=mnv2", "+budget.mflops=300", "proxy.epochs=1", "proxy.resolution=16",
                    *common, f"hydra.run.dir={tmp_path / 'b'}")
    _out, err = second.communicate(timeout=300)
    assert second.returncode == 2
    assert "exists with a different space" in err and len(err.strip().splitlines()) == 1
    after = [(t.number, t.state, t.params) for t in
             optuna.load_study(study_name="shared", storage=postgres_url).get_trials()]
    assert after == before and len(before) >= 1
