"""The read-outs that keep each minibatch's values on the model's device and bring them to the
host together (:mod:`deltavae.model._gathered`), followed with each tensor's would-be device
(:mod:`_device_tracker`, as in test_device_tracking.py), in the variants the other files leave
out: several ``transform_batch``, a ``gene_list``, draws per cell kept apart, draws of cells
overall, a dispersion per gene (repeated on the host), ``give_mean`` over draws, importance
passes of several draws, the spot models' ``batch_size``, ``indices`` and posterior
predictive draws, the imputer's latent of spots and reference cells. Each runs with a flush
to the host after every minibatch (``FLUSH_BYTES`` of 1 byte), so that the parts joined on
the host are several."""

import numpy as np
import pytest

import deltavae as dv
import deltavae.model._gathered as gathered

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}


@pytest.fixture
def flush(monkeypatch):
    """Each minibatch's values brought to the host as a part of its own (a read-out of many
    cells on a GPU): the parts' joins and splits run too."""
    monkeypatch.setattr(gathered, "FLUSH_BYTES", 1)


def _counts(seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=seed
    )


def test_zinbvae_gathered_read_outs_stay_on_the_device(tracked, flush):
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, use_observed_lib_size=False)
    genes = list(adata.var_names[[5, 1, 30]])
    both = ["ctrl", "stim"]
    kw = {"batch_size": 48}
    tracked(
        vae.module,
        {
            "expression, two batches, genes": lambda: vae.get_normalized_expression(
                transform_batch=both, gene_list=genes, **kw
            ),
            "expression, draws per cell": lambda: vae.get_normalized_expression(
                n_samples=3, return_mean=False, indices=np.arange(0, 200, 3), **kw
            ),
            "expression, drawn cells": lambda: vae.get_normalized_expression(
                n_samples_overall=50, **kw
            ),
            "expression, latent library": lambda: vae.get_normalized_expression(
                library_size="latent", n_samples=2, **kw
            ),
            "likelihood, mean of draws": lambda: vae.get_likelihood_parameters(
                n_samples=2, give_mean=True, **kw
            ),
            "library, mean": lambda: vae.get_latent_library_size(give_mean=True, **kw),
            "marginal ll, passes": lambda: vae.get_marginal_ll(
                n_mc_samples=4, n_mc_samples_per_pass=2, return_mean=False, **kw
            ),
            "posterior predictive, genes": lambda: vae.posterior_predictive_sample(
                n_samples=2, gene_list=genes, transform_batch=both, **kw
            ),
            "correlation, a batch": lambda: vae.get_feature_correlation_matrix(
                n_samples=2, transform_batch="stim", **kw
            ),
            "de, two batches": lambda: vae.differential_expression(
                groupby="cluster", group1="0", batch_correction=True, **kw
            ),
            "abundance, some cells": lambda: vae.differential_abundance(
                sample_key="cluster", num_cells_posterior=30, **kw
            ),
        },
        train=lambda: vae.train(max_epochs=1, **TRAIN),
    )


def test_zinbvae_of_one_dispersion_per_gene_stays_on_the_device(tracked, flush):
    """The dispersion is one per gene: read once and repeated for every cell on the host."""
    adata = _counts()
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, dispersion="gene")
    tracked(
        vae.module,
        {
            "likelihood": lambda: vae.get_likelihood_parameters(batch_size=48),
            "library, observed": lambda: vae.get_latent_library_size(
                give_mean=False, batch_size=48
            ),
        },
        train=lambda: vae.train(max_epochs=1, **TRAIN),
    )


def test_cgmdvae_gathered_read_outs_stay_on_the_device(tracked, flush):
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    genes = list(adata.var_names[[7, 2]])
    kw = {"batch_size": 48}
    tracked(
        model.module,
        {
            "expression, genes, draws": lambda: model.get_normalized_expression(
                gene_list=genes, n_samples=2, **kw
            ),
            "likelihood, draws": lambda: model.get_likelihood_parameters(n_samples=2, **kw),
            "library": lambda: model.get_latent_library_size(give_mean=False, **kw),
            "marginal ll, passes": lambda: model.get_marginal_ll(
                n_mc_samples=4, n_mc_samples_per_pass=2, **kw
            ),
            "posterior predictive, genes": lambda: model.posterior_predictive_sample(
                n_samples=2, gene_list=genes, **kw
            ),
            "abundance": lambda: model.differential_abundance(sample_key="cluster", **kw),
        },
        train=lambda: model.train(
            max_epochs=1, mixture_init="kmeans", mixture_init_epoch=0, **TRAIN
        ),
    )


def test_spot_gathered_read_outs_stay_on_the_device(tracked, flush, monkeypatch):
    import deltavae.model._imputer as imputer_model

    monkeypatch.setattr(imputer_model, "_CHUNK", 16)  # 40 spots: three chunks
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    deconv = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    tracked(
        deconv.module,
        {
            "abundance, some spots": lambda: deconv.get_abundance(
                indices=np.arange(3, 40, 2), batch_size=8
            ),
            "proportions of new spots": lambda: deconv.get_proportions(
                spots[5:30].copy(), batch_size=8
            ),
            "posterior predictive of new spots": lambda: deconv.posterior_predictive_sample(
                spots[5:30].copy(), n_samples=2, batch_size=8
            ),
        },
        train=lambda: deconv.train(max_epochs=1, **TRAIN),
    )
    measured = spots[:, spots.var_names[:100]].copy()
    latent = dv.model.SpatialImputer.from_reference(
        measured.copy(), ref, labels_key="cluster", design="latent"
    )
    tracked(
        latent.module,
        {
            "latent, distributions": lambda: latent.get_latent_representation(return_dist=True),
            "latent drawn": lambda: latent.get_latent_representation(give_mean=False),
            "latent of reference cells": lambda: latent.get_latent_representation(
                reference=True, batch_size=64
            ),
            "impute, some spots": lambda: latent.impute(indices=np.arange(0, 40, 3)),
            "posterior predictive, genes": lambda: latent.posterior_predictive_sample(
                indices=np.arange(0, 40, 3), gene_list=list(measured.var_names[[9, 2]])
            ),
        },
        train=lambda: latent.train(max_epochs=1, **TRAIN),
    )
    neighbours = dv.model.SpatialImputer.from_reference(measured.copy(), ref, labels_key="cluster")
    tracked(
        neighbours.module,
        {
            "impute in chunks of 7": lambda: neighbours.impute(batch_size=7),
            "impute measured genes": lambda: neighbours.impute(list(ref.var_names[95:105])),
            "posterior predictive": lambda: neighbours.posterior_predictive_sample(
                n_samples=3, batch_size=16
            ),
        },
        train=lambda: neighbours.train(max_epochs=1, **TRAIN),
    )
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    archetypes = dv.model.Archetypes(mix, n_archetypes=3)
    tracked(
        archetypes.module,
        {
            "weights, some spots": lambda: archetypes.get_archetype_weights(
                indices=np.arange(0, 60, 4), batch_size=8
            ),
            "posterior predictive": lambda: archetypes.posterior_predictive_sample(
                n_samples=2, batch_size=8
            ),
        },
        train=lambda: archetypes.train(max_epochs=1, **TRAIN),
    )
