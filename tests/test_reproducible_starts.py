"""Reproducibility as scverse users expect it: the same data and arguments give the same model
start and results again in one process, with ``scvi.settings.seed`` set or left unset."""

import warnings

import numpy as np
import pytest
import scvi
import torch

import deltavae as dv


@pytest.fixture
def unseeded(monkeypatch):
    """scvi-tools' default: ``scvi.settings.seed`` None (the setter would reseed everything)."""
    monkeypatch.setattr(scvi.settings, "_seed", None)


def test_unseeded_auto_archetypes_choose_from_the_same_curve(unseeded):
    """Before, the furthest-sum start drew from the operating system's entropy while the seed
    was unset: the explained-variance curve moved in its 3rd digit from build to build (0.986,
    0.987, 0.986 at 5 archetypes of these spots), and the elbow could move with it."""
    spots = dv.datasets.convex_mixtures(n_spots=60, n_genes=80, n_archetypes=4, seed=0)
    dv.model.Archetypes.setup_anndata(spots)
    curves, starts = [], []
    for _ in range(3):
        model = dv.model.Archetypes(spots, n_archetypes="auto", max_archetypes=6, n_hidden=8)
        curves.append(model.elbow_["explained_variance"])
        starts.append(model.module.B_logits.detach().clone())
    for curve, start in zip(curves[1:], starts[1:], strict=True):
        np.testing.assert_array_equal(curve, curves[0])
        assert torch.equal(start, starts[0])


def test_unseeded_nmf_start_subsamples_the_same_spots(unseeded):
    """NMFDeconv's reference-free start reads a random subsample of the spots (start_spots)
    and NMF's NNDSVD start runs a randomised SVD: both drew unseeded while the seed was unset,
    so two builds (the encoder's own start repeated by torch.manual_seed) differed."""
    spots = dv.datasets.convex_mixtures(n_spots=120, n_genes=80, n_archetypes=3, seed=1)
    dv.model.NMFDeconv.setup_anndata(spots)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = dv.model.NMFDeconv(spots, n_components=3, start_spots=50, nmf_max_iter=20)
        states.append({k: v.clone() for k, v in model.module.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name


def test_unseeded_differential_abundance_repeats(unseeded):
    """The cells of each sample's aggregated posterior (``num_cells_posterior``) were drawn
    from the operating system's entropy while the seed was unset: two calls gave two tables.
    scvi-tools draws them from numpy's global stream, which a call advances for the user."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata)
    torch.manual_seed(0)
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    tables, numpy_state = [], np.random.get_state()[1].copy()  # noqa: NPY002
    for _ in range(2):
        model.differential_abundance(sample_key="condition", num_cells_posterior=10)
        tables.append(np.asarray(adata.obsm["da_log_probs"], dtype=float).copy())
    np.testing.assert_array_equal(tables[0], tables[1])
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # the user's stream  # noqa: NPY002


def _fit(kind: str):
    """One fit under seed 0: its history, latent (or weights) and clusters (or labels)."""
    scvi.settings.seed = 0
    train = {"accelerator": "cpu", "enable_progress_bar": False, "enable_model_summary": False}
    if kind == "Archetypes":
        spots = dv.datasets.convex_mixtures(n_spots=60, n_genes=80, n_archetypes=4, seed=0)
        dv.model.Archetypes.setup_anndata(spots)
        model = dv.model.Archetypes(spots, n_archetypes="auto", max_archetypes=6, n_hidden=8)
        model.train(max_epochs=3, batch_size=32, **train)
        with warnings.catch_warnings():  # thin archetypes of a 3-epoch fit merged (warned)
            warnings.simplefilter("ignore", UserWarning)
            weights = model.get_archetype_weights().to_numpy()
        return model.history, weights, weights.argmax(axis=1)
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    if kind == "ZINBVAE":
        dv.model.ZINBVAE.setup_anndata(adata)
        model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
        model.train(max_epochs=2, batch_size=32, **train)
        return model.history, model.get_latent_representation(), None
    if kind == "CGMDVAE semi-supervised":
        adata.obs["label"] = adata.obs["cluster"].astype(str)
        adata.obs.loc[adata.obs_names[::3], "label"] = "Unknown"
        setup = {"labels_key": "label", "unlabeled_category": "Unknown"}
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", **setup)
        model = dv.model.CGMDVAE(adata, n_latent=2, n_hidden=8)
        model.train(max_epochs=3, batch_size=32, **train)
        return model.history, model.get_latent_representation(), model.predict_labels()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=2, n_hidden=8)
    model.train(max_epochs=3, batch_size=32, mixture_init_epoch=1, refit_mixture=True, **train)
    return model.history, model.get_latent_representation(), model.predict_clusters()


@pytest.mark.parametrize("kind", ["ZINBVAE", "CGMDVAE", "CGMDVAE semi-supervised", "Archetypes"])
def test_two_fits_under_one_seed_in_one_process_are_the_same(kind):
    """A guard of what the README promises: the same seed, data and arguments give the same
    history, latents and clusters again (CGMDVAE's Leiden mixture start and refit included;
    Archetypes' 'auto' start)."""
    first, second = _fit(kind), _fit(kind)
    assert first[0].keys() == second[0].keys()
    for name in first[0]:
        np.testing.assert_array_equal(first[0][name].to_numpy(), second[0][name].to_numpy())
    np.testing.assert_array_equal(first[1], second[1])
    if first[2] is not None:
        np.testing.assert_array_equal(np.asarray(first[2]), np.asarray(second[2]))
