"""Shared command-line plumbing: `key=value` arguments and one-line user errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from nas.errors import UserError

T = TypeVar("T")

__all__ = [
    "CONF_DIR",
    "HELP_FLAGS",
    "OneLineParser",
    "UsageError",
    "cannot_create",
    "compose_checked",
    "config_keys",
    "explain_override",
    "first_line",
    "hydra_task",
    "parse_command",
    "record_config",
    "run",
    "wants_help",
]

def _conf_dir() -> Path:
    """The Hydra configs: conf/ at the top of a source checkout, shipped as nas/conf in a wheel."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "conf"
    return shipped if shipped.is_dir() else package.parent / "conf"


CONF_DIR = _conf_dir()
# Hydra's own flags: they print and exit, so the command line is not checked first.
HELP_FLAGS = ("-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion",
              "-sc", "--resolve")


class UsageError(UserError):
    """A command-line argument that is not understood."""


class OneLineParser(argparse.ArgumentParser):
    """argparse for a command that operates on files, with the one-line error of every command."""

    def error(self, message: str) -> NoReturn:
        import difflib

        hint = ""
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=")[0], list(self._option_string_actions), n=1)
                if close:
                    hint = f"; did you mean {close[0]}?"
                    break
        raise UsageError(f"{message}{hint} ({self.prog} --help lists the options)")


def cannot_create(folder: Path) -> str | None:
    """Why `folder` (and what is missing of it) cannot be created and written here, or None."""
    import os

    probe = folder.expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        return f"{str(probe)!r} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{str(probe)!r} is not writable"
    return None


def parse_command(schema: type[T], argv: list[str], command: str) -> T:
    """`key=value` overrides of the dataclass `schema`, in Hydra's grammar (a leading + is
    accepted, as Hydra apps take it; `a,b` is read as the list [a, b]). OmegaConf checks types,
    `check_values` ranges; an unknown key names the closest one. Every refusal is one line."""
    import difflib

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from nas.common.config import check_values, config_error
    from nas.common.schema import describe

    docs = {k.key: k for k in describe(schema)}
    keys = list(docs)
    try:
        overrides = OverridesParser.create().parse_overrides(argv)
    except OverrideParseException as err:
        raise UsageError(explain_override(str(err), keys, ())) from None
    cfg = OmegaConf.structured(schema)
    for o in overrides:
        key = o.key_or_group
        if o.is_delete():
            raise UsageError(f"~{key}: a key cannot be removed here; give {key}=<value> or leave it out")
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"unknown key {key!r}: {hint}(python -m {command} --help lists the keys)")
        value = list(o.value().list) if o.is_sweep_override() else o.value()
        if docs[key].type.startswith("list") and not isinstance(value, (list, type(None))):
            value = [value]  # one choice of a list key: width=0.5 is width=[0.5]
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as err:
            raise UsageError(str(config_error(err))) from None
    obj = OmegaConf.to_object(cfg)
    check_values(obj)
    return obj


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in argv)


