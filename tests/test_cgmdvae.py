"""CGMDVAE: ELBO terms, clustering, supervision, generation, translation, save/load."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

import deltavae as dv
from deltavae.metrics import ari, clustering_accuracy

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 64}


def _blobs(n_cells=600, seed=0):
    return dv.datasets.synthetic_blobs(
        n_cells=n_cells, n_features=16, n_clusters=5, n_conditions=2, seed=seed, separation=10.0
    )


@pytest.fixture(scope="module")
def blobs_model():
    adata = _blobs()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=5, likelihood="normal", **SMALL)
    model.train(max_epochs=60, **TRAIN)
    return model, adata


def test_sampled_cells_are_named_alike_on_any_device(blobs_model, monkeypatch):
    """A seed's cells were named from the first cell's values, which for a normal likelihood
    carry the decoding's round-off: a GPU (its last digits off the CPU's) named the same
    cells otherwise. Named from the seed and the model's parameters: another model (trained
    on) still names them otherwise."""
    model, _ = blobs_model
    first = model.sample(8, seed=5)
    decode = type(model.module).decode

    def as_on_a_gpu(self, *args, **kwargs):
        out = decode(self, *args, **kwargs)
        out["out"] = out["out"] * (1 + 2e-7)
        return out

    monkeypatch.setattr(type(model.module), "decode", as_on_a_gpu)
    again = model.sample(8, seed=5)
    assert not np.array_equal(first.X, again.X)  # the round-off
    assert list(again.obs_names) == list(first.obs_names)
    monkeypatch.undo()
    weight = next(model.module.parameters())
    kept = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        other = model.sample(8, seed=5)
    finally:
        with torch.no_grad():
            weight.copy_(kept)
    assert not set(other.obs_names) & set(first.obs_names)


def test_blobs_recovered_and_written(blobs_model):
    model, adata = blobs_model
    train = model.history["elbo_train"]["elbo_train"].to_numpy(float)
    assert np.isfinite(train).all() and train[-1] < 0.8 * train[0]
    for term in ("reconstruction_loss", "z_term", "w_term", "y_term", "d_term"):
        values = model.history[f"{term}_validation"].to_numpy(float)
        assert np.isfinite(values).all(), term
    keys = model.write_to_adata()
    assert set(keys) == {
        "obsm/X_cgmdvae",
        "obsm/X_cgmdvae_w",
        "obs/cgmdvae_cluster",
        "obsm/cgmdvae_cluster_probs",
        "uns/cgmdvae",
    }
    assert adata.obsm["X_cgmdvae"].shape == (600, 4)
    assert adata.obsm["X_cgmdvae_w"].shape == (600, 2)
    probs = adata.obsm["cgmdvae_cluster_probs"]
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert adata.obs["cgmdvae_cluster"].dtype == "category"
    assert ari(adata.obs["cluster"], adata.obs["cgmdvae_cluster"]) > 0.98
    np.testing.assert_array_equal(model.predict_clusters(), model.predict_clusters())
    np.testing.assert_array_equal(model.predict_clusters(), probs.argmax(1))


def test_count_read_outs_of_a_normal_likelihood_say_why_not(blobs_model):
    """get_latent_library_size failed with "exp(): argument 'input' must be Tensor",
    get_feature_correlation_matrix with "'Normal' object has no attribute 'theta'"."""
    model, _ = blobs_model
    with pytest.raises(NotImplementedError, match="library sizes .* likelihood is 'normal'"):
        model.get_latent_library_size(give_mean=False)
    with pytest.raises(NotImplementedError, match="library sizes .* likelihood is 'normal'"):
        model.get_latent_library_size()  # the likelihood first: no library size at all
    with pytest.raises(NotImplementedError, match="frequencies .* likelihood is 'normal'"):
        model.get_normalized_expression()
    with pytest.raises(NotImplementedError, match="gamma-Poisson .* likelihood is 'normal'"):
        model.get_feature_correlation_matrix(n_samples=2)  # AttributeError: no 'theta'


# 4-7 s: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_key_added_keeps_two_models_side_by_side(blobs_model, tmp_path):
    model, adata = blobs_model
    target = adata.copy()
    model.write_to_adata(target)
    other = target.obsm["X_cgmdvae"].copy()
    keys = model.write_to_adata(target, key_added="cgmdvae_b")
    assert keys == [
        "obsm/X_cgmdvae_b",
        "obsm/X_cgmdvae_b_w",
        "obs/cgmdvae_b_cluster",
        "obsm/cgmdvae_b_cluster_probs",
        "uns/cgmdvae_b",
    ]
    np.testing.assert_array_equal(target.obsm["X_cgmdvae"], other)  # the first stays
    np.testing.assert_allclose(target.obsm["X_cgmdvae_b"], other)
    assert (target.obs["cgmdvae_b_cluster"] == target.obs["cgmdvae_cluster"]).all()
    assert list(target.uns["cgmdvae_b"]["cluster_names"]) == model.cluster_names
    # The plot finds the cluster names under the same prefix (named here as a supervised
    # model's would be, so that names and indices differ).
    target.uns["cgmdvae_b"]["cluster_names"] = np.array(list("abcde"), dtype=object)
    sc.pp.neighbors(target, use_rep="X_cgmdvae_b")
    sc.tl.umap(target, random_state=0)
    axes = dv.pl.cluster_probabilities(
        target, probs_key="cgmdvae_b_cluster_probs", clusters=["b"], show=False
    )
    assert axes[1].get_title() == "P(cluster b)"
    target.write_h5ad(tmp_path / "two.h5ad")
    back = ad.read_h5ad(tmp_path / "two.h5ad")
    np.testing.assert_array_equal(back.obsm["X_cgmdvae_b"], target.obsm["X_cgmdvae_b"])
    for bad in ("", "  ", None, 3, "runs/b", "X_cgmdvae"):
        with pytest.raises(ValueError, match="key_added"):
            model.write_to_adata(target, key_added=bad)


def test_sample_per_cluster_and_condition(blobs_model):
    model, adata = blobs_model
    adata.var["symbol"] = [f"S{i}" for i in range(adata.n_vars)]
    cells = model.sample(50, cluster=2, condition="stim", seed=0)
    del adata.var["symbol"]
    assert cells.shape == (50, 16)
    assert list(cells.var["symbol"])[:2] == ["S0", "S1"]  # the genes' metadata, as translate
    assert (cells.obs["cluster"] == "2").all() and (cells.obs["condition"] == "stim").all()
    assert list(cells.obs["cluster"].cat.categories) == ["2"]  # no category without cells
    # Generated cells of a cluster are classified back into that cluster.
    # The conditions drawn alone, as the clusters: a new setup warns of no category without
    # cells (it warned of ctrl), and the cells are read with the model's codes all the same.
    assert list(cells.obs["condition"].cat.categories) == ["stim"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition")
    assert (model.predict_clusters(cells) == 2).mean() > 0.85
    again = model.sample(50, cluster=2, condition="stim", seed=0)
    np.testing.assert_array_equal(cells.X, again.X)
    # Without a seed, each call draws anew (the generator's state was restored after each).
    first, second = (model.sample(50, cluster=2, condition="stim").X for _ in range(2))
    assert not np.array_equal(first, second)
    mixed = model.sample(200, seed=1)
    assert set(mixed.obs["condition"]) == {"ctrl", "stim"}
    assert mixed.obs["cluster"].nunique() >= 3
    # Unseeded, the drawn conditions follow torch's generator too (they came from fresh
    # entropy): the global seed set again gives the same cells.
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(model.sample(100))
    pd.testing.assert_series_equal(draws[0].obs["condition"], draws[1].obs["condition"])
    np.testing.assert_array_equal(draws[0].X, draws[1].X)


def test_a_numpy_integer_seed_repeats_the_draws_and_a_bad_seed_is_named(blobs_model):
    """np.int64 seeds (np.arange, rng.integers) failed in torch with "an integer is
    required"; seed=-1 seeded torch and failed in numpy for sample only."""
    model, adata = blobs_model
    np.testing.assert_array_equal(model.sample(20, seed=np.int64(3)).X, model.sample(20, seed=3).X)
    ctrl = adata[adata.obs["condition"] == "ctrl"][:20]
    shift = model.predict_perturbation(ctrl, "stim", method="latent_shift", seed=np.int64(3))
    assert shift.shape == (20, adata.n_vars)
    for bad in (-1, 1.5, True, "3", 2**64):
        with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64 - 1\]"):
            model.translate(ctrl, "stim", seed=bad)
    # A read-out seeds torch alone, which takes seeds up to 2**64 - 1 (numpy's RandomState
    # and scikit-learn, which the model's clustering seeds, stop at 2**32 - 1).
    big = model.sample(5, seed=2**64 - 1)
    np.testing.assert_array_equal(big.X, model.sample(5, seed=2**64 - 1).X)


