"""ZINBVAE's read-outs as a user switching from ``scvi.model.SCVI`` reads them: the same
signatures, return types, shapes and meanings (rows of the normalized expression sum to the
library size asked for, ``transform_batch`` averages over batches, ...)."""

import numpy as np
import pandas as pd
import pytest
import torch

import deltavae as dv


@pytest.fixture(scope="module")
def vae():
    """An untrained ZINBVAE (its starting weights serve: the meanings, not the values, are
    tested) on 60 cells x 12 genes in two batches."""
    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=12, n_clusters=2, n_conditions=2, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=8)
    model.is_trained_ = True
    return model, adata


def test_normalized_expression_of_a_mask_by_name_labels_the_cells_it_computed(vae):
    """indices= as a boolean Series indexed by cell names in another order than obs: the
    cells computed were the mask's (by name), but scvi-tools labelled them
    ``obs_names[mask]``, by position: other cells' names, silently."""
    model, adata = vae
    mask = pd.Series(adata.obs_names.isin(["cell_3", "cell_7"]), index=adata.obs_names)
    shuffled = mask.sample(frac=1, random_state=0)
    assert not adata.obs_names[shuffled].isin(["cell_3", "cell_7"]).all()  # by position
    got = model.get_normalized_expression(indices=shuffled, library_size="latent")
    assert got.index.tolist() == ["cell_3", "cell_7"]
    # library_size="latent" with the observed library: each row sums to its cell's counts
    counts = np.asarray(adata[["cell_3", "cell_7"]].X.sum(1)).ravel()
    np.testing.assert_allclose(got.sum(axis=1), counts, rtol=1e-4)


def test_importance_weighted_expression_takes_indices_as_a_list(vae):
    """weights="importance" indexes indices with an array: a list (or range) failed with
    "only integer scalar arrays can be converted to a scalar index"."""
    model, _ = vae
    kwargs = {"weights": "importance", "n_mc_samples": 4, "n_mc_samples_per_pass": 2}
    draws = model.get_normalized_expression(n_samples_overall=7, indices=[0, 5, 9], **kwargs)
    assert draws.shape == (7, 12)
    np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-5)


def test_importance_weights_with_a_dataloader_are_refused_by_name(vae):
    """weights="importance" with dataloader= failed inside scvi-tools' weights with
    "object of type 'NoneType' has no len()": they read the cells by adata and indices."""
    model, adata = vae
    loader = model._make_data_loader(adata=adata, indices=np.arange(4), batch_size=4)
    with pytest.raises(ValueError, match=r"instead of dataloader=, or weights='uniform'"):
        model.get_normalized_expression(
            dataloader=loader, weights="importance", n_samples_overall=5, n_mc_samples=4
        )


def test_gene_list_with_a_dataloader_gives_the_genes_named(vae):
    """scvi-tools ignores gene_list given with dataloader= (every gene comes back); the
    reordering into the list's order then took the list's positions among the genes named
    from all genes: gene_list=["gene_9", "gene_2"] gave the columns of gene_1 and gene_0."""
    model, adata = vae
    loader = model._make_data_loader(adata=adata, indices=np.arange(4), batch_size=4)
    genes = ["gene_9", "gene_2"]
    torch.manual_seed(0)
    every = model.get_normalized_expression(dataloader=loader)
    torch.manual_seed(0)
    named = model.get_normalized_expression(dataloader=loader, gene_list=genes)
    np.testing.assert_array_equal(named, every[:, [9, 2]])


