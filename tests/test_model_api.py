"""scvi-tools' generic model tests, ported: ZINBVAE and CGMDVAE answer like scvi.model.SCVI.

Each public method our models inherit from scvi-tools' mixins works with scvi's meaning of its
arguments (for CGMDVAE the condition plays scvi's batch), or is not offered; a failed call
leaves the model working.
"""

import functools
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from lightning.pytorch import Callback

import deltavae as dv
from deltavae.model._scvi_glue import KEEP_COPIES

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
SCVI_HISTORY = [
    "train_loss",
    "elbo_train",
    "reconstruction_loss_train",
    "kl_local_train",
    "kl_global_train",
    "elbo_validation",
    "validation_loss",
    "reconstruction_loss_validation",
    "kl_local_validation",
    "kl_global_validation",
]


def _adata():
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["cluster"] = adata.obs["cluster"].astype(str)
    return adata


def _model(which, adata=None, **train):
    adata = _adata() if adata is None else adata
    if which == "zinbvae":
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
        model = dv.model.ZINBVAE(adata, n_latent=5, n_hidden=32)
        model.train(**{"max_epochs": 3, "train_size": 0.5, **train}, **TRAIN)
    else:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=5, n_hidden=32)
        model.train(
            **{"max_epochs": 3, "train_size": 0.5, "mixture_init": "kmeans", **train}, **TRAIN
        )
    return model, adata


@pytest.fixture(scope="module", params=["zinbvae", "cgmdvae"])
def trained(request):
    return _model(request.param)


def test_history_has_scvi_names(trained):
    model, _ = trained
    for key in SCVI_HISTORY:
        assert key in model.history, key
        assert np.isfinite(model.history[key][key].astype(float)).all(), key
    terms = model.history["kl_local_validation"]["kl_local_validation"].astype(float)
    assert (terms > 0).all()


