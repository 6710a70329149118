"""The documentation builds with warnings as errors and documents every public name."""

import subprocess
import sys
from pathlib import Path

import pytest

import deltavae as dv

DOCS = Path(__file__).resolve().parents[1] / "docs"

for _module in ("sphinx", "myst_nb", "sphinx_book_theme"):
    pytest.importorskip(_module, reason=f'building the docs needs {_module}: pip install ".[docs]"')


# About 25 s on 2 CPU cores; `.ci/run` runs it in its second stage, `python -m pytest -m slow`.
@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
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
