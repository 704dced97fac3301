"""Library code logs and configures nothing; the commands show its lines as plain text.

Importing a module of nas leaves logging and the warning filters as they were; a library call
reports its progress through the `nas` loggers (a caller quiets or redirects them like any
logger); `nas.cli.logs.setup` shows them as the commands always have: the bare line on
stdout, warnings on stderr as `warning: ...`.
"""

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nas.cli import logs
from nas.cli.search import precheck
from nas.search.run import run_search
from tests.tiny import TINY

ROOT = Path(__file__).resolve().parents[1]
ZERO_COST = [*TINY, "n_trials=1", "proxy=zero_cost", "proxy.kind=naswot"]
SMALL = ("res32_w0.25_drop0.0:stem_c16_k3_s2_p1_relu:ds_r1_k3_s1_c32_adp_relu_noskip:"
         "ds_r2_k3_s2_c64_adp_relu_skip:ds_r2_k3_s2_c128_adp_relu_skip")  # seconds for an epoch of digits


def test_importing_every_nas_module_changes_no_logging_or_warning_state():
    # The libraries nas builds on are imported first: what they set up on import is theirs.
    script = textwrap.dedent("""
        import importlib, json, logging, pkgutil, warnings
        for name in ("torch", "pytorch_lightning", "optuna", "hydra", "omegaconf", "numpy", "scipy",
                     "yaml", "PIL"):
            importlib.import_module(name)

        def state():
            loggers = {name: [logger.level, [id(h) for h in logger.handlers], logger.propagate,
                              logger.disabled]
                       for name, logger in logging.root.manager.loggerDict.items()
                       if isinstance(logger, logging.Logger)}
            loggers["<root>"] = [logging.root.level, [id(h) for h in logging.root.handlers]]
            return loggers, [repr(f) for f in warnings.filters]

        loggers, filters = state()
        import nas, search_spaces
        names = []
        for package in (nas, search_spaces):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if not info.name.endswith("__main__"):  # `python -m nas.search` runs the command
                    importlib.import_module(info.name)
                    names.append(info.name)
        loggers_after, filters_after = state()
        print(json.dumps({
            "imported": names,
            "changed": {n: [v, loggers_after[n]] for n, v in loggers.items() if loggers_after[n] != v},
            "new": {n: v for n, v in loggers_after.items()
                    if n not in loggers and v != [logging.NOTSET, [], True, False]},
            "filters": [f for f in filters_after if f not in filters] + [f for f in filters
                                                                         if f not in filters_after],
        }))
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"nas.search.study", "nas.training.proxy", "nas.search.loop", "nas.hardware.latency",
            "nas.cli.search", "nas.cli.logs"} <= set(found["imported"])
    assert found["changed"] == {}
    assert found["new"] == {}
    assert found["filters"] == []


@pytest.fixture
def nas_logger():
    """The `nas` logger, put back as it was after the test (`setup` changes it)."""
    logger = logging.getLogger("nas")
    saved = logger.level, list(logger.handlers), logger.propagate
    yield logger
    logger.setLevel(saved[0])
    logger.handlers[:] = saved[1]
    logger.propagate = saved[2]


def test_a_search_reports_its_progress_to_the_nas_loggers_and_prints_nothing(tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO, logger="nas")
    run_search(precheck(ZERO_COST), tmp_path)
    assert capsys.readouterr().out == ""
    progress = [r for r in caplog.records if "trained 1/1" in r.getMessage()]
    assert len(progress) == 1 and progress[0].name == "nas.search.loop"
    assert progress[0].levelno == logging.INFO
    assert any(r.name == "nas.search.run" and "rank  trial" in r.getMessage() for r in caplog.records)


def test_a_search_writes_its_log_file_and_leaves_the_nas_logger_as_it_found_it(tmp_path, nas_logger):
    assert nas_logger.level == logging.NOTSET and nas_logger.handlers == []
    run_search(precheck(ZERO_COST), tmp_path)
    text = (tmp_path / "search.log").read_text()
    assert "trained 1/1" in text and "rank  trial" in text
    assert not text.startswith(("INFO", "[")), "the file holds the plain lines"
    assert nas_logger.level == logging.NOTSET and nas_logger.handlers == []


def test_a_quieted_nas_logger_stays_quiet_through_a_search(tmp_path, nas_logger, caplog):
    nas_logger.setLevel(logging.WARNING)
    run_search(precheck(ZERO_COST), tmp_path)
    assert not [r for r in caplog.records if r.name.startswith("nas") and r.levelno < logging.WARNING]
    assert nas_logger.level == logging.WARNING


def test_the_commands_handler_writes_plain_lines_and_warnings_on_stderr(nas_logger, capsys):
    logs.setup()
    log = logging.getLogger("nas.some.module")
    log.info("trained 1/3 | best acc 0.5")
    log.debug("not shown")
    log.warning("the trained model was not exported")
    out, err = capsys.readouterr()
    assert out == "trained 1/3 | best acc 0.5\n"
    assert err == "warning: the trained model was not exported\n"


def test_the_commands_handler_redraws_a_progress_meter_in_place(nas_logger, capsys):
    logs.setup()
    log = logging.getLogger("nas.hardware.latency")
    log.info("kernels: 1/2", extra={"end": ""})
    log.info("kernels: 2/2", extra={"end": "\n"})
    log.info("done")
    assert capsys.readouterr().out == "\rkernels: 1/2\rkernels: 2/2\ndone\n"


def test_setting_up_twice_shows_each_line_once_and_not_again_through_the_root_logger(nas_logger, capsys):
    root = logging.StreamHandler(sys.stdout)  # as Hydra's job logging puts one on the root logger
    logging.root.addHandler(root)
    try:
        logs.setup()
        logs.setup()
        logging.getLogger("nas.search.loop").warning("twice?")
    finally:
        logging.root.removeHandler(root)
    out, err = capsys.readouterr()
    assert (out, err) == ("", "warning: twice?\n")


def test_proxy_training_shows_no_lightning_lines_and_restores_its_levels(capfd, caplog):
    from nas.search.evaluate import ProxyData
    from nas.search.run import apply_space_overrides
    from nas.training.proxy import LIGHTNING_LOGGERS, train_proxy

    cfg = precheck(TINY)
    data = ProxyData(cfg, apply_space_overrides(cfg))
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    capfd.readouterr()
    train_proxy(data.stand_in(data.space.reference), data.at(16), 1, accelerator="cpu")
    out, err = capfd.readouterr()
    # Lightning's lines reach its own handler, or the root logger's when it has one (as here).
    assert "available:" not in out + err and "max_epochs" not in out + err
    assert not [r for r in caplog.records if r.name.startswith(("lightning", "pytorch_lightning"))]
    assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == levels


def test_a_task_started_without_main_still_shows_its_progress_lines(tmp_path):
    # A launcher such as submitit runs the Hydra task in a process of its own, without main().
    args = [f"+genotype={SMALL}", "trainer.max_epochs=1", "trainer.progress=false", "wandb.mode=disabled",
            f"hydra.run.dir={tmp_path / 'run'}"]
    script = textwrap.dedent(f"""
        import sys
        sys.argv = ["nas.train", *{args!r}]
        from nas.cli.train import _task
        _task()
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 3, r.stdout
    assert lines[0].startswith("training ") and lines[1].startswith("epoch 0: val_acc ")
    assert lines[2].startswith("test accuracy ") and r.stderr == ""
