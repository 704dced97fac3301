"""Stopping a worker: the signal is recorded, the worker acts on it at its next safe point,
and over-budget proposals between failures do not hide a run of failures."""

import os
import signal
import time

import optuna
import pytest

from nas.cli.search import precheck
from nas.errors import UserError
from nas.search.interrupt import StopSignals, Terminated
from nas.search.run import run_search
from tests.extras import need
from tests.tiny import TINY_RANDOM_START, stored_study, tiny


def test_a_signal_is_recorded_once_and_raised_at_the_next_check():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        signals.check()  # nothing asked yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.reason.startswith("SIGTERM")
        os.kill(os.getpid(), signal.SIGINT)  # a second one: the first reason stays
        assert signals.reason.startswith("SIGTERM") and signals.signum == signal.SIGTERM
        with pytest.raises(Terminated, match="SIGTERM"):
            signals.check()
        assert signals.requeue() is None  # not a submitit job: nothing to hand on
    assert signal.getsignal(signal.SIGTERM) is before


# "breaks": on scancel the job's other processes (W&B's service) get the signal too, and a
# trial that then fails on them before its next stop check was ended by the stop, not by its
# genotype.
@pytest.mark.parametrize("breaks", [False, True], ids=["stops at its check", "breaks after the signal"])
def test_sigterm_during_training_fails_that_trial_and_starts_no_other(tmp_path, monkeypatch, breaks):
    from nas.search.loop import Searcher

    real_train = Searcher.train
    trained = []

    def train_then_signal(self, g, seed, report=None, on_epoch=None):
        trained.append(seed)
        if len(trained) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while this trial trains
            if breaks:
                raise ConnectionResetError("Connection lost")
        return real_train(self, g, seed, report, on_epoch)

    monkeypatch.setattr(Searcher, "train", train_then_signal)
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        run_search(precheck([*TINY_RANDOM_START, "n_trials=5", f"storage.url={url}"]), tmp_path)
    trials = optuna.load_study(study_name="mnv1-mflops28-digits", storage=url).trials
    assert len(trained) == 2
    assert trials[-1].state == optuna.trial.TrialState.FAIL
    assert trials[-1].user_attrs["reason"].startswith("interrupted by SIGTERM")
    assert [t.state for t in trials].count(optuna.trial.TrialState.FAIL) == 1


def test_rejected_proposals_do_not_reset_the_failures_in_a_row(tmp_path, monkeypatch):
    from nas.search.loop import Searcher

    def broken(self, g, *args, **kw):
        raise RuntimeError("the data do not fit")

    monkeypatch.setattr(Searcher, "train", broken)
    # A tight budget: most proposals are rejected between the failing ones.
    with pytest.raises(UserError, match=r"5 trials in a row failed.*the data do not fit"):
        run_search(precheck(tiny("+budget.mflops=12", "n_trials=3", drop=["sampler.n_startup_trials"])),
                   tmp_path)
    trials = stored_study(tmp_path, "mnv1-mflops12-digits").trials
    assert [t.state for t in trials].count(optuna.trial.TrialState.FAIL) == 5
    assert any(t.user_attrs.get("status") == "rejected" for t in trials)


def test_a_time_limit_warning_lets_trials_go_on_until_the_margin(monkeypatch):
    need("submitit", "cluster")
    from submitit.core.job_environment import SignalHandler

    import nas.search.interrupt as interrupt

    handed_on = []
    submitits = SignalHandler.__new__(SignalHandler)  # what a submitit job has installed
    monkeypatch.setattr(SignalHandler, "checkpoint_and_try_requeue",
                        lambda self, signum, frame: handed_on.append(signum), raising=True)
    previous = signal.signal(signal.SIGUSR2, submitits.checkpoint_and_try_requeue)
    monkeypatch.setattr(interrupt, "job_end", lambda: time.time() + interrupt.MARGIN_S + 60)
    try:
        with StopSignals() as signals:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert signals.reason.startswith("SIGUSR2")
            signals.check()  # 60 s of grace left: trials go on
            assert not signals.expired()
            os.kill(os.getpid(), signal.SIGTERM)  # the scheduler's kill ends the grace
            with pytest.raises(Terminated, match="SIGUSR2"):
                signals.check()
            requeue = signals.requeue()
        assert requeue is not None and not handed_on
        requeue()  # after the cleanup: submitit's handler gets the signal
        assert handed_on == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