def test_a_mixture_start_refuses_a_seed_or_epoch_it_cannot_use():
    """MixtureInitialization(seed=2**32) or seed="0" trained up to its epoch, then failed in
    scikit-learn ("The 'random_state' parameter of KMeans must be an int in the range [0,
    4294967295]"); epoch="1" never started the mixture (no epoch is "1"), in silence."""
    from deltavae.train import MixtureInitialization

    for seed in (2**32, "0", -1):
        with pytest.raises(ValueError, match=r"^seed must be an integer in \[0, 2\*\*32 - 1\] "):
            MixtureInitialization(epoch=1, seed=seed)
    for epoch in ("1", -1, 1.0):
        with pytest.raises(ValueError, match=rf"^epoch must be an integer >= 0, got {epoch!r}"):
            MixtureInitialization(epoch=epoch)
    assert MixtureInitialization(epoch=np.int64(2), seed=2**32 - 1).seed == 2**32 - 1


def test_translate_recovers_condition_shift(blobs_model):
    model, adata = blobs_model
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    out = model.translate(ctrl, "stim")
    assert out.shape == ctrl.shape and (out.obs["condition"] == "stim").all()
    shift = adata.uns["synthetic"]["condition_shift"]
    true = shift[1] - shift[0]
    predicted = (out.X - ctrl.X).mean(0)
    assert np.corrcoef(true, predicted)[0, 1] > 0.9
    assert np.abs(predicted - true).mean() < 0.5 * np.abs(true).mean()


def test_empty_clusters_are_reported():
    adata = _blobs(n_cells=400)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=12, likelihood="normal", **SMALL)
    model.train(max_epochs=30, **TRAIN)
    model.write_to_adata()
    sizes = adata.uns["cgmdvae"]["cluster_sizes"]
    assert len(sizes) == 12 and sizes.sum() == 400
    assert len(adata.uns["cgmdvae"]["empty_clusters"]) == int((sizes == 0).sum())
    assert clustering_accuracy(adata.obs["cluster"], adata.obs["cgmdvae_cluster"]) > 0.5
    # Cells of three clusters leave nine empty. The column holds the three only, so scanpy
    # groups by it (an empty category made rank_genes_groups, dotplot and dendrogram fail).
    pred = model.predict_clusters()
    kept = np.flatnonzero(sizes)[:3]
    some = adata[np.isin(pred, kept)].copy()
    model.write_to_adata(some)
    assert list(some.obs["cgmdvae_cluster"].cat.categories) == [str(k) for k in kept]
    assert list(some.uns["cgmdvae"]["empty_clusters"]) == [
        str(k) for k in range(12) if k not in kept
    ]
    assert some.obsm["cgmdvae_cluster_probs"].shape == (some.n_obs, 12)
    sc.tl.dendrogram(some, "cgmdvae_cluster", use_rep="X_cgmdvae")


def _labelled_counts():
    adata = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=2, seed=3
    )
    adata.obs["label"] = adata.obs["cluster"].astype(str)
    return adata


def test_supervised_reaches_near_perfect_accuracy(monkeypatch):
    from deltavae.train import _mixture_init

    def no_umap(*args):
        raise AssertionError("every cell is labelled: the mixture start needs no UMAP")

    monkeypatch.setattr(_mixture_init, "_embed", no_umap)
    adata = _labelled_counts()
    # The unlabelled mark an unused category before the labels: scvi-tools swapped it with
    # the last label, so the clusters were named ["Unknown", "0", "1"] and label "3" trained
    # as unlabelled.
    categories = ["Unknown", "0", "1", "2", "3"]
    adata.obs["label"] = pd.Categorical(adata.obs["label"], categories=categories)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="label")
    model = dv.model.CGMDVAE(adata, likelihood="nb", **SMALL)
    assert model.module.n_clusters == 4
    assert model.cluster_names == ["0", "1", "2", "3"]
    model.train(max_epochs=30, **TRAIN)
    pred = np.array(model.cluster_names)[model.predict_clusters()]
    assert (pred == adata.obs["label"].to_numpy()).mean() > 0.97

    # New cells come without labels: read as unlabelled, the caller's AnnData untouched.
    new = ad.AnnData(adata.X.copy(), obs=adata.obs[["condition"]].copy(), var=adata.var.copy())
    obs_before = new.obs.copy()
    new_pred = np.array(model.cluster_names)[model.predict_clusters(new)]
    assert (new_pred == pred).all()
    pd.testing.assert_frame_equal(new.obs, obs_before)
    assert not new.uns and not new.obsm
    # A view stays the caller's view (scvi-tools would make it a copy in place).
    view = new[new.obs["condition"] == new.obs["condition"].iloc[0]]
    z = model.get_latent_representation(view)
    assert view.is_view and z.shape == (view.n_obs, model.module.n_latent)


def test_write_to_adata_keeps_the_labels_column_the_model_reads():
    """Labels curated in last run's obs["cgmdvae_cluster"] and set up as labels_key:
    write_to_adata replaced them by the predictions (every "Unknown" gone), and the model
    then refused its own AnnData ("changed after setup_anndata")."""
    adata = dv.datasets.synthetic_counts(n_cells=90, n_genes=30, n_clusters=3, seed=0)
    labelled = np.arange(adata.n_obs) % 3 == 0
    curated = np.where(labelled, "T" + adata.obs["cluster"].astype(str), "Unknown")
    adata.obs["cgmdvae_cluster"] = pd.Categorical(curated)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="cgmdvae_cluster")
    model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    with pytest.raises(ValueError, match=r"obs\['cgmdvae_cluster'\], a column the model reads"):
        model.write_to_adata()
    assert adata.obs["cgmdvae_cluster"].astype(str).tolist() == curated.tolist()
    assert "obs/run2_cluster" in model.write_to_adata(key_added="run2")
    model.train(max_epochs=1, **TRAIN)  # the AnnData is still the model's


