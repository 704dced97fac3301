"""`python -m nas.supernet train +space=NAME ...`: train a space's weight-sharing supernet, as a
Hydra app; the command line is validated before Hydra runs anything. The training itself is
`nas.training.supernet.train_supernet`."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from nas.cli.common import CONF_DIR, check_data, checked_main, note_run_dir
from nas.common.config import SupernetRunConfig, register_schemas

__all__ = ["COMMANDS", "main", "precheck"]

log = logging.getLogger(__name__)

register_schemas()  # conf/supernet.yaml extends supernet_schema
COMMANDS = ("train", "validate")
_COMMAND = ["train"]  # the one main() was given (Hydra's task takes no arguments)


def precheck(argv: list[str]) -> SupernetRunConfig:
    """Compose and validate the command line before Hydra runs anything."""
    from nas.cli.common import compose_checked
    from nas.search.run import apply_space_overrides

    container = compose_checked("supernet", argv, ("data", "space"), probe=("+space=mnv2",))
    cfg = SupernetRunConfig.from_container(container)
    apply_space_overrides(cfg)
    check_data(cfg.data)
    given = [a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")]
    note_run_dir(given[-1] if given else f"outputs/supernet/{cfg.space.name}-{cfg.data.name}")
    return cfg


def run(cfg: SupernetRunConfig, run_dir: Path, on_accept: Callable[[], None] | None = None) -> dict[str, Any]:
    from nas.search.run import apply_space_overrides
    from nas.training.supernet import train_supernet, validate_supernet

    space = apply_space_overrides(cfg)
    path = (Path(cfg.out).expanduser() if cfg.out else run_dir / "supernet.pt").absolute()
    if _COMMAND[0] == "validate":
        return validate_supernet(space, cfg.data, cfg.supernet, cfg.validate, path, run_dir,
                                 on_accept=on_accept)
    meta = train_supernet(space, cfg.data, cfg.supernet, cfg.wandb, path, run_dir, on_accept=on_accept)
    if warning := meta.trust_warning():
        log.warning(warning)
    return {"path": str(path), "epochs": meta.epochs}


@hydra.main(config_path=str(CONF_DIR), config_name="supernet", version_base="1.3")
def _task(cfg: DictConfig) -> None:
    from nas.cli.common import hydra_task

    hydra_task(cfg, SupernetRunConfig.from_container, run)


def main() -> None:
    import os

    argv = sys.argv[1:]
    inherited = os.environ.get("NAS_SUPERNET_COMMAND")
    if inherited in COMMANDS and (not argv or argv[0] not in COMMANDS):
        # A process that Lightning's DDP started again from sys.argv, which lost the command.
        argv = [inherited, *argv]
    if argv and argv[0] in ("-h", "--help"):
        from nas.cli.common import command_help

        print(command_help("nas.supernet"))
        sys.exit(0)
    if not argv or argv[0] not in COMMANDS:
        given = f" {argv[0]!r}" if argv else ""
        print(f"error: unknown command{given}; valid: {', '.join(COMMANDS)} (python -m nas.supernet "
              "train +space=NAME [key=value ...])", file=sys.stderr)
        sys.exit(2)
    _COMMAND[0] = argv[0]
    os.environ["NAS_SUPERNET_COMMAND"] = argv[0]
    sys.argv = [sys.argv[0], *argv[1:]]  # Hydra sees the overrides only
    checked_main(precheck, _task, command="nas.supernet")
