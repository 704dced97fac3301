"""The documentation agrees with the code: the configuration reference with the schemas, and
the links of the README and the docs pages with the files and headings they point at.

The docs build itself (`python -m sphinx -W ...`, in .ci/run) checks the pages' links and the
API pages; these tests need no Sphinx."""

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load_generator():
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "_ext" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
DESCRIBE, SCHEMAS = generator.schema_interface()
PAGE = (DOCS / "configuration.md").read_text()


def command_section(command: str) -> str:
    """The part of the configuration page about one command."""
    start = PAGE.index(f"\n## {command}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start:end if end >= 0 else None]


def rows(section: str) -> dict[str, str]:
    """Table rows of a page section by their key (the first cell)."""
    out = {}
    for line in section.splitlines():
        match = re.match(r"\| `([^`]+)` \|", line)
        if match:
            out[match.group(1)] = line
    return out


def schema_leaves(schema: type, prefix: str = "") -> list[str]:
    """Every key a schema has, read from the dataclasses themselves, not through `describe`."""
    out = []
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += schema_leaves(type(default), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_the_configuration_page_is_what_the_schemas_give_now():
    assert generator.stale_message() is None, generator.stale_message()


def test_the_page_covers_the_search_train_and_supernet_commands():
    assert {"nas.search", "nas.train", "nas.supernet"} <= set(SCHEMAS)


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_every_key_of_a_schema_is_a_row_of_its_command_with_type_and_default(command):
    table = rows(command_section(command))
    for doc in DESCRIBE(SCHEMAS[command]):
        assert doc.key in table, f"{command}: {doc.key} is not on docs/configuration.md"
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", table[doc.key])[1:-1]]
        assert cells[1] == generator.code(str(doc.type)), (doc.key, cells)
        assert cells[2] == generator.code(generator.value_text(doc.default)), (doc.key, cells)


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_the_page_has_exactly_the_keys_of_the_dataclasses(command):
    assert set(rows(command_section(command))) == set(schema_leaves(SCHEMAS[command]))


def test_a_page_with_another_default_is_stale(tmp_path, monkeypatch):
    edited = PAGE.replace("| `proxy.epochs` | `int` | `2` |", "| `proxy.epochs` | `int` | `3` |")
    assert edited != PAGE
    (tmp_path / "configuration.md").write_text(edited)
    monkeypatch.setattr(generator, "PAGE", tmp_path / "configuration.md")
    assert "python docs/_ext/config_reference.py" in generator.stale_message()


@pytest.mark.parametrize(("value", "text"), [
    (None, "null"), (True, "true"), (2, "2"), (0.5, "0.5"), (1.0, "1.0"), (4e-05, "4e-05"),
    ("auto", "auto"), ("", "''"), ([0.75, 1.0], "[0.75, 1.0]"), ({}, "{}"),
])
def test_defaults_are_written_as_on_the_command_line(value, text):
    assert generator.value_text(value) == text


# ----- links --------------------------------------------------------------------------------

def github_anchor(heading: str) -> str:
    """The anchor GitHub (and MyST's myst_heading_anchors) gives a heading. Links use these
    rather than MyST's `(label)=` targets, which GitHub does not know."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = page.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # '# comments' in code blocks are not headings
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
PAGES = [p for p in PAGES if "_build" not in p.parts]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings_that_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: link to {target}: no such heading"


def test_every_kept_benchmark_result_is_linked_from_the_benchmarks_page():
    page = (DOCS / "benchmarks.md").read_text()
    kept = sorted(p.name for p in (DOCS / "bench").iterdir())
    assert kept
    assert [name for name in kept if f"](bench/{name})" not in page] == []