def test_history_columns_are_numbers_after_training_again():
    """scvi-tools' logger leaves the history as dtype object; ours is float, also after a
    second fit appends to it, so pandas' numeric methods work on it."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dv.train.NotConvergedWarning)
        model, _ = _model("zinbvae", max_epochs=2)
        model.train(max_epochs=1, **TRAIN)
    for key, frame in model.history.items():
        assert all(dtype.kind == "f" for dtype in frame.dtypes), (key, frame.dtypes)
    elbo = model.history["elbo_train"]["elbo_train"]
    assert len(elbo) == 3
    assert np.isfinite(elbo.round(3)).all()


def test_elbo_marginal_ll_and_reconstruction(trained):
    model, _ = trained
    elbo = float(model.get_elbo())
    marginal = model.get_marginal_ll(n_mc_samples=50, n_mc_samples_per_pass=20)
    # Importance sampling with the guide tightens the bound: log p(x) >= ELBO.
    assert np.isfinite(marginal) and marginal > elbo
    per_cell = model.get_marginal_ll(indices=[0, 1, 2], n_mc_samples=3, return_mean=False)
    assert tuple(per_cell.shape) == (3,)
    error = model.get_reconstruction_error()
    assert np.isfinite(float(error["reconstruction_loss"]))
    # On the CPU whatever the module's device (scvi-tools leaves them on a GPU).
    assert isinstance(model.get_elbo(), float) and isinstance(error["reconstruction_loss"], float)
    assert model.get_elbo(return_mean=False).device.type == "cpu"


def test_latent_arguments(trained):
    model, adata = trained
    mean = model.get_latent_representation()
    draw = model.get_latent_representation(give_mean=False)
    loc, var = model.get_latent_representation(return_dist=True)
    assert mean.shape == draw.shape == var.shape == (adata.n_obs, 5)
    np.testing.assert_allclose(loc, mean, atol=1e-6)
    assert (var > 0).all() and not np.allclose(draw, mean)
    assert model.get_latent_representation(indices=[1, 2, 3]).shape == (3, 5)
    with pytest.raises(TypeError):
        model.get_latent_representation(not_an_argument=123)


def test_normalized_expression(trained):
    model, adata = trained
    expr = model.get_normalized_expression()
    assert isinstance(expr, pd.DataFrame) and expr.shape == adata.shape
    np.testing.assert_allclose(expr.sum(1), 1.0, rtol=1e-4)
    ten = model.get_normalized_expression(library_size=10)
    np.testing.assert_allclose(ten.sum(1), 10.0, rtol=1e-4)
    ctrl = model.get_normalized_expression(transform_batch="ctrl")
    stim = model.get_normalized_expression(transform_batch="stim")
    both = model.get_normalized_expression(transform_batch=["ctrl", "stim"])
    assert not np.allclose(ctrl, stim)
    # Averaged over the two conditions (each pass draws its own z, so not exactly the mean).
    np.testing.assert_allclose(both.sum(1), 1.0, rtol=1e-4)
    assert (
        np.abs(both - (ctrl + stim) / 2).to_numpy().mean() < np.abs(ctrl - stim).to_numpy().mean()
    )
    genes = list(adata.var_names[:5])
    assert list(model.get_normalized_expression(gene_list=genes).columns) == genes
    samples = model.get_normalized_expression(n_samples=3, return_mean=False)
    assert samples.shape == (3, adata.n_obs, adata.n_vars)


def test_transform_batch_decodes_under_that_condition(trained):
    """scvi's meaning: cells keep their own encoding and are decoded under the given batch
    (for CGMDVAE, the condition)."""
    model, adata = trained
    stim = np.flatnonzero((adata.obs["condition"] == "stim").to_numpy())
    ctrl = np.flatnonzero((adata.obs["condition"] == "ctrl").to_numpy())

    def expression(indices, **kwargs):
        torch.manual_seed(0)
        return model.get_normalized_expression(indices=indices, **kwargs).to_numpy()

    np.testing.assert_allclose(
        expression(stim, transform_batch="stim"), expression(stim), rtol=1e-5
    )
    assert not np.allclose(expression(ctrl, transform_batch="stim"), expression(ctrl))


def test_normalized_expression_of_draws_over_all_cells(trained):
    """n_samples_overall draws rows of randomly chosen cells; scvi-tools failed making them a
    frame indexed by the cells ("Shape of passed values is (50, 40), indices imply ...")."""
    model, adata = trained
    draws = model.get_normalized_expression(n_samples_overall=50)
    assert isinstance(draws, np.ndarray) and draws.shape == (50, adata.n_vars)
    with pytest.warns(UserWarning, match="returning an np.ndarray"):
        model.get_normalized_expression(n_samples_overall=50, return_numpy=False)


def test_differential_expression(trained):
    model, adata = trained
    de = model.differential_expression(groupby="cluster", group1="0")
    assert {"proba_m1", "bayes_factor", "scale1", "scale2"} <= set(de.columns)
    assert len(de) == adata.n_vars
    change = model.differential_expression(groupby="cluster", group1="0", group2="1", mode="change")
    assert "proba_not_de" in change.columns
    assert len(model.differential_expression(idx1=[0, 1, 2], idx2=[3, 4, 5])) == adata.n_vars
    with pytest.raises(ValueError, match="no cell of adata.obs\\['cluster'\\] is 'zero'"):
        model.differential_expression(groupby="cluster", group1="zero")
    # Groups and batches as numpy values were shown as array([...]) and np.str_('zero').
    plain = r"group1=\['zero'\]: no cell of adata.obs\['cluster'\] is 'zero'; its"
    with pytest.raises(ValueError, match=plain):
        model.differential_expression(groupby="cluster", group1=np.array(["zero"]))
    with pytest.raises(ValueError, match=r"transform_batch=\['mock'\]: 'mock' is not a"):
        model.get_normalized_expression(transform_batch=np.array(["mock"]))


def test_de_by_a_column_with_categories_without_cells(trained):
    """scvi-tools compared every category of groupby, also one without cells: it divided by
    zero (a column whose categories were set by hand, or kept after cells were dropped)."""
    model, adata = trained
    groups = ["0", "1", "2", "unseen"]
    adata.obs["typed"] = pd.Categorical(adata.obs["cluster"], categories=groups)
    de = model.differential_expression(groupby="typed", n_samples_overall=20)
    assert list(pd.unique(de["comparison"])) == ["0 vs Rest", "1 vs Rest", "2 vs Rest"]
    adata.obs["typed"] = pd.Categorical(["0"] * adata.n_obs, categories=groups)
    with pytest.raises(ValueError, match="cells in one group only \\('0'\\)"):
        model.differential_expression(groupby="typed")
    with pytest.raises(ValueError, match="group1='0' holds every cell .* rest .* is empty"):
        model.differential_expression(groupby="typed", group1="0")
    with pytest.raises(ValueError, match="idx1 selects every cell, so the rest"):
        model.differential_expression(idx1=np.ones(adata.n_obs, dtype=bool))
    del adata.obs["typed"]


def test_de_leaves_cells_of_no_group_out_of_the_rest(trained):
    """Cells with NaN in groupby's column (no group) were counted in the 'Rest' each group
    was compared with, silently (scvi-tools and scanpy both fold them in); a NaN group1 was
    refused as 'holds float values, not float: pass nan'."""
    model, adata = trained
    adata.obs["some"] = adata.obs["cluster"].where(np.arange(adata.n_obs) % 5 != 0)
    with pytest.warns(UserWarning, match=r"40 of 200 cells have no group in adata.obs\['some'\]"):
        de = model.differential_expression(groupby="some", group1="0", n_samples_overall=5)
    X = adata.X.toarray()
    rest = (adata.obs["some"].notna() & (adata.obs["some"] != "0")).to_numpy()
    np.testing.assert_allclose(de.loc[adata.var_names, "raw_mean2"], X[rest].mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match=r"group1=nan: no cell .* NaN marks cells of no group"):
        model.differential_expression(groupby="some", group1=np.nan)
    with pytest.raises(ValueError, match=r"group1='nan': no cell of adata.obs\['some'\]"):
        model.differential_expression(groupby="some", group1="nan")
    with warnings.catch_warnings():  # against group2: NaN cells are in neither group, no word
        warnings.simplefilter("error")
        model.differential_expression(groupby="some", group1="0", group2="1", n_samples_overall=5)
    adata.obs["some"] = adata.obs["cluster"].astype(int).where(adata.obs["some"].notna())
    with pytest.warns(UserWarning, match="have no group"):  # 0.0, 1.0, 2.0: NaN made floats
        by_int = model.differential_expression(groupby="some", group1=0, n_samples_overall=5)
    assert list(by_int["comparison"].unique()) == ["0 vs Rest"]  # was "no cell ... is 0"
    adata.obs["some"] = pd.Categorical(adata.obs["cluster"].where(adata.obs["cluster"] == "0"))
    with pytest.warns(UserWarning, match="have no group"):  # was compared with the NaN cells
        with pytest.raises(ValueError, match=r"one group only \('0'\) \(\d+ of no group, NaN\)"):
            model.differential_expression(groupby="some")
    adata.obs["some"] = np.nan
    with pytest.raises(ValueError, match=r"holds no group: every value is NaN \(a pandas"):
        model.differential_expression(groupby="some")
    del adata.obs["some"]


def test_de_of_a_group_of_one_or_two_cells_warns_naming_it(trained):
    """A group of one cell (idx1=[0], a type of one cell) was compared without a word: its
    log-fold changes are one cell's posterior against the rest, noise (scanpy's
    rank_genes_groups refuses a group of one sample). Each side of fewer than 3 cells is
    named with its size, as setup names such categories; the table still comes, and the
    group1 given to leave it out runs without the warning."""
    model, adata = trained
    adata.obs["few"] = np.where(np.arange(adata.n_obs) < 2, "pair", adata.obs["cluster"])
    adata.obs.loc[adata.obs_names[2], "few"] = "lone"
    with pytest.warns(
        UserWarning,
        match=r"fewer than 3 cells of adata.obs\['few'\]: 'lone' "
        r"\(1 cell\), 'pair' \(2 cells\)\.",
    ) as record:
        de = model.differential_expression(groupby="few", n_samples_overall=5)
    assert set(de["comparison"]) == {f"{g} vs Rest" for g in ("0", "1", "2", "lone", "pair")}
    message = next(str(w.message) for w in record if "fewer than 3" in str(w.message))
    line = re.search(r"leave it out: (group1=\[.*\])\.$", message).group(1)
    assert line == "group1=['0', '1', '2']"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.differential_expression(groupby="few", group1=["0", "1", "2"], n_samples_overall=5)
    with pytest.warns(UserWarning, match=r"fewer than 3 cells: idx1 \(1 cell\)\. "):
        model.differential_expression(idx1=[0], idx2=[3, 4, 5], n_samples_overall=5)
    with pytest.warns(UserWarning, match=r"cells of adata.obs\['few'\]: 'lone' \(1 cell\)\."):
        model.differential_expression(groupby="few", group1="0", group2="lone", n_samples_overall=5)
    del adata.obs["few"]


def test_seeded_de_gives_one_table_whether_or_not_its_anndata_was_registered(trained):
    """scvi-tools' registration of an AnnData draws from numpy's global generator, as DE's
    sampling of cells does: the model's own AnnData and a view of it (registered as a copy
    at each read) gave two tables under one seed."""
    model, adata = trained
    tables = []
    for data in (adata, adata[:]):
        scvi.settings.seed = 0
        tables.append(
            model.differential_expression(data, groupby="cluster", group1="0", batch_size=64)
        )
    pd.testing.assert_frame_equal(tables[0], tables[1])


def test_a_mask_of_integers_is_not_read_as_positions(trained):
    """scvi-tools read a 0/1 mask stored as integers as positions: cells 0 and 1, over and
    over (differential expression of two cells against the rest, silently)."""
    model, adata = trained
    mask = (adata.obs["cluster"] == "0").to_numpy()
    with pytest.raises(ValueError, match="idx1 holds a 0 or 1 for each of the 200 cells"):
        model.differential_expression(idx1=mask.astype(int))
    with pytest.raises(ValueError, match="idx2 holds a 0 or 1 .* idx2=mask.astype"):
        model.differential_expression(idx1=mask, idx2=(~mask).astype(np.int8))
    with pytest.raises(ValueError, match="indices holds a 0 or 1"):
        model.get_latent_representation(indices=mask.astype(int))
    assert model.get_latent_representation(indices=[0, 1, 1]).shape[0] == 3  # positions


def test_a_boolean_series_of_another_order_reads_cells_by_name(trained):
    """A mask built on obs sorted otherwise was read by position in every read-out: the rows
    returned were other cells than the mask named (DE already read it by name)."""
    model, adata = trained
    mask = adata.obs.sort_values("cluster", ascending=False)["cluster"] == "0"
    by_name = model.get_latent_representation(indices=np.flatnonzero(mask[adata.obs_names]))
    np.testing.assert_allclose(model.get_latent_representation(indices=mask), by_name)
    other = mask.rename(index=lambda name: name + "_x")
    with pytest.raises(ValueError, match="indices is a boolean Series indexed by other cells"):
        model.get_latent_representation(indices=other)


def test_de_cells_by_name_are_their_positions_and_bad_idx_are_named(trained):
    """idx1/idx2 as cell names (adata.obs_names[mask]), a mask of the wrong length or float
    positions failed with a bare numpy IndexError."""
    model, adata = trained
    mask = (adata.obs["cluster"] == "0").to_numpy()
    scvi.settings.seed = 0
    by_mask = model.differential_expression(idx1=mask, idx2=~mask, batch_size=64)
    scvi.settings.seed = 0
    by_name = model.differential_expression(
        idx1=adata.obs_names[mask], idx2=list(adata.obs_names[~mask]), batch_size=64
    )
    pd.testing.assert_frame_equal(by_mask, by_name)
    with pytest.raises(ValueError, match="idx1 names 1 cells not in adata.obs_names, e.g. 'x'"):
        model.differential_expression(idx1=["x", *adata.obs_names[:3]])
    with pytest.raises(
        ValueError, match="idx1 is a boolean mask of 199 entries, but the AnnData has 200 cells"
    ):
        model.differential_expression(idx1=mask[:-1])
    with pytest.raises(TypeError, match="idx2 holds float64 values"):
        model.differential_expression(idx1=[0, 1], idx2=np.array([2.0, 3.0]))
    with pytest.raises(ValueError, match="idx1 reach cell 500, but the AnnData has 200 cells"):
        model.differential_expression(idx1=[0, 500])


def test_gene_list_read_outs_follow_the_order_of_the_list(trained):
    """scvi-tools returns the genes of gene_list in the model's order: the columns of an array
    were other genes than the list's, and posterior_predictive_sample dropped unknown genes."""
    model, adata = trained
    genes = [adata.var_names[5], adata.var_names[0]]
    torch.manual_seed(0)
    table = model.get_normalized_expression(gene_list=genes)
    torch.manual_seed(0)
    array = model.get_normalized_expression(gene_list=genes, return_numpy=True)
    assert list(table.columns) == genes
    np.testing.assert_array_equal(array, table.to_numpy())
    with pytest.raises(ValueError, match=r"1 gene\(s\) the model does not have.*'nope'"):
        model.posterior_predictive_sample(gene_list=[genes[0], "nope"])


