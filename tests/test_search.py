import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas.cli.search import precheck
from nas.errors import UserError
from nas.search import report
from nas.search.loop import Searcher
from nas.search.run import run_search
from nas.search.study import trained_count
from tests.tiny import TINY, stored_study, tiny
from tests.wandb_files import all_runs

ROOT = Path(__file__).resolve().parents[1]


def cfg_for(*extra, base=TINY):
    return precheck([*base, *extra])


def test_cli_search_writes_storage_table_csv_and_plots(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nas.search", *TINY, "n_trials=3",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    assert (run / "study.db").is_file()
    for name in ("trials.csv", "trials.json", "optimization_history.html", "pareto_front.html"):
        assert (run / name).is_file(), name
    assert "rank  trial  accuracy  MFLOPs" in r.stdout
    data = json.loads((run / "trials.json").read_text())
    trained = [t for t in data["trials"] if t["status"] == "trained"]
    assert len(trained) == 3
    assert all(t["mflops"] <= 28 and 0 <= t["accuracy"] <= 1 for t in trained)
    study = stored_study(run, "mnv1-mflops28-digits")
    assert trained_count(study) == 3
    # the table holds the study's own figures, trial by trial
    stored = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert {t["number"]: (t["accuracy"], t["genotype"]) for t in trained} == {
        t.number: (t.value, t.user_attrs["genotype"]) for t in stored}


@pytest.fixture
def trained_hashes(monkeypatch):
    """Content hashes of every genotype the searcher actually trains, in order."""
    hashes = []
    real_train = Searcher.train

    def spy(self, g, *args, **kw):
        hashes.append(g.content_hash)
        return real_train(self, g, *args, **kw)

    monkeypatch.setattr(Searcher, "train", spy)
    return hashes


def test_over_budget_proposals_are_recorded_and_never_trained(tmp_path, trained_hashes):
    cfg = cfg_for("n_trials=4")
    run_search(cfg, tmp_path)
    study = stored_study(tmp_path, cfg.study_name)
    rejected = [t for t in study.trials if t.user_attrs.get("status") == "rejected"]
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert len(trained) == 4 and len(trained_hashes) == 4
    assert rejected, "the budget should reject part of this space"
    for t in rejected:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["mflops"] > 28
        assert "over budget: mflops" in t.user_attrs["reason"]
        assert t.constraints["mflops"] > 0
        assert t.user_attrs["hash"] not in trained_hashes
        # costed, never trained (no timing bound: on a loaded machine a proposal alone can take seconds)
        assert not t.intermediate_values and "accuracy" not in t.user_attrs and "epochs" not in t.user_attrs
    for t in trained:
        assert t.constraints["mflops"] <= 0


def test_resume_reaches_n_trials_in_total(tmp_path):
    run_search(cfg_for("n_trials=2"), tmp_path)
    summary = run_search(cfg_for("n_trials=4"), tmp_path)
    study = stored_study(tmp_path, "mnv1-mflops28-digits")
    assert trained_count(study) == 4
    assert summary["trained"] == 4
    # Running again with the target met trains nothing more.
    before = len(study.trials)
    run_search(cfg_for("n_trials=4"), tmp_path)
    assert len(stored_study(tmp_path, "mnv1-mflops28-digits").trials) == before


@pytest.mark.parametrize(
    ("change", "what"),
    [(["+budget.params_m=1"], "budget"), (["proxy.epochs=2"], "proxy"),
     (["space.width=[0.5]"], "space")],
)
def test_resuming_with_a_different_study_is_refused_and_changes_nothing(tmp_path, change, what):
    run_search(cfg_for("n_trials=1"), tmp_path)
    db = tmp_path / "study.db"
    before = dump(db)
    cfg = cfg_for("n_trials=2", "study_name=mnv1-mflops28-digits", *change)
    with pytest.raises(UserError, match=f"exists with a different {what}"):
        run_search(cfg, tmp_path)
    assert dump(db) == before


def test_a_study_made_before_the_whole_recipe_was_its_identity_resumes_then_guards_it(tmp_path):
    run_search(cfg_for("n_trials=1"), tmp_path)
    study = stored_study(tmp_path, "mnv1-mflops28-digits")
    identity = study.user_attrs["identity"]
    # What nas recorded before: part of the proxy recipe, four data keys.
    old_proxy = ("kind", "prefilter", "prefilter_keep", "epochs", "resolution", "width_scale", "subset",
                 "batch_size", "optimizer", "lr", "schedule", "bn_recalibration")
    identity["proxy"] = {k: identity["proxy"][k] for k in old_proxy}
    identity["data"] = {k: identity["data"][k] for k in ("name", "root", "seed", "val_fraction")}
    study.set_user_attr("identity", identity)
    run_search(cfg_for("n_trials=2"), tmp_path)  # nothing changed: it resumes
    assert "momentum" in stored_study(tmp_path, "mnv1-mflops28-digits").user_attrs["identity"]["proxy"]
    with pytest.raises(UserError, match=r"momentum stored 0\.9, requested 0\.5"):
        run_search(cfg_for("n_trials=3", "proxy.momentum=0.5"), tmp_path)


def test_search_log_holds_the_progress_lines(tmp_path):
    run_search(cfg_for("n_trials=1"), tmp_path)
    text = (tmp_path / "search.log").read_text()
    assert "trained 1/1" in text and "rank  trial  accuracy" in text


def dump(db: Path) -> list[str]:
    """Every row of every table (the file's bytes may move between WAL and main file)."""
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_duplicate_genotypes_reuse_the_earlier_result(tmp_path, monkeypatch, trained_hashes):
    calls = trained_hashes
    # A space with exactly two genotypes under budget forces repeats.
    cfg = cfg_for("n_trials=3", "sampler=random", "max_proposals=12",
                  base=tiny("+budget.mflops=1000", "proxy.subset=0.2", "space.resolution=[128,160]",
                            drop=["sampler.n_startup_trials"]))
    from dataclasses import replace

    from nas.arch.space import StageChoices
    from nas.search.run import apply_space_overrides

    space = apply_space_overrides(cfg)
    fixed = tuple(StageChoices(block=("ds",), c=(st.c,), n=(st.n,), s=(st.s,), k=(3,), act=("relu",),
                               place=("dp",)) for st in space.reference.stages)
    monkeypatch.setattr("nas.search.run.apply_space_overrides",
                        lambda _cfg: replace(space, stages=fixed))
    run_search(cfg, tmp_path)
    study = stored_study(tmp_path, cfg.study_name)
    dups = [t for t in study.trials if t.user_attrs.get("status") == "duplicate"]
    # Only two genotypes exist: both are trained once, every later proposal is a duplicate,
    # and the run stops at max_proposals instead of looping for a third.
    assert len(calls) == 2 and len(set(calls)) == 2
    assert len(study.trials) == 12 and len(dups) == 10
    for t in dups:
        original = study.trials[t.user_attrs["duplicate_of"]]
        assert original.user_attrs["hash"] == t.user_attrs["hash"]
        assert t.value == original.value


def test_a_nan_trial_fails_with_its_reason_and_the_study_continues(tmp_path, monkeypatch):
    real_train = Searcher.train
    state = {"n": 0}

    def sometimes_diverge(self, g, seed, *args, **kw):
        state["n"] += 1
        if state["n"] == 2:  # a learning rate that really makes the loss blow up
            self.cfg.proxy.lr = 1e12
            try:
                return real_train(self, g, seed, *args, **kw)
            finally:
                self.cfg.proxy.lr = 0.05
        return real_train(self, g, seed, *args, **kw)

    monkeypatch.setattr(Searcher, "train", sometimes_diverge)
    summary = run_search(cfg_for("n_trials=3"), tmp_path)
    study = stored_study(tmp_path, "mnv1-mflops28-digits")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1
    assert "NonFiniteLoss" in failed[0].user_attrs["reason"]
    assert summary["trained"] == 3 and summary["failed"] == 1


def test_pruner_stops_trials_and_they_count_as_trained(tmp_path):
    """Pruning made certain: two stored trials reached accuracy 1.0 at every epoch, so every
    new trial is below the median after its first epoch, whatever this CPU trains to."""
    args = ("pruner=median", "pruner.n_startup_trials=1", "pruner.n_warmup_steps=0", "proxy.epochs=3",
            "sampler=random")
    run_search(cfg_for("n_trials=1", *args), tmp_path)
    cfg = cfg_for("n_trials=5", *args)
    study = stored_study(tmp_path, cfg.study_name)
    for _ in range(2):
        study.add_trial(optuna.trial.create_trial(
            value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0},
            user_attrs={"status": "trained", "mflops": 1.0, "params_m": 0.1, "genotype": "stored"}))
    run_search(cfg, tmp_path)
    study = stored_study(tmp_path, cfg.study_name)
    assert trained_count(study) == 5
    new = [t for t in study.trials if t.number > 2 and t.user_attrs.get("status") in ("trained", "pruned")]
    assert len(new) == 2
    for t in new:
        assert t.user_attrs["status"] == "pruned" and t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["pruned_at"] == 0  # right after the first epoch
        assert list(t.intermediate_values) == [0]


