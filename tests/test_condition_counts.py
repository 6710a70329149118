"""What a model counts as trained per condition or batch value after a train/validation split
(model/_condition_counts.py): validation cells give no gradient, so a value only they held
is untrained, for CGMDVAE's counts and draws and for every method that moves cells to it."""

import warnings

import numpy as np
import pytest
import scvi
from _poison import PoisonAt

import deltavae as dv

SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}
RARE = "stim2"  # 12 cells, all validating
UNTRAINED = rf"{RARE}'? was never seen in training: its 12 cells all fell in the validation"


def _data():
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    conditions = adata.obs["condition"].astype(str).to_numpy()
    conditions[:12] = RARE
    adata.obs["condition"] = conditions
    adata.obs["condition"] = adata.obs["condition"].astype("category")
    return adata


def _split(adata, key="condition"):
    """Every cell of RARE and 12 others validate; the rest train."""
    rare = np.flatnonzero(adata.obs[key] == RARE)
    rest = np.setdiff1d(np.arange(adata.n_obs), rare)
    return {"external_indexing": [rest[12:], np.concatenate([rare, rest[:12]])]}


@pytest.fixture(scope="module")
def cgmdvae():
    scvi.settings.seed = 0
    adata = _data()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, **SMALL)
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        model.train(max_epochs=2, batch_size=64, datasplitter_kwargs=_split(adata))
    model._told = [str(w.message) for w in told]  # the train-time warnings
    return model, adata


def test_training_names_a_condition_whose_cells_all_validate(cgmdvae):
    """Training said nothing of stim2, whose 12 cells all fell in the validation split."""
    told = [m for m in cgmdvae[0]._told if m.startswith("No cell of")]
    assert told and told[0].startswith(f"No cell of condition='{RARE}' (12 cells) is among")
    assert "train_size=1.0" in told[0] and "external_indexing" in told[0]


def test_condition_counts_are_of_the_training_cells(cgmdvae):
    """condition_counts_ counted the validation cells as trained: a value only they held
    (stim2, 12 cells) had a count, sample drew it (15 of 200 cells) and translate, sample
    and predict_perturbation moved cells to its untrained decoder column in silence."""
    model, adata = cgmdvae
    conditions = adata.obs["condition"].astype(str)
    trained = conditions.iloc[model.train_indices].value_counts().to_dict()
    assert RARE not in trained
    assert model.condition_counts_ == {"condition": trained}
    assert model.condition_combinations_ == {(v,): n for v, n in trained.items()}
    assert model.condition_counts_with_validation_ == {
        "condition": conditions.value_counts().to_dict()
    }
    assert RARE not in set(model.sample(200, seed=0).obs["condition"])
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    with pytest.raises(ValueError, match=UNTRAINED):
        model.translate(ctrl, RARE, seed=0)
    with pytest.raises(ValueError, match=UNTRAINED):
        model.sample(5, condition=RARE, seed=0)
    for method in ("latent_shift", "nearest_response"):
        with pytest.raises(ValueError, match=UNTRAINED):
            model.predict_perturbation(ctrl, RARE, method=method)
    model.predict_perturbation(ctrl, "stim", method="latent_shift")  # validation cells: no warning


def test_counts_are_saved_and_counts_saved_before_lose_untrained_values(cgmdvae, tmp_path):
    """A model saved before the counts were split-aware counted stim2's validation cells;
    loaded, it still drew and translated to stim2. Its counts become those with validation,
    and the training counts drop the values without training cells (trained_categories_)."""
    model, adata = cgmdvae
    model.save(tmp_path / "m")
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata)
    assert loaded.condition_counts_ == model.condition_counts_
    assert loaded.condition_counts_with_validation_ == model.condition_counts_with_validation_
    assert loaded.condition_combinations_ == model.condition_combinations_
    old = model.condition_counts_with_validation_  # what older code kept as condition_counts_
    kept = model.condition_counts_, model.condition_combinations_
    model.condition_counts_ = old
    model.condition_combinations_ = {(v,): n for v, n in old["condition"].items()}
    del model.condition_counts_with_validation_
    try:
        model.save(tmp_path / "old")
    finally:
        model.condition_counts_, model.condition_combinations_ = kept
        model.condition_counts_with_validation_ = old
    older = dv.model.CGMDVAE.load(tmp_path / "old", adata)
    assert older.condition_counts_ == {
        "condition": {v: n for v, n in old["condition"].items() if v != RARE}
    }
    assert older.condition_counts_with_validation_ == old
    assert (RARE,) not in older.condition_combinations_
    assert RARE not in set(older.sample(200, seed=0).obs["condition"])
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    with pytest.raises(ValueError, match=UNTRAINED):
        older.translate(ctrl, RARE, seed=0)
    with pytest.warns(UserWarning, match="nothing is left to learn"):  # its query models too
        query = dv.model.CGMDVAE.load_query_data(ctrl, tmp_path / "old")
    assert query.condition_counts_ == older.condition_counts_
    with pytest.raises(ValueError, match=UNTRAINED):
        query.translate(ctrl, RARE, seed=0)


