"""The house's rules, checked: layers import only downward, the architecture core needs no
torch, the model needs torch only, the public API survives any import order, and the built
wheel runs from outside the repository."""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Bottom up: a module may import its own layer and the ones below it, never one above.
LAYERS = ["errors", "arch", "model", "hardware", "common", "training", "search", "cli"]
SHIMS = {"__init__", "cost", "train", "export", "latency", "supernet"}  # `python -m nas.X` entry modules


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[0] == "search_spaces":
        return LAYERS.index("arch")
    if parts[0] != "nas" or len(parts) < 2:
        raise ValueError(module)
    if parts[1] in SHIMS:
        return len(LAYERS)  # above everything
    return LAYERS.index(parts[1])


def nas_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nas":
                found |= {f"nas.{a.name}" for a in node.names}
            elif node.module.split(".")[0] in ("nas", "search_spaces"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] in ("nas", "search_spaces")}
    return found


def modules() -> list[tuple[str, Path]]:
    out = []
    for base in ("nas", "search_spaces"):
        for path in sorted((ROOT / base).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            out.append((".".join(rel.parts), path))
    return out


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, path in modules():
        name = name.removesuffix(".__init__")
        if name.endswith("__main__") or name in ("nas", "search_spaces"):
            continue
        mine = layer_of(name)
        for imported in nas_imports(path):
            if imported in ("nas", "nas.errors") or imported.startswith("search_spaces"):
                continue
            if layer_of(imported) > mine:
                upward.append(f"{name} imports {imported}")
    assert not upward, upward


def run_python(code: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_architecture_core_imports_no_torch():
    code = ("import sys, nas, nas.arch.genotype, nas.arch.blocktypes, nas.arch.kernels, nas.arch.cost, "
            "nas.arch.space, search_spaces\n"
            "g = search_spaces.get_space('mnv2').sample(0)\n"
            "print(nas.cost(g).macs > 0, sorted(m for m in ('torch', 'optuna', 'pytorch_lightning', "
            "'hydra', 'numpy') if m in sys.modules))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True []"


def test_the_model_layer_needs_torch_only():
    code = ("import sys, nas.model.builder, nas.model.optim, nas.model.files, nas.model.zero_cost\n"
            "print(sorted(m for m in ('optuna', 'pytorch_lightning', 'lightning', 'hydra', 'omegaconf', "
            "'wandb') if m in sys.modules))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_reading_data_and_refusing_a_resume_import_no_lightning(tmp_path):
    # Lightning takes seconds to import: a search that refuses its input (a changed recipe on
    # resume, bad data) or scores without training must not wait for it.
    code = ("import sys, nas.search.loop, nas.search.run, nas.cli.train, nas.cli.search, nas.cli.supernet\n"
            "from nas.common.config import DataConfig\n"
            "from nas.training.data import datamodule_for\n"
            "dm = datamodule_for(DataConfig(), 16, 32)\n"
            "dm.setup()\n"
            "print(dm.num_classes, len(dm.val_dataloader().dataset) > 0, "
            "sorted(m for m in ('pytorch_lightning', 'lightning') if m in sys.modules))")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "10 True []"

    search = ["+space=mnv1", "+budget.mflops=28", "proxy=zero_cost", "proxy.resolution=16",
              "space.width=[0.25]", "reference=false", "wandb.mode=disabled", "n_trials=2"]
    traced = [sys.executable, "-c", "import runpy, sys; sys.argv = ['nas.search', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('nas.search', run_name='__main__')\nfinally:\n"
              "    print('lightning imported:', 'pytorch_lightning' in sys.modules, file=sys.stderr)"]
    made = subprocess.run(traced + search, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    assert "lightning imported: False" in made.stderr  # a zero-cost search trains nothing
    refused = subprocess.run(traced + search + ["proxy.zero_cost_batch=32"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "exists with a different proxy" in refused.stderr
    assert "lightning imported: False" in refused.stderr


def test_public_api_works_after_importing_every_module():
    import nas
    from search_spaces import get_space

    for info in pkgutil.walk_packages(nas.__path__, "nas."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    g = get_space("mnv2").reference
    assert nas.cost(g).macs == 300_774_272
    assert nas.parse(str(g)) == g
    model = nas.build_model(g, num_classes=10)
    assert len(nas.param_groups(model, weight_decay=4e-5)) == 2
    assert callable(nas.load_exported)
    assert {"Genotype", "parse", "build_model", "load_exported", "cost", "param_groups"} <= set(nas.__all__)
    # A command module named like an export (`nas.cost`) becomes the package attribute once
    # imported: every export must still be a class or a function, or a module that forwards calls.
    assert [name for name in nas.__all__ if not callable(getattr(nas, name))] == []
    assert isinstance(nas.Genotype, type) and issubclass(nas.GenotypeError, ValueError)


def test_every_public_module_has_a_docstring_and_all():
    missing = []
    for name, path in modules():
        tree = ast.parse(path.read_text())
        if not ast.get_docstring(tree):
            missing.append(f"{name}: docstring")
        public = not any(p.startswith("_") for p in name.split(".")) and name.split(".")[-1] not in SHIMS
        has_all = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in n.targets)
                      for n in tree.body)
        if public and len(name.split(".")) > 2 and not has_all:
            missing.append(f"{name}: __all__")
    assert not missing, missing


@pytest.fixture(scope="module")
def wheel_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = (tmp / "dist").glob("nas-*.whl")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                        str(tmp / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return tmp / "site"


def in_wheel(target: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def test_the_installed_wheel_runs_from_outside_the_repository(wheel_target, tmp_path):
    r = in_wheel(wheel_target, "-c", "import nas; print(nas.__file__)", cwd=tmp_path)
    assert r.stdout.strip().startswith(str(wheel_target)), r.stdout  # not this checkout
    assert (wheel_target / "nas" / "conf" / "search.yaml").is_file()  # the top-level conf/, shipped
    assert (ROOT / "conf" / "search.yaml").is_file() and not (ROOT / "nas" / "conf").exists()
    r = in_wheel(wheel_target, "-m", "nas.search", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "space" in r.stdout, r.stderr
    r = in_wheel(wheel_target, "-m", "nas.search", "+space=mnv1", "+budget.mflops=28", "n_trials=1",
                 "proxy=zero_cost", "proxy.kind=synflow", "reference=false", "space.width=[0.25]",
                 "proxy.resolution=16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "outputs" / "mnv1-mflops28-digits-synflow" / "trials.csv").is_file()


def test_choice_lists_match_the_implementations():
    from nas.common import config
    from nas.hardware.backends import BACKENDS
    from nas.model.zero_cost import PROXIES
    from nas.search import study
    from nas.training.data import DATASETS

    assert set(config.SAMPLERS) == {"auto", *study.SAMPLERS}
    assert set(config.PRUNERS) == set(study.PRUNERS)
    assert set(config.ZERO_COST) == set(PROXIES)
    assert set(config.DATASETS) == set(DATASETS)
    assert config.LATENCY_BACKENDS == BACKENDS


def test_every_default_has_one_source():
    """The dataclasses are the schemas the YAML files extend: a YAML file sets only what its
    option changes, never a key to the value the schema already gives it."""
    import dataclasses

    import yaml

    from nas.cli.common import CONF_DIR
    from nas.common import config

    schemas = {"search.yaml": config.SearchConfig(), "train.yaml": config.TrainConfig(),
               "supernet.yaml": config.SupernetRunConfig(),
               "data": config.DataConfig(), "proxy": config.ProxyConfig(),
               "sampler": config.SamplerConfig(), "pruner": config.PrunerConfig(),
               "storage": config.StorageConfig(), "space": config.SpaceConfig()}
    repeated, checked = [], 0
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        rel = path.relative_to(CONF_DIR)
        schema = schemas.get(rel.parts[0])
        if schema is None:
            assert rel.parts[0] == "hydra", f"{rel}: a config file with no schema"
            continue
        body = yaml.safe_load(path.read_text()) or {}
        for key, value in body.items():
            if key in ("defaults", "hydra", "name"):
                continue
            assert any(f.name == key for f in dataclasses.fields(schema)), f"{rel}: {key} not in the schema"
            checked += 1
            if value == getattr(schema, key):
                repeated.append(f"{rel}: {key}: {value!r} repeats the schema's default")
    assert checked >= 5
    assert repeated == []


@pytest.mark.parametrize("group", ["data", "proxy", "sampler", "pruner", "storage", "space"])
def test_every_group_option_composes_against_the_schema(group, tmp_path):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from nas.cli.common import CONF_DIR
    from nas.cli.search import group_options
    from nas.common.config import SearchConfig, register_schemas

    register_schemas()
    for option in group_options(group):
        overrides = [f"+space={option}" if group == "space" else "+space=mnv2", "+budget.mflops=300",
                     "study_name=x", f"storage.url=sqlite:///{tmp_path}/x.db"]
        if group != "space":
            overrides.append(f"{group}={option}")
        if group == "data" and option != "digits":
            overrides.append(f"data.root={tmp_path}")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = compose("search", overrides=overrides)
        assert OmegaConf.get_type(composed) is SearchConfig  # typed by the schema, not a plain dict
        cfg = SearchConfig.from_container(OmegaConf.to_container(composed, resolve=True))
        chosen = cfg.proxy.kind if group == "proxy" else getattr(cfg, group).name
        assert chosen == {"default": "train", "zero_cost": "synflow"}.get(option, option)


def test_the_schema_refuses_types_and_keys_while_composing():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from nas.cli.common import CONF_DIR
    from nas.cli.search import composition_error
    from nas.common.config import register_schemas

    register_schemas()
    cases = (("proxy.epochs=two", "proxy.epochs='two' is not valid: expected an integer"),
             ("+budget.mflops=lots", "budget.mflops='lots' is not valid: expected a number"),
             ("sampler.multivariate=maybe", "sampler.multivariate='maybe' is not valid: expected true or "
                                            "false"),
             ("space.width=2", "space.width is not valid: expected a list"))
    for override, message in cases:
        with (initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
              pytest.raises(ConfigCompositionException) as err):
            compose("search", overrides=["+space=mnv2", override])
        assert str(composition_error(err.value, list, ())).startswith(message)