def test_no_trial_is_pruned_after_its_last_epoch(tmp_path):
    """Stopping after the last epoch saves nothing and would lose a finished trial."""
    args = ("pruner=median", "pruner.n_startup_trials=1", "pruner.n_warmup_steps=0", "proxy.epochs=1",
            "sampler=random")
    run_search(cfg_for("n_trials=1", *args), tmp_path)
    cfg = cfg_for("n_trials=3", *args)
    study = stored_study(tmp_path, cfg.study_name)
    study.add_trial(optuna.trial.create_trial(
        value=1.0, intermediate_values={0: 1.0},
        user_attrs={"status": "trained", "mflops": 1.0, "params_m": 0.1, "genotype": "stored"}))
    run_search(cfg, tmp_path)
    study = stored_study(tmp_path, cfg.study_name)
    assert not [t for t in study.trials if t.user_attrs.get("status") == "pruned"]
    assert trained_count(study) == 3


def test_wandb_offline_runs_one_per_trial_grouped_by_study(tmp_path):
    cfg = cfg_for("n_trials=2", "wandb.mode=offline")
    run_search(cfg, tmp_path)
    runs = {r["name"]: r for r in all_runs(tmp_path / "wandb")}
    study = stored_study(tmp_path, cfg.study_name)
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    trial_runs = [r for r in runs.values() if r["job_type"] == "trial"]
    assert len(trial_runs) == len(trained) == 2
    for t in trained:
        r = runs[f"{cfg.study_name}-trial-{t.number}"]
        assert r["group"] == cfg.study_name
        assert r["config"]["genotype"] == t.user_attrs["genotype"]
        assert r["config"]["mflops"] == pytest.approx(t.user_attrs["mflops"])
        assert r["summary"]["state"] == "COMPLETE"
        assert r["summary"]["accuracy"] == pytest.approx(t.value)
        assert [h["epoch"] for h in r["history"]] == [0]
    summary = [r for r in runs.values() if r["job_type"] == "summary"]
    assert len(summary) == 1 and summary[0]["summary"]["trials/nrows"] == len(study.trials)