def test_write_to_adata_says_which_other_model_reads_the_column_it_changes():
    """A ZINBVAE set up with batch_key="cgmdvae_cluster" (last run's clusters as batches) on
    the AnnData: a CGMDVAE's write_to_adata rewrote the column without a word, and the
    ZINBVAE refused the AnnData from then on ("changed after setup_anndata")."""
    adata = dv.datasets.synthetic_counts(n_cells=90, n_genes=30, n_clusters=3, seed=0)
    dv.model.CGMDVAE.setup_anndata(adata)
    first = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=16, n_clusters=2)
    second = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=16, n_clusters=3)
    for model in (first, second):
        model.train(max_epochs=1, **TRAIN)
    first.write_to_adata()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="cgmdvae_cluster")
    reader = dv.model.ZINBVAE(adata, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first.write_to_adata()  # the same clusters again: the ZINBVAE reads them still
    before = adata.obs["cgmdvae_cluster"].astype(str).tolist()
    read = r"obs\['cgmdvae_cluster'\], which the ZINBVAE .*batch_key='cgmdvae_cluster'"
    with pytest.warns(UserWarning, match=read):
        second.write_to_adata()
    assert adata.obs["cgmdvae_cluster"].astype(str).tolist() != before  # the reason to say it
    with pytest.raises(ValueError, match="ZINBVAE cannot read its AnnData"):
        reader.train(max_epochs=1, **TRAIN)


def test_write_to_adata_names_only_models_still_alive():
    """scvi-tools keeps the setups of models deleted since (by model id, for good): with the
    ZINBVAE set up with batch_key="cgmdvae_cluster" deleted, CGMDVAE's write_to_adata still
    warned that "the ZINBVAE set up on this AnnData" would refuse it, and the deleted model's
    registration (holding the AnnData) stayed in scvi-tools' store."""
    adata = dv.datasets.synthetic_counts(n_cells=90, n_genes=30, n_clusters=3, seed=0)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=16, n_clusters=3)
    model.train(max_epochs=1, **TRAIN)
    adata.obs["cgmdvae_cluster"] = pd.Categorical(["last run"] * adata.n_obs)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="cgmdvae_cluster")
    reader = dv.model.ZINBVAE(adata, n_hidden=16)
    gone = reader.id
    del reader  # no gc.collect(): the write collects a model deleted in a reference cycle
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.write_to_adata()
    assert "last run" not in set(adata.obs["cgmdvae_cluster"])  # the column did change
    assert gone not in dv.model.ZINBVAE._per_instance_manager_store


def test_semi_supervised_names_clusters_by_label():
    """With 10% of cells labelled, the unlabelled cells get the right label, by name."""
    adata = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=4, n_conditions=1, seed=5
    )
    truth = adata.obs["cluster"].astype(str).to_numpy()
    labelled = np.random.default_rng(0).random(600) < 0.1
    adata.obs["label"] = np.where(labelled, truth, "unknown")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
    model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64)
    assert model.module.n_clusters == 4 and sorted(model.cluster_names) == ["0", "1", "2", "3"]
    model.train(max_epochs=60, **TRAIN)
    model.write_to_adata()
    pred = adata.obs["cgmdvae_cluster"].astype(str).to_numpy()
    # No Hungarian matching: cluster k carries the name of label k.
    assert (pred[~labelled] == truth[~labelled]).mean() > 0.9
    assert adata.obs["label"].tolist().count("unknown") == int((~labelled).sum())


# 11-19 s: in the slow stage (python -m pytest -m slow), which CI also runs.
@pytest.mark.slow
def test_semi_supervised_beats_unsupervised():
    """Labels that pair up six natural groups: only the labelled cells say which pairs."""
    adata = dv.datasets.synthetic_counts(
        n_cells=600, n_genes=80, n_clusters=6, n_conditions=1, seed=5
    )
    truth = (adata.obs["cluster"].astype(int).to_numpy() // 2).astype(str)
    labelled = np.random.default_rng(0).random(600) < 0.1
    unsupervised = adata.copy()
    dv.model.CGMDVAE.setup_anndata(unsupervised)
    model = dv.model.CGMDVAE(unsupervised, n_clusters=3, likelihood="nb", n_hidden=64)
    model.train(max_epochs=80, **TRAIN)
    acc_unsupervised = clustering_accuracy(truth[~labelled], model.predict_clusters()[~labelled])
    adata.obs["label"] = np.where(labelled, truth, "unknown")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
    model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64)
    model.train(max_epochs=80, **TRAIN)
    pred = np.array(model.cluster_names)[model.predict_clusters()]
    acc_semi = (pred[~labelled] == truth[~labelled]).mean()
    assert acc_semi > 0.7 and acc_semi > acc_unsupervised + 0.1, (acc_semi, acc_unsupervised)


def test_bernoulli_likelihood_on_binary_data():
    adata = _blobs(n_cells=300)
    adata.X = (adata.X > 0).astype(np.float32)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=5, likelihood="bernoulli", **SMALL)
    model.train(max_epochs=5, n_epochs_kl_warmup=None, **TRAIN)
    train = model.history["elbo_train"]["elbo_train"].to_numpy(float)
    assert train[-1] < train[0]
    cells = model.sample(10, seed=0)
    assert set(np.unique(cells.X)) <= {0.0, 1.0}
    assert ((cells.layers["expected"] >= 0) & (cells.layers["expected"] <= 1)).all()
    # Grey values in [0, 1] (MNIST's pixels) are scored as training scores them: torch's
    # support check refused them in get_elbo and the reconstruction error.
    grey = adata.copy()
    grey.X = grey.X * np.float32(0.8) + np.float32(0.1)
    assert np.isfinite(model.get_elbo(grey)) and np.isfinite(model.get_elbo())
    assert np.isfinite(model.get_reconstruction_error(grey)["reconstruction_loss"])