def test_de_names_the_users_columns_and_refuses_bad_modes_and_continuous_groups(trained):
    """A missing groupby listed scvi-tools' _scvi_batch (and _scvi_labels) as columns to
    choose; mode="bogus" failed after every draw (NotImplementedError), weights="bogus" with
    AttributeError 'NoneType' ...; groupby="library_size" compared each cell's value against
    the rest, one comparison per cell."""
    model, adata = trained
    assert "_scvi_batch" in adata.obs
    with pytest.raises(KeyError, match=r"\(did you mean 'cluster'\?\)") as error:
        model.differential_expression(groupby="clusters")
    assert "_scvi" not in str(error.value) and "'condition'" in str(error.value)
    with pytest.raises(ValueError, match=r"mode='bogus': pass one of \['vanilla', 'change'\]"):
        model.differential_expression(groupby="cluster", mode="bogus")
    with pytest.raises(ValueError, match=r"weights='bogus': pass one of \['uniform', 'impo"):
        model.differential_expression(groupby="cluster", weights="bogus")
    with pytest.raises(ValueError, match=r"holds continuous values .* pd.qcut\(adata.obs\["):
        model.differential_expression(groupby="library_size")
    adata.obs["dose"] = np.where(adata.obs["cluster"] == "0", 0.5, 2.5)  # doses: two groups
    assert len(model.differential_expression(groupby="dose", group1=0.5, silent=True)) > 0
    del adata.obs["dose"]
    with pytest.raises(KeyError, match=r"condition_key='conditions' is not a column .*'condit"):
        dv.model.CGMDVAE.setup_anndata(adata.copy(), condition_key="conditions")


def test_an_anndata_minified_by_scvi_tools_is_refused_not_read_as_empty_cells(trained):
    """scvi-tools' minify_adata replaces the counts by zeros: the models read such cells as
    empty, silently (latents, clusters and labels of nothing), and setup refused it as 'all
    zeros' without saying why; the models' own minify_adata was an AttributeError."""
    model, adata = trained
    minified = adata.copy()
    minified.X = sp.csr_matrix(minified.shape, dtype=np.float32)
    minified.uns["_scvi_adata_minify_type"] = "latent_posterior_parameters"
    refused = r"adata was minified by scvi-tools \(minify_adata; .* before minify_adata"
    with pytest.raises(ValueError, match=refused):
        model.get_latent_representation(minified)
    with pytest.raises(ValueError, match=refused):
        type(model).setup_anndata(minified)
    # SCVI's minify_adata was an AttributeError naming no reason.
    with pytest.raises(NotImplementedError, match=r"has no minified mode: it reads the counts"):
        model.minify_adata()


def test_de_chooses_its_cells_by_groups_or_by_idx_not_both(trained):
    """scvi-tools failed with a bare KeyError: None without groupby or idx1, silently
    compared idx1 against the rest where group1/group2 (or idx2 without idx1) were given, and
    moved the cells idx1 shares with idx2 to idx2."""
    model, adata = trained
    mask = (adata.obs["cluster"] == "0").to_numpy()
    with pytest.raises(ValueError, match="needs the cells to compare: groupby"):
        model.differential_expression()
    with pytest.raises(ValueError, match="needs the cells to compare: groupby"):
        model.differential_expression(group1="0")
    with pytest.raises(ValueError, match="idx1 chooses the cells compared, so group1 would be"):
        model.differential_expression(groupby="cluster", group1="1", idx1=mask)
    with pytest.raises(ValueError, match="idx2 is read only with idx1"):
        model.differential_expression(groupby="cluster", idx2=mask)
    # Cells in both went to idx2 (idx1 within idx2: a ZeroDivisionError).
    with pytest.raises(ValueError, match="idx1 and idx2 share 1 cells \\(e.g. 'cell_3'\\)"):
        model.differential_expression(idx1=[0, 1, 2, 3], idx2=[3, 4, 5])
    with pytest.raises(ValueError, match=f"share {mask.sum()} cells"):
        model.differential_expression(idx1=mask, idx2=np.ones(adata.n_obs, dtype=bool))


def test_de_refuses_an_fdr_target_or_delta_out_of_range(trained):
    """fdr_target=5 (for 5%) or a negative delta called every gene DE, without a word; and
    delta (or fdr_target) given to the default vanilla mode was ignored, without a word."""
    model, _ = trained
    ignored = r"delta applies to mode='change' only .* Pass mode='change' to use them"
    with pytest.warns(UserWarning, match=ignored):
        model.differential_expression(groupby="cluster", group1="0", delta=1.0, silent=True)
    with pytest.raises(ValueError, match="fdr_target is a proportion in \\(0, 1\\)"):
        model.differential_expression(groupby="cluster", group1="0", mode="change", fdr_target=5)
    with pytest.raises(ValueError, match="delta, the smallest \\|LFC\\| called DE"):
        model.differential_expression(groupby="cluster", group1="0", mode="change", delta=-0.1)
    # Other keywords of the change mode, silently ignored or read otherwise: test_mode="3"
    # as "three", pseudocounts=-1 NaN LFCs, "1e-4" a TypeError naming change_fn, 1j a bare
    # TypeError (numpy complex numbers passed the number check).
    change = {"groupby": "cluster", "group1": "0", "mode": "change"}
    with pytest.warns(UserWarning, match=r"^pseudocounts and test_mode apply to mode='change'"):
        model.differential_expression(
            groupby="cluster", group1="0", pseudocounts=0.1, test_mode="two", silent=True
        )
    with pytest.raises(ValueError, match=r"test_mode='3': pass 'three' .* or 'two'"):
        model.differential_expression(**change, test_mode="3")
    for bad in (-1, "1e-4", np.complex128(1j)):
        with pytest.raises(ValueError, match=r"pseudocounts, .* is a number from 0 .*; got"):
            model.differential_expression(**change, pseudocounts=bad)


def test_de_names_a_bad_delta_fdr_or_empty_query(trained):
    """delta='0.5' or fdr_target=None failed with a bare TypeError ('>=' not supported ...),
    an idx1/idx2 query selecting no cell with scvi-tools' 'One of idx1 or idx2 has size
    zero', an empty group1/batchid1 with 'No objects to concatenate' or a ZeroDivisionError;
    batch_correction='False' corrected batches, and a set of groups was read as one name."""
    model, _ = trained
    change = {"groupby": "cluster", "group1": "0", "mode": "change"}
    with pytest.raises(ValueError, match=r"delta, .* is a number from 0 .*; got '0.5'"):
        model.differential_expression(**change, delta="0.5")
    with pytest.raises(ValueError, match=r"fdr_target is a proportion .*; got None"):
        model.differential_expression(**change, fdr_target=None)
    with pytest.raises(ValueError, match=r"idx2=\"cluster == 'x'\" selects no cell"):
        model.differential_expression(idx1="cluster == '0'", idx2="cluster == 'x'")
    with pytest.raises(ValueError, match=r"batchid1 is empty; name one at least"):
        model.differential_expression(idx1=[0, 1], batch_correction=True, batchid1=[])
    with pytest.raises(ValueError, match=r"group1 is empty; name one at least"):
        model.differential_expression(groupby="cluster", group1=[])
    with pytest.raises(ValueError, match=r"batch_correction must be True or False, got 'False'"):
        model.differential_expression(groupby="cluster", group1="0", batch_correction="False")
    # "False" filtered the outlier cells, as True does.
    with pytest.raises(ValueError, match=r"^filter_outlier_cells must be True or False, got 'F"):
        model.differential_expression(groupby="cluster", group1="0", filter_outlier_cells="False")
    with pytest.raises(ValueError, match=r"'Rest'; its groups: .* leave group2 out"):
        model.differential_expression(groupby="cluster", group1="0", group2="Rest")
    de = model.differential_expression(groupby="cluster", group1={"1", "0"}, n_samples_overall=5)
    assert list(pd.unique(de["comparison"])) == ["0 vs Rest", "1 vs Rest"]  # a set: no name
    with pytest.raises(ValueError, match=r"idx2 selects no cell; pass at least one\.$"):
        model.differential_expression(idx1=[0, 1], idx2=[])  # not "or None for all": the rest


def test_expression_refuses_numbers_of_draws_below_one(trained):
    """n_samples=0 (or -1) was read as 1, and DE of n_samples_overall=0 called every gene DE
    (bayes_factor 18.4 for each)."""
    model, _ = trained
    with pytest.raises(ValueError, match="n_samples is a number of draws, an integer from 1"):
        model.get_normalized_expression(n_samples=0)
    with pytest.raises(ValueError, match="n_samples_overall .* from 1; got 2.5"):
        model.get_normalized_expression(n_samples_overall=2.5)
    with pytest.raises(ValueError, match="n_samples_overall is a number of draws"):
        model.differential_expression(groupby="cluster", group1="0", n_samples_overall=0)