# numba compiles sparse's GCXS indexing on first use (18 s): in the slow stage.
@pytest.mark.slow
def test_posterior_predictive_gene_list_with_a_dataloader_gives_the_genes_named(vae):
    """As get_normalized_expression's: posterior_predictive_sample(dataloader=..., gene_list=)
    gave the draws of other genes than the list's."""
    model, adata = vae
    loader = model._make_data_loader(adata=adata, indices=np.arange(4), batch_size=4)
    genes = ["gene_9", "gene_2"]
    torch.manual_seed(0)
    draws = model.posterior_predictive_sample(dataloader=loader, gene_list=genes).todense()
    torch.manual_seed(0)
    np.testing.assert_array_equal(
        draws, model.posterior_predictive_sample(dataloader=loader).todense()[:, [9, 2]]
    )


def test_posterior_predictive_draws_compile_nothing_and_keep_scvi_tools_layout(vae, monkeypatch):
    """scvi-tools concatenated per-minibatch GCXS arrays along cells, which made pydata-sparse
    compile (numba) an axis change: 13 s on a first call for a read-out of 0.02 s, and as
    long again for a gene_list out of the model's order. The draws are the same sparse type,
    layout and values; only the array check every GCXS runs is compiled (about 2 s, once),
    beside the keyed draws' own loops (``_keyed_draws``: compiled once, then loaded from
    numba's cache in 0.1 s)."""
    import numba.core.dispatcher

    model, adata = vae
    compiled = []
    original = numba.core.dispatcher._DispatcherBase._compile_for_args

    def recording(self, *args, **kwargs):
        compiled.append(getattr(self, "__qualname__", str(self)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(numba.core.dispatcher._DispatcherBase, "_compile_for_args", recording)
    torch.manual_seed(1)
    draws = model.posterior_predictive_sample(
        n_samples=2, batch_size=25, gene_list=["gene_5", "gene_2"]
    )
    torch.manual_seed(1)
    every = model.posterior_predictive_sample(n_samples=2, batch_size=25)
    ours = {"_gamma_loop", "_poisson_loop"}
    assert set(compiled) <= {"_validate_gcxs_arrays", *ours}, compiled  # every GCXS's check
    assert type(draws).__name__ == "GCXS" and tuple(draws.compressed_axes) == (0,)
    assert draws.shape == (60, 2, 2) and every.shape == (60, 12, 2)
    monkeypatch.undo()
    np.testing.assert_array_equal(draws.todense(), every.todense()[:, [5, 2]])
    assert (draws.todense() >= 0).all() and draws.todense().sum() > 0


def test_docstrings_say_where_the_answers_differ_from_scvi_tools():
    """The read-outs take scvi-tools' docstrings, which described scvi-tools' answers where
    deltavae's differ on purpose (and called the reconstruction error higher-is-better, where
    it is a negative log-likelihood)."""
    model = dv.model.ZINBVAE

    def doc(method):
        return " ".join(method.__doc__.split())

    for method in (model.get_normalized_expression, model.posterior_predictive_sample):
        assert "come in the order of the list (scvi-tools keeps" in doc(method)
    assert "``n_samples_overall`` returns an ``np.ndarray``" in doc(model.get_normalized_expression)
    assert "-log p(x | z)`` (as scvi-tools computes it too): lower is better" in (
        doc(model.get_reconstruction_error)
    )
    assert "gives the mean over the cells, as ``np.float64``" in doc(model.get_marginal_ll)
    assert "Results come on the CPU" in doc(model.get_elbo)


def test_arguments_a_dataloader_makes_scvi_tools_drop_are_refused(vae):
    """scvi-tools reads dataloader='s minibatches as they come and drops transform_batch,
    indices and batch_size without a word: the expression asked for under batch "stim" came
    back under each cell's own."""
    model, adata = vae
    loader = model._make_data_loader(adata=adata, indices=np.arange(4), batch_size=4)
    with pytest.raises(ValueError, match=r"does not read transform_batch with dataloader="):
        model.get_normalized_expression(dataloader=loader, transform_batch="stim")
    with pytest.raises(ValueError, match=r"posterior_predictive_sample\(\) does not read indices"):
        model.posterior_predictive_sample(dataloader=loader, indices=[0, 1])
    with pytest.raises(ValueError, match=r"get_likelihood_parameters\(\) does not read batch_size"):
        model.get_likelihood_parameters(dataloader=loader, batch_size=2)
    assert model.get_likelihood_parameters(dataloader=loader)["mean"].shape == (4, 12)


def test_latent_and_elbo_read_outs_refuse_what_a_dataloader_makes_scvi_tools_drop(vae):
    """get_latent_representation, get_elbo, get_reconstruction_error and get_marginal_ll
    read dataloader='s minibatches and dropped indices/batch_size without a word: latents of
    4 cells came back for indices=[0, 1]."""
    model, adata = vae
    loader = model._make_data_loader(adata=adata, indices=np.arange(4), batch_size=4)
    with pytest.raises(ValueError, match=r"get_latent_representation\(\) does not read indices"):
        model.get_latent_representation(indices=[0, 1], dataloader=loader)
    for method in ("get_elbo", "get_reconstruction_error", "get_marginal_ll"):
        with pytest.raises(ValueError, match=rf"{method}\(\) does not read batch_size"):
            getattr(model, method)(batch_size=2, dataloader=loader)
    assert model.get_latent_representation(dataloader=loader).shape == (4, 3)
    cells = adata.copy()
    dv.model.CGMDVAE.setup_anndata(cells)
    g = dv.model.CGMDVAE(cells, n_clusters=2, n_latent=2, n_hidden=8)
    g.is_trained_ = True
    loader = g._make_data_loader(adata=cells, indices=np.arange(4), batch_size=4)
    with pytest.raises(ValueError, match=r"get_latent_representation\(\) does not read batch_s"):
        g.get_latent_representation(batch_size=2, dataloader=loader)
    assert g.get_latent_representation(dataloader=loader).shape == (4, 2)


@pytest.mark.parametrize(
    "method",
    [
        "get_normalized_expression",
        "get_likelihood_parameters",
        "get_feature_correlation_matrix",
        "posterior_predictive_sample",
    ],
)
@pytest.mark.parametrize("n_samples", [0, -1, 2.5, "2"])
def test_every_read_out_of_draws_refuses_a_count_of_draws_that_is_not_one_or_more(
    vae, method, n_samples
):
    """``n_samples`` is "Number of posterior samples" on every page, but only
    get_normalized_expression refused 0: get_likelihood_parameters and
    posterior_predictive_sample read 0 and -1 as one draw, get_feature_correlation_matrix
    returned a genes x genes table of NaN for 0 and numpy's "negative dimensions are not
    allowed" for -2, and 2.5 or "2" failed in torch.Size or on '>' between str and int."""
    model, _ = vae
    with pytest.raises(ValueError, match=r"n_samples is a number of draws, an integer from 1"):
        getattr(model, method)(n_samples=n_samples)


@pytest.mark.parametrize("n_mc_samples", [0, 2.5, "3"])
def test_marginal_ll_refuses_a_count_of_draws_that_is_not_one_or_more(vae, n_mc_samples):
    """get_marginal_ll's n_mc_samples of "3" failed on "'<' not supported between instances
    of 'str' and 'int'" inside the module; 0 said so in the module's words."""
    model, _ = vae
    with pytest.raises(ValueError, match=r"n_mc_samples is a number of draws, an integer from 1"):
        model.get_marginal_ll(n_mc_samples=n_mc_samples)


@pytest.mark.parametrize("mc_samples", [0, 2.5, "a"])
def test_latent_representation_refuses_a_count_of_draws_that_is_not_one_or_more(vae, mc_samples):
    """get_latent_representation read no mc_samples (a Gaussian latent needs no sampling) and
    so took "a" or 0 without a word, where every other count of draws is refused."""
    model, _ = vae
    with pytest.raises(ValueError, match=r"mc_samples is a number of draws, an integer from 1"):
        model.get_latent_representation(give_mean=False, mc_samples=mc_samples)