def test_save_load_and_continue(blobs_model, tmp_path):
    model, adata = blobs_model
    z = model.get_latent_representation()
    probs = model.predict_clusters(soft=True)
    model.save(tmp_path / "g")
    loaded = dv.model.CGMDVAE.load(tmp_path / "g", adata=adata)
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    np.testing.assert_allclose(loaded.predict_clusters(soft=True), probs, atol=1e-6)
    before = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    loaded.train(max_epochs=2, **TRAIN)
    after = loaded.module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_restore_best_keeps_the_best_full_elbo_epoch():
    from lightning.pytorch.callbacks import Callback

    states = {}

    class Record(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == trainer.max_epochs - 1:
                # A wild last step: the last epoch must not be the best, so a callback that
                # kept nothing would leave its parameters and fail the comparison below.
                for group in trainer.optimizers[0].param_groups:
                    group["lr"] = 0.3

        def on_validation_epoch_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                state = pl_module.module.state_dict()
                states[trainer.current_epoch] = {k: v.clone() for k, v in state.items()}

    adata = _blobs(n_cells=300)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    # Without the alignment penalty (10 by default, D17), whose gradient at the wild step's
    # lr of 1.0 turned the validation loss NaN in one thread setting and not in another.
    model = dv.model.CGMDVAE(
        adata, n_clusters=5, likelihood="normal", condition_alignment=0, **SMALL
    )
    # KL warm-up over 6 epochs and the mixture start at epoch 3: epochs 6-13 are eligible.
    # No refit after training: the parameters must be exactly the best epoch's.
    model.train(max_epochs=14, callbacks=[Record()], refit_mixture=False, **TRAIN)
    elbo = model.history["elbo_validation"]["elbo_validation"].to_numpy(float)
    assert len(elbo) == 14
    eligible = np.arange(6, 14)
    scores = np.where(np.isfinite(elbo[eligible]), elbo[eligible], np.inf)
    best = int(eligible[np.argmin(scores)])
    assert model.best_epoch_ == best < 13
    for key, value in model.module.state_dict().items():
        torch.testing.assert_close(value, states[best][key])

    model.train(max_epochs=3, restore_best=False, **TRAIN)
    assert model.best_epoch_ is None
    model.train(max_epochs=3, train_size=1.0, **TRAIN)  # no validation cells: nothing kept
    assert model.best_epoch_ is None


def test_cells_without_counts_are_said_once_not_again_at_the_mixture_start():
    """scanpy's "Some cells have zero counts" came up mid-training, at the mixture start's
    normalisation, after setup had named the cells."""
    adata = dv.datasets.synthetic_counts(n_cells=150, n_genes=30, n_clusters=2, seed=0)
    adata.X = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    adata.X[:3] = 0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dv.model.CGMDVAE.setup_anndata(adata)
        model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
        model.train(max_epochs=4, mixture_init_epoch=1, **TRAIN)
    said = [str(w.message) for w in record]
    assert sum(m.startswith("3 cells in adata.X are all zeros") for m in said) == 1
    assert not [m for m in said if "zero counts" in m]


# ----------------------------------------------------------------- bad input
def test_a_normal_likelihood_on_raw_counts_is_warned_about():
    """Counts read as real values let the highest genes dominate z: said, with the two
    fixes; log-normalized data and real-valued blobs are not warned about."""
    counts = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=2, seed=0)
    dv.model.CGMDVAE.setup_anndata(counts)
    with pytest.warns(UserWarning, match=r"adata.X looks like raw counts .* sc.pp.log1p"):
        dv.model.CGMDVAE(counts, n_clusters=2, likelihood="normal", **SMALL)
    dv.model.CGMDVAE(counts, n_clusters=2, **SMALL)  # a count likelihood: nothing to say
    sc.pp.normalize_total(counts)
    sc.pp.log1p(counts)
    dv.model.CGMDVAE.setup_anndata(counts)
    model = dv.model.CGMDVAE(counts, n_clusters=2, likelihood="normal", **SMALL)  # no warning
    model.train(max_epochs=2, **TRAIN)
    # Generated cells stay at or above the data's floor, as translations do (1.4% of the
    # values were negative log-expression).
    cells = model.sample(300, seed=0)
    assert cells.X.min() == 0.0 and cells.layers["expected"].min() >= 0.0
    blobs = _blobs(n_cells=100)
    dv.model.CGMDVAE.setup_anndata(blobs)
    dv.model.CGMDVAE(blobs, n_clusters=3, likelihood="normal", **SMALL)


def test_bad_arguments():
    adata = _blobs(n_cells=100)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    with pytest.raises(ValueError, match="n_clusters must be at least 2"):
        dv.model.CGMDVAE(adata, n_clusters=1, likelihood="normal")
    one = _blobs(n_cells=100)  # one label and unlabelled cells: n_clusters never passed
    one.obs["t"] = np.where(one.obs["cluster"].astype(str) == "0", "T", "Unknown")
    dv.model.CGMDVAE.setup_anndata(one, condition_key="condition", labels_key="t")
    with pytest.raises(ValueError, match="hold one label .'T'.* pass n_clusters=2"):
        dv.model.CGMDVAE(one, likelihood="normal")
    with pytest.raises(ValueError, match="must hold raw counts"):
        dv.model.CGMDVAE(adata, n_clusters=3, likelihood="zinb")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        dv.model.CGMDVAE(adata, n_clusters=3, likelihood="bernoulli")
    model = dv.model.CGMDVAE(adata, n_clusters=3, likelihood="normal", **SMALL)
    with pytest.raises(ValueError, match="never seen in training"):
        model.sample(5, condition="IFN")
    with pytest.raises(ValueError, match="never seen in training"):
        model.translate(adata, "IFN")
    # A misspelled key was taken as "no condition given": a random condition per call.
    typo = r"names \['conditon'\], which is not a condition key of the model; .*\['condition'\]"
    model.train(max_epochs=1, **TRAIN)
    for call in (
        lambda: model.get_latent_representation(condition={"conditon": "stim"}),
        lambda: model.sample(5, condition={"conditon": "stim"}),
        lambda: model.translate(adata, {"conditon": "stim"}),
    ):
        with pytest.raises(ValueError, match=typo):
            call()
    for wrong in (7, True, 2.7):  # True and 2.7 were read as clusters 1 and 2
        with pytest.raises(ValueError, match=rf"cluster={wrong!r}: give a name or an index 0"):
            model.sample(5, cluster=wrong)
    with pytest.raises(ValueError, match=r"cluster=7: give"):  # was cluster=np.int64(7)
        model.sample(5, cluster=np.int64(7))
    with pytest.raises(ValueError, match="mixture_init must be one of"):
        model.train(max_epochs=1, mixture_init="louvain")
    with pytest.raises(ValueError, match="n_latent must be a positive integer or 'auto'"):
        dv.model.CGMDVAE(adata, n_clusters=3, likelihood="normal", n_latent="wide")


def test_auto_latent_size_grows_with_many_clusters():
    adata = _blobs(n_cells=100)
    dv.model.CGMDVAE.setup_anndata(adata)
    sizes = {k: dv.model.CGMDVAE(adata, n_clusters=k, likelihood="normal") for k in (5, 10, 24)}
    assert {k: m.module.n_latent for k, m in sizes.items()} == {5: 10, 10: 10, 24: 24}
    sizes[24].train(max_epochs=1, mixture_init_epoch=None, train_size=1.0, **TRAIN)
    assert sizes[24].get_latent_representation().shape == (100, 24)
    # Counts without condition covariates start wider (D16); with a condition they do not.
    counts = dv.datasets.synthetic_counts(n_cells=100, n_genes=30, n_clusters=3, seed=0)
    dv.model.CGMDVAE.setup_anndata(counts)
    widths = {k: dv.model.CGMDVAE(counts, n_clusters=k).module.n_latent for k in (3, 16, 20)}
    assert widths == {3: 16, 16: 16, 20: 20}
    dv.model.CGMDVAE.setup_anndata(counts, condition_key="condition")
    widths = {k: dv.model.CGMDVAE(counts, n_clusters=k).module.n_latent for k in (3, 12)}
    assert widths == {3: 10, 12: 12}