def test_reference_network_is_trained_with_the_same_proxy(tmp_path):
    cfg = cfg_for("n_trials=1", "reference=true")
    summary = run_search(cfg, tmp_path)
    ref = stored_study(tmp_path, cfg.study_name).user_attrs["reference"]
    assert ref["mflops"] <= 28 and 0 <= ref["accuracy"] <= 1
    assert summary["reference_accuracy"] == ref["accuracy"]


def test_seeded_runs_propose_the_same_genotypes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = cfg_for("n_trials=2", "sampler=random")
    assert cfg.study_name == "mnv1-mflops28-digits-sampler_random"
    run_search(cfg, a)
    run_search(cfg_for("n_trials=2", "sampler=random"), b)
    ga = [r["genotype"] for r in report.rows(stored_study(a, cfg.study_name))]
    gb = [r["genotype"] for r in report.rows(stored_study(b, cfg.study_name))]
    assert ga == gb


# ----- bad input ----------------------------------------------------------------------
BAD = [
    (["+budget.mflops=300"], "no search space chosen: add +space=NAME; valid: mnv2, xception, mnv1"),
    (["+space=resnet", "+budget.mflops=300"], "unknown space 'resnet'; valid: mnv1, mnv2, xception"),
    (["+space=mnv2", "+budget.mflops=300", "sampler=cmaes"], "unknown sampler 'cmaes'; valid:"),
    (["+space=mnv2", "+budget.mflops=300", "pruner=asha"], "unknown pruner 'asha'; valid:"),
    (["+space=mnv2", "+budget.mflops=300", "data=mnist"], "unknown data 'mnist'; valid:"),
    (["+space=mnv2", "+budget.mflops=-5"], "budget.mflops=-5 is not valid: must be a positive"),
    (["+space=mnv2", "+budget.mflops=0"], "budget.mflops=0 is not valid"),
    (["+space=mnv2", "+budget.mflops=abc"], "budget.mflops='abc' is not valid: expected a number"),
    (["+space=mnv2", "+budget.flops=3"], "unknown budget key budget.flops; valid: mflops"),
    (["+space=mnv2"], "no budget given"),
    (["+space=mnv2", "+budget.mflops=300", "data=cifar10"], "data.root is required"),
    (["+space=mnv2", "+budget.mflops=300", "data=cifar10", "data.root=/nonexistent/cifar"],
     "'/nonexistent/cifar' is not a directory"),
    (["+space=mnv2", "+budget.mflops=300", "n_trials=0"], "n_trials=0 is not valid"),
    (["+space=mnv2", "+budget.mflops=300", "proxy.epochs=many"],
     "proxy.epochs='many' is not valid: expected an integer"),
    (["+space=mnv2", "+budget.mflops=300", "wandb.mode=loud"], "wandb.mode='loud' is not valid"),
    (["+space=mnv2", "+budget.mflops=300", "bogus=1"], "unknown config key 'bogus'"),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_refused_before_anything_runs(args, words):
    with pytest.raises(UserError) as info:
        precheck(args)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_budget_below_the_space_minimum_fails_at_once_with_the_minimum(tmp_path):
    cfg = cfg_for(base=tiny("+budget.mflops=0.5"))
    with pytest.raises(UserError, match=r"below the smallest genotype of space mnv1: its minimum is \d"):
        run_search(cfg, tmp_path)
    assert not (tmp_path / "study.db").exists()


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "nas.search", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args", [["+budget.mflops=300"], ["+space=mnv2", "+budget.mflops=-1"],
                                  ["+space=nope", "+budget.mflops=1"]])
