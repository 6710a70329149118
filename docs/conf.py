"""Sphinx configuration: myst-nb pages, the committed tutorials (not re-executed), API reference."""

import shutil
from importlib.metadata import version as _version
from pathlib import Path

from docutils import nodes
from sphinx.domains import Domain

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

project = "deltavae"
author = "deltavae developers"
copyright = "2026, deltavae developers"
release = _version("deltavae")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# The notebooks live in tutorials/ at the repository root, committed with their outputs; the
# site shows those outputs as they are.
_TUTORIALS = HERE / "tutorials"
_TUTORIALS.mkdir(exist_ok=True)
for _notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
    shutil.copy2(_notebook, _TUTORIALS / _notebook.name)
nb_execution_mode = "off"
nb_merge_streams = True

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    # A model's page lists every method a user can call on it, those that scvi-tools' base
    # classes provide (get_normalized_expression, differential_expression ...) included.
    "inherited-members": True,
    "show-inheritance": False,
}
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
# Returns sections are prose (what is returned and where it is written), shown as written;
# napoleon would read their first words as a name and a type.
napoleon_custom_sections = ["Returns"]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
# .rst first: autosummary writes its generated pages with the first suffix, and they are rST.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

html_theme = "sphinx_book_theme"
html_title = "deltavae"
html_static_path = ["_static"]
html_theme_options = {"show_toc_level": 2}


def _citation_key(name, rawtext, text, lineno, inliner, options=None, content=None):
    return [nodes.inline(rawtext, f"[{text}]")], []


class _CitationKeys(Domain):
    """``:cite:p:`key``` and ``:cite:t:`key``` shown as ``[key]``.

    The model pages include the methods inherited from scvi-tools, whose docstrings cite with
    sphinxcontrib-bibtex's roles against scvi-tools' own bibliography, which is not ours.
    """

    name = "cite"
    label = "citation keys"
    roles = {"p": _citation_key, "t": _citation_key}

    def merge_domaindata(self, docnames, otherdata):
        pass  # nothing is stored


def setup(app):
    app.add_domain(_CitationKeys)