def test_bad_labels():
    adata = _labelled_counts()
    # A mark no cell carries trains supervised, as SCANVI (tests/test_scanvi_usage.py); one
    # spelt otherwise than the data's is refused: named, with the argument that reads it.
    adata.obs["marked"] = adata.obs["label"].where(adata.obs_names != adata.obs_names[0], "NA")
    with pytest.raises(ValueError, match="It holds 'NA': .* pass unlabeled_category='NA'"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="marked", unlabeled_category="Unknown")
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="celltype")
    with pytest.raises(KeyError, match="condition_key='donor'"):
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="donor")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    with pytest.raises(ValueError, match="smaller than the 4 labels"):
        dv.model.CGMDVAE(adata, n_clusters=3)
    # A label named as an extra cluster: two clusters of one name, read-outs failed.
    adata.obs["clash"] = adata.obs["label"].replace({"3": "novel_1"})
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="clash")
    dv.model.CGMDVAE(adata, n_clusters=5, n_hidden=8)  # novel_0 only: no clash
    with pytest.raises(ValueError, match=r"include \['novel_1'\], the names of the 2 clusters"):
        dv.model.CGMDVAE(adata, n_clusters=6)
    # Every cell marked unlabelled: the message said only "holds no labelled cell".
    adata.obs["none"] = "Unknown"
    with pytest.raises(ValueError, match=r"marked unlabelled \('Unknown'\).*omit labels_key"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="none")


@pytest.mark.slow  # 3-7 s: the default run keeps under its 6-minute budget
def test_condition_free_prior_option():
    adata = _blobs(n_cells=300)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(
        adata, n_clusters=5, likelihood="normal", condition_in_prior=False, **SMALL
    )
    # The mixture network sees w only: no condition columns in its first layer.
    assert model.module.prior.trunk.fc_layers[0][0].in_features == SMALL["n_latent_w"]
    model.train(max_epochs=40, **TRAIN)
    # Weaker than the conditional prior on these condition-shifted blobs (ARI 1.0), not lost.
    assert ari(adata.obs["cluster"], model.predict_clusters()) > 0.75
    cells = model.sample(20, cluster=1, condition="stim", seed=0)
    assert cells.shape == (20, 16) and (cells.obs["condition"] == "stim").all()
    with pytest.raises(ValueError, match="condition_in_prior=False"):
        model.get_latent_representation(condition="ctrl")


def test_mixture_start_clusters_with_each_condition_centred():
    from sklearn.cluster import KMeans

    from deltavae.train._mixture_init import _condition_centred, _condition_groups

    # Two types 4 apart on axis 0; the condition moves every cell 10 along axis 1.
    rng = np.random.default_rng(0)
    kind = np.repeat([0, 1], 200)
    cond = np.tile([0, 1], 200)
    z = np.stack([4.0 * kind, 10.0 * cond], 1) + rng.normal(scale=0.3, size=(400, 2))
    z, cats = torch.as_tensor(z), torch.as_tensor(cond[:, None])
    raw = KMeans(2, n_init=5, random_state=0).fit_predict(z.numpy())
    centred = _condition_centred(z, _condition_groups(cats))
    fair = KMeans(2, n_init=5, random_state=0).fit_predict(centred)
    assert dv.metrics.ari(cond, raw) == 1.0  # uncentred, k-means splits by condition
    assert dv.metrics.ari(kind, fair) == 1.0  # centred, it finds the types
    np.testing.assert_allclose(centred[cond == 0].mean(0), centred[cond == 1].mean(0), atol=1e-9)
    np.testing.assert_array_equal(_condition_centred(z, None), z.numpy())


@pytest.mark.slow  # numba compiles UMAP in every new process: about 15 s, for an option
def test_umap_mixture_start_keeps_curved_groups_whole():
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_moons

    from deltavae.train._mixture_init import MixtureInitialization, _embed

    # Two interleaved half-moons: k-means on the points cuts both in half; on the UMAP
    # embedding (neighbour graph) each moon is one cluster.
    z, moon = make_moons(1000, noise=0.05, random_state=0)
    direct = KMeans(2, n_init=5, random_state=0).fit_predict(z)
    embedded = KMeans(2, n_init=5, random_state=0).fit_predict(_embed(z, 2, seed=0))
    assert dv.metrics.ari(moon, direct) < 0.5
    assert dv.metrics.ari(moon, embedded) > 0.95
    np.testing.assert_array_equal(_embed(z[:30], 2, seed=0), z[:30])  # too few cells: as is
    with pytest.raises(ValueError, match="method must be one of"):
        MixtureInitialization(method="louvain")


def test_leiden_mixture_start_gives_k_whole_groups_and_respects_labels():
    from sklearn.datasets import make_moons

    from deltavae.train._graph_clusters import exactly_k
    from deltavae.train._mixture_init import _leiden

    z, moon = make_moons(1000, noise=0.05, random_state=0)
    group = np.arange(1000) % 2  # two conditions, each moon half in each
    for condition in (None, group):
        clusters = _leiden(z, 2, seed=0, group=condition)
        assert set(clusters.tolist()) == {0, 1}
        assert dv.metrics.ari(moon, clusters) > 0.95
    np.testing.assert_array_equal(_leiden(z, 2, seed=3), _leiden(z, 2, seed=3))
    # Three or eight clusters asked of two moons: exactly that many, each within one moon.
    for k in (3, 8):
        clusters = _leiden(z, k, seed=0)
        assert len(np.unique(clusters)) == k
        assert all(len(np.unique(moon[clusters == j])) == 1 for j in range(k))
    with pytest.raises(ValueError, match="Cannot make 5 clusters of 3 points"):
        exactly_k(z[:3], np.zeros(3, int), 5, seed=0)
    assert sorted(exactly_k(np.zeros((4, 2)), np.zeros(4, int), 2, seed=0)) == [0, 0, 1, 1]


def test_leiden_k_restarts_make_the_partition_stable_across_seeds():
    """On a weakly separated graph one Leiden run depends on its seed; keeping the best of
    several converged runs makes the partitions of different seeds agree."""
    import itertools

    from deltavae.train._graph_clusters import fuzzy_graph, leiden_k
    from deltavae.train._mixture_init import _UMAP_NEIGHBORS, _balanced_neighbours

    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(c, 1.3, (150, 4)) for c in np.eye(4) * 3.0])
    graph = fuzzy_graph(*_balanced_neighbours(z, np.zeros(len(z)), _UMAP_NEIGHBORS))

    def agreement(partitions):
        pairs = itertools.combinations(partitions, 2)
        return np.mean([dv.metrics.ari(a, b) for a, b in pairs])

    single = [leiden_k(graph, 4, seed, restarts=0) for seed in range(8)]
    best = [leiden_k(graph, 4, seed) for seed in range(8)]
    assert all(len(np.unique(p)) == 4 for p in best)
    # Measured: 0.906 for single runs, 0.965 with the restarts.
    assert agreement(best) > 0.95 and agreement(best) > agreement(single) + 0.03
    np.testing.assert_array_equal(leiden_k(graph, 4, 2), best[2])  # seeded: reproducible


