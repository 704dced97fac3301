"""Every key of every command's schema, given a bad value (wrong type, not finite, out of range,
an unknown choice), is refused in one line naming it, before anything is written; and a refused
command leaves a run folder and its storage byte-identical."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from nas.common.config import CLUTTERED_ONLY, SearchConfig, SupernetRunConfig, TrainConfig
from nas.errors import UserError
from tests.tiny import GENOTYPE, TINY, tiny

# Keys whose value is free text (a path, a name, a URL): any string is a value there.
FREE_TEXT = {"root", "url", "project", "entity", "lut", "dir", "genotype", "ckpt_path", "init", "out",
             "supernet", "study_name"}
# Text keys that take one of a list of names.
CHOICES = {"name", "optimizer", "schedule", "precision", "accelerator", "mode", "backend", "device", "kind",
           "prefilter", "objective", "pareto_cost", "strategy", "augment", "in_memory", "deterministic"}


def leaves(cls: type, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from leaves(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", kind


def bad_values(key: str, kind: object) -> list[str]:
    leaf = key.rsplit(".", 1)[-1]
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    base = args[0] if isinstance(kind, types.UnionType) and len(args) == 1 else kind
    if typing.get_origin(base) is list and typing.get_args(base) == (str,):  # names; none is valid
        return ["[abc]", "[nan]", "[-1e13]"]
    if typing.get_origin(base) is list:
        return ["[nan]", "[abc]", "[-1e13]", "[]"]
    if typing.get_origin(base) is dict:
        return []
    if base is bool:
        return ["maybe"]
    if base is int:
        return ["abc", "1.5", "-1000000000000", "1000000000000"]
    if base is float:
        return ["abc", "nan", "inf", "-inf", "-1e13", "1e13"]
    if leaf in CHOICES:
        return ["bogus_choice"]
    if leaf == "devices":
        return ["abc", "-3"]
    assert leaf in FREE_TEXT, f"{key}: a new kind of key; say here what is bad for it"
    return []


def cases(cls: type, base: list[str], skip: tuple[str, ...] = ()) -> list[tuple[list[str], str]]:
    out = []
    for key, kind in leaves(cls):
        if key.startswith(skip) or key == "space.name":  # chosen by +space=
            continue
        extra = ["data=cluttered_digits"] if key.startswith("data.") and key[5:] in CLUTTERED_ONLY else []
        for value in bad_values(key, kind):
            out.append(([*base, *extra, f"{key}={value}"], key))
    return out


def precheck_of(command: str):
    if command == "search":
        from nas.cli.search import _precheck_and_create as check
    elif command == "train":
        from nas.cli.train import precheck as check
    else:
        from nas.cli.supernet import precheck as check
    return check


SEARCH = cases(SearchConfig, TINY, skip=("wandb.mode",))  # TINY sets it (the test stays offline)
TRAIN = cases(TrainConfig, [f"+genotype={GENOTYPE}", "wandb.mode=disabled"], skip=("genotype",))
SUPERNET = cases(SupernetRunConfig, ["+space=mnv1", "wandb.mode=disabled"])
ALL = [("search", *c) for c in SEARCH] + [("train", *c) for c in TRAIN] + [("supernet", *c) for c in SUPERNET]


def first_per_key(rows):
    seen, out = set(), []
    for row in rows:
        if (row[0], row[2]) not in seen:
            seen.add((row[0], row[2]))
            out.append(row)
    return out


@pytest.mark.parametrize("command,argv,key", first_per_key(ALL),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_every_key_refuses_a_bad_value_in_one_line_before_any_file(command, argv, key, tmp_path, monkeypatch):
    """Through the command's own check (Hydra's composition included), one bad value per key."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as err:
        precheck_of(command)(argv)
    message = str(err.value)
    assert "\n" not in message and message.strip() == message
    assert key.rsplit(".", 1)[-1] in message, message  # names the key it refuses
    assert list(tmp_path.iterdir()) == []


SCHEMAS = {"search": (SearchConfig, "search"), "train": (TrainConfig, "train"),
           "supernet": (SupernetRunConfig, "supernet")}


