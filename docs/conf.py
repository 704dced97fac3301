"""Sphinx settings of the nas documentation: MyST Markdown pages, the furo theme, autodoc for
the API pages and one local extension (`_ext/config_reference.py`) that checks the
configuration reference against the schemas.

Build from the repository root:  python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]  # autodoc imports nas from this checkout

project = "nas"
author = "the nas authors"
copyright = "the nas authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "config_reference",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "bench"]
# Headings get GitHub's anchors, so that `page.md#a-heading` links work on GitHub and here alike.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]
# Command lines are shown as typed: "--top-k" must not become an en dash.
smartquotes = False

# Docstrings are written with single backquotes for names (`Genotype`, `choose`): link them when
# they name an object, show them as code otherwise.
default_role = "py:obj"
autosummary_generate = False  # the summaries link to the entries on the same page
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True  # `out=sys.stdout`, not the repr of the stream
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}
# The lazy top-level `nas` and the packages import torch, Lightning and Optuna; they are installed
# with the project, so nothing is mocked and a renamed function breaks the build.

html_theme = "furo"
html_title = "nas"