def test_leiden_with_data_joins_the_neighbours_of_both_representations():
    """Two imperfect views of the same four groups, z (noisy) and the counts' principal
    components: Leiden on the fuzzy union of their neighbour graphs beats either alone."""
    from deltavae.train._mixture_init import _leiden, data_components

    adata = dv.datasets.synthetic_counts(n_cells=400, n_genes=200, n_clusters=4, seed=1)
    truth = adata.obs["cluster"].to_numpy()
    codes = np.unique(truth, return_inverse=True)[1]
    z = np.eye(4)[codes] * 3.0 + np.random.default_rng(0).normal(size=(400, 4))
    data = data_components(adata.X, None, seed=0)
    assert data.shape == (400, 50)
    scores = [dv.metrics.ari(truth, _leiden(z, 4, 0, data=d)) for d in (None, data)]
    scores.append(dv.metrics.ari(truth, _leiden(data, 4, 0)))
    # Measured: z alone 0.862, joined 0.986 (their mean: 0.993), data alone 0.920.
    assert scores[1] > max(scores[0], scores[2]) + 0.03
    # With condition groups the components are centred per group, as z is.
    group = np.arange(400) % 2
    centred = data_components(adata.X, group, seed=0)
    np.testing.assert_allclose(centred[group == 0].mean(0), centred[group == 1].mean(0), atol=1e-4)


def test_joined_graph_is_the_fuzzy_union_of_both_neighbour_graphs_without_conditions():
    """Without condition groups an edge only one representation's neighbours see keeps its
    weight (the mean halved it, which lost the lymph node to leiden on PCA, D22); an edge both
    see gets a + b - ab. With groups the join stays the mean (Kang's 8 donors, D22)."""
    from deltavae.train._graph_clusters import fuzzy_graph
    from deltavae.train._mixture_init import _UMAP_NEIGHBORS, _balanced_neighbours, joined_graph

    rng = np.random.default_rng(0)
    z, data = rng.normal(size=(60, 3)), rng.normal(size=(60, 5))
    one = np.zeros(60)
    a = fuzzy_graph(*_balanced_neighbours(z, one, _UMAP_NEIGHBORS)).toarray()
    b = fuzzy_graph(*_balanced_neighbours(data, one, _UMAP_NEIGHBORS)).toarray()
    joined = joined_graph(z, None, data).toarray()
    only_a, both = (a > 0) & (b == 0), (a > 0) & (b > 0)
    assert only_a.sum() > 50 and both.sum() > 10
    np.testing.assert_allclose(joined[only_a], a[only_a], rtol=1e-6)
    np.testing.assert_allclose(joined[both], (a + b - a * b)[both], rtol=1e-6)
    assert (joined >= np.maximum(a, b) - 1e-9).all()
    np.testing.assert_allclose(joined_graph(z).toarray(), a)  # without data: z's graph
    group = np.arange(60) % 2
    a = fuzzy_graph(*_balanced_neighbours(z, group, _UMAP_NEIGHBORS)).toarray()
    b = fuzzy_graph(*_balanced_neighbours(data, group, _UMAP_NEIGHBORS)).toarray()
    np.testing.assert_allclose(joined_graph(z, group, data).toarray(), (a + b) / 2, rtol=1e-6)


def test_refit_joins_the_counts_components_only_where_they_mix_the_conditions(monkeypatch):
    """D15: with condition covariates the refit joins the condition-centred principal
    components' neighbours to z's only when the components mix the conditions at least 0.9 as
    well as z. Centring removes a shift shared by every cell type, not one of its own per type."""
    from deltavae.train._graph_clusters import condition_mixing
    from deltavae.train._mixture_init import MixtureInitialization, data_components

    def data(**kwargs):
        return dv.datasets.synthetic_counts(n_cells=400, n_genes=200, n_clusters=4, **kwargs)

    def mixing(adata):
        group = adata.obs["condition"].cat.codes.to_numpy()
        return condition_mixing(data_components(adata.X, group, seed=0), group)

    # Measured: 1.02 (shared shift), 0.05 (a shift of each type's own).
    assert mixing(data()) > 0.9
    assert mixing(data(condition_fold=8.0, n_condition_genes=60, condition_specific=True)) < 0.3

    adata = data()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=4, **SMALL)
    model.train(max_epochs=4, refit_mixture=False, **TRAIN)
    joined = []
    original = MixtureInitialization.cluster

    def record(self, points, k, group=None, y=None, data=None):
        joined.append(data is not None)
        return original(self, points, k, group, y, data)

    monkeypatch.setattr(MixtureInitialization, "cluster", record)
    for components, expected in ((0.95, True), (0.85, False)):
        # The components have 50 columns, z has 4: z mixes the conditions fully (1.0).
        monkeypatch.setattr(
            "deltavae.train._graph_clusters.condition_mixing",
            lambda points, group, c=components: c if points.shape[1] == 50 else 1.0,
        )
        model._refit_mixture("leiden")
        assert joined[-1] is expected
    assert model.predict_clusters().shape == (adata.n_obs,)


def test_leiden_start_puts_labelled_cells_in_their_component():
    # Three blobs; the cells of blob 2 are labelled component 0 and some of blob 0
    # component 1: the matching must follow the labels, the rest take component 2.
    rng = np.random.default_rng(0)
    blob = np.repeat([0, 1, 2], 200)
    z = rng.normal(size=(600, 4)) + 10.0 * np.eye(4)[blob]
    y = np.full(600, -1)
    y[np.flatnonzero(blob == 2)[:20]] = 0
    y[np.flatnonzero(blob == 0)[:20]] = 1
    from deltavae.train._graph_clusters import match_labels
    from deltavae.train._mixture_init import MixtureInitialization, _leiden

    cb = MixtureInitialization(seed=0)

    assignments = match_labels(_leiden(z, 3, seed=0), y, 3)
    np.testing.assert_array_equal(assignments[blob == 2], 0)
    np.testing.assert_array_equal(assignments[blob == 0], 1)
    np.testing.assert_array_equal(assignments[blob == 1], 2)
    assert cb.method == "leiden"


def test_one_labelled_cell_per_label_sharing_a_start_cluster_keeps_its_name():
    # Three blobs (clusters 0, 1, 2), one labelled cell per label: label 1's cell at blob
    # 0's centre, label 0's on blob 0's edge towards blob 1 (so in cluster 0 too), label
    # 2's in blob 2. Blob 0 is label 1's and blob 1, nearest label 0's cell, label 0's;
    # counting the agreeing cells alone left this tie to the clusters' order.
    from deltavae.train._graph_clusters import match_labels

    rng = np.random.default_rng(0)
    blob = np.repeat([0, 1, 2], 50)
    points = rng.normal(scale=0.5, size=(150, 2)) + np.array([[0, 0], [10, 0], [0, 10]])[blob]
    points[0], points[1], points[100] = (0, 0), (4, 0), (0, 10)
    y = np.full(150, -1)
    y[[0, 1, 100]] = [1, 0, 2]
    assignments = match_labels(blob, y, 3, points)
    np.testing.assert_array_equal(assignments[2:50], 1)
    np.testing.assert_array_equal(assignments[50:100], 0)
    np.testing.assert_array_equal(assignments[100:], 2)
    assert assignments[1] == 0  # labelled cells keep their own component
    # Without coordinates: the counts alone, as before.
    assert match_labels(blob, y, 3)[2:50].tolist() == [0] * 48