def test_a_query_model_refuses_the_references_untrained_values(cgmdvae):
    """A query model took every reference category as seen: translating its cells to stim2,
    whose reference cells all validated, ran on the untrained decoder column."""
    model, adata = cgmdvae
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        query = dv.model.CGMDVAE.load_query_data(ctrl, model)
    with pytest.raises(ValueError, match=rf"{RARE}'? was never seen in training"):
        query.translate(ctrl, RARE, seed=0)


def test_zinbvae_batch_only_validation_cells_hold_is_named_and_refused():
    """ZINBVAE: a batch whose cells all validated trained in silence, and latent_shift to it
    decoded under its untrained batch column."""
    scvi.settings.seed = 0
    adata = _data()
    adata.obs["batch"] = adata.obs["condition"]
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="batch")
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    with pytest.warns(UserWarning, match=rf"No cell of batch='{RARE}' \(12 cells\).*train_size=1"):
        model.train(max_epochs=1, batch_size=64, datasplitter_kwargs=_split(adata, "batch"))
    ctrl = adata[adata.obs["batch"] == "ctrl"].copy()
    with pytest.raises(ValueError, match=UNTRAINED):
        model.predict_perturbation(ctrl, RARE, method="latent_shift", condition_key="batch")


def test_a_query_with_nothing_to_learn_keeps_its_references_counts(cgmdvae):
    """scvi-tools copies the reference's attributes onto a query model, its split's positions
    too; train() with nothing to learn then counted the reference's training positions of
    the query's cells as trained (or failed: 'positional indexers are out-of-bounds') and
    put the query's library sizes in place of those sample draws from."""
    model, adata = cgmdvae
    cells = adata[adata.obs["condition"] != RARE].copy()
    # Said once, at load_query_data (train() returning included), not again by train().
    with pytest.warns(UserWarning, match="nothing is left to learn.*train\\(\\) has nothing"):
        query = dv.model.CGMDVAE.load_query_data(cells, model)
    assert query.train_indices is None and query.test_indices is None
    query.train(max_epochs=1)
    assert query.condition_counts_ == model.condition_counts_
    assert query.library_log_stats_ == model.library_log_stats_


def test_a_query_does_not_read_its_cells_through_the_references_test_split():
    """A query model kept the reference's test positions: latent_shift on the query's cells
    indexed them with the reference's (IndexError for a smaller query, else its cells at
    those positions left out as 'never trained')."""
    scvi.settings.seed = 0
    adata = _data()
    adata.obs["condition"] = adata.obs["condition"].astype(str).replace(RARE, "ctrl")
    adata.obs["batch"] = "b0"
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="batch")
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    cells = np.arange(adata.n_obs)
    split = {"external_indexing": [cells[:110], cells[110:130], cells[130:]]}
    model.train(max_epochs=1, batch_size=64, datasplitter_kwargs=split)
    with pytest.warns(UserWarning, match="nothing is left to learn"):
        query = dv.model.ZINBVAE.load_query_data(adata[:100].copy(), model)
    ctrl = adata[:100][adata.obs["condition"][:100] == "ctrl"].copy()
    pred = query.predict_perturbation(
        ctrl, "stim", method="latent_shift", condition_key="condition"
    )
    assert pred.n_obs == ctrl.n_obs


