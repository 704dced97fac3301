"""`python -m nas.train +genotype=<genotype.yaml | string>`: train one genotype fully, as a
Hydra app; the command line is validated before Hydra runs anything. The training itself
is `nas.training.train.run_training`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from nas.arch.genotype import load_genotype
from nas.cli.common import CONF_DIR, checked_main
from nas.common.config import ConfigError, TrainConfig, register_schemas
from nas.errors import UserError

__all__ = ["main", "precheck"]

register_schemas()  # conf/train.yaml extends train_schema




def _train_name(*, _root_: DictConfig) -> str:
    """`<genotype hash>-<data>-<settings hash>`: rerunning a command resumes its own run, and
    another resolution, recipe or dataset trains in a folder of its own."""
    from nas.training.train import run_identity  # Lightning: imported once the input is checked

    text = str(_root_.get("genotype") or "none")
    data = _root_.get("data")
    data_name = data.get("name") if isinstance(data, DictConfig) else "data"
    try:
        genotype = load_genotype(text)
    except (UserError, OSError, ValueError):
        return f"{hashlib.sha256(text.encode()).hexdigest()[:16]}-{data_name}"
    root = OmegaConf.to_container(_root_, resolve=False)
    identity = run_identity(genotype, dict(root.get("data") or {}), dict(root.get("trainer") or {}),
                            root.get("resolution"), _root_.get("init"))  # init resolved: a folder
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:6]
    return f"{genotype.content_hash}-{data_name}-{digest}"


OmegaConf.register_new_resolver("nas_train_name", _train_name, replace=True)
_CONFIG_DIR: list[str] = []  # the --config-dir of this command line, set by precheck


def _config_dir() -> str:
    """`${nas_config_dir:}`: the folder given as --config-dir (an export folder's finetune.yaml
    names its own weights so, and keeps working when the folder is moved or copied)."""
    if not _CONFIG_DIR:
        raise ConfigError("init=${nas_config_dir:} names the folder of --config-dir, and none was given: "
                          "run python -m nas.train --config-dir <export folder> --config-name finetune")
    return _CONFIG_DIR[0]


OmegaConf.register_new_resolver("nas_config_dir", _config_dir, replace=True)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _task(cfg: DictConfig) -> float | None:
    from nas.cli.common import hydra_task
    from nas.training.train import run_training

    return hydra_task(cfg, TrainConfig.from_container, run_training).get("test_acc")


def precheck(argv: list[str]) -> TrainConfig:
    """Compose and validate the command line before Hydra runs anything, from an export
    folder's config when `--config-dir`/`--config-name` name one."""
    from nas.cli.common import check_data, compose_checked

    folder, name, overrides = _config_source(argv)
    _CONFIG_DIR[:] = [str(Path(folder).expanduser().absolute())] if folder else []
    container = compose_checked(name or "train", overrides, ("data",), plus=("genotype",), config_dir=folder)
    cfg = TrainConfig.from_container(container)
    load_genotype(cfg.genotype)
    check_data(cfg.data)
    return cfg


_SOURCE_FLAGS = {"-cd": "dir", "--config-dir": "dir", "-cn": "name", "--config-name": "name"}


def _config_source(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """(--config-dir, --config-name, the other arguments): each flag as `FLAG VALUE` or
    `FLAG=VALUE`."""
    found: dict[str, str] = {}
    rest, i = [], 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in _SOURCE_FLAGS and (eq or i + 1 < len(argv)):
            found[_SOURCE_FLAGS[flag]] = value if eq else argv[i + 1]
            i += 1 if eq else 2
            continue
        rest.append(argv[i])
        i += 1
    return found.get("dir"), found.get("name"), rest


def _check_config_dir(argv: list[str]) -> None:
    """`--config-dir DIR [--config-name NAME]` (an export folder's retrain.yaml, say) must name a
    folder holding NAME.yaml: Hydra's own refusal is a traceback-like paragraph."""
    import sys
    from pathlib import Path

    from nas.cli.common import CONF_DIR

    folder, name, _ = _config_source(argv)
    problem = None
    if folder is not None and not Path(folder).expanduser().is_dir():
        problem = f"--config-dir {folder!r} is not a folder: give an export folder (it holds retrain.yaml)"
    elif name is not None:
        stem = name[:-5] if name.endswith(".yaml") else name
        places = [Path(folder).expanduser()] if folder else []
        if not any((p / f"{stem}.yaml").is_file() for p in [*places, CONF_DIR]):
            where = f"in {folder!r}" if folder else "here"
            problem = (f"--config-name {name!r} is not valid: no {stem}.yaml {where} (an export folder "
                       "holds retrain.yaml and finetune.yaml)")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    import sys

    _check_config_dir(sys.argv[1:])
    # A --config-path (relative to the package) goes to Hydra unchecked.
    checked_main(precheck, _task, skip=("-cp", "--config-path"), command="nas.train")