def test_a_lone_labelled_cell_inside_another_types_start_cluster_is_named_by_its_neighbours():
    # Three types; in z (the start's clusters) type 1's only labelled cell lies at the centre
    # of type 2's cluster and type 2's on that cluster's edge, as after a short warm-up. The
    # labelled cells' own clusters (and their distances) named cluster 2 "1" and type 1's
    # cluster "2"; among the counts' principal components (``space``) type 1's labelled cell
    # lies among its own type, whose cluster its neighbours name.
    from deltavae.train._graph_clusters import match_labels
    from deltavae.train._mixture_init import MixtureInitialization

    rng = np.random.default_rng(0)
    kind = np.repeat([0, 1, 2], 50)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    space = rng.normal(scale=0.5, size=(150, 2)) + centres[kind]
    points = space.copy()
    points[50], points[100] = (0, 10), (2, 8)  # type 1's labelled cell in type 2's group
    y = np.full(150, -1)
    y[[0, 50, 100]] = [0, 1, 2]
    clusters = np.where(np.arange(150) == 50, 2, kind)
    old = match_labels(clusters, y, 3, points)
    assert old[101:].tolist() == [1] * 49  # the swap the labelled cells' clusters made
    named = match_labels(clusters, y, 3, points, space)
    np.testing.assert_array_equal(named[1:50], 0)
    np.testing.assert_array_equal(named[51:100], 1)
    np.testing.assert_array_equal(named[101:], 2)
    assert named[50] == 1  # labelled cells keep their own component
    # The start's Leiden path passes it on; so do the others, which seeded k-means at the
    # labelled cells instead (two seeds in type 2's group: type 1's cells named "2").
    for method in ("leiden", "kmeans", "spectral"):
        start = MixtureInitialization(seed=0, method=method).cluster(points, 3, y=y, space=space)
        assert (start[51:100] == 1).mean() > 0.9 and (start[101:] == 2).mean() > 0.9, method
        assert start[50] == 1


def test_a_labelled_count_models_start_keeps_the_counts_for_their_components(monkeypatch):
    from types import SimpleNamespace

    import deltavae.train._mixture_init as mixture_init
    from deltavae.train._data import DeltaDataSplitter
    from deltavae.train._label_space import data_components, label_space
    from deltavae.train._mixture_init import MixtureInitialization

    adata = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=3, seed=0)
    kind = adata.obs["cluster"].astype(str).to_numpy()
    first = np.unique(kind, return_index=True)[1]  # one labelled cell of each type
    adata.obs["label"] = np.where(np.isin(np.arange(120), first), kind, "Unknown")
    # One labelled cell per type on purpose: told what it means, not to drop or unlabel them.
    few = r"fewer than 3 cells labelled \(adata.obs\['label'\]: '\d' \(1\), .*Check the names"
    with pytest.warns(UserWarning, match=few) as record:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="label")
        model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=4, n_hidden=16)
    assert not [w for w in record if "drop those cells" in str(w.message)]
    splitter = DeltaDataSplitter(model.adata_manager, train_size=1.0, batch_size=50)
    splitter.split()
    trainer = SimpleNamespace(world_size=1, datamodule=splitter)
    z, _, _, y, x = MixtureInitialization(epoch=1)._collect(trainer, model.module.eval())
    assert x.shape == (120, 30) and len(z) == 120 and int((y >= 0).sum()) == 3
    # The counts of the cells in z's order: the labelled ones' are theirs.
    labelled = np.flatnonzero(adata.obs["label"] != "Unknown")
    found = {tuple(row) for row in x[y.numpy() >= 0].toarray()}
    assert found == {tuple(row) for row in adata.X[labelled].toarray()}
    space = label_space(z.numpy(), x, None, 0, 3)  # k + 1 components
    np.testing.assert_allclose(space, data_components(x, None, 0, n_comps=4), atol=1e-3)
    points = z.numpy()
    assert label_space(points, None, None, 0, 3) is points  # no counts: z itself
    # No refit follows a labelled model's start: its Leiden graph joins the counts' 50
    # components' neighbours (29 of 30 genes), as the refit of unlabelled models does (D12).
    seen, real = {}, mixture_init.labelled_start
    monkeypatch.setattr(mixture_init, "initialize_mixture", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        mixture_init,
        "labelled_start",
        lambda *args: seen.update(x=args[1], counts=args[5]) or real(*args),
    )
    start = MixtureInitialization(epoch=1)
    start.cluster = lambda *args: seen.update(data=args[4], space=args[5]) or args[3].clip(0)
    trainer = SimpleNamespace(world_size=1, datamodule=splitter, current_epoch=1)
    trainer.is_global_zero = True
    quiet = SimpleNamespace(module=model.module, stop_if_diverged=lambda *args: None)
    start.on_train_epoch_start(trainer, quiet)
    assert seen["data"].shape == (120, 29) and seen["space"].shape == (120, 4)
    np.testing.assert_allclose(abs(seen["data"][:, :4]), abs(seen["space"]), atol=1e-5)
    # Log-normalised data (normal likelihood) kept no data and voted in z, where a labelled
    # cell's neighbours lay in its own cluster: its own components (not normalised again).
    logged = adata.copy()
    logged.X = np.log1p(logged.X.toarray())
    with pytest.warns(UserWarning, match="fewer than 3 cells labelled"):
        dv.model.CGMDVAE.setup_anndata(logged, labels_key="label")
    normal = dv.model.CGMDVAE(logged, n_clusters=3, likelihood="normal", n_latent=4, n_hidden=16)
    splitter = DeltaDataSplitter(normal.adata_manager, train_size=1.0, batch_size=50)
    splitter.split()
    trainer.datamodule, quiet.module = splitter, normal.module
    start.on_train_epoch_start(trainer, quiet)
    assert seen["counts"] is False and seen["x"].shape == (120, 30)
    own = data_components(seen["x"], None, 0, counts=False)
    np.testing.assert_allclose(abs(seen["space"]), abs(own[:, :4]), atol=1e-3)
    assert not np.allclose(abs(own[:, :4]), abs(data_components(seen["x"], None, 0, n_comps=4)))


def test_spectral_mixture_start_keeps_curved_groups_whole_without_umap():
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_moons

    from deltavae.train._mixture_init import _spectral

    z, moon = make_moons(1000, noise=0.05, random_state=0)
    group = np.arange(1000) % 2  # two conditions, each moon half in each
    for condition in (None, group):
        points = _spectral(z, 2, seed=0, group=condition)
        assert points.shape == (1000, 2)
        np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-6)
        clusters = KMeans(2, n_init=5, random_state=0).fit_predict(points)
        assert dv.metrics.ari(moon, clusters) > 0.95
    np.testing.assert_array_equal(_spectral(z[:30], 2, seed=0), z[:30])  # too few cells


def test_umap_start_draws_neighbours_from_every_condition():
    from deltavae.train._mixture_init import _balanced_neighbours, _condition_groups

    # Condition 1 lies far from condition 0: a plain neighbour graph would never cross.
    rng = np.random.default_rng(0)
    cond = np.repeat([0, 0, 1], 50)  # 100 control cells, 50 treated
    z = rng.normal(size=(150, 3)) + 20.0 * cond[:, None]
    group = _condition_groups(torch.as_tensor(np.stack([cond, np.zeros(150, int)], 1)))
    np.testing.assert_array_equal(group, cond)
    assert _condition_groups(None) is None
    indices, distances = _balanced_neighbours(z, group, n_neighbors=15)
    assert indices.shape == (150, 14)  # 7 from each of the 2 groups
    np.testing.assert_array_equal(indices[:, 0], np.arange(150))  # each cell first
    assert (distances[:, 0] == 0).all() and (np.diff(distances, axis=1) >= 0).all()
    assert ((cond[indices] == 1).sum(1) == 7).all()
    expected = np.linalg.norm(z[:, None] - z[indices], axis=2)
    np.testing.assert_allclose(distances, expected, atol=1e-6)