def test_de_of_every_group_against_group2_leaves_group2_out(trained):
    """group2 without group1 compares each group with group2: scvi-tools also compared
    group2 with itself ("0 vs 0", a block of genes with nothing to find), as it did where
    group1 named group2 too."""
    model, _ = trained
    de = model.differential_expression(groupby="cluster", group2="0", n_samples_overall=20)
    assert list(pd.unique(de["comparison"])) == ["1 vs 0", "2 vs 0"]
    with pytest.raises(ValueError, match="group2='0' is also in group1=\\['1', '0'\\]"):
        model.differential_expression(groupby="cluster", group1=["1", "0"], group2="0")


def test_a_failed_de_leaves_no_column_in_the_anndata(trained):
    """scvi-tools removes its column of idx1/idx2 cells only when the call succeeds."""
    model, adata = trained
    with pytest.raises(ValueError, match="'change_fn' attribute not understood"):
        model.differential_expression(idx1=[0, 1, 2], mode="change", change_fn="bogus")
    assert "_scvi_temp_de" not in adata.obs


def test_de_names_its_own_unknown_keywords(trained):
    """Unknown keywords failed in scvi-tools' "DifferentialComputation.get_bayes_factors() got
    an unexpected keyword argument", naming neither the call nor what to pass: seed=0 (which
    other read-outs take) or n_samples= for n_samples_overall=."""
    model, _ = trained
    call = {"groupby": "cluster", "group1": "0"}
    with pytest.raises(TypeError, match=r"^differential_expression\(\) got .* 'seed': .* numpy"):
        model.differential_expression(**call, seed=0)
    with pytest.raises(TypeError, match=r"'n_samples'; did you mean 'n_samples_overall'\?"):
        model.differential_expression(**call, n_samples=10)


def test_de_names_scanpys_keywords_for_its_own(trained):
    """scanpy's rank_genes_groups(groups=, reference=) were refused with a list of scvi-tools'
    get_bayes_factors keywords, naming neither group1= nor group2=, the same arguments here."""
    model, _ = trained
    with pytest.raises(TypeError, match=r"'groups': scanpy's .* is group1= here"):
        model.differential_expression(groupby="cluster", groups=["0"])
    with pytest.raises(TypeError, match=r"'reference': scanpy's .* is group2= here"):
        model.differential_expression(groupby="cluster", group1="0", reference="1")
    with pytest.raises(TypeError, match=r"'method': .* mode='vanilla'"):
        model.differential_expression(groupby="cluster", method="wilcoxon")


def test_de_names_importance_weighting_kwargs_given_without_importance_weights(trained):
    """importance_weighting_kwargs with the default weights="uniform": the refusal named
    get_normalized_expression(), a call the user did not make, and an "unexpected keyword
    argument 'n_mc_samples'" the user had passed inside a dict (scvi-tools drops them)."""
    model, _ = trained
    call = {"groupby": "cluster", "group1": "0"}
    for weights in ({}, {"weights": "uniform"}, {"weights": None}):
        refusal = r"^differential_expression\(\) got importance_weighting_kwargs"
        with pytest.raises(TypeError, match=refusal) as err:
            model.differential_expression(
                **call, **weights, importance_weighting_kwargs={"n_mc_samples": 4}
            )
        assert "weights='importance'" in str(err.value)
        assert "get_normalized_expression" not in str(err.value)
    assert len(model.differential_expression(**call, importance_weighting_kwargs={})) > 0


def test_de_normalized_means_are_of_the_counts_read_not_a_cached_scaling(trained):
    """raw_normalized_mean1/2 read a scaling scvi-tools caches in obs at a first call
    ("_scvi_raw_norm_scaling", left in the user's obs and copied with it): of counts changed
    since (doubled counts: doubled means), NaN for cells added since (every gene NaN), and a
    cell without counts gave numpy's divide-by-zero warning and, of dense counts, NaN."""
    model, adata = trained
    model.differential_expression(groupby="cluster", group1="0", n_samples_overall=5)
    assert "_scvi_raw_norm_scaling" not in adata.obs
    data = adata.copy()
    counts = data.X.toarray() * 2  # dense, doubled, one cell of cluster 0 without counts
    empty = np.flatnonzero(data.obs["cluster"] == "0")[0]
    counts[empty] = 0
    data.X = counts
    data.obs["_scvi_raw_norm_scaling"] = np.where(np.arange(data.n_obs) < 50, 1.0, np.nan)
    de = model.differential_expression(data, groupby="cluster", group1="0", n_samples_overall=5)
    totals = counts.sum(1, keepdims=True)
    normalized = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0) * 1e4
    group = (data.obs["cluster"] == "0").to_numpy()
    for column, cells in (("raw_normalized_mean1", group), ("raw_normalized_mean2", ~group)):
        expected = normalized[cells].mean(0)
        np.testing.assert_allclose(de.loc[data.var_names, column], expected, rtol=1e-4)
    assert "_scvi_raw_norm_scaling" not in data.obs


def test_a_boolean_series_idx_is_read_by_cell_name(trained):
    """A mask built on obs in another order (sorted, or another table of the same cells) was
    read by position: other cells were compared, silently."""
    model, adata = trained
    mask = adata.obs["cluster"] == "0"
    shuffled = mask.iloc[np.random.default_rng(0).permutation(adata.n_obs)]
    tables = []
    for idx1 in (mask.to_numpy(), shuffled):
        scvi.settings.seed = 0
        tables.append(model.differential_expression(idx1=idx1, n_samples_overall=20))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    other = mask.set_axis([f"x{i}" for i in range(adata.n_obs)])
    with pytest.raises(ValueError, match="idx1 is a boolean Series indexed by other cells"):
        model.differential_expression(idx1=other)


def test_a_nullable_boolean_mask_is_read_by_name_and_its_missing_values_refused(trained):
    """A mask of pandas' nullable 'boolean' dtype in another order was read by position
    (other cells, silently); with a missing value it was read as cell names ('names 200
    cells not in adata.obs_names, e.g. 'False'')."""
    model, adata = trained
    mask = (adata.obs["cluster"] == "0").astype("boolean")
    shuffled = mask.iloc[np.random.default_rng(0).permutation(adata.n_obs)]
    np.testing.assert_allclose(
        model.get_latent_representation(indices=shuffled),
        model.get_latent_representation(indices=mask.to_numpy(bool)),
    )
    mask.iloc[3] = pd.NA
    missing = r"idx1 is a boolean mask with 1 missing values \(NA\): .* idx1=mask.fillna\(False\)"
    for idx1 in (mask, mask.to_numpy()):
        with pytest.raises(ValueError, match=missing):
            model.differential_expression(idx1=idx1)
    with pytest.raises(ValueError, match=r"indices is a boolean mask with 1 missing values"):
        model.get_latent_representation(indices=mask)


def test_de_by_the_labels_column_keeps_labels_the_model_never_saw():
    """Cells with a label the model was not trained with are read as unlabelled; grouped by
    the labels column they had joined the unlabelled cells (group1='new': a division by
    zero), and the warning spoke of predicting their labels, which DE does not. The mark of
    unlabelled cells was a group ('Unknown vs Rest') and its cells were in every rest."""
    adata = _adata()
    adata.obs["label"] = adata.obs["cluster"].where(np.arange(adata.n_obs) % 4 != 0, "Unknown")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=5, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, mixture_init="kmeans", **TRAIN)
    marked = r"50 of 200 cells are marked unlabelled \('Unknown'\) in adata.obs\['label'\]"
    with pytest.warns(UserWarning, match=marked + ".* left out .* name it: group1='Unknown'"):
        de = model.differential_expression(groupby="label", n_samples_overall=20)
    assert list(pd.unique(de["comparison"])) == ["0 vs Rest", "1 vs Rest", "2 vs Rest"]
    X, label = adata.X.toarray(), adata.obs["label"]
    rest = ((label != "Unknown") & (label != "0")).to_numpy()
    first = de[de["comparison"] == "0 vs Rest"]
    np.testing.assert_allclose(first.loc[adata.var_names, "raw_mean2"], X[rest].mean(0), rtol=1e-5)
    with warnings.catch_warnings():  # named: compared as asked, without a word
        warnings.simplefilter("error")
        asked = model.differential_expression(groupby="label", group1="Unknown")
    assert list(pd.unique(asked["comparison"])) == ["Unknown vs Rest"]
    new = adata.copy()
    new.obs["label"] = label.where(label != "2", "new")
    with pytest.warns(UserWarning) as caught:
        de = model.differential_expression(new, groupby="label", n_samples_overall=20)
    said = " ".join(str(w.message) for w in caught)
    assert "differential_expression compares them as groups of their own" in said
    assert "whose label the model predicts" not in said and "marked unlabelled" in said
    assert list(pd.unique(de["comparison"])) == ["0 vs Rest", "1 vs Rest", "new vs Rest"]
    with pytest.warns(UserWarning, match="groups of their own"):
        one = model.differential_expression(new, groupby="label", group1="new", group2="0")
    assert (one["raw_mean1"] > 0).any() and list(one.columns) == list(de.columns)
    assert "_deltavae_de_groups" not in new.obs


