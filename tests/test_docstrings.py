"""What the docstrings of the public read-outs say they return, or refuse, is what the code
does (the parameter names of every public callable against its signature: tests/test_docs.py;
the keywords the examples pass: tests/test_doc_drift.py)."""

import inspect
import warnings

import pytest

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


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


def test_differential_abundance_says_what_it_writes_and_returns(models):
    """``differential_abundance`` showed scvi-tools' docstring alone ("Compute the
    differential abundance between samples"): nothing of the ``obsm["da_log_probs"]`` it
    writes (into ``adata`` as given), of its None return, or of ``sample_key`` being
    required."""
    vae = models[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: too few to converge, said
        vae.train(max_epochs=1, batch_size=40, **TRAIN)
    cells = vae.adata[:30].copy()
    assert vae.differential_abundance(cells, sample_key="condition") is None
    table = cells.obsm["da_log_probs"]
    assert table.shape == (30, cells.obs["condition"].nunique())
    assert list(table.columns) == [str(s) for s in cells.obs["condition"].unique()]
    assert "da_log_probs" not in vae.adata.obsm  # the AnnData given, not the model's
    with pytest.raises(KeyError, match="sample_key=None"):
        vae.differential_abundance(cells)
    doc = " ".join(inspect.getdoc(type(vae).differential_abundance).split())
    for said in (
        'Returns None: the log densities are written to ``adata.obsm["da_log_probs"]``',
        "cells x samples",
        "of ``adata`` as given",
        "``sample_key`` is required",
    ):
        assert said in doc, said


def test_prepare_query_anndata_says_it_returns_none_in_place(models):
    """``prepare_query_anndata``'s Returns (scvi-tools') says "Query adata ready to use in
    `load_query_data`", but at its default ``inplace=True`` it pads the query itself and
    returns None: ``query = Model.prepare_query_anndata(query, ref)`` lost the query."""
    vae = models[0]
    query = vae.adata[:10, 2:].copy()  # two of the reference's genes missing
    with pytest.warns(UserWarning, match="2 of the reference's 12 genes are missing"):
        assert type(vae).prepare_query_anndata(query, vae) is None
    assert list(query.var_names) == list(vae.adata.var_names)  # padded in place
    with pytest.warns(UserWarning, match="2 of the reference's 12 genes are missing"):
        ready = type(vae).prepare_query_anndata(vae.adata[:10, 2:].copy(), vae, inplace=False)
    assert list(ready.var_names) == list(vae.adata.var_names)
    genes = type(vae).prepare_query_anndata(query, vae, return_reference_var_names=True)
    assert list(genes) == list(vae.adata.var_names)
    doc = " ".join(inspect.getdoc(type(vae).prepare_query_anndata).split())
    assert "with ``inplace=True`` (the default) the query itself is padded" in doc
    assert "and the method returns None; with ``inplace=False``, the new AnnData" in doc


def test_mixture_terms_names_every_term_it_returns(models):
    """``CGMDVAEModule.mixture_terms`` returned ``qy`` (cells x K) besides the four
    per-cell terms its docstring listed as what it returns."""
    import torch

    module = models[1].module
    z, w = torch.randn(6, module.n_latent), torch.randn(6, module.n_latent_w)
    cats = torch.zeros(6, 1, dtype=torch.long)
    terms = module.mixture_terms(z, w, cats)
    doc = inspect.getdoc(type(module).mixture_terms)
    assert [key for key in terms if f"``{key}``" not in doc] == []
    assert terms["qy"].shape == (6, module.n_clusters)
    assert all(terms[key].shape == (6,) for key in ("log_pz", "y_term", "d_term", "classifier"))


def test_count_only_read_outs_say_so():
    """A CGMDVAE of likelihood ``"normal"`` or ``"bernoulli"`` refuses scvi-tools' five
    count read-outs (NotImplementedError), whose pages (scvi-tools' text) said nothing of it."""
    adata = dv.datasets.synthetic_blobs(n_cells=40, n_features=6, n_clusters=2, seed=0)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=2, likelihood="normal")
    calls = {
        "get_normalized_expression": {},
        "differential_expression": {"groupby": "cluster"},
        "get_likelihood_parameters": {},
        "get_latent_library_size": {"give_mean": False},
        "get_feature_correlation_matrix": {},
    }
    for name, kwargs in calls.items():
        with pytest.raises(NotImplementedError, match="count likelihood"):
            getattr(model, name)(**kwargs)
        doc = " ".join(inspect.getdoc(getattr(dv.model.CGMDVAE, name)).split())
        assert 'For a count likelihood only (``"zinb"``, ``"nb"``)' in doc, name
