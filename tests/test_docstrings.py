"""What the docstrings of the public read-outs say they return, or refuse, is what the code
does (the parameter names of every public callable against its signature: tests/test_docs.py;
the keywords the examples pass: tests/test_doc_drift.py)."""

import inspect

import pytest

import deltavae as dv


@pytest.fixture(scope="module")
def models():
    """An untrained ZINBVAE and CGMDVAE of the defaults (each reads the observed library)."""
    adata = dv.datasets.synthetic_counts(n_cells=40, n_genes=12, n_clusters=2, seed=0)
    zinb = adata.copy()
    dv.model.ZINBVAE.setup_anndata(zinb, layer="counts")
    cgmd = adata.copy()
    dv.model.CGMDVAE.setup_anndata(cgmd, layer="counts", condition_key="condition")
    return dv.model.ZINBVAE(zinb, n_latent=2), dv.model.CGMDVAE(cgmd, n_clusters=2, n_latent=2)


def test_get_latent_library_size_says_its_default_call_is_refused(models):
    """``get_latent_library_size()`` of a model reading the observed library (every CGMDVAE,
    a ZINBVAE of the default ``use_observed_lib_size=True``) raises at its default
    ``give_mean=True``: its page was scvi-tools' ("Return the mean or a sample from the
    posterior distribution") and said nothing of it, nor that ``give_mean=False`` returns
    the library the model reads."""
    for model in models:
        with pytest.raises(ValueError, match="give_mean=False"):
            model.get_latent_library_size()
        doc = " ".join(inspect.getdoc(type(model).get_latent_library_size).split())
        assert "``give_mean=True`` (the default) is refused" in doc, type(model).__name__
        assert "``give_mean=False`` returns the library the model reads" in doc