def _condition_gap(z, adata):
    """Mean over clusters of the ctrl-stim distance of z means, in within-cluster sds."""
    gaps = []
    for k in np.unique(adata.obs["cluster"]):
        cells = (adata.obs["cluster"] == k).to_numpy()
        ctrl = cells & (adata.obs["condition"] == "ctrl").to_numpy()
        stim = cells & (adata.obs["condition"] == "stim").to_numpy()
        spread = np.sqrt(z[cells].var(0).sum())
        gaps.append(np.linalg.norm(z[ctrl].mean(0) - z[stim].mean(0)) / spread)
    return float(np.mean(gaps))


def test_latent_moved_to_one_condition_mixes_the_conditions(blobs_model):
    model, adata = blobs_model
    z = model.get_latent_representation()
    moved = model.get_latent_representation(condition="ctrl")
    assert moved.shape == z.shape
    ctrl = (adata.obs["condition"] == "ctrl").to_numpy()
    # Control cells stay where they are (their own condition is the target) ...
    np.testing.assert_allclose(moved[ctrl], z[ctrl], atol=1e-5)
    # ... stimulated cells land on their cluster's control cells, and clusters stay apart.
    # The default alignment (10 without labels, D17) already mixes z itself: the gap is 0.21
    # against 0.67 with condition_alignment=0, whose moved z has 0.17 (seed 0).
    assert _condition_gap(z, adata) < 0.35 and _condition_gap(moved, adata) < 0.35
    from sklearn.cluster import KMeans

    pred = KMeans(5, n_init=5, random_state=0).fit_predict(moved)
    assert ari(adata.obs["cluster"], pred) > 0.9
    with pytest.raises(ValueError, match="never seen"):
        model.get_latent_representation(condition="nope")
    with pytest.raises(ValueError, match="w has no condition shift"):
        model.get_latent_representation(representation="w", condition="ctrl")
    # An array there failed with numpy's "truth value of an array ... is ambiguous".
    with pytest.raises(ValueError, match=r"must be 'z' or 'w', got \[0, 1, 2, 3, 4, ...\] \(9"):
        model.get_latent_representation(representation=np.arange(9))


def test_kmeans_start_with_few_unlabelled_cells_and_a_label_without_cells():
    from deltavae.train._mixture_init import MixtureInitialization

    rng = np.random.default_rng(0)
    blob = np.repeat([0, 1, 2], 40)
    z = rng.normal(size=(120, 3)) + 10.0 * np.eye(3)[blob]
    start = MixtureInitialization(seed=0, method="kmeans")
    # 8 components, 3 labels and 2 unlabelled cells: more free components than those cells.
    y = blob.copy()
    y[[0, 50]] = -1
    assignments = start.cluster(z, 8, y=y)
    np.testing.assert_array_equal(assignments[y >= 0], y[y >= 0])
    # Label 1 has no cells here: labels 0 and 2 keep their components for unlabelled cells.
    y = np.where(blob == 1, -1, blob)
    y[np.flatnonzero(blob != 1)[::2]] = -1
    for seed in range(5):
        start.seed = seed
        assignments = start.cluster(z, 3, y=y)
        np.testing.assert_array_equal(assignments[blob == 0], 0)
        np.testing.assert_array_equal(assignments[blob == 2], 2)
        np.testing.assert_array_equal(assignments[blob == 1], 1)


def test_the_mixture_start_keeps_the_users_torch_threads(monkeypatch):
    """numba's OpenMP layer, launched by scanpy's normalize_total in the mixture start, set
    torch's OpenMP threads to numba's: the user's set_num_threads(2) became 1 mid-training,
    and the first CGMDVAE trained in a process differed from the next one of the same seed."""
    import umap

    from deltavae.train._mixture_init import MixtureInitialization, data_components

    real = sc.pp.normalize_total

    def launching_numba(x, *args, **kwargs):
        torch.set_num_threads(1)  # what numba's first launch did to torch's OpenMP
        return real(x, *args, **kwargs) if isinstance(x, ad.AnnData) else x[:, :2]

    monkeypatch.setattr(sc.pp, "normalize_total", launching_numba)
    counts = np.random.default_rng(0).poisson(3.0, size=(40, 12)).astype(np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        data_components(counts, None, seed=0)
        assert torch.get_num_threads() == 2
        # UMAP's clustering start launched numba too.
        monkeypatch.setattr(umap.UMAP, "fit_transform", lambda self, z: launching_numba(z))
        MixtureInitialization(method="umap").cluster(counts[:, :4], 2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("mc_samples", [0, "a"])
def test_latent_refuses_a_count_of_draws_that_is_not_one_or_more(blobs_model, mc_samples):
    """mc_samples is unread (q is Gaussian) and so was taken as "a" or 0 without a word."""
    model, _ = blobs_model
    with pytest.raises(ValueError, match=r"mc_samples is a number of draws, an integer from 1"):
        model.get_latent_representation(mc_samples=mc_samples)


def test_interrupted_refit_leaves_the_trained_mixture(monkeypatch):
    """Ctrl-C during the refit after training (the cluster head's fit, after the prior's
    biases had moved) came through bare and left the prior moved and the head not fitted to
    it. Now the module is as training left it, train_args_ says no refit took place, and the
    interrupt says training finished and how to refit."""
    from deltavae.train import _mixture_init

    adata = _blobs(n_cells=200)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=5, likelihood="normal", **SMALL)
    trained, failures = {}, [KeyboardInterrupt, ZeroDivisionError]
    refit = dv.model.CGMDVAE._refit_mixture

    def failing_head(*args, **kwargs):
        raise failures.pop(0)

    def kept_then_refit(self, method):
        trained.clear()
        trained.update({k: v.clone() for k, v in self.module.state_dict().items()})
        with monkeypatch.context() as patch:
            patch.setattr(_mixture_init, "fit_cluster_head", failing_head)
            return refit(self, method)

    def unchanged():
        now = model.module.state_dict()
        assert trained and set(now) == set(trained)
        for key, value in trained.items():
            assert torch.equal(now[key], value), key

    monkeypatch.setattr(dv.model.CGMDVAE, "_refit_mixture", kept_then_refit)
    with pytest.raises(KeyboardInterrupt, match="Training finished, but the refit") as err:
        model.train(max_epochs=3, refit_mixture=True, **TRAIN)
    assert "model.train(max_epochs=1, refit_mixture=True)" in str(err.value)
    unchanged()
    assert model.is_trained_ and model.train_args_["refit_mixture"] is False
    # Any other error: the same, raised with the note.
    with pytest.raises(ZeroDivisionError) as err:
        model.train(max_epochs=1, refit_mixture=True, **TRAIN)
    assert "refit_mixture=True" in "".join(err.value.__notes__)
    unchanged()
    assert model.train_args_["refit_mixture"] is False