def run(main: Callable[[list[str]], int | None], argv: list[str] | None = None) -> None:
    """Run `main`; a `UserError` becomes one line on stderr and exit status 2."""
    from nas.cli import logs

    logs.setup()
    try:
        code = main(sys.argv[1:] if argv is None else argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type's name)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def explain_override(message: str, keys: Iterable[str], groups: Iterable[str]) -> str:
    """Hydra's "Could not override 'x'" with the closest valid key and the `+` rule."""
    import difflib
    import re

    keys, groups = sorted(set(keys)), sorted(set(groups))
    missing = re.search(r"Could not override '([^']+)'", message)
    if missing:
        key = missing.group(1)
        if key in groups:
            return f"{key}=<name> needs a leading +: +{key}=<name> ({key} has no default)"
        if key.split(".")[0] == "budget":
            return (f"{key} needs a leading +: +{key}=<value> (budget keys are added, not "
                    "overridden: +budget.mflops, +budget.params_m, +budget.latency_ms)")
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        added = [g for g in ("space", "budget", "worker", "genotype") if g in groups or g in keys
                 or any(k.startswith(f"{g}.") for k in keys)]
        plus = ", ".join(f"+{g}{'.*' if g == 'budget' else ''}=" for g in added)
        return (f"unknown config key {key!r}: {hint}(--help lists the keys"
                + (f"; keys with no default, {plus}, take a leading +" if plus else "") + ")")
    no_value = re.search(r"Error parsing override '([^']*)'\s+missing EQUAL", message)
    if no_value:
        return f"argument {no_value.group(1)!r} is not key=value (--help lists the keys)"
    lexer = re.search(r"(?:LexerNoViableAltException|mismatched input|no viable alternative)\S*:? ?(.*)",
                      message)
    if lexer:
        bad = lexer.group(1).strip() or "the command line"
        return (f"cannot parse {bad!r}: Hydra's command-line grammar takes ~, spaces, quotes and "
                "some other characters only inside a quoted value: write key='\"value\"' "
                "(and $HOME instead of ~ for your home folder)")
    present = re.search(r"An item is already at '([^']+)'", message)
    if present:
        key = present.group(1)
        return f"{key} is already in the config: set it without the leading + ({key}=<value>)"
    return f"bad configuration: {message}"


def config_keys(container: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping."""
    out = []
    if isinstance(container, Mapping):
        for key, value in container.items():
            path = f"{prefix}{key}"
            out.append(path)
            out += config_keys(value, path + ".")
    return out


USAGES = {
    "nas.search": "usage: python -m nas.search +space=NAME +budget.mflops=N [key=value ...] (-m: multirun)",
    "nas.train": "usage: python -m nas.train +genotype=STRING_OR_YAML [key=value ...] | --config-dir DIR "
                 "--config-name retrain",
    "nas.supernet": "usage: python -m nas.supernet train|validate +space=NAME [key=value ...]",
}


# The config groups each Hydra command composes (conf/<group>/*.yaml).
COMMAND_GROUPS = {"nas.search": ("space", "data", "proxy", "sampler", "pruner", "storage"),
                  "nas.train": ("data",), "nas.supernet": ("space", "data")}


def command_help(command: str) -> str:
    """A Hydra command's --help: its usage, the options of each config group, and every key of its
    schema with the default and the comment."""
    from nas.common.config import COMMAND_SCHEMAS
    from nas.common.schema import help_text

    lines = ["", "groups (group=option" + ("; +space= has no default):" if "space" in COMMAND_GROUPS[command]
                                           else "):")]
    lines += [f"  {g}: {', '.join(sorted(f.stem for f in (CONF_DIR / g).glob('*.yaml')))}"
              for g in COMMAND_GROUPS[command]]
    lines.append("Hydra's own flags: --hydra-help, --cfg job, --info; -m runs a sweep (multirun)")
    body = help_text(COMMAND_SCHEMAS[command], USAGES[command])
    usage, _, keys = body.partition("\n")
    return "\n".join([usage, *lines, keys])


def checked_main(precheck: Callable[[list[str]], Any], task: Callable[[], Any],
                 skip: tuple[str, ...] = (), command: str | None = None) -> None:
    """Validate the command line with `precheck` (one line and exit status 2 on bad input),
    then run the Hydra `task`; `--help` prints `command`'s keys; Hydra's own flags, and those in
    `skip`, go straight to Hydra."""
    from nas.cli import logs

    logs.setup()
    argv = sys.argv[1:]
    if command is not None and any(a in ("-h", "--help") for a in argv):
        print(command_help(command))
        sys.exit(0)
    if not any(a.split("=")[0] in HELP_FLAGS or a.startswith(skip) for a in argv):
        try:
            precheck(argv)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    task()


def compose_checked(config_name: str, argv: list[str], groups: tuple[str, ...],
                    probe: tuple[str, ...] = (), plus: tuple[str, ...] = (),
                    config_dir: str | None = None) -> dict[str, Any]:
    """The config `config_name` composed with the command line's overrides as Hydra will
    compose it, as a plain dict: an unknown option of a group in `groups`, an unknown key or a
    value of the wrong type ends in one-line `UserError` (the closest key named, found in the
    config composed with `probe`; `plus` are keys that take a leading + like the groups).
    `config_dir` (a `--config-dir`, e.g. an export folder) is searched before the package's."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nas.cli.search import composition_error, group_options

    args = [a for a in argv if not a.startswith("-")]
    for a in args:
        key, _, value = a.lstrip("+~").partition("=")
        if key in groups and value not in group_options(key):
            raise UsageError(f"unknown {key} {value!r}; valid: {', '.join(group_options(key))}")
    plain = [a for a in args if not a.lstrip("+").startswith("hydra")]
    primary, search = str(CONF_DIR), []
    if config_dir is not None:
        primary, search = str(Path(config_dir).expanduser().resolve()), [f"hydra.searchpath=[file://{CONF_DIR}]"]
    try:
        with initialize_config_dir(config_dir=primary, version_base="1.3"):
            composed = compose(config_name, overrides=[*search, *plain])
        return OmegaConf.to_container(composed, resolve=True, throw_on_missing=True)
    except Exception as err:
        def keys() -> list[str]:
            with initialize_config_dir(config_dir=primary, version_base="1.3"):
                return config_keys(OmegaConf.to_container(
                    compose(config_name, overrides=[*search, *probe]), resolve=False))

        raise composition_error(err, keys, (*groups, *plus)) from None


def check_data(data: Any) -> None:
    """Refuse a `data.root` that cannot be read (`DataError`) while the command line is checked,
    before Hydra makes any folder; reading the images waits for the run."""
    if data.root is not None and data.name != "digits":
        from nas.training.data import datamodule_for

        datamodule_for(data, resolution=32, batch_size=1).check()  # check() reads neither


def record_config(cfg: Any, run_dir: Path) -> None:
    """Hydra's record of a run, `.hydra/{config,hydra,overrides}.yaml`, written once the command
    has been accepted (the configs set `hydra.output_subdir: null`, so a refusal writes none)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hc = HydraConfig.get()
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.to_container(hc, resolve=False)})
    OmegaConf.save(hydra_cfg, folder / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hc.overrides.task)), folder / "overrides.yaml")


# The outermost folder of the run directory that did not exist when the command line was
# checked: Hydra makes the run directory before the task starts, and a refusal removes it again.
_UNMADE: list[Path] = []


def note_run_dir(target: str) -> None:
    """Note (in a command's check, before Hydra runs) the run directory Hydra will make."""
    from nas.search.run import first_missing

    _UNMADE.clear()
    if "${" in target:  # resolved by Hydra only
        return
    missing = first_missing(Path(target).expanduser().absolute())
    if missing is not None:
        _UNMADE.append(missing)


def _remove_unmade(run_dir: Path) -> None:
    """After a refusal: the folders Hydra made for `run_dir` (those `note_run_dir` saw missing),
    when nothing is in them."""
    from nas.search.run import remove_empty

    if _UNMADE and run_dir.absolute().is_relative_to(_UNMADE[0]):
        remove_empty(run_dir, _UNMADE[0])


def hydra_task(cfg: Any, parse: Callable[[dict], Any], job: Callable[..., dict]) -> dict:
    """Body of a Hydra task: validate the composed config, run `job` in Hydra's output folder.

    A `UserError` ends the process with one line on stderr and exit status 2, and removes the
    run folder again when Hydra made it for this run and nothing was written into it.
    """
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from nas.cli import logs

    logs.setup()  # again here: a launcher (submitit) runs the task in a process where main() never ran
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        return job(parse(container), run_dir, on_accept=lambda: record_config(cfg, run_dir))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        _remove_unmade(Path(HydraConfig.get().runtime.output_dir))
        sys.exit(2)
    except KeyboardInterrupt as err:
        requeue = getattr(err, "requeue", None)
        if requeue is not None:
            print(f"interrupted by {err}: the running trial was marked FAIL; handing the job back to "
                  "submitit to requeue it (a requeued worker resumes the study)", file=sys.stderr,
                  flush=True)
            requeue()  # submitit requeues the job and exits, or raises when no requeue is left
        print(f"interrupted by {err or 'Ctrl-C'}: the running trial was marked FAIL; rerun the same "
              "command to resume", file=sys.stderr, flush=True)
        sys.exit(130)