def test_query_de_groups_by_a_column_added_to_the_query_after_mapping(trained):
    """A query model reads a copy of the query; a grouping the user adds to the query itself
    after mapping (leiden) was "not a column of adata.obs" unless the query was passed."""
    model, adata = trained
    query = adata[:60].copy()
    query.obs["condition"] = query.obs["condition"].astype(str) + "_query"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapped = type(model).load_query_data(query, model)
        mapped.train(max_epochs=1, **TRAIN)
    query.obs["leiden"] = query.obs["cluster"].to_numpy()
    de = mapped.differential_expression(groupby="leiden", group1="0", n_samples_overall=20)
    assert len(de) == adata.n_vars and set(de["group1"]) == {"0"}
    # the groups are those of the column added to the query: its "0" cells against the rest
    X, zero = query.X.toarray(), (query.obs["leiden"] == "0").to_numpy()
    assert 0 < zero.sum() < query.n_obs
    np.testing.assert_allclose(de.loc[query.var_names, "raw_mean1"], X[zero].mean(0), rtol=1e-5)
    np.testing.assert_allclose(de.loc[query.var_names, "raw_mean2"], X[~zero].mean(0), rtol=1e-5)


def test_de_genes_tied_on_the_sort_key_follow_the_effect_size(trained):
    """scvi-tools sorts by proba_de (change) or bayes_factor (vanilla) with an unstable sort,
    so genes tied there (proba_de saturates at 1.0 for clear markers) came in any order. The
    vanilla tie-break is signed, as bayes_factor: by the size of scale1 - scale2 the genes
    tied at its lowest ended with the least down-regulated, the most at their block's top."""
    model, _ = trained
    n_tied = 0
    for mode, key in (("change", "proba_de"), ("vanilla", "bayes_factor")):
        # 50 draws: proba_de in steps of 0.02, so genes tie as clear markers do at 1.0
        extra = {"n_samples_overall": 50}
        de = model.differential_expression(groupby="cluster", mode=mode, batch_size=64, **extra)
        effect = de["lfc_mean"].abs() if mode == "change" else de["scale1"] - de["scale2"]
        assert list(pd.unique(de["comparison"])) == ["0 vs Rest", "1 vs Rest", "2 vs Rest"]
        for _, block in de.assign(effect=effect).groupby("comparison", sort=False):
            assert block[key].is_monotonic_decreasing
            for _, tied in block.groupby(key, sort=False):
                assert tied["effect"].is_monotonic_decreasing
                n_tied += len(tied) - 1
    # A table of idx1/idx2 has no comparison column: it is one comparison, tie-broken too.
    idx1 = np.arange(60)
    de = model.differential_expression(idx1=idx1, idx2=np.arange(60, 200), mode="change",
                                       batch_size=64, n_samples_overall=50)  # fmt: skip
    assert "comparison" not in de and de["proba_de"].is_monotonic_decreasing
    for _, tied in de.assign(effect=de["lfc_mean"].abs()).groupby("proba_de", sort=False):
        assert tied["effect"].is_monotonic_decreasing
        n_tied += len(tied) - 1
    assert n_tied > 10, "few ties: the test checks little"


def test_expression_arguments_scvi_tools_would_mishandle(trained):
    """scvi-tools drops unknown genes of gene_list (an empty frame when none is known), names
    no category for a wrong transform_batch, and fails on a list for group2."""
    model, adata = trained
    gene = adata.var_names[0]
    with pytest.raises(ValueError, match=r"1 gene\(s\) the model does not have.*'nope'"):
        model.get_normalized_expression(gene_list=[gene, "nope"])
    with pytest.raises(ValueError, match="capitalisation"):
        model.get_normalized_expression(gene_list=[gene.upper()])
    with pytest.raises(ValueError, match=r"'ctl' is not a category.*\['ctrl', 'stim'\]"):
        model.get_normalized_expression(transform_batch=["ctrl", "ctl"])
    with pytest.raises(ValueError, match="not a category"):
        model.differential_expression(groupby="cluster", group1="0", batchid1=["x"])
    with pytest.raises(ValueError, match="isin\\(group2\\)"):
        model.differential_expression(groupby="cluster", group1="0", group2=["1", "2"])
    with pytest.raises(TypeError, match=r"takes no gene_list.*de.index.isin\(genes\)"):
        model.differential_expression(groupby="cluster", group1="0", gene_list=[gene])
    one = model.differential_expression(groupby="cluster", group1="0", group2=["1"])
    assert len(one) == adata.n_vars and set(one["comparison"]) == {"0 vs 1"}


def test_a_batch_category_without_cells_is_not_decoded(counts_adata):
    """Its one-hot column never trained: decoding under it gave numbers without a word."""
    adata = counts_adata
    categories = ["ctrl", "stim", "other"]
    adata.obs["condition"] = pd.Categorical(adata.obs["condition"].astype(str), categories)
    with pytest.warns(UserWarning, match=r"no cell carries \(\['other'\]\)"):  # at setup
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    with pytest.raises(ValueError, match="'other' is a category .* without training cells"):
        model.get_normalized_expression(transform_batch="other")
    with pytest.raises(ValueError, match="without training cells.*\\['ctrl', 'stim'\\]"):
        model.differential_expression(groupby="cluster", group1="0", batchid1=["other"])
    with pytest.raises(ValueError, match="'other' is a category .* without training cells"):
        model.get_feature_correlation_matrix(transform_batch=["other"], n_samples=1)
    assert model.get_normalized_expression(transform_batch="stim").shape == adata.shape


def test_expression_arguments_found_by_a_trial(trained):
    """Each failed late in scvi-tools or pandas, or gave a wrong table without a word."""
    model, adata = trained
    gene = adata.var_names[3]
    one = model.get_normalized_expression(gene_list=gene)  # pandas' isin refused a string
    assert list(one.columns) == [gene]
    with pytest.raises(ValueError, match="gene_list is empty"):  # a (cells, 0) table
        model.get_normalized_expression(gene_list=[])
    for bad in (0, -1.0, np.nan, "foo", None):  # zeros, negatives, NaN, TypeErrors
        with pytest.raises(ValueError, match="library_size must be a number above 0"):
            model.get_normalized_expression(library_size=bad)
    assert model.get_normalized_expression(library_size="latent").shape == adata.shape
    adata.obs["cl_int"] = adata.obs["cluster"].astype(int)
    de = model.differential_expression(groupby="cl_int", group1=0)  # 'int' is not iterable
    assert set(de["comparison"]) == {"0 vs Rest"}
    de = model.differential_expression(groupby="cl_int", group1=0, group2=np.int64(1))
    assert set(de["comparison"]) == {"0 vs 1"}
    with pytest.raises(ValueError, match="holds int values, not str: pass 0"):  # ZeroDivision
        model.differential_expression(groupby="cl_int", group1="0", group2="1")
    with pytest.raises(ValueError, match="batchid1 chooses the batches"):  # "Inconsistent batch"
        model.differential_expression(groupby="cluster", group1="0", batchid1=["ctrl"])
    both = []
    for ids in ("ctrl", ["ctrl"]):  # a string was read letter by letter: 'c' not a batch
        torch.manual_seed(0)
        np.random.seed(0)  # noqa: NPY002 - scvi-tools' DE draws from numpy's global one
        both.append(
            model.differential_expression(
                groupby="cluster", group1="0", batch_correction=True, batchid1=ids, batchid2=ids
            )
        )
    pd.testing.assert_frame_equal(both[0], both[1])
    del adata.obs["cl_int"]  # the fixture's AnnData, shared with other tests


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_expression_of_an_untrained_model_is_refused(which):
    """An untrained (query) model answered differential_expression from its start."""
    adata = _adata()
    model, _ = _model(which, adata, max_epochs=1)
    query = adata[:40].copy()
    query.obs["condition"] = "new"
    q = type(model).load_query_data(query, model)
    for call in (
        lambda: q.differential_expression(groupby="cluster", group1="0"),
        lambda: q.get_normalized_expression(),
    ):
        with pytest.raises(RuntimeError, match="untrained"):
            call()


