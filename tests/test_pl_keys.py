"""deltavae.pl refusing a misspelled obsm key, basis or history key names the one meant, as
its refusal of a misspelled obs column or gene does."""

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import deltavae as dv  # noqa: E402


def _cells(n=40):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(np.zeros((n, 3), dtype=np.float32))
    adata.obsm["cgmdvae_cluster_probs"] = rng.dirichlet(np.ones(3), n)
    adata.obsm["X_umap"] = rng.normal(size=(n, 2))
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    adata.obsm["proportions"] = pd.DataFrame(
        rng.dirichlet([1, 1, 1], n), index=adata.obs_names, columns=["Astro", "Neuron", "Oligo"]
    )
    adata.obs["cell_type"] = pd.Categorical(rng.choice(["B", "T", "NK"], n))
    return adata


def _history():
    epochs = np.arange(5)
    return {"elbo_train": pd.DataFrame({"elbo_train": 100.0 - epochs}, index=epochs)}


@pytest.mark.parametrize(
    ("plot", "meant"),
    [
        (lambda a: dv.pl.embedding(a, basis="X_umpa", color="cell_type", show=False), "X_umap"),
        (lambda a: dv.pl.cluster_probabilities(a, basis="X_umpa", show=False), "X_umap"),
        (lambda a: dv.pl.spatial_proportions(a, key="proportion", show=False), "proportions"),
        (lambda a: dv.pl.spatial_proportions(a, basis="spatail", show=False), "spatial"),
        (lambda a: dv.pl.spatial_proportions(a, columns=["Neuorn"], show=False), "Neuron"),
    ],
)
def test_a_misspelled_obsm_key_or_column_is_named(plot, meant):
    with pytest.raises(KeyError, match=f"did you mean '{meant}'\\?"):
        plot(_cells())


def test_a_misspelled_history_key_is_named():
    with pytest.raises(ValueError, match="did you mean 'elbo_train'\\?"):
        dv.pl.history(_history(), keys=["elbo_trian"], show=False)
    with pytest.warns(UserWarning, match="'elbo_trian': did you mean 'elbo_train'\\?"):
        dv.pl.history(_history(), keys=["elbo_train", "elbo_trian"], show=False)


@pytest.mark.parametrize(("basis", "names"), [("spatial", "spatial"), ("X_umap", "UMAP")])
def test_spatial_panels_name_their_axes_as_scanpy(basis, names):
    axes = dv.pl.spatial_proportions(_cells(), basis=basis, show=False)
    assert len(axes) == 3
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in axes} == {(f"{names}1", f"{names}2")}


def test_a_misspelled_cluster_name_is_named():
    adata = _cells()
    adata.uns["cgmdvae"] = {"cluster_names": np.array(["B", "Mono", "T"], dtype=object)}
    with pytest.raises(KeyError, match="did you mean 'Mono'\\?"):
        dv.pl.cluster_probabilities(adata, clusters=["Mno"], show=False)
    axes = dv.pl.cluster_probabilities(adata, clusters=["Mono"], show=False)
    assert [ax.get_title() for ax in axes] == ["Cluster entropy", "P(cluster Mono)"]


def test_the_training_loss_is_not_labelled_the_elbo():
    epochs = np.arange(6)
    weight = np.minimum(1.0, epochs / 3)
    # the objective weighs the KL term by the warm-up: below the ELBO until it ends
    frames = {
        "elbo_train": pd.DataFrame({"elbo_train": 100.0 - epochs}, index=epochs),
        "train_loss": pd.DataFrame({"train_loss": 90.0 + 10 * weight - epochs}, index=epochs),
        "kl_weight": pd.DataFrame({"kl_weight": weight}, index=epochs),
    }
    ax = dv.pl.history(frames, keys=["train_loss"], show=False)
    assert ax.get_ylabel() == "training objective per cell"
    ax = dv.pl.history(frames, keys=["train_loss", "elbo_train"], show=False)
    assert "ELBO" not in ax.get_ylabel()
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "elbo_train"]
    ax = dv.pl.history(frames, keys=["elbo_train"], show=False)
    assert ax.get_ylabel() == "negative ELBO per cell"
    assert [line.get_label() for line in ax.get_lines()] == ["training"]


def test_a_cluster_name_where_the_names_were_lost_says_why():
    """Without uns (anndata.concat drops it) and no cluster column, the clusters are numbered:
    clusters=['Mono'] was refused among '0', '1', '2' with no word of why; now the refusal
    says the names were lost and how to get them back. A close name still gets its hint."""
    adata = _cells()
    with pytest.raises(KeyError, match="names are not in adata.uns\\['cgmdvae'\\]"):
        dv.pl.cluster_probabilities(adata, clusters=["Mono"], show=False)
    with pytest.raises(KeyError, match="did you mean '1'\\?"):
        dv.pl.cluster_probabilities(adata, clusters=["1 "], show=False)
