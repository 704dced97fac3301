"""The Hydra configs live in the top-level conf/ folder; a wheel ships them as nas/conf."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

conf = ["nas.conf", *(f"nas.conf.{'.'.join(p.relative_to('conf').parts)}"
                      for p in sorted(Path("conf").rglob("*")) if p.is_dir())]
setup(
    packages=[*find_namespace_packages(include=["nas", "nas.*", "search_spaces", "search_spaces.*",
                                                "hydra_plugins", "hydra_plugins.*"],
                                     exclude=["*__pycache__"]), *conf],
    package_dir={name: "/".join(["conf", *name.split(".")[2:]]) for name in conf},
    package_data={name: ["*.yaml"] for name in conf},
)