# 4-7 s: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_importance_weighted_de(monkeypatch):
    model, adata = _model("zinbvae")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # small data: no warning about the time
        de = model.differential_expression(groupby="cluster", group1="0", weights="importance")
    assert len(de) == adata.n_vars
    monkeypatch.setattr("deltavae.model._de._SLOW_IMPORTANCE", 100)
    with pytest.warns(UserWarning, match="minutes on a CPU"):
        model.differential_expression(groupby="cluster", group1="0", weights="importance")
    cgmdvae, _ = _model("cgmdvae")
    with pytest.raises(NotImplementedError, match="weights='uniform'"):
        cgmdvae.differential_expression(groupby="cluster", group1="0", weights="importance")


# 4-7 s: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_posterior_predictive_and_correlations(trained):
    model, adata = trained
    one = model.posterior_predictive_sample()
    many = model.posterior_predictive_sample(n_samples=2, gene_list=list(adata.var_names[:4]))
    assert one.shape == adata.shape and many.shape == (adata.n_obs, 4, 2)
    torch.manual_seed(0)  # genes in the order of gene_list (scvi-tools: the model's order)
    draws = model.posterior_predictive_sample(gene_list=list(adata.var_names[[5, 0]]))
    torch.manual_seed(0)
    np.testing.assert_array_equal(
        draws.todense(), model.posterior_predictive_sample().todense()[:, [5, 0]]
    )
    assert (one.data >= 0).all() and np.allclose(one.data, np.round(one.data))
    # scvi-tools read a gene_list string as a substring (gene_list="gene_10" returned gene_1
    # too: IFI44 for IFI44L) and silently dropped genes the model does not have.
    assert model.posterior_predictive_sample(indices=[0, 1], gene_list="gene_10").shape == (2, 1)
    with pytest.raises(ValueError, match="does not have"):
        model.posterior_predictive_sample(indices=[0, 1], gene_list=["gene_10", "gene_x"])
    corr = model.get_feature_correlation_matrix(
        correlation_type="spearman", transform_batch=["ctrl", "stim"]
    )
    assert corr.shape == (adata.n_vars, adata.n_vars)
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-6)


def test_likelihood_parameters(trained):
    model, adata = trained
    params = model.get_likelihood_parameters()
    assert set(params) == {"mean", "dispersions", "dropout"}
    assert params["mean"].shape == adata.shape and (params["dispersions"] > 0).all()


def test_a_failed_call_leaves_the_model_working(trained, monkeypatch):
    model, _ = trained
    torch.manual_seed(0)
    elbo = float(model.get_elbo())
    generative = model.module.generative

    @functools.wraps(generative)  # scvi-tools reads its signature (transform_batch)
    def fails_after_the_forward_pass(*args, **kwargs):
        generative(*args, **kwargs)
        raise RuntimeError("failed after the forward pass")

    monkeypatch.setattr(model.module, "generative", fails_after_the_forward_pass)
    with pytest.raises(RuntimeError, match="after the forward pass"):
        model.get_normalized_expression()
    monkeypatch.undo()
    torch.manual_seed(0)
    assert float(model.get_elbo()) == elbo
    assert model.get_latent_representation().shape[1] == 5


def test_plan_kwargs_reach_the_optimiser():
    model, _ = _model(
        "zinbvae",
        plan_kwargs={
            "lr": 5e-3,
            "weight_decay": 0.0,
            "optimizer": "AdamW",
            "reduce_lr_on_plateau": True,
            "lr_patience": 1,
        },
    )
    assert "lr-AdamW" in model.history
    assert model.history["lr-AdamW"]["lr-AdamW"].iloc[0] == pytest.approx(5e-3)
    with pytest.raises(ValueError, match="disagree"):
        model.train(max_epochs=1, lr=1e-3, plan_kwargs={"lr": 1e-2}, **TRAIN)
    with pytest.raises(ValueError, match=r"lr=0.001 and plan_kwargs\['optim_kwargs'\]\['lr'\]"):
        model.train(max_epochs=1, lr=1e-3, plan_kwargs={"optim_kwargs": {"lr": 1e-2}}, **TRAIN)
    # The advice was optim=..., which train() refuses: the class goes in plan_kwargs too.
    advice = r"optimizer must be one of .* e.g. plan_kwargs=\{'optim': torch.optim.SGD\}"
    with pytest.raises(ValueError, match=advice):
        model.train(max_epochs=1, plan_kwargs={"optimizer": "SGD"}, **TRAIN)
    for wrong, meant in (("adam", "'Adam'"), ("ADAMW", "'AdamW'"), ("custom", "'Custom'")):
        with pytest.raises(ValueError, match=rf"got '{wrong}' \(did you mean {meant}\?\); for"):
            model.train(max_epochs=1, plan_kwargs={"optimizer": wrong}, **TRAIN)
    with pytest.raises(ValueError, match="reduce_lr_on_plateau watches"):
        model.train(
            max_epochs=1, train_size=1.0, plan_kwargs={"reduce_lr_on_plateau": True}, **TRAIN
        )


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_early_stopping_needs_validation_cells(which):
    adata = _adata()
    model, _ = _model(which, adata, max_epochs=1)
    with pytest.raises(ValueError, match="no cell is held out"):
        model.train(max_epochs=2, early_stopping=True, train_size=1.0, **TRAIN)


