"""The configuration reference, docs/configuration.md, generated from the schemas.

Every key of every command's schema (`nas.common.config.COMMAND_SCHEMAS`, described by
`nas.common.schema.describe`) with its type, default, valid range and comment, then the options
of the config groups in conf/ and what each one sets.

The page is a committed file rather than one made during the build, so that it reads on GitHub
as well (the README links into docs/) and a schema change shows up in review as a change of the
page. Two checks keep it honest: this Sphinx extension warns when the committed page differs
from what the schemas give now (the docs build runs with -W, so it fails), and
tests/test_docs.py fails the same way without needing Sphinx.

    python docs/_ext/config_reference.py           # rewrite docs/configuration.md
    python docs/_ext/config_reference.py --check   # exit status 1 when it is out of date
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"
CONF = ROOT / "conf"
REGENERATE = "python docs/_ext/config_reference.py"
# The config groups, in the order the search's defaults list names them, and who takes them.
GROUPS = {"space": "nas.search, nas.supernet (with +space=)", "data": "nas.search, nas.train, nas.supernet",
          "proxy": "nas.search", "sampler": "nas.search", "pruner": "nas.search", "storage": "nas.search",
          "hydra/launcher": "nas.search -m (a multirun)"}


def schema_interface() -> tuple[Callable[[type], list[Any]], dict[str, type]]:
    """`describe` and the commands' schemas, from the nas of this checkout."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from nas.common.config import COMMAND_SCHEMAS
    from nas.common.schema import describe

    return describe, COMMAND_SCHEMAS


def docstring(cls: type) -> str:
    """A class's own docstring as one paragraph; "" for a dataclass without one (whose
    `__doc__` is its generated signature)."""
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split())


# ----- rendering ----------------------------------------------------------------------------------