def test_library_sizes_and_a_diverged_fits_record_are_of_the_cells_it_read():
    """library_log_stats_ (what sample draws library sizes from) read every cell, a test
    split's 20 cells 50 times deeper too (mean log library 7.71 for the 6.73 of the cells
    read), while weighing them as the training and validation cells; and a fit that diverged
    after training steps, kept at its last finite one, recorded no counts or library sizes
    (an earlier fit's were left, and best_epoch_ named an epoch it had not kept)."""
    scvi.settings.seed = 0
    adata = dv.datasets.synthetic_counts(
        n_cells=80, n_genes=20, n_clusters=2, n_conditions=2, seed=0
    )
    adata.X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    adata.X[60:] *= 50
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=2, n_hidden=8)
    cells, lib = np.arange(80), np.log(adata.X.sum(1))
    ctrl = (adata.obs["condition"] == "ctrl").to_numpy()
    fit = {"batch_size": 32, "mixture_init_epoch": None, "n_epochs_kl_warmup": None,
           "enable_progress_bar": False}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        warnings.filterwarnings("ignore", message=".* clusters are empty")
        split = [cells[:50], cells[50:60], cells[60:]]  # the deep cells: the test split
        model.train(max_epochs=1, datasplitter_kwargs={"external_indexing": split}, **fit)
    assert model.library_log_stats_ == pytest.approx((lib[:60].mean(), lib[:60].std()))
    by_condition = model.library_log_stats_by_condition_
    assert by_condition[("ctrl",)][0] == pytest.approx(lib[:60][ctrl[:60]].mean())
    # per cluster too: of the same cells (training and validation), not the training ones only
    clusters = model.predict_clusters()
    for (name, cond), (mean, _) in model.library_log_stats_by_cluster_.items():
        rows = (np.asarray(model.cluster_names)[clusters] == name) & (ctrl == (cond == "ctrl"))
        assert mean == pytest.approx(lib[:60][rows[:60]].mean())
    assert model.best_epoch_ == 0
    split = [cells[20:70], cells[70:], cells[:20]]  # another test split, then a NaN
    with pytest.raises(dv.train.TrainingDivergedError, match="keeps the last parameters"):
        model.train(max_epochs=2, callbacks=[PoisonAt(1)],
                    datasplitter_kwargs={"external_indexing": split}, **fit)  # fmt: skip
    assert model.best_epoch_ is None
    trained = adata.obs["condition"].iloc[20:70].astype(str).value_counts().to_dict()
    assert model.condition_counts_ == {"condition": trained}
    assert model.library_log_stats_ == pytest.approx((lib[20:].mean(), lib[20:].std()))
    # The same cells again: their stats replaced; other cells: pooled with them per condition,
    # as library_log_stats_ is (a fit on other cells replaced each condition's stats).
    assert model.library_log_stats_by_condition_[("ctrl",)][0] == pytest.approx(
        lib[20:][ctrl[20:]].mean()
    )
    other = adata[:40].copy()
    other.X, other.obs_names = other.X * 4, [f"other{i}" for i in range(40)]
    dv.model.CGMDVAE.setup_anndata(other, condition_key="condition")
    model.adata = other
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, train_size=1.0, **fit)
    both = np.concatenate([lib[20:], np.log(other.X.sum(1))])
    assert model.library_log_stats_ == pytest.approx((both.mean(), both.std()))
    both = np.concatenate([lib[20:][ctrl[20:]], np.log(other.X.sum(1))[ctrl[:40]]])
    stats = model.library_log_stats_by_condition_[("ctrl",)]
    assert stats == pytest.approx((both.mean(), both.std()))
    # Back to the first cells (A, B, A): A's records replaced, not added a second time
    # (condition_counts_, cluster_conditions_ and library_log_stats_ counted A twice).
    model.adata = adata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, train_size=1.0, **fit)
    every = adata.obs["condition"].astype(str).value_counts() + other.obs["condition"].astype(
        str
    ).value_counts().reindex(adata.obs["condition"].astype(str).unique(), fill_value=0)
    assert model.condition_counts_ == {"condition": every.to_dict()}
    assert sum(model.condition_combinations_.values()) == 120
    assert sum(model.cluster_conditions_.values()) == 120
    both = np.concatenate([lib, np.log(other.X.sum(1))])
    assert model.library_log_stats_ == pytest.approx((both.mean(), both.std()))
    both = np.concatenate([lib[ctrl], np.log(other.X.sum(1))[ctrl[:40]]])
    stats = model.library_log_stats_by_condition_[("ctrl",)]
    assert stats == pytest.approx((both.mean(), both.std()))