def test_save_load_with_anndata_round_trips(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model", save_anndata=True)
    loaded = type(model).load(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    # How it was trained is saved with it: the call's arguments and the seed it ran under.
    args = model.train_args_
    assert loaded.train_args_ == args
    assert (args["max_epochs"], args["train_size"], args["enable_progress_bar"]) == (3, 0.5, False)
    assert (args["lr"], args["batch_size"]) == (1e-3, 128)  # the defaults, as resolved
    assert args["seed"] == scvi.settings.seed
    assert args.get("mixture_init", "kmeans") == "kmeans"
    with pytest.raises(ValueError, match="batch_size"):
        loaded.train(max_epochs=2, batch_size=0)
    assert loaded.train_args_ == args
    torch.manual_seed(0)
    a = loaded.get_normalized_expression()
    torch.manual_seed(0)
    b = model.get_normalized_expression()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_the_setup_arguments_are_those_of_setup_anndata_also_after_loading(trained, tmp_path):
    """CGMDVAE recorded names setup_anndata computed (conditions, query, labels_checked) as its
    arguments, shown by view_setup_args, and query turned True in every loaded model."""
    import inspect

    model, adata = trained
    cls = type(model)
    names = set(inspect.signature(cls.setup_anndata).parameters) - {"adata", "kwargs"}
    assert set(model.registry_["setup_args"]) == names
    model.save(tmp_path / "m")
    assert cls.load(tmp_path / "m", adata).registry_["setup_args"] == model.registry_["setup_args"]


class _StopAt(Callback):
    def on_train_epoch_end(self, trainer, module):
        raise RuntimeError("stopped by a callback")


class _Snapshot(Callback):
    def __init__(self, model):
        self.model, self.copy = model, None

    def on_train_epoch_end(self, trainer, module):
        self.copy = pickle.loads(pickle.dumps(self.model))


def test_train_args_are_those_of_the_call_that_trained(tmp_path):
    """Recorded when the fit starts: a fit stopped by an error keeps its call's record, a
    copy pickled mid-training records its own later calls, a call with nothing to train none."""
    model, adata = _model("zinbvae", max_epochs=1)
    assert model.train_args_["max_epochs"] == 1
    with pytest.raises(RuntimeError, match="stopped by a callback"):
        model.train(max_epochs=4, lr=5e-3, callbacks=[_StopAt()], **TRAIN)
    assert (model.train_args_["max_epochs"], model.train_args_["lr"]) == (4, 5e-3)
    snapshot = _Snapshot(model)
    model.train(max_epochs=1, callbacks=[snapshot], **TRAIN)
    snapshot.copy.train(max_epochs=2, lr=2e-3, **TRAIN)
    assert (snapshot.copy.train_args_["max_epochs"], snapshot.copy.train_args_["lr"]) == (2, 2e-3)
    # A query of the reference's own conditions has nothing to learn: train() returns at once.
    cgmdvae, _ = _model("cgmdvae", adata.copy(), max_epochs=1)
    known = adata[adata.obs["condition"] == "ctrl"].copy()
    known.obs = known.obs[["condition"]]
    # One situation, one warning: load_query_data says it (train() returning included);
    # train() said it again, word for word.
    with pytest.warns(UserWarning, match="nothing is left to learn.*has nothing to do"):
        query = dv.model.CGMDVAE.load_query_data(known, cgmdvae)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        query.train(max_epochs=7, **TRAIN)
    assert not [str(w.message) for w in caught if "nothing" in str(w.message)]
    assert query.train_args_ is None  # the query model never trained (nor records the reference's)
    # A query model loaded from its folder was not told in this session: train() says it.
    query.save(tmp_path / "query")
    loaded = dv.model.CGMDVAE.load(tmp_path / "query", adata=known)
    with pytest.warns(UserWarning, match="nothing is left to learn.*has nothing to do"):
        loaded.train(max_epochs=7, **TRAIN)
    assert loaded.train_args_ is None


def test_sample_posterior_is_not_offered(trained):
    """Every parameter is a point estimate: Pyro's posterior sampling is not inherited."""
    model, _ = trained
    assert not hasattr(model, "sample_posterior")


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_query_mapping_with_scvis_recipe(which):
    adata = _adata()
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    reference = adata[adata.obs["condition"] == "ctrl"].copy()
    query = adata[adata.obs["condition"] == "stim"].copy()
    if which == "cgmdvae":
        with pytest.warns(UserWarning, match="'condition' holds one value"):
            model, _ = _model(which, reference, max_epochs=3)
    else:
        model, _ = _model(which, reference, max_epochs=3)
    cls = type(model)
    mapped = cls.load_query_data(query, model)  # the query's model knows both: no warning
    before = {k: v.clone() for k, v in mapped.module.state_dict().items()}
    mapped.train(max_epochs=2, plan_kwargs={"weight_decay": 0.0}, **TRAIN)
    changed = [k for k, v in mapped.module.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("fc_layers" in k for k in changed), changed
    assert mapped.get_latent_representation().shape == (query.n_obs, 5)
    assert mapped.get_normalized_expression(transform_batch="ctrl").shape == query.shape
    if which == "cgmdvae":
        # More cells of the reference's one condition: said once that nothing is left to
        # learn, not again that the condition holds one value "until query data of another
        # one are mapped (load_query_data)", the call being made.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls.load_query_data(reference[:20].copy(), model)
        said = [str(w.message) for w in caught]
        assert any("nothing is left to learn" in m for m in said), said
        assert not any("holds one value" in m for m in said), said


def test_a_cgmdvae_saved_before_the_batch_field_loads(tmp_path):
    model, adata = _model("cgmdvae")
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    saved = torch.load(path, weights_only=False)
    del saved["attr_dict"]["registry_"]["field_registries"]["batch"]
    torch.save(saved, path)
    fresh = adata.copy()
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", fresh)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    assert "batch" not in loaded.registry_["field_registries"]


def test_training_again_trains_in_training_mode(trained):
    """Lightning keeps the module's mode at fit start: a trained (eval-mode) model must be put
    back in training mode, or dropout and BatchNorm statistics stop working."""
    from lightning.pytorch.callbacks import Callback

    class Modes(Callback):
        seen: list = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            Modes.seen.append(pl_module.module.training)

    model, _ = trained
    assert not model.module.training
    model.train(max_epochs=1, callbacks=[Modes()], **TRAIN)
    assert Modes.seen and all(Modes.seen)
    assert not model.module.training  # back in eval mode for reading results


def test_setup_views_and_registry(trained, tmp_path, capsys):
    model, _ = trained
    model.view_anndata_setup()
    model.save(tmp_path / "m", prefix="p_", save_anndata=True)
    type(model).view_setup_args(tmp_path / "m", prefix="p_")
    assert "condition" in capsys.readouterr().out
    assert (
        type(model).load_registry(tmp_path / "m", prefix="p_")["model_name"] == type(model).__name__
    )
    assert type(model).load(tmp_path / "m", prefix="p_").is_trained_
    # Without the prefix: "no model.pt in it; point to the directory written by model.save()",
    # although that was the directory.
    with pytest.raises(FileNotFoundError, match=r"prefix \['p_'\].*prefix='p_'"):
        type(model).load(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="then pass the loaded model"):
        type(model).load_query_data(model.adata.copy(), tmp_path / "m")


def test_training_hides_lightnings_advice_but_not_ours(monkeypatch):
    """Lightning's LeafSpec FutureWarning (torch 2.13), its step-logging advice (one batch
    per epoch here) and its advice to add loader workers (on a machine with more than two
    CPUs, as most users have) are silenced during fit; ours still show."""
    import warnings

    from lightning.pytorch.trainer.connectors import data_connector

    monkeypatch.setattr(data_connector, "suggested_max_num_workers", lambda n_devices: 7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _model("zinbvae", max_epochs=2)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m], messages
    assert not [m for m in messages if "logging interval" in m], messages
    assert not [m for m in messages if "many workers" in m], messages
    # two epochs are too few to converge: deltavae's own warning is not swallowed
    assert any(issubclass(w.category, dv.train.NotConvergedWarning) for w in caught), messages


def test_saving_with_the_anndata_leaves_its_string_columns_as_they_were(tmp_path):
    """Writing .h5ad turns string columns into categoricals in place (anndata): the user's
    AnnData, the model's own, had its obs changed by save(save_anndata=True)."""
    adata = _adata()
    adata.obs["note"] = "x"
    adata.obs["condition"] = adata.obs["condition"].astype(str)
    model, _ = _model("zinbvae", adata, max_epochs=1)
    before = adata.obs.dtypes.copy()
    model.save(tmp_path / "m", save_anndata=True)
    pd.testing.assert_series_equal(adata.obs.dtypes, before)
    assert adata.obs["note"].dtype == object
    loaded = type(model).load(tmp_path / "m")
    assert isinstance(loaded.adata.obs["note"].dtype, pd.CategoricalDtype)  # as written


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_repeated_reads_of_a_view_do_not_keep_a_copy_each(which):
    """Each read of a view (or of genes in another order) registered one more copy of its
    data with the model, kept for the model's life: 10 reads, 11 registrations."""
    model, adata = _model(which)
    view = adata[adata.obs["condition"] == "ctrl"]
    reordered = adata[:, adata.var_names[::-1]].copy()
    store = model._per_instance_manager_store[model.id]
    first = model.get_latent_representation(view)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the note on reordered genes
        for _ in range(10):
            np.testing.assert_array_equal(model.get_latent_representation(view), first)
            model.get_latent_representation(reordered)
    assert len(store) <= 1 + KEEP_COPIES, len(store)
    assert model.adata_manager.adata_uuid in store  # the model's own AnnData stays
    np.testing.assert_array_equal(model.get_latent_representation(view), first)


def test_training_leaves_the_sessions_cudnn_benchmark_flag(monkeypatch):
    """scvi-tools' Trainer turned cudnn.benchmark on at every fit, undoing the deterministic
    GPU runs scvi.settings.seed sets up (benchmark off); passed explicitly, it is honoured."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    model, _ = _model("zinbvae", max_epochs=1)
    assert torch.backends.cudnn.benchmark is False
    model.train(max_epochs=1, benchmark=True, **TRAIN)
    assert torch.backends.cudnn.benchmark is True


def test_a_users_own_pyro_parameters_survive_training_and_loading(tmp_path):
    """train() and load() emptied Pyro's whole parameter store, a user's pyro.param too; only
    deltavae's own entries (named by module kind, shared by models of one kind) go."""
    import pyro

    pyro.clear_param_store()
    pyro.param("my_loc", torch.tensor([1.5]))
    model, adata = _model("zinbvae", max_epochs=1)
    stale = {k for k in pyro.get_param_store().keys() if k.startswith("zinbvae$$$")}
    assert stale  # the model registered its own
    model.save(tmp_path / "m")
    dv.model.ZINBVAE.load(tmp_path / "m", adata)
    assert set(pyro.get_param_store().keys()) == {"my_loc"}
    assert pyro.param("my_loc").item() == 1.5
    # Two models of one kind trained in a row from one seed match: no stale entry is reused.
    scvi.settings.seed = 0
    first, _ = _model("zinbvae", max_epochs=2)
    scvi.settings.seed = 0
    second, _ = _model("zinbvae", max_epochs=2)
    np.testing.assert_array_equal(
        first.get_latent_representation(), second.get_latent_representation()
    )
    assert pyro.param("my_loc").item() == 1.5
    pyro.clear_param_store()


def test_marginal_ll_mean_is_over_cells_whatever_the_batch_size(trained):
    """scvi-tools averaged the minibatches' means: 200 cells in minibatches of 128 weighed the
    last 72 as much as the first 128, and the mean moved with batch_size."""
    model, adata = trained
    torch.manual_seed(0)
    mean = model.get_marginal_ll(n_mc_samples=2, batch_size=128)
    torch.manual_seed(0)
    per_cell = model.get_marginal_ll(n_mc_samples=2, batch_size=128, return_mean=False)
    assert isinstance(mean, float) and tuple(per_cell.shape) == (adata.n_obs,)
    np.testing.assert_allclose(mean, float(per_cell.double().mean()), rtol=1e-6)


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_a_loaded_model_trains_on_as_the_model_it_was_saved_from(which, tmp_path):
    """train's docstring: each call starts a fresh optimiser, nothing of it saved; so saved,
    loaded and trained on, a model ends where training on in memory ends, history included."""
    model, adata = _model(which, max_epochs=2)
    model.save(tmp_path / "m", save_anndata=False)
    loaded = type(model).load(tmp_path / "m", adata=adata)
    for each in (model, loaded):
        torch.manual_seed(1)
        each.train(max_epochs=2, train_size=0.5, **TRAIN)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    pd.testing.assert_frame_equal(loaded.history["elbo_train"], model.history["elbo_train"])
    assert loaded.train_args_ == model.train_args_


class _Fails(Callback):
    """A user's callback that raises at the end of an epoch."""

    def on_train_epoch_end(self, trainer, pl_module):
        raise RuntimeError("callback failed")


def test_an_error_in_a_users_callback_leaves_a_trained_model_reading_and_numbering_right():
    """A callback raising at an epoch's end (its validation logged, its elbo_train not): the
    module was left in training mode (read-outs drew dropout, moved BatchNorm's statistics)
    and the next run's first epoch took that epoch's number again in elbo_validation."""

    model, _ = _model("zinbvae", max_epochs=2)
    with pytest.raises(RuntimeError, match="callback failed"):
        model.train(max_epochs=2, train_size=0.5, callbacks=[_Fails()], **TRAIN)
    assert model.is_trained and not model.module.training
    np.testing.assert_array_equal(
        model.get_latent_representation(), model.get_latent_representation()
    )
    model.train(max_epochs=1, train_size=0.5, **TRAIN)
    for key, frame in model.history.items():
        assert frame.index.is_unique and list(frame.index) == [0, 1, 2], key


def test_checkpointing_a_further_run_keeps_the_earlier_runs_history(tmp_path):
    """scvi-tools' SaveCheckpoint marks the model untrained after each save; a trained model
    trained on with it lost the history of its earlier runs (and trained on as if new)."""
    from scvi.train import SaveCheckpoint

    model, _ = _model("zinbvae", max_epochs=2)
    model.train(max_epochs=1, train_size=0.5, callbacks=[SaveCheckpoint(dirpath=tmp_path)], **TRAIN)
    assert model.is_trained and list(model.history["elbo_train"].index) == [0, 1, 2]
    assert list(model.history["elbo_validation"].index) == [0, 1, 2]


def test_restore_best_under_a_users_logger_says_the_epoch_it_restored(tmp_path):
    """A logger of the user's keeps no model.history: restore_best restored the best epoch
    but warned that it had kept the last one, and best_epoch_ was None."""
    from lightning.pytorch.loggers import CSVLogger

    adata = _adata()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=5, n_hidden=16)
    logger = CSVLogger(tmp_path)
    with pytest.warns(UserWarning, match="logger=CSVLogger keeps no training history"):
        model.train(
            max_epochs=3, lr=0.3, n_epochs_kl_warmup=None, restore_best=True, logger=logger, **TRAIN
        )
    scores = pd.read_csv(tmp_path / "lightning_logs" / "version_0" / "metrics.csv")
    scores = scores.dropna(subset="validation_loss").set_index("epoch")["validation_loss"]
    assert model.best_epoch_ == scores.idxmin()


def test_a_failed_run_leaves_the_split_it_trained_on():
    """train_indices and validation_indices were set after a successful fit only: a run that
    raised (a callback, Ctrl-C) after training on a new split left the former one."""

    model, adata = _model("zinbvae", max_epochs=1)
    with pytest.raises(RuntimeError, match="callback failed"):
        model.train(max_epochs=1, train_size=0.8, callbacks=[_Fails()], **TRAIN)
    assert (len(model.train_indices), len(model.validation_indices)) == (160, 40)


@pytest.mark.parametrize("which", ["zinbvae", "cgmdvae"])
def test_train_takes_one_callback_as_lightning_does(which):
    """Lightning's Trainer takes callbacks=<one callback>; train failed with "'...' object is
    not iterable" (scvi-tools with an AttributeError)."""

    class Counts(Callback):
        epochs = 0

        def on_train_epoch_end(self, trainer, pl_module):
            Counts.epochs += 1

    _model(which, max_epochs=4, callbacks=Counts(), restore_best=True)
    assert Counts.epochs == 4


def test_the_plateau_schedule_steps_at_the_epochs_that_validate():
    """reduce_lr_on_plateau with check_val_every_n_epoch=2 stopped at the end of epoch 0 with
    Lightning's "conditioned on metric elbo_validation which is not available"."""
    plan = {"reduce_lr_on_plateau": True, "lr_patience": 0, "lr_threshold": 1e6}
    model, _ = _model("zinbvae", max_epochs=4, check_val_every_n_epoch=2, plan_kwargs=plan)
    # Two validations: the first sets the best, the second (no gain of 1e6) lowers the rate.
    assert model.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.6)


def test_a_further_run_numbers_the_learning_rates_steps_on():
    """The learning rate's history (LearningRateMonitor's, by step) of a further run was
    shifted by the epochs trained before: steps 0, 2, 4 then 3, 5."""
    plan = {"reduce_lr_on_plateau": True}
    model, _ = _model("zinbvae", max_epochs=3, batch_size=50, plan_kwargs=plan)
    model.train(max_epochs=2, train_size=0.5, batch_size=50, plan_kwargs=plan, **TRAIN)
    steps = model.history["lr-Adam"].index
    assert steps.is_monotonic_increasing and steps.is_unique and len(steps) == 5
    assert list(np.diff(steps)) == [steps[1] - steps[0]] * 4  # one epoch's steps apart


def test_another_torch_optimiser_trains_at_the_rate_given():
    """plan_kwargs["optim"] (the error for an unknown optimizer advises it): torch's SGD failed
    on Adam's eps ("unexpected keyword argument 'eps'"), and train(lr=...) was dropped."""
    model, _ = _model("zinbvae", max_epochs=1, lr=0.05, plan_kwargs={"optim": torch.optim.SGD})
    optimiser = model.trainer.optimizers[0]
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["lr"] == 0.05


def test_scvi_tools_custom_optimizer_trains_with_the_creators_settings():
    """scvi-tools' plan_kwargs={"optimizer": "Custom", "optimizer_creator": fn} was refused
    as "unexpected key 'optimizer_creator': did you mean 'optimizer'?", the optimizer already
    given (and "Custom" alone as not Adam or AdamW)."""
    made = []

    def sgd(params):
        made.append(len(params))
        return torch.optim.SGD(params, lr=0.02, momentum=0.5)

    custom = {"optimizer": "Custom", "optimizer_creator": sgd}
    model, _ = _model("zinbvae", max_epochs=2, plan_kwargs=custom)
    optimiser = model.trainer.optimizers[0]
    assert isinstance(optimiser, torch.optim.SGD) and optimiser.defaults["momentum"] == 0.5
    assert made == [len([p for p in model.module.parameters() if p.requires_grad])]
    assert model.train_args_["lr"] == 0.02  # the creator's rate, as trained
    # Settings the creator owns are refused beside it (scvi-tools drops them), as are a
    # creator without "Custom" (ignored there) and "Custom" without a creator.
    for plan, said in (
        ({**custom, "lr": 0.1}, r"plan_kwargs\['lr'\] is set by .*optimizer_creator"),
        ({**custom, "weight_decay": 0.1}, r"plan_kwargs\['weight_decay'\] is set by"),
        ({"optimizer_creator": sgd}, "optimizer_creator is read with optimizer='Custom' only"),
        ({"optimizer": "Custom"}, "optimizer='Custom' needs optimizer_creator"),
    ):
        with pytest.raises(ValueError, match=said):
            model.train(max_epochs=1, plan_kwargs=plan, **TRAIN)
    with pytest.raises(ValueError, match=r"^lr is set by optimizer='Custom''s"):
        model.train(max_epochs=1, lr=0.1, plan_kwargs=custom, **TRAIN)
    with pytest.raises(TypeError, match="optimizer_creator returned dict, not a torch optim"):
        model.train(max_epochs=1, plan_kwargs={**custom, "optimizer_creator": lambda p: {}})
    assert len(model.history["elbo_train"]) == 2  # the refused runs trained nothing