def composed(command: str, argv: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import nas.cli.search
    import nas.cli.supernet
    import nas.cli.train  # noqa: F401 - their resolvers and schemas
    from nas.cli.common import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(SCHEMAS[command][1], overrides=argv)
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    return container


def test_every_bad_value_of_every_key_is_refused_by_the_schema():
    """Every generated value of every key, given to the schema as Hydra parses it."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, bases, accepted = OverridesParser.create(), {}, []
    for command, argv, key in ALL:
        *base, override = argv
        if (command, tuple(base)) not in bases:
            bases[command, tuple(base)] = composed(command, base)
        data = copy.deepcopy(bases[command, tuple(base)])
        node = data
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = parser.parse_override(override).value()
        try:
            SCHEMAS[command][0].from_container(data)
        except UserError as err:
            assert "\n" not in str(err) and leaf in str(err), (override, str(err))
        else:
            accepted.append(f"{command}: {override}")
    assert accepted == []


def test_there_are_cases_for_every_schema():
    # A schema that loses its keys (or a generator that stops generating) fails here.
    assert len(SEARCH) > 300 and len(TRAIN) > 100 and len(SUPERNET) > 100


ENV = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("bad")
    made = run(cwd, "nas.search", *TINY, "n_trials=1")
    assert made.returncode == 0, made.stderr
    return cwd


@pytest.mark.parametrize("args", [
    # A resume with a recipe or data knob changed: it would mix trials of two recipes.
    ("nas.search", *TINY, "n_trials=1", "proxy.momentum=0.5"),
    ("nas.search", *TINY, "n_trials=1", "proxy.weight_decay=0.001"),
    ("nas.search", *TINY, "n_trials=1", "proxy.label_smoothing=0"),
    ("nas.search", *TINY, "n_trials=1", "proxy.warmup_epochs=1"),
    ("nas.search", *TINY, "n_trials=1", "data.augment=flip"),
    # Bad values, and read-only commands given things that are not studies.
    ("nas.search", *TINY, "n_trials=1", "+worker=-1"),
    ("nas.search", *TINY, "n_trials=1", "seed=4294967296"),
    ("nas.search", *TINY, "n_trials=1", "proxy=zero_cost", "proxy.prefilter=synflow"),
    # A pruner asked of an evaluator that reports no epochs (the default pruner is left alone).
    ("nas.search", *tiny("n_trials=1", "proxy=supernet", "pruner=median", drop=["pruner"])),
    ("nas.search", *tiny("n_trials=1", "proxy=zero_cost", "pruner.n_startup_trials=2", drop=["pruner"])),
    ("nas.train", f"+genotype={GENOTYPE}", "trainer.strategy=foo"),
    ("nas.export", "empty.db"),
    ("nas.export", "sqlite:///mistyped.db"),
    ("nas.export", "outputs", "--top-k", "abc"),
    ("nas.cost", "+space=mnv2", "+width=1000"),
    ("nas.latency", "build", "+space=mnv1", "lut=empty.db/x.lut.jsonl"),
    ("nas.supernet", "train", "+space=mnv1", "supernet.lr=inf"),
], ids=lambda a: " ".join(a[:1] + a[-1:]))
def test_a_refusal_is_one_line_and_leaves_every_file_as_it_was(study, args):
    (study / "empty.db").touch()
    before = snapshot(study)
    result = run(study, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(study) == before


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, folders included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", ["over budget", "into an empty folder", "supernet is a folder",
                                  "supernet truncated"])
def test_a_search_refused_after_hydra_made_its_folder_leaves_no_folder_or_lock(case, tmp_path):
    """Refusals found once the search runs (the budget against the space, the supernet file)
    come after Hydra has made the run directory: the search removes what this run made."""
    import torch

    args = tiny(drop=("budget.mflops",))
    (tmp_path / "kept").mkdir()
    if case == "over budget" or case == "into an empty folder":
        args.append("+budget.mflops=0.001")  # below the space's smallest genotype
        if case == "into an empty folder":
            args.append("hydra.run.dir=kept")
    else:
        args += ["+budget.mflops=28", "proxy=supernet"]
        if case == "supernet is a folder":
            args.append("proxy.supernet=kept")
        else:
            torch.save({"weights": torch.zeros(20_000)}, tmp_path / "cut.pt")
            data = (tmp_path / "cut.pt").read_bytes()
            (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
            args.append("proxy.supernet=cut.pt")
    before = tree(tmp_path)
    result = run(tmp_path, "nas.search", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert {"over budget": "budget.mflops=0.001", "into an empty folder": "budget.mflops=0.001",
            "supernet is a folder": "is a folder", "supernet truncated": "is not a supernet file"}[case] \
        in result.stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", [("nas.search", *TINY), ("nas.train", f"+genotype={GENOTYPE}"),
                                     ("nas.supernet", "train", "+space=mnv1")], ids=lambda c: c[0])
def test_an_image_folder_without_images_is_refused_before_any_folder(command, tmp_path):
    """Each command checks a data root on its command line, before Hydra makes a run folder
    (nas.train and nas.supernet used to record their config first)."""
    for label in ("cat", "dog"):
        (tmp_path / "images" / label).mkdir(parents=True)
    before = tree(tmp_path)
    result = run(tmp_path, *command, "wandb.mode=disabled", "data=imagefolder", "data.root=images")
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "holds no images" in result.stderr, result.stderr
    assert tree(tmp_path) == before