def value_text(value: Any) -> str:
    """A default as one writes it on the command line or in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {value_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return value if value and value.strip() == value and value != "???" else repr(value)
    return str(value)


def cell(text: str) -> str:
    """Prose that stays inside one cell of a Markdown table and shows `<name>` as written."""
    return _one_cell(text).replace("<", "\\<")


def code(text: str) -> str:
    return f"`{_one_cell(text)}`" if text else ""


def _one_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def limit_text(key: str) -> str:
    from nas.common import config

    limit = getattr(config, "LIMITS", {}).get(key.rsplit(".", 1)[-1])
    return str(limit) if limit is not None else ""


def section_doc(schema: type, section: str) -> str:
    """The docstring of the dataclass a section of the schema is, as one paragraph."""
    for f in dataclasses.fields(schema):
        if f.name == section and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if dataclasses.is_dataclass(value):
                return docstring(type(value))
    return ""


def command_part(command: str, schema: type, docs: list[Any]) -> list[str]:
    lines = [f"## {command}", ""]
    intro = docstring(schema)
    if intro:
        lines += [intro, ""]
    sections: dict[str, list[Any]] = {}
    for doc in docs:
        sections.setdefault(doc.key.split(".")[0] if "." in doc.key else "", []).append(doc)
    for section, keys in sorted(sections.items(), key=lambda item: item[0] != ""):
        title = "top-level keys" if section == "" else f"{section}.*"
        lines += [f"### {command}: {title}", ""]
        about = section_doc(schema, section) if section else ""
        if about:
            lines += [about, ""]
        lines += ["| key | type | default | range | what it holds |", "|---|---|---|---|---|"]
        lines += [f"| {code(d.key)} | {code(str(d.type))} | {code(value_text(d.default))} | "
                  f"{code(limit_text(d.key))} | {cell(d.comment)} |" for d in keys]
        lines.append("")
    return lines


def group_options(group: str) -> Iterable[tuple[str, str, list[tuple[str, str, str]]]]:
    """(option, what the file says it is, [(key, value, comment)]) for each file of a group."""
    import yaml

    for path in sorted((CONF / group).glob("*.yaml")):
        text = path.read_text()
        lines = text.splitlines()
        about = []
        for line in lines:
            if not line.startswith("#"):
                break
            if not line.startswith("#  "):  # indented lines are example commands
                about.append(line.lstrip("#").strip())
        comments: dict[str, list[str]] = {}
        key = None
        for line in lines:
            match = re.match(r"(\w+):[^#]*#\s*(.*)$", line)
            if match:
                key = match.group(1)
                comments[key] = [match.group(2).strip()]
            elif key and re.match(r"\s+#", line):  # a comment continued under the one above
                comments[key].append(line.strip().lstrip("#").strip())
            else:
                key = None
        data = yaml.safe_load(text) or {}
        keys = [(k, value_text(v), " ".join(comments.get(k, []))) for k, v in data.items()
                if k != "defaults" and not k.startswith("_")]
        yield path.stem, " ".join(about), keys


def groups_part() -> list[str]:
    lines = ["## Config groups", "",
             "A group option (`data=cifar10`, `sampler=random`, `hydra/launcher=slurm`) is a YAML file of "
             "`conf/<group>/` that sets a few keys of the schema above; everything else keeps its "
             "default. Options that set nothing but a name are picked by that name alone.", ""]
    for group, users in GROUPS.items():
        if not (CONF / group).is_dir():
            continue
        prefix = "hydra.launcher." if group == "hydra/launcher" else f"{group}."
        lines += [f"### {group}", "",
                  f"Taken by {users}.", "", "| option | what it is | keys it sets |", "|---|---|---|"]
        for option, about, keys in group_options(group):
            sets = "<br>".join(f"{code(prefix + k + '=' + v)}" + (f": {cell(c)}" if c else "")
                               for k, v, c in keys)
            lines.append(f"| {code(option)} | {cell(about)} | {sets} |")
        lines.append("")
    return lines


def render() -> str:
    """The whole page, from the schemas and conf/ as they are now."""
    describe, schemas = schema_interface()
    head = textwrap.dedent(f"""\
        <!-- Generated by `{REGENERATE}` from the schemas in nas/common/config.py and the YAML
             files in conf/: edit those, then rerun it (tests/test_docs.py and the docs build fail
             while this page is out of date). -->

        # Configuration reference

        Every key each command takes, with its type, its default, its valid range where it is a
        number, and what it holds. Override a key on the command line with `key=value`
        (`proxy.epochs=4`, `space.width=[0.75,1.0]`). Four are added to the config rather than
        changed, with a leading `+`: `+space=NAME`, `+budget.<kind>=N`, `+worker=N` and
        `+genotype=...`. A key the schema does not have, a value of the wrong type or one out
        of its range is refused in one line before anything runs. The ranges are one table for
        all commands (`LIMITS` in `nas/common/config.py`), so a key means the same wherever it
        appears; floats must also be finite. `python -m nas.search +space=mnv2
        +budget.mflops=300 --cfg job` prints the composed config of one command line.

        Commands: {", ".join(f"[{c}](#{c.replace('.', '')})" for c in schemas)}, then
        the [config groups](#config-groups).
        """).splitlines()
    lines = [*head, ""]
    for command, schema in schemas.items():
        lines += command_part(command, schema, describe(schema))
    lines += groups_part()
    return "\n".join(lines).rstrip() + "\n"


def stale_message() -> str | None:
    """Why the committed page is out of date, or None when it matches the schemas."""
    if not PAGE.is_file():
        return f"docs/{PAGE.name} is missing: run {REGENERATE}"
    if PAGE.read_text() != render():
        return (f"docs/{PAGE.name} does not match the schemas in nas/common/config.py and "
                f"conf/: run {REGENERATE} and commit the page")
    return None


def _check_at_build(app: Any) -> None:
    from sphinx.util import logging

    message = stale_message()
    if message:
        logging.getLogger(__name__).warning(message)


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _check_at_build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        message = stale_message()
        print(message or f"docs/{PAGE.name} is up to date",
              file=sys.stderr if message else sys.stdout)
        return 1 if message else 0
    if argv:
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    PAGE.write_text(render())
    print(f"wrote docs/{PAGE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