def test_cli_bad_input_exits_2_with_one_line(args):
    r = run_cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_cli_corrupt_storage_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "study.db"
    db.write_bytes(b"this is not a database" * 10)
    before = db.read_bytes()
    r = run_cli(*TINY, "n_trials=1", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2 and "is not an SQLite database" in r.stderr
    assert db.read_bytes() == before


def test_cli_storage_url_that_cannot_be_opened(tmp_path):
    r = run_cli(*TINY, "n_trials=1", f"hydra.run.dir={tmp_path}",
                "storage.url=sqlite:////nonexistent-dir/x/study.db")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_cli(*TINY, "n_trials=1", f"hydra.run.dir={tmp_path}", "storage.url=nosuchdb://x")
    assert r.returncode == 2 and "cannot be opened" in r.stderr


def test_cli_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = run_cli(*TINY, f"hydra.run.dir={blocker / 'run'}")
    assert r.returncode == 2 and "is not writable" in r.stderr


def test_existing_sqlite_study_survives_a_refused_run(tmp_path):
    run_search(cfg_for("n_trials=1"), tmp_path)
    con = sqlite3.connect(tmp_path / "study.db")
    n = con.execute("select count(*) from trials").fetchone()[0]
    con.close()
    with pytest.raises(UserError):
        run_search(cfg_for("n_trials=3", "proxy.lr=0.5"), tmp_path)
    con = sqlite3.connect(tmp_path / "study.db")
    assert con.execute("select count(*) from trials").fetchone()[0] == n
    con.close()


def test_nsga2_population_follows_n_trials_so_a_short_search_breeds():
    """With a population as large as the study, NSGA-II never leaves its random first
    generation; the default sizes it from n_trials, and later generations are bred."""
    from nas.search.study import make_sampler, population_for

    assert [population_for(n) for n in (4, 20, 40, 200, 1000)] == [4, 5, 10, 50, 50]
    cfg = precheck([*TINY, "sampler=nsga2", "n_trials=20"])
    sampler = make_sampler(cfg, seed=0)
    assert sampler.population_size == 5
    explicit = make_sampler(precheck([*TINY, "sampler=nsga2", "sampler.population_size=7"]), seed=0)
    assert explicit.population_size == 7

    def proposals(sampler) -> list[dict]:
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: sum(t.suggest_int(f"x{i}", 0, 9) for i in range(4)), n_trials=20)
        return [t.params for t in study.trials]

    bred = proposals(make_sampler(cfg, seed=0))
    random_ = proposals(optuna.samplers.NSGAIISampler(seed=0, population_size=20))
    assert bred[:5] == random_[:5]  # the random first generation is the same
    assert bred[5:] != random_[5:]  # then parents are selected and crossed


@pytest.mark.parametrize("value", ["1", "-3"])
def test_nsga2_population_below_two_is_refused(value):
    with pytest.raises(UserError, match=rf"sampler\.population_size={value} is not valid"):
        precheck([*TINY, "sampler=nsga2", f"sampler.population_size={value}"])


def test_proxy_training_and_zero_cost_do_not_depend_on_what_the_process_ran_before(tmp_path):
    """A trial's initial weights come from its seed: the same genotype and seed give the same
    accuracy and score after other work has consumed the random stream (a worker's history)."""
    import random

    import torch

    from nas.common.tracking import Tracker
    from nas.search.evaluate import ProxyData
    from nas.search.run import apply_space_overrides

    cfg = precheck([*TINY, "proxy.subset=0.2"])
    tracker = Tracker("disabled", "nas", None, "t", tmp_path)
    space = apply_space_overrides(cfg)
    s = Searcher(cfg, space, None, ProxyData(cfg, space), tracker)
    g = s.space.sample(random.Random(0))
    first = s.train(g, seed=5)
    score = s.zero_cost(g, "synflow")
    torch.rand(12345)
    s.train(s.space.sample(random.Random(1)), seed=9)
    again = s.train(g, seed=5)
    assert again.accuracy == first.accuracy
    assert [h["val_acc"] for h in again.history] == [h["val_acc"] for h in first.history]
    torch.rand(777)
    assert s.zero_cost(g, "synflow") == score
