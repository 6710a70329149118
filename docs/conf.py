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


def _kind(entry) -> str:
    """The autodoc directive's kind of a class member found with ``inspect.getattr_static``."""
    if isinstance(entry, property):
        return "property"
    return "method" if callable(getattr(entry, "__func__", entry)) else "attribute"


def _inherited_from_deltavae() -> dict[str, list[tuple[str, str]]]:
    """Per building-block class, the public members a deltavae base class or mixin defines,
    as (name, "method", "property" or "attribute"): ``CGMDVAEModule.translate`` from
    ``CGMDVAEGeneration``, ``sample`` and ``marginal_ll`` from ``DeltaPyroModule``.
    class_own.rst leaves out inherited members, and these are deltavae's own, not
    Lightning's or scvi-tools' (overrides of their hooks stay out)."""
    import inspect

    from deltavae._docs import building_block_classes

    found = {}
    for name, cls in building_block_classes():
        ours = [k for k in cls.__mro__[1:] if k.__module__.startswith("deltavae")]
        foreign = [k for k in cls.__mro__ if not k.__module__.startswith("deltavae")]
        found[f"deltavae.{name}"] = [
            (attr, _kind(entry))
            for attr in dir(cls)
            if not attr.startswith("_")
            and attr not in cls.__dict__
            and any(attr in k.__dict__ for k in ours)
            and not any(attr in k.__dict__ for k in foreign)
            for entry in [inspect.getattr_static(cls, attr)]
        ]
    return found


autosummary_context = {"inherited_from_deltavae": _inherited_from_deltavae()}

# Cross-references are checked: a :func:, :meth:, :attr:, :data: or :mod: role, or a public
# class of deltavae, that no page documents is a warning, which the -W build fails on (the
# pages named private helpers nobody can click: :func:`nearest_response`, :mod:`deltavae.
# module._imputer`). Not checked: other packages' objects (the build runs offline, without
# intersphinx) and the other classes named as types, in annotations above all (torch's,
# anndata's, deltavae's private mixins).
nitpicky = True
_OTHER_PACKAGES = (
    r"(anndata|collections|lightning|matplotlib|numpy|os|pandas|pathlib|pyro|scanpy|scipy"
    r"|scvi|sklearn|torch)(\..+)?"
)
nitpick_ignore_regex = [
    ("py:class", r"(?!deltavae\.[a-z]+\.[A-Z]).+"),
    (r"py:(func|meth|attr|data|mod|obj|exc)", _OTHER_PACKAGES),
]
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
