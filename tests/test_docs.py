"""The documentation builds with warnings as errors and documents every public name."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import deltavae as dv

DOCS = Path(__file__).resolve().parents[1] / "docs"

_SECTION = re.compile(
    r"^(Parameters|Other Parameters)\n-{3,}\n(.*?)(?=^[^\s][^\n]*\n-{3,}\n|\Z)", re.M | re.S
)


def _documented(doc: str) -> set[str] | None:
    """Names of a numpydoc docstring's parameters ("a, b" entries give both), or None."""
    sections = _SECTION.findall(inspect.cleandoc(doc))
    if not sections:
        return None
    entries = (line.partition(" : ")[0] for _, text in sections for line in text.splitlines())
    return {n.strip().lstrip("*") for e in entries if e[:1].strip() for n in e.split(",")}


def _inherited(cls, attr: str) -> bool:
    entry = cls.__dict__[attr]
    return getattr(getattr(entry, "__func__", entry), "wraps_inherited", False)


def _public_callables():
    for name in dv.model.__all__:
        cls = getattr(dv.model, name)
        yield f"model.{name}", cls.__init__, inspect.getdoc(cls)
        for attr in dir(cls):
            if attr.startswith("_"):
                continue
            # The class that defines it: a model class wraps every public method it inherits
            # too (model/_backing.py), which leaves it its owner's.
            owner = next(k for k in cls.__mro__ if attr in k.__dict__ and not _inherited(k, attr))
            if not owner.__module__.startswith("deltavae"):
                continue  # scvi-tools' own methods keep scvi-tools' docstrings
            method = getattr(cls, attr)
            if callable(method) and not inspect.isclass(method):
                yield f"model.{name}.{attr}", method, inspect.getdoc(method)
    for name in dv.module.__all__:
        cls = getattr(dv.module, name)
        yield f"module.{name}", cls.__init__, inspect.getdoc(cls)
    for module in (dv.pl, dv.metrics, dv.datasets):
        for name in module.__all__:
            yield f"{module.__name__}.{name}", getattr(module, name), getattr(module, name).__doc__
    for func in (dv.read_lazy, dv.write_results_to_store, dv.set_threads, dv.train.refit_mixture):
        yield func.__qualname__, func, func.__doc__


def test_docstrings_name_every_parameter_and_no_other():
    """Every parameter of the public models, plots and metrics is documented, under its own
    name, and the docstrings document no parameter the function does not take."""
    wrong = []
    for name, func, doc in _public_callables():
        params = [
            p
            for p in inspect.signature(func).parameters.values()
            if p.name not in ("self", "cls")
            # For scvi-tools' load and load_query_data only; any other keyword is refused.
            and not (name.endswith(".setup_anndata") and p.kind is p.VAR_KEYWORD)
        ]
        documented = _documented(doc or "")
        if documented is None:  # prose (a one-line method): its named parameters named
            variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            missing = [p.name for p in params if p.kind not in variadic and p.name not in doc]
            stale = []
        else:
            missing = [p.name for p in params if p.name not in documented]
            stale = sorted(documented - {p.name for p in params})
        if missing or stale:
            wrong.append(f"{name}: undocumented {missing}, not parameters {stale}")
    assert not wrong, "\n".join(wrong)


# About 25 s on 2 CPU cores; `.ci/run` runs it in its second stage, `python -m pytest -m slow`.
@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "myst_nb", "sphinx_book_theme"):
        pytest.importorskip(
            module, reason=f'building the docs needs {module}: pip install ".[docs]"'
        )
    if not (DOCS / "conf.py").is_file():
        pytest.skip("docs/ is not next to the tests (installed package)")
    out = tmp_path / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    # Every public class and function has its own API page.
    for module in ("model", "train", "pl", "datasets", "metrics", "module", "nn", "distributions"):
        for name in getattr(dv, module).__all__:
            if name.isupper():  # constants (LIKELIHOODS), listed in their functions' pages
                continue
            page = out / "api" / "generated" / f"deltavae.{module}.{name}.html"
            assert page.is_file(), f"deltavae.{module}.{name} is missing from docs/api/index.md"
    cgmdvae = (out / "api" / "generated" / "deltavae.model.CGMDVAE.html").read_text()
    for method in ("train", "predict_clusters", "sample", "translate", "load_query_data"):
        assert f'id="deltavae.model.CGMDVAE.{method}"' in cgmdvae
    # Methods inherited from scvi-tools' mixins are listed and documented on the model's page.
    zinbvae = (out / "api" / "generated" / "deltavae.model.ZINBVAE.html").read_text()
    for method in (
        "get_latent_representation",
        "get_normalized_expression",
        "differential_expression",
        "get_reconstruction_error",
    ):
        assert f'id="deltavae.model.ZINBVAE.{method}"' in zinbvae
        assert f'href="#deltavae.model.ZINBVAE.{method}"' in zinbvae
    # n_latent_w has its own text (napoleon gives "a, b" entries the same text twice).
    assert "n_latent_w</strong> (<em>int</em>) – Dimensions of w," in cgmdvae
    # The tutorials are rendered from their committed outputs, figures included.
    for notebook in sorted((DOCS.parent / "tutorials").glob("*.ipynb")):
        html = (out / "tutorials" / f"{notebook.stem}.html").read_text()
        assert html.count("<img") >= 3, notebook.name
    for page in ("zinbvae", "cgmdvae", "deconvolution"):
        assert (out / "math" / f"{page}.html").is_file()
    assert (out / "architecture.html").is_file()
    assert "d\\_term" in (out / "math" / "cgmdvae.html").read_text()
